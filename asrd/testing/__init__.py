"""Test-only builders, kept apart from the runtime: sample speech, tiny offline models, fault hooks."""
