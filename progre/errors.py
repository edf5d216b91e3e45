"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a one-line message and a non-zero exit instead of a traceback, and so it does
with the errors of the file system and of reading files that no reader turned into one (an OSError
names its file; `cli.environment_error`). Everything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A bad path, a bad parameter or bad input data, explained in one line."""
