"""Starting `progre pretrain` on every GPU of a node: `pretrain.nproc_per_node` processes under torch's
elastic launcher (`torch.distributed.run`, the code behind `torchrun --standalone`), so that `dvc repro` and
`dvc exp run`, which run the stage's command as one process, train on all of them.

A command already started by torchrun (WORLD_SIZE or LOCAL_RANK in its environment: the multi-node route,
where torchrun on each node started the ranks) runs as it is and never starts others. A rank that stops on a
`UserError` hands its one line to the launcher through torch elastic's error file instead of printing it
(`errors.hand_to_launcher`), and the launcher ends with the first failing rank's line (a rank that crashed
prints its own traceback, and the launcher names it). Nothing here touches the model or the data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import LAUNCHED_RANK, UserError
from ..settings import setting


@dataclass(frozen=True)
class LaunchSettings:
    """How the processes of a pretraining run start and wait for each other (part of the `pretrain` params
    section). Not in the resume key: a checkpoint resumes with any number of processes; as an update reads
    processes x `grad_accum` micro-batches, change `grad_accum` with them to keep the batch."""

    nproc_per_node: str = setting("1", "processes of this node, one per GPU: 1, a number, or auto (one per "
                                       "visible GPU; 1 without CUDA). Above 1, progre pretrain starts itself that "
                                       "many times under torch.distributed.run (torchrun --standalone); each "
                                       "update then reads nproc_per_node x grad_accum micro-batches. Not read "
                                       "under torchrun (several nodes), which starts the processes itself")
    dist_timeout_minutes: float = setting(30.0, "a rank that waits this long for the others in a collective ends "
                                                "the run with an error (a rank died or stalled) instead of "
                                                "hanging: the process group's timeout", above=0.0)

    def __post_init__(self) -> None:
        value = self.nproc_per_node
        if value != "auto" and not (value.isdigit() and int(value) >= 1):
            raise UserError(f"nproc_per_node: expected a number of processes (1 or more) or auto, got {value!r}")


def started_by_torchrun() -> bool:
    """Whether this process is a rank that torchrun (or this module) started."""
    return "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ


def processes_to_start(nproc_per_node: str) -> int:
    """How many processes `progre pretrain` starts on this node: 1 (train here) under torchrun, else
    `nproc_per_node` (auto: the visible GPUs, 1 without CUDA). More processes than GPUs is a UserError
    where there are GPUs; on the CPU any number of gloo processes can run."""
    if started_by_torchrun():
        return 1
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc_per_node == "auto":
        return max(gpus, 1)
    processes = int(nproc_per_node)
    if gpus and processes > gpus:
        raise UserError(f"pretrain.nproc_per_node is {processes}, but this node shows {gpus} GPUs "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): one process per "
                        f"GPU, use {gpus} or auto")
    return processes


def run_ranks(processes: int, argv: list[str]) -> None:
    """Run ``python -m progre.cli ARGV`` as `processes` ranks of one process group on this node, under torch's
    elastic launcher (as ``torchrun --standalone --nproc_per_node N``); returns when every rank has finished.
    A failure is a one-line UserError: the first failing rank's own error line, or which rank crashed (its
    traceback is above) or was killed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", "--nproc_per_node", str(processes), "-m", "progre.cli", *argv])
    loggers = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.distributed.run")]
    levels = [logger.level for logger in loggers]
    before = os.environ.get(LAUNCHED_RANK)
    os.environ[LAUNCHED_RANK] = "1"  # the ranks inherit the environment: their UserErrors come to us
    try:
        # the launcher's own lines (OMP_NUM_THREADS=1 for each rank, which rank failed, SIGTERM to the others)
        # become the one line below
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        run(args)
    except ChildFailedError as exc:
        raise UserError(failure_line(exc.failures, processes)) from None
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if before is None:
            os.environ.pop(LAUNCHED_RANK, None)
        else:
            os.environ[LAUNCHED_RANK] = before


def failure_line(failures: dict, processes: int) -> str:
    """One line for the launcher's user, from torch elastic's failures (rank -> ProcessFailure): the earliest
    error line a rank handed over (`errors.hand_to_launcher`), else the earliest crash or kill."""
    reported = {rank: f for rank, f in failures.items() if f.error_file_data.get("progre")}
    pool = reported or failures
    rank = min(pool, key=lambda r: (pool[r].timestamp, r))
    failure = pool[rank]
    if reported:
        return f"rank {rank} of {processes}: {failure.error_file_data['message']}"
    if failure.exitcode < 0:
        return f"rank {rank} of {processes} was killed by {failure.signal_name()}"
    return f"rank {rank} of {processes} failed with exit status {failure.exitcode} (its traceback is above)"

