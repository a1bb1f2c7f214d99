"""The one base of the errors a user can act on, so the CLI and the serving API catch one type.

Each subclass's message says what was wrong and how to fix it; no traceback is needed.
"""


class PlatformError(Exception):
    """A failure with a message that names the cause and the fix (bad input, a service down)."""
