"""Head fits of one evaluation, run one after another in this process or side by side in worker
processes.

A head fit is small (a linear map or a BiLSTM of 128 units on a few minutes of audio): on 2 CPU
cores one fit with 2 threads was no faster than with 1, while two 1-thread fits in two processes
took as long as one. Workers are forked, so they share the parent's hidden-state tables without
copying them; each fit is seeded, so a result does not depend on which worker ran it or when.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Optional

import torch

from .. import log

_run: Optional[Callable[[Any], Any]] = None
"""The job function of the pool being built; forked workers inherit it (it is never pickled)."""


def parallel_workers(requested: int, device: torch.device) -> int:
    """Worker processes to use: 1 (in this process) on a GPU, where a forked process cannot use CUDA
    and fits are fast anyway, or where processes cannot be forked."""
    if device.type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, requested)


class FitPool:
    """Runs `run(job)` with one thread for every submitted job; `completed()` yields (job, result) as
    jobs finish, including jobs submitted while it is iterated. With one worker the jobs run here, in
    submission order; with more, in forked processes."""

    def __init__(self, run: Callable[[Any], Any], workers: int):
        global _run
        self._run = run
        self._queue: deque = deque()
        self._executor: Optional[ProcessPoolExecutor] = None
        self._futures: dict[Future, Hashable] = {}
        if workers > 1:
            _run = run
            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                 initializer=_start_worker)

    def submit(self, job: Hashable) -> None:
        if self._executor is None:
            self._queue.append(job)
        else:
            self._futures[self._executor.submit(_call, job)] = job

    def completed(self) -> Iterator[tuple[Any, Any]]:
        while self._queue or self._futures:
            if self._executor is None:
                job = self._queue.popleft()
                yield job, _one_thread(self._run, job)
                continue
            done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
            for future in done:
                job = self._futures.pop(future)
                yield job, future.result()

    def close(self) -> None:
        global _run
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            _run = None

    def __enter__(self) -> "FitPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _start_worker() -> None:
    torch.set_num_threads(1)
    log.setup_logging(quiet=True)  # no progress bars from workers: the parent shows one for all fits


def _one_thread(run: Callable[[Any], Any], job: Any) -> Any:
    """`run(job)` with one thread, as in a worker, so that results do not depend on the worker count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(job)
    finally:
        torch.set_num_threads(threads)


def _call(job: Any) -> Any:
    assert _run is not None, "a FitPool worker started without a job function"
    return _run(job)
