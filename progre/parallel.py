"""Order-preserving parallel maps over spawned CPU worker processes: `ordered_map` streams one iterable
through a pool that lives as long as the iteration, `WorkerPool` keeps its pool for many lists."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _limit_threads() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; nested torch threads would oversubscribe


def _init(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    _limit_threads()
    if initializer is not None:
        initializer(*initargs)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, *, chunksize: int = 4,
                initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> Iterator[R]:
    """fn over items, results in input order; inline when workers == 1.

    Workers are spawned, not forked: forking a process whose torch thread pool is already
    running can deadlock. `fn` and `initializer` must be importable module-level functions.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(initializer, initargs)) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)


class WorkerPool:
    """`workers` spawned processes (one torch thread each) that map list after list, results in input
    order; the workers start once, so their start-up (importing torch) is paid once, not per list.
    With workers <= 1 the lists are mapped in this process. Close it, or use it in a `with` block.

    `fn` must be an importable module-level function (spawned workers import it).
    """

    def __init__(self, workers: int):
        self._pool = None
        if workers > 1:
            self._pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(None, ()))

    def map(self, fn: Callable[[T], R], items: list[T], chunksize: int = 4) -> list[R]:
        if self._pool is None:
            return list(map(fn, items))
        return self._pool.map(fn, items, chunksize=chunksize)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
