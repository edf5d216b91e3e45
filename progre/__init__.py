"""progre: pretrain ProgRE and HuBERT speech models end to end (the library and the `progre` CLI).

`progre.load(path)` is the Python API for features (`progre.api`: `Model.hidden_states`). It is
imported on first use, so `import progre` (and `progre --help`) stays cheap: no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = ("load", "Model", "BatchStates")


def __getattr__(name: str) -> Any:
    if name in _API:
        # by name, not by an import statement: the DVC stages never call the API, and the import reader that
        # lists each stage's code deps (tests/project_imports.py) counts import statements
        return getattr(importlib.import_module("progre.api"), name)
    raise AttributeError(f"module 'progre' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
