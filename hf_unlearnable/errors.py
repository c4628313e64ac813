"""The project's own exceptions: every bad input ends in one of these, with a message that names the fix."""


class ProtectionError(ValueError):
    """Bad input to protect/craft/evaluate: the message names the column, row or argument, and the fix."""
