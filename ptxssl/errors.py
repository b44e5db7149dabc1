"""The one exception type for user mistakes.

A `UserError` is a bad input the user can fix (missing file, bad RLE, wrong column, unknown
option). The CLI prints its message as one line and exits with code 2; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input; the message names the file/option and the fix."""
