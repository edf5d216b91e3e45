"""torchrun / DDP set-up: one process per device, gloo on CPU, NCCL on CUDA, with a timeout on every
collective; the check that every rank sees rank 0's run folder; and collectives that did not complete turned
into one line."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..device import rank_device, use_device
from ..errors import UserError
from ..io import write_json


@dataclass
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    timeout_minutes: float = 30.0
    """How long a collective waits for the other ranks (the process group's timeout)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group that torchrun describes in the environment (or run alone), on this rank's
    GPU of its node (`device.rank_device`: cuda:LOCAL_RANK); a collective that waits `timeout_minutes` for
    the other ranks raises instead of hanging (gloo raises; NCCL's watchdog ends the process)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    dev = rank_device(device, rank)
    use_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(rank, world_size, dev, timeout_minutes)


def all_true(flag: bool, info: DistInfo) -> bool:
    """True only if `flag` holds on every rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in one process)."""
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if not info.enabled or not values:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {n: float(v) / info.world_size for n, v in zip(names, t.tolist())}


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


RANKS_TOKEN = ".progre-ranks.json"
"""Rank 0's token in the run folder, read by every rank at start (`check_shared_run_folder`)."""
SHARED_FOLDER_WAIT_SECONDS = 60.0
"""How long a rank looks for rank 0's token (a network file system may show a new file late; at most half
the process group's timeout)."""


def check_shared_run_folder(folder: Path, checkpoints: Callable[[], list[str]], info: DistInfo) -> None:
    """Every rank sees rank 0's run folder, and in it the same newest checkpoint (`checkpoints()` lists the
    complete ones, oldest first); otherwise every rank stops with the same one-line UserError. Without this
    check a rank that cannot see rank 0's checkpoints (its --out on a disk of its own node) starts from update
    0 while rank 0 resumes, and the run diverges or hangs.

    Rank 0 writes a token (a random nonce and the newest checkpoint's name) into the folder and sends it to the
    others through the process group; each rank reads the token from its own `folder`, waiting a little for a
    network file system to show it, and the ranks gather what they found."""
    if not info.enabled:
        return
    folder = Path(folder)
    token = None
    if info.is_main:
        token = {"nonce": secrets.token_hex(16), "latest": _newest(checkpoints)}
        write_json(folder / RANKS_TOKEN, token)
    sent = [token]
    dist.broadcast_object_list(sent, src=0)
    wanted = sent[0]
    deadline = time.monotonic() + min(SHARED_FOLDER_WAIT_SECONDS, info.timeout_minutes * 30.0)
    while (problem := _token_problem(folder, wanted, checkpoints)) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    found: list = [None] * info.world_size
    dist.all_gather_object(found, (str(folder.absolute()), problem))
    if info.is_main:
        (folder / RANKS_TOKEN).unlink(missing_ok=True)
    failed = [(rank, path, problem) for rank, (path, problem) in enumerate(found) if problem is not None]
    if failed:
        rank, path, problem = failed[0]
        others = f" (and {len(failed) - 1} more rank{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
        raise UserError(f"rank {rank}{others} does not see the run folder of rank 0, {found[0][0]}: in its --out "
                        f"{path} {problem}. --out must be a folder on storage that all nodes share (the same folder "
                        f"on every node), or the ranks would train from different checkpoints")


def _newest(checkpoints: Callable[[], list[str]]) -> str | None:
    names = checkpoints()
    return names[-1] if names else None


def _token_problem(folder: Path, wanted: dict, checkpoints: Callable[[], list[str]]) -> str | None:
    """What this rank finds wrong with rank 0's token in `folder`, or None."""
    try:
        seen = json.loads((folder / RANKS_TOKEN).read_text())
    except FileNotFoundError:
        return "there is no token of rank 0"
    except (OSError, ValueError) as exc:
        return f"the token of rank 0 does not read ({exc})"
    if seen.get("nonce") != wanted["nonce"]:
        return "the token is not this run's"
    newest = _newest(checkpoints)
    if newest != wanted["latest"]:
        return f"the newest checkpoint is {newest or 'none'}, rank 0's {wanted['latest'] or 'none'}"
    return None


PEER_FAILURES = ("timed out", "connection closed by peer", "connection reset by peer")
"""What gloo says when a collective did not complete (a rank died or stalled)."""


@contextmanager
def collective_errors(info: DistInfo) -> Iterator[None]:
    """A collective that timed out or lost a rank becomes a one-line UserError naming this rank (other errors
    pass through)."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed.DistError is one too
        text = str(exc).strip()
        if not info.enabled or not (isinstance(exc, dist.DistError) or
                                    any(s in text.lower() for s in PEER_FAILURES)):
            raise
        detail = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[-1]) if text else type(exc).__name__  # gloo's [file:line]
        raise UserError(f"rank {info.rank} of {info.world_size}: the other ranks did not answer ({detail}): a rank "
                        f"died or waited for more than pretrain.dist_timeout_minutes ({info.timeout_minutes:g}); "
                        f"its own error says why, and the same command resumes from the last checkpoint") from None
