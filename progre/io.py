"""Atomic artifact writing and small file helpers.

Every artifact is written under a temporary name in the same directory and renamed into
place, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp makes 0600 files
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def cached_object(path: Path, compute: Callable[[], T], save: Callable[[T], Any] = lambda x: x,
                  load: Callable[[Any], T] = lambda x: x) -> tuple[T, bool]:
    """(the object cached at `path`, True), or (`compute()`, False) after caching `save` of it there
    (torch.save, atomically). A second process asking for the same path waits for the first."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{path.name}.lock")):
        if not path.is_file():
            value = compute()
            with atomic_path(path) as tmp:
                torch.save(save(value), tmp)
            return value, False
    return load(torch.load(path, weights_only=False)), True


@contextmanager
def exclusive_lock(path: Path, busy: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive advisory lock (`fcntl.flock`) on the file `path` (created if missing) for the block.
    If another process holds it, `busy()` is called first (it may raise to refuse, or log that this
    process waits), then the lock is waited for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy is not None:
                busy()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` as a whole when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists() and not overwrite:
            from .errors import UserError

            raise UserError(f"output {path} already exists (pass --overwrite to replace it)")
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def swap_in(tmp: Path, path: Path) -> None:
    """Make the finished temporary folder `tmp` the folder `path` (replacing one that exists: moved
    aside to ``.<name>.old`` first, removed once `tmp` is in place)."""
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700 folders
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old)


def umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
