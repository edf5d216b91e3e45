"""Order-preserving parallel map over CPU worker processes."""

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
