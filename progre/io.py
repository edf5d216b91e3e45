"""Atomic artifact writing and small file helpers.

Every artifact is written under a temporary name in the same directory and renamed into
place, so an interrupted run never leaves a file that looks complete.

Temporary names are progre's own: a folder is built inside a *work folder* beside its target,
``.<target name>.progre-work-<random>``, which holds the file WORK_OWNER (written first, removed
last), the new folder ``new/`` and, while an existing target is being replaced, the previous one
``old/``; a file is written as ``.<name>.progre-work-<random>``. Clean-up (`recover_work_folders`)
touches only work folders with that name and WORK_OWNER inside, so it never removes a folder that a
user named alike, and a kill between the two renames of a swap leaves the previous folder in
``old/``, where the next run restores it from.

Reading a file that progre wrote and finds damaged (truncated, foreign) is one `UserError` naming
it (`reading`, `read_json`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

WORK_TAG = "progre-work"
WORK_OWNER = ".progre-work"
"""The file that makes a work folder progre's: written when the folder is made, removed last."""
WORK_NAME = re.compile(rf"^\.(?P<target>.+)\.{WORK_TAG}-[a-z0-9_]{{8}}$")
"""``.<target name>.progre-work-<8 characters of tempfile's alphabet>``"""


def work_prefix(path: Path) -> str:
    return f".{path.name}.{WORK_TAG}-"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=work_prefix(path), dir=path.parent)
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
    """Yield a temporary directory that replaces `path` as a whole when the block succeeds (built in
    a work folder beside it, see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = make_work_folder(path)
    try:
        yield work / "new"
        if path.exists() and not overwrite:
            from .errors import UserError

            raise UserError(f"output {path} already exists (pass --overwrite to replace it)")
        swap_in(work / "new", path)
    finally:
        remove_work_folder(work)


def make_work_folder(path: Path) -> Path:
    """A new work folder beside `path` (WORK_OWNER in it first), with the empty folder ``new/`` to build in."""
    work = Path(tempfile.mkdtemp(prefix=work_prefix(path), dir=path.parent))
    try:
        (work / WORK_OWNER).write_text(f"a temporary folder of progre, for {path.name}\n")
        (work / "new").mkdir()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # made just now, by this process
        raise
    return work


def swap_in(new: Path, path: Path) -> None:
    """Make the finished folder ``<work>/new`` the folder `path`; an existing `path` is moved to
    ``<work>/old`` first (a kill between the two renames leaves it there, for `recover_work_folders`)
    and removed with the work folder."""
    os.chmod(new, 0o777 & ~umask())  # mkdtemp makes 0700 folders
    if path.exists() or path.is_symlink():
        os.replace(path, new.parent / "old")
    os.replace(new, path)


def is_work_folder(folder: Path) -> bool:
    return (WORK_NAME.match(folder.name) is not None and folder.is_dir() and not folder.is_symlink()
            and (folder / WORK_OWNER).is_file())


def remove_work_folder(work: Path) -> None:
    """Remove a work folder, its WORK_OWNER last (a kill midway leaves it recognisable)."""
    if not work.is_dir():
        return
    for child in work.iterdir():
        if child.name != WORK_OWNER:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (work / WORK_OWNER).unlink(missing_ok=True)
    work.rmdir()


def recover_work_folders(parent: Path, target: str | None = None, writer: str = "a run") -> list[str]:
    """Clean up after killed runs: the work folders in `parent` (of the target named `target`, or of
    any) that progre made (`writer`: what made them, for the log). A target that a kill left absent between the two renames of a swap is
    restored from ``old/``; a work folder whose ``old/`` and ``new/`` both outlived a target that exists
    again is kept (both copies: nothing is lost); every other one is removed. Returns what was done, one
    line each, for the log. Call under the target's lock."""
    done: list[str] = []
    if not parent.is_dir():
        return done
    for work in sorted(parent.iterdir()):
        match = WORK_NAME.match(work.name)
        if match is None or (target is not None and match["target"] != target) or not is_work_folder(work):
            continue
        path = parent / match["target"]
        old, new = work / "old", work / "new"
        if old.exists() and not (path.exists() or path.is_symlink()):
            os.replace(old, path)
            done.append(f"restored {path} from {work}, where a run killed while replacing it had left it")
        elif old.exists() and new.exists():
            done.append(f"kept {work}: it holds a previous {path} (old/) and an unfinished replacement (new/), "
                        f"and {path} exists again")
            continue
        remove_work_folder(work)
        done.append(f"removed {work}, left by {writer} that was killed")
    return done


def remove_work_files(folder: Path) -> list[Path]:
    """The temporary files of `atomic_path` that killed runs left in `folder` (removed)."""
    removed = []
    for leftover in sorted(folder.iterdir()) if folder.is_dir() else []:
        if WORK_NAME.match(leftover.name) and (leftover.is_file() or leftover.is_symlink()):
            leftover.unlink()
            removed.append(leftover)
    return removed


def umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path, remedy: str = "") -> Any:
    """The JSON in `path`; a damaged or unreadable file is one UserError naming it."""
    with reading(path, remedy):
        return json.loads(Path(path).read_text(encoding="utf-8"))


@contextmanager
def reading(path: str | Path, remedy: str = "") -> Iterator[None]:
    """Errors while reading `path` (truncated, damaged, foreign, unreadable or not UTF-8) become one
    `UserError` naming it and what to do (`remedy`, e.g. "rerun `progre cluster`")."""
    from .errors import UserError

    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, EOFError, tarfile.TarError) as exc:  # ValueError: also json's, pyarrow's and
        raise UserError(f"{path} cannot be read ({describe_error(exc)})"  # numpy's damaged-file errors
                        + (f"; {remedy}" if remedy else "")) from None


def read_utf8(path: str | Path, name: str = "", remedy: str = "", encoding: str = "utf-8-sig") -> str:
    """The text of `path`; a file that is not UTF-8 is one `UserError` naming it (as `name`, default its
    path) with the offending byte, and what to do (`remedy`)."""
    from .errors import UserError

    try:
        return Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{name or path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
                        + (f"; {remedy}" if remedy else "")) from None


def describe_error(exc: BaseException) -> str:
    """An exception in a few words: an OSError's reason, a UnicodeDecodeError's byte, else its first line."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
