"""The launcher's user error."""

from __future__ import annotations


class LaunchError(ValueError):
    """A submission that cannot be made as asked; the message says what to change, `details`
    (printed after it) what was and was not done."""

    def __init__(self, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.details = details or []
