"""Fingerprints of the project's own code, for cache keys: a cached result is reused only if the
code that computed it is unchanged."""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections.abc import Iterable
from pathlib import Path


def package_modules(package: str) -> list[str]:
    """Every module of a package (dotted names), the package itself included."""
    module = importlib.import_module(package)
    return [package] + [f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)]


def code_fingerprint(modules: Iterable[str]) -> str:
    """16 hex digits of the sha256 of the source files of `modules` (dotted names)."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        digest.update(name.encode() + b"\0")
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())  # type: ignore[arg-type]
    return digest.hexdigest()[:16]
