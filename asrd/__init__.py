"""asrd: distil very large audio corpora into transcripts with audio LLMs on SLURM clusters."""

__version__ = "0.1.0"
