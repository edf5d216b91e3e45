"""Resumable training checkpoints: ``step-NNNNNNNN/{model/, state.pt}``, newest K kept.

`model/` is an ordinary checkpoint folder (safetensors weights + config.json, heads included);
`state.pt` holds the optimizer state, the update count and what the run trains on. Each folder
is written under a temporary name and renamed when complete, so a kill at any moment leaves
the previous checkpoints as they were; older ones are deleted only after a new one exists, and
temporary folders of killed writes are removed by the next run. A checkpoint that no longer loads
(a truncated file) is moved to ``broken/`` beside the checkpoints with a warning, and the one
before it is used.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io import atomic_dir, recover_work_folders
from ..log import logger
from ..model.checkpoint import load_pretrain_model, write_checkpoint

STATE = "state.pt"


class CheckpointStore:
    def __init__(self, folder: Path, keep_last: int):
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.broken = self.folder.parent / "broken"

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [d for d in self.folder.glob("step-*") if (d / STATE).is_file() and (d / "model").is_dir()]
        return sorted(found, key=lambda d: int(d.name.split("-")[1]))

    def remove_leftovers(self) -> None:
        """Temporary folders of checkpoint writes that a kill interrupted (`io.recover_work_folders`; and
        those of earlier versions, ``.step-N.<random>.tmp`` and ``.step-N.old``)."""
        for line in recover_work_folders(self.folder, writer="a checkpoint write"):
            logger.info("%s", line)
        for leftover in [*self.folder.glob(".step-*.tmp"), *self.folder.glob(".step-*.old")]:
            shutil.rmtree(leftover, ignore_errors=True)
            logger.info("removed %s, left by a checkpoint write that was killed", leftover)

    def load_latest(self, device: torch.device) -> tuple[Path, dict[str, Any], Any] | None:
        """(folder, training state, pretraining model) of the newest checkpoint that loads, or None.
        Newer checkpoints that do not load are listed in `self.unloadable` (set them aside with
        `set_aside_unloadable` once every rank has read them)."""
        self.unloadable: list[tuple[Path, str]] = []
        for folder in reversed(self.complete()):
            try:
                state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
                model = load_pretrain_model(folder / "model", device=device)
            except Exception as exc:  # a truncated or foreign file: any reader error means "broken"
                self.unloadable.append((folder, str(exc).strip().splitlines()[0] if str(exc).strip()
                                        else type(exc).__name__))
                continue
            return folder, state, model
        return None

    def set_aside_unloadable(self) -> None:
        for folder, reason in getattr(self, "unloadable", []):
            self.broken.mkdir(parents=True, exist_ok=True)
            target = self.broken / folder.name
            shutil.rmtree(target, ignore_errors=True)
            os.replace(folder, target)
            logger.warning("checkpoint %s does not load (%s): moved to %s; resuming from the one before",
                           folder, reason, target)

    def save(self, step: int, model, state: dict[str, Any], extra: dict[str, Any]) -> Path:
        target = self.folder / f"step-{step:08d}"
        try:
            with atomic_dir(target, overwrite=True) as tmp:
                (tmp / "model").mkdir()
                write_checkpoint(tmp / "model", model, extra)
                torch.save(state, tmp / STATE)
        except OSError as exc:
            reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise UserError(f"could not write checkpoint {target} ({reason}); the previous checkpoints are "
                            f"intact, rerun the same command to resume once fixed") from None
        for old in self.complete()[:-self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        logger.debug("checkpoint %s written", target)
        return target
