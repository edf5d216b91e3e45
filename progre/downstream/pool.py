"""Head fits of one evaluation, run one after another in this process or side by side in worker
processes, one device per worker.

A head fit is small (a linear map or a BiLSTM of 128 units on a few minutes of audio): on 2 CPU
cores one fit with 2 threads was no faster than with 1, while two 1-thread fits in two processes
took as long as one. On the CPU workers are forked, so they share the parent's hidden-state tables
without copying them. On CUDA `workers` processes per visible GPU are spawned, each fitting on its GPU:
a forked process cannot use CUDA once the parent has (it computed the hidden states there), and
threads would share torch's global seed, which each fit sets before building its head, so their
weights would depend on how the threads interleave. Spawned workers receive the fits' data once, by
pickling (tensors through shared memory, feature folders reopened by name). Each fit is seeded, so a
result does not depend on which worker ran it, when, or how it was started.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Optional

import torch

from .. import log
from ..device import use_device

START_METHODS = {"cpu": "fork", "cuda": "spawn"}
"""How workers start on each kind of device (fork: the CPU workers share the parent's memory)."""

_run: Optional[Callable[[Any, torch.device], Any]] = None
"""A worker's job function and device (set when it starts)."""
_device: Optional[torch.device] = None


def fit_devices(requested: int, device: torch.device) -> list[torch.device]:
    """The device of each worker: `requested` workers on the CPU (where processes can be forked), `requested`
    per visible GPU on CUDA; one device means the fits run in this process."""
    workers = max(1, requested)
    if device.type == "cuda":
        return [torch.device("cuda", gpu) for _ in range(workers) for gpu in range(torch.cuda.device_count())]
    if device.type != "cpu" or "fork" not in multiprocessing.get_all_start_methods():
        return [device]
    return [device] * workers


class FitPool:
    """Runs `run(job, device)` with one thread for every submitted job; `completed()` yields (job, result) as
    jobs finish, including jobs submitted while it is iterated. With one device the jobs run here, in
    submission order; with more, in one worker process per device (forked on the CPU, spawned on CUDA:
    `START_METHODS`; spawned workers receive `run` pickled, once each)."""

    def __init__(self, run: Callable[[Any, torch.device], Any], devices: list[torch.device]):
        self._run = run
        self._device = devices[0]
        self._queue: deque = deque()
        self._executor: Optional[ProcessPoolExecutor] = None
        self._futures: dict[Future, Hashable] = {}
        if len(devices) > 1:
            context = multiprocessing.get_context(START_METHODS.get(devices[0].type, "spawn"))
            free = context.SimpleQueue()  # each worker takes one device as it starts
            for device in devices:
                free.put(str(device))
            self._executor = ProcessPoolExecutor(len(devices), mp_context=context, initializer=_start_worker,
                                                 initargs=(run, free))

    def submit(self, job: Hashable) -> None:
        if self._executor is None:
            self._queue.append(job)
        else:
            self._futures[self._executor.submit(_call, job)] = job

    def completed(self) -> Iterator[tuple[Any, Any]]:
        while self._queue or self._futures:
            if self._executor is None:
                job = self._queue.popleft()
                yield job, _one_thread(self._run, job, self._device)
                continue
            done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
            for future in done:
                job = self._futures.pop(future)
                yield job, future.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "FitPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _start_worker(run: Callable[[Any, torch.device], Any], free: Any) -> None:
    global _run, _device
    torch.set_num_threads(1)
    log.setup_logging(quiet=True)  # no progress bars from workers: the parent shows one for all fits
    _run, _device = run, torch.device(free.get())
    use_device(_device)


def _one_thread(run: Callable[[Any, torch.device], Any], job: Any, device: torch.device) -> Any:
    """`run(job, device)` with one thread, as in a worker, so that results do not depend on the worker count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(job, device)
    finally:
        torch.set_num_threads(threads)


def _call(job: Any) -> Any:
    assert _run is not None and _device is not None, "a FitPool worker started without a job function"
    return _run(job, _device)
