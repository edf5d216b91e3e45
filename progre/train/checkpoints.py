"""Resumable training checkpoints: ``step-NNNNNNNN/{model/, state.pt}``, newest K kept.

`model/` is an ordinary checkpoint folder (safetensors weights + config.json, heads included);
`state.pt` holds the optimizer state, the update count and what the run trains on. Each folder
is written under a temporary name and renamed when complete, so a kill at any moment leaves
the previous checkpoints as they were; older ones are deleted only after a new one exists.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io import atomic_dir
from ..log import logger
from ..model.checkpoint import write_checkpoint


class CheckpointStore:
    def __init__(self, folder: Path, keep_last: int):
        self.folder = Path(folder)
        self.keep_last = keep_last

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [d for d in self.folder.glob("step-*") if (d / "state.pt").is_file() and (d / "model").is_dir()]
        return sorted(found, key=lambda d: int(d.name.split("-")[1]))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, step: int, model, state: dict[str, Any], extra: dict[str, Any]) -> Path:
        target = self.folder / f"step-{step:08d}"
        try:
            with atomic_dir(target, overwrite=True) as tmp:
                (tmp / "model").mkdir()
                write_checkpoint(tmp / "model", model, extra)
                torch.save(state, tmp / "state.pt")
        except OSError as exc:
            reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise UserError(f"could not write checkpoint {target} ({reason}); the previous checkpoints are "
                            f"intact, rerun the same command to resume once fixed") from None
        for old in self.complete()[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        logger.debug("checkpoint %s written", target)
        return target
