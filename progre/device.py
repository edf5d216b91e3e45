"""Device and precision choice shared by every stage: CUDA when present (or asked for), else CPU; bf16
autocast on CUDA, float32 elsewhere; one GPU per rank when several processes share a node."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str = "auto") -> torch.device:
    """auto: CUDA when torch sees it, else the CPU; cuda without a CUDA device is a UserError."""
    import torch  # here, so that the CLI's parameter declarations can read the choices above without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA device is available")
    return torch.device(name)


def rank_device(name: str = "auto", rank: int = 0) -> torch.device:
    """The device of one rank of several: `resolve_device(name)`, and on CUDA this rank's GPU of its node,
    ``cuda:LOCAL_RANK`` under torchrun, else (ranks started by hand with --rank/--world-size) the rank modulo
    the visible GPUs. Changes no CUDA state: the caller selects the GPU if it needs to."""
    import torch

    device = resolve_device(name)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    local = os.environ.get("LOCAL_RANK")
    index = int(local) if local is not None else rank % count
    if not 0 <= index < count:
        raise UserError(f"LOCAL_RANK {index} needs GPU {index}, but this node shows {count} "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most "
                        f"{count} processes per node")
    return torch.device("cuda", index)


def use_device(device: torch.device) -> None:
    """Make a CUDA `device` the current one, so that work naming no device (a CUDA context, cuDNN's handles)
    stays on this rank's GPU instead of every rank's landing on cuda:0; nothing on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" is bf16 autocast on CUDA and fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision
