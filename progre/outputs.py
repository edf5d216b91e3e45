"""The output policy of every command that writes a folder.

- The output is resolved through symbolic links first, so that two names of one folder are one output
  (one lock, one check); a link that points nowhere is refused, and a link is never removed.
- An existing, non-empty output folder is refused unless `overwrite`; `overwrite` replaces only a
  folder that the same command wrote (it holds the marker file MARKER, which names the command), never
  a folder that is, holds or lies inside an input of the command, and never one holding files changed
  after progre completed it (a file the user put there): those are named, and nothing is removed.
- The output is locked for the whole run (an advisory `fcntl` lock on ``.<name>.lock`` beside it):
  a second run into the same output stops at once with one line.
- The folder is built in a work folder beside it (`progre.io`: ``.<name>.progre-work-<random>/new``)
  and swapped in when complete. The next run into the same output cleans up after killed runs, under
  the lock: it restores a previous output that a kill between the two renames of the swap left in a
  work folder, and removes work folders progre marked as its own, nothing else.
- A full or unwritable disk is a one-line error naming the output, whichever library was writing.

DVC removes a stage's non-persistent outputs before it runs the stage, so `dvc repro` and
`dvc exp run` always start from an absent output.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .errors import UserError
from .io import (WORK_NAME, WORK_TAG, exclusive_lock, make_work_folder, recover_work_folders, remove_work_files,
                 remove_work_folder, swap_in, write_json)
from .log import logger

MARKER = ".progre-output"
"""A file in every folder progre writes: {"written_by": "progre COMMAND"}, the command that wrote it
(its kind: one command never replaces another's output). Its content is fixed per command, so reruns
give byte-identical folders. Every marker progre has written names its command; a marker that does
not (empty, or not JSON) was not written by progre, and its folder is treated as the user's."""

ENVIRONMENT_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}
DISK_FULL_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")
"""How libraries that do not raise OSError (safetensors, torch.save, ...) word a full disk."""
FULL_BELOW_BYTES = 1 << 20
"""A failed write with less free space than this on the output's disk is put down to a full disk
(libsndfile says only "System error.")."""
LOCK_NAME = re.compile(r"^\.(?P<target>.+)\.lock$")
EARLIER_TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
"""The temporary names of versions before the work folders (``.<name>.<random>.tmp``)."""
COPY_SLACK_SECONDS = 1.0
"""A file changed this long after its folder's marker counts as added later (by the user): a checkout or
copy of a whole output folder takes less."""
NAME_ROOM = len(f"..{WORK_TAG}-12345678") + len(".rank-999.lock") - len(".lock")
"""What the names progre makes beside an output add to its name (work folders, rank locks)."""


def marker_kind(folder: Path) -> str | None:
    """The command that wrote `folder` ("progre shard"), "" for a marker that names none, None without one."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        written_by = json.loads(marker.read_text(encoding="utf-8")).get("written_by")
    except (OSError, ValueError, AttributeError):
        return ""
    return written_by if isinstance(written_by, str) and written_by.startswith("progre ") else ""


def resolve_output(out: str | Path, option: str = "--out") -> Path:
    """`out` as the real folder it names (through symbolic links), checked: a link that points nowhere,
    a file, the root folder and a name too long for the file system or for progre's names
    beside it are one-line errors."""
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > name_max(out.parent):
            raise UserError(f"{option} {out}: the name {part[:20]}... is {len(os.fsencode(part))} bytes long; the file "
                            f"system allows {name_max(out.parent)}")
    if out.is_symlink() and not out.exists():
        raise UserError(f"{option} {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
                        f"create that folder or give the real path")
    try:
        real = out.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
        raise UserError(f"{option} {out}: {getattr(exc, 'strerror', None) or exc}") from None
    if not real.name:
        raise UserError(f"{option} {out} is the root folder; write into a folder of its own")
    limit = name_max(real.parent) - NAME_ROOM
    if len(os.fsencode(real.name)) > limit:
        raise UserError(f"{option} {out}: the name is {len(os.fsencode(real.name))} bytes long; progre needs it at "
                        f"most {limit} bytes (the file system allows {name_max(real.parent)}, and progre names its "
                        f"temporary folders and locks beside it after it)")
    if real.exists() and not real.is_dir():
        raise UserError(f"{option} {out} is a file, not a folder")
    return real


def name_max(folder: Path) -> int:
    """The longest file name the file system of `folder` (or of its nearest existing parent) allows."""
    for candidate in [folder, *folder.parents]:
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def check_not_an_input(out: Path, inputs: Iterable[Path | None], option: str = "--out") -> None:
    """Refuse an output that is, holds or lies inside one of `inputs`."""
    target = Path(out).resolve()
    for path in inputs:
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source or source in target.parents:
            raise UserError(f"{option} {out} is {'the input' if target == source else 'inside the input'} {path}; "
                            f"write {'the output' if option == '--out' else 'it'} elsewhere")
        if target in source.parents:
            raise UserError(f"{option} {out} holds the input {path}; write {'the output' if option == '--out' else 'it'} "
                            f"elsewhere")


def check_not_the_current_folder(out: Path) -> None:
    """Refuse an output that is or holds the current folder: progre replaces an output as a whole."""
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        raise UserError(f"--out {out} is {'the' if out == here else 'above the'} current folder, which progre would "
                        f"replace as a whole; give a folder beside or below it")


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """An exclusive advisory lock on `path` for the block; UserError at once if another process holds it."""
    def refuse() -> None:
        raise UserError(f"another progre run is writing {what} (it holds {path}); wait for it to finish")

    acquired = ExitStack()
    try:
        acquired.enter_context(exclusive_lock(path, busy=refuse))
    except OSError as exc:
        raise UserError(f"cannot write {what}: {exc.strerror} ({path})") from None
    with acquired:
        yield


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def remove_leftovers(out: Path) -> None:
    """Clean up after runs into `out` that were killed (call under its lock): see `io.recover_work_folders`."""
    log_recovery(recover_work_folders(out.parent, out.name))


def log_recovery(lines: list[str]) -> None:
    """What `io.recover_work_folders` did: a restored or kept folder as a warning, a removal as info."""
    for line in lines:
        (logger.warning if line.startswith(("restored", "kept")) else logger.info)("%s", line)


def check_kind(out: Path, command: str) -> None:
    """Refuse a non-empty `out` that progre did not write, or that another command wrote."""
    kind = marker_kind(out)
    if kind is None:
        raise UserError(f"--out {out} holds files that progre did not write (no {MARKER}); progre never writes "
                        f"into such a folder, even with --overwrite: choose an empty or new folder")
    if kind == "":
        raise UserError(f"--out {out}: its {MARKER} does not name the command that wrote it, so progre did not "
                        f"write it; progre never writes into such a folder, even with --overwrite: choose an empty or "
                        f"new folder")
    if kind != f"progre {command}":
        raise UserError(f"--out {out} holds the output of `{kind}` (see its {MARKER}); `progre {command}` never "
                        f"writes into another command's output, even with --overwrite: choose another folder")


def files_added_after_marker(out: Path) -> list[str]:
    """Files in `out` changed after progre completed it (its marker is written last): files a user put
    there, or edited. Their status-change time (which copying cannot set back) is compared with the
    marker's, with COPY_SLACK_SECONDS of slack."""
    completed = (out / MARKER).stat().st_ctime + COPY_SLACK_SECONDS
    found = []
    for folder, _, names in os.walk(out):
        for name in names:
            path = Path(folder) / name
            if path.lstat().st_ctime > completed:
                found.append(str(path.relative_to(out)))
    return sorted(found)


def check_replaceable(out: Path, overwrite: bool, command: str) -> None:
    """An existing non-empty `out` needs `overwrite`, and only a folder this command wrote, holding no
    file that progre did not write, may be replaced."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"output {out} already exists (pass --overwrite to replace it)")
    check_kind(out, command)
    added = files_added_after_marker(out)
    if added:
        shown = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
        raise UserError(f"--out {out} holds {shown}, changed after progre {command} wrote the folder; --overwrite "
                        f"would delete {'it' if len(added) == 1 else 'them'}: move {'it' if len(added) == 1 else 'them'} "
                        f"elsewhere (or delete {'it' if len(added) == 1 else 'them'}) and rerun")


@contextmanager
def output_folder(out: str | Path, command: str, *, overwrite: bool = False,
                  inputs: Iterable[Path | None] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `out` when the block succeeds (see the module doc)."""
    out = resolve_output(out)
    check_not_an_input(out, inputs)
    check_not_the_current_folder(out)
    check_replaceable(out, overwrite, command)
    with environment_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    with locked(lock_path(out), str(out)):
        with environment_errors(out):
            remove_leftovers(out)
        check_replaceable(out, overwrite, command)  # again: another run may have finished while this one started
        with environment_errors(out):
            work = make_work_folder(out)
        try:
            with environment_errors(out):
                yield work / "new"
                write_json(work / "new" / MARKER, {"written_by": f"progre {command}"})
                swap_in(work / "new", out)
        finally:
            remove_work_folder(work)


@contextmanager
def run_folder(out: str | Path, command: str, *, inputs: Iterable[Path | None] = (),
               rank: int | None = None) -> Iterator[Path]:
    """A folder written in place and continued by later runs: a training run (resumed by the same
    command), or a multi-rank feature folder (`rank`: each rank writes its own part and holds its own
    lock). Refused if it holds files progre did not write, or another command's output; locked for the
    block. A training run's temporary files left by killed runs are removed. A run that fails before
    writing anything but the marker leaves the folder as it found it (absent, or empty)."""
    out = resolve_output(out)
    check_not_an_input(out, inputs)
    if out.exists() and any(out.iterdir()):
        check_kind(out, command)
    with environment_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path(out) if rank is None else out.parent / f".{out.name}.rank-{rank}.lock"
    with locked(lock, str(out) if rank is None else f"rank {rank}'s part of {out}"):
        existed = out.exists()
        with environment_errors(out):
            out.mkdir(parents=True, exist_ok=True)
            if rank is None:  # what killed runs left inside: work folders (`model/` being written), files
                log_recovery(recover_work_folders(out))
                for leftover in remove_work_files(out):
                    logger.info("removed %s, left by a run that was killed", leftover)
            write_json(out / MARKER, {"written_by": f"progre {command}"})
        try:
            with environment_errors(out):
                yield out
        except BaseException:
            if rank is None and holds_only_the_marker(out):
                (out / MARKER).unlink()
                for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
                    folder.rmdir()
                if not existed:
                    out.rmdir()
            raise


def holds_only_the_marker(folder: Path) -> bool:
    """True if `folder` holds its marker and otherwise empty folders only (what a run that failed at once leaves)."""
    if not (folder / MARKER).is_file():
        return False
    return all(path == folder / MARKER or (path.is_dir() and not path.is_symlink()) for path in folder.rglob("*"))


def check_cache_folder(cache: str | Path, inputs: Iterable[Path | None], is_entry: Callable[[str], bool]) -> Path:
    """`cache` resolved, if progre may keep a cache there: a new or empty folder, or one holding only
    cache entries (names `is_entry` accepts), their locks and work folders; never a file, nor a folder
    that is, holds or lies inside an input."""
    cache = resolve_output(cache, "--cache")
    check_not_an_input(cache, inputs, "--cache")

    def ours(name: str) -> bool:
        for form in (WORK_NAME, LOCK_NAME, EARLIER_TEMPORARY_NAME):
            if match := form.match(name):
                return is_entry(match["target"])
        return is_entry(name)

    foreign = sorted(p.name for p in cache.iterdir() if not ours(p.name)) if cache.is_dir() else []
    if foreign:
        raise UserError(f"--cache {cache} holds {', '.join(foreign[:3])}{' and more' if len(foreign) > 3 else ''}, "
                        f"which progre's caches do not write; give a new or empty folder, or an earlier --cache")
    return cache


@contextmanager
def environment_errors(out: Path) -> Iterator[None]:
    """A full, read-only or forbidden disk under `out` becomes a one-line UserError, whichever library
    was writing (an OSError, or another error while the disk has no room left)."""
    try:
        yield
    except UserError:
        raise
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or disk_full(out)  # (both are ENVIRONMENT_ERRORS)
        if exc.errno in ENVIRONMENT_ERRORS or full:
            reason = "the disk is full" if full else exc.strerror
            raise UserError(f"cannot write {out}: {reason}" + (f" ({exc.filename})" if exc.filename else "")) from None
        raise
    except Exception as exc:
        text = str(exc).lower()
        if any(words in text for words in DISK_FULL_TEXTS) or disk_full(out):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(f"cannot write {out}: the disk is full ({type(exc).__name__}"
                            + (f": {first})" if first else ")")) from None
        raise


def disk_full(out: Path) -> bool:
    """True if the disk that holds `out` (or its nearest existing parent) has (almost) no room left."""
    for folder in [out, *out.parents]:
        if folder.exists():
            return free_bytes(folder) < FULL_BELOW_BYTES
    return False


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return FULL_BELOW_BYTES
