"""The output policy of every command that writes a folder.

- An existing, non-empty output folder is refused unless `overwrite`; `overwrite` replaces only a
  folder that progre wrote (it holds the marker file MARKER) and never a folder that is, holds or lies
  inside an input of the command.
- The output is locked for the whole run (an advisory `fcntl` lock on ``.<name>.lock`` beside it):
  a second run into the same output stops at once with one line.
- The folder is built under a temporary name beside it (``.<name>.<random>.tmp``) and swapped in
  when complete; temporary folders that killed runs left behind are removed by the next run into the
  same output (under the lock, so never a live run's).
- A full or unwritable disk is a one-line error naming the output.

DVC removes a stage's non-persistent outputs before it runs the stage, so `dvc repro` and
`dvc exp run` always start from an absent output.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .errors import UserError
from .io import exclusive_lock, swap_in, write_json
from .log import logger

MARKER = ".progre-output"
"""A file in every folder progre writes: {"written_by": command}. Its content is fixed, so reruns
give byte-identical folders."""

ENVIRONMENT_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}


def written_by_progre(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def check_not_an_input(out: Path, inputs: Iterable[Path | None]) -> None:
    """Refuse an output that is, holds or lies inside one of `inputs`."""
    target = Path(out).resolve()
    for path in inputs:
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source or source in target.parents:
            raise UserError(f"--out {out} is {'the input' if target == source else 'inside the input'} {path}; "
                            f"write the output elsewhere")
        if target in source.parents:
            raise UserError(f"--out {out} holds the input {path}; write the output elsewhere")


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
    """Temporary folders and files of killed runs into `out` (call under its lock)."""
    for leftover in [*out.parent.glob(f".{out.name}.*.tmp"), out.parent / f".{out.name}.old"]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
            logger.info("removed %s, left by a run that was killed", leftover)
        elif leftover.exists():
            leftover.unlink()


def check_replaceable(out: Path, overwrite: bool) -> None:
    """An existing non-empty `out` needs `overwrite`, and only a folder progre wrote may be replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"output {out} already exists (pass --overwrite to replace it)")
    if not written_by_progre(out):
        raise UserError(f"--out {out} holds files that progre did not write (no {MARKER}); it is not replaced, "
                        f"even with --overwrite")


@contextmanager
def output_folder(out: str | Path, command: str, *, overwrite: bool = False,
                  inputs: Iterable[Path | None] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `out` when the block succeeds (see the module doc)."""
    out = Path(out)
    check_not_an_input(out, inputs)
    check_replaceable(out, overwrite)
    with locked(lock_path(out), str(out)):
        remove_leftovers(out)
        check_replaceable(out, overwrite)  # again: another run may have finished while this one started
        with environment_errors(out):
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            with environment_errors(out):
                yield tmp
                write_json(tmp / MARKER, {"written_by": f"progre {command}"})
                swap_in(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def run_folder(out: str | Path, command: str, *, inputs: Iterable[Path | None] = (),
               rank: int | None = None) -> Iterator[Path]:
    """A folder written in place and continued by later runs: a training run (resumed by the same
    command), or a multi-rank feature folder (`rank`: each rank writes its own part and holds its own
    lock). Refused if it holds files progre did not write; locked for the block. A training run's
    temporary files left by killed runs are removed."""
    out = Path(out)
    check_not_an_input(out, inputs)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not written_by_progre(out))):
        raise UserError(f"--out {out} holds files that progre did not write (no {MARKER}); choose an empty or "
                        f"new folder")
    lock = lock_path(out) if rank is None else out.parent / f".{out.name}.rank-{rank}.lock"
    with locked(lock, str(out) if rank is None else f"rank {rank}'s part of {out}"):
        with environment_errors(out):
            out.mkdir(parents=True, exist_ok=True)
            if rank is None:
                for leftover in out.glob(".*.tmp"):
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            write_json(out / MARKER, {"written_by": f"progre {command}"})
            yield out


@contextmanager
def environment_errors(out: Path) -> Iterator[None]:
    """A full, read-only or forbidden disk under `out` becomes a one-line UserError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRORS:
            reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise UserError(f"cannot write {out}: {reason}" + (f" ({exc.filename})" if exc.filename else "")) from None
        raise
