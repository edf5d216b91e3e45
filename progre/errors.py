"""The one exception type that means "the user asked for something we cannot do", and how a rank that
`progre pretrain` started hands one to its launcher.

The CLI turns it into a one-line message and a non-zero exit instead of a traceback, and so it does
with the errors of the file system and of reading files that no reader turned into one (an OSError
names its file; `cli.environment_error`). In a rank of `progre pretrain`'s own launch
(`train.launch.run_ranks`) the line goes to the launcher instead, which ends the run with it
(`hand_to_launcher`). Everything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import time

LAUNCHED_RANK = "PROGRE_LAUNCHED_RANK"
"""Set in the environment of the ranks that `progre pretrain` starts itself (`train.launch.run_ranks`)."""


class UserError(Exception):
    """A bad path, a bad parameter or bad input data, explained in one line."""


def hand_to_launcher(message: str) -> bool:
    """In a rank that `progre pretrain` started itself, write `message` into torch elastic's error file of
    this rank (TORCHELASTIC_ERROR_FILE, read by the launcher when the rank exits) and return True; elsewhere,
    or if the file cannot be written, return False (the caller prints it)."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not os.environ.get(LAUNCHED_RANK) or not error_file:
        return False
    try:
        with open(error_file, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time()), "progre": True}, f)
    except OSError:
        return False
    return True
