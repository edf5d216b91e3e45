"""`progre features --kind pitch`: the pitch contour of every utterance of every split into a feature
folder (WORLD DIO, `progre.dsp.pitch`), one utterance per task in worker processes.

It never loads a model, so editing the model's code does not invalidate the pitch stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.shards import Shards, Utterance
from ..dsp.pitch import compute_pitch_and_voicing
from ..frames import MODEL_RATE
from ..log import logger
from ..parallel import WorkerPool
from .computing import FeatureComputer
from .writing import FeatureSettings, write_features


class PitchComputer(FeatureComputer):
    """(T, 1) pitch contours at 50 Hz (log F0 z-normalised over voiced frames, unvoiced 0), computed in
    `workers` spawned processes that live as long as the computer (in this process with one worker).
    It keeps the keys of the utterances without a voiced frame (`unvoiced`)."""

    kind = "pitch"
    dim = 1
    frame_rate = MODEL_RATE

    def __init__(self, workers: int):
        self.pool = WorkerPool(workers)
        self.unvoiced: list[str] = []

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        contours = []
        # one utterance per task: the workers finish a batch together
        results = self.pool.map(compute_pitch_and_voicing, [u.wav for u in utts], chunksize=1)
        for utt, (contour, voiced) in zip(utts, results):
            if not voiced.any():
                self.unvoiced.append(utt.key)
            contours.append(contour[:, None])
        return contours

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "frame_rate": self.frame_rate,
                "method": "WORLD DIO, 20 ms, log F0 z-normalised over voiced frames, unvoiced 0"}

    def summary(self) -> dict[str, Any]:
        return {"unvoiced_utterances": len(self.unvoiced), "unvoiced_keys": list(self.unvoiced)}

    def close(self) -> None:
        self.pool.close()


def write_pitch_features(shards: Shards, settings: FeatureSettings, folder: Path, *, rank: int = 0,
                         world_size: int = 1) -> dict[str, Any]:
    """Write this rank's pitch contours (every utterance) into `folder` (rank 0 also its meta.json);
    returns the rank's summary, with the utterances that have no voiced frame (their contour is all
    zeros)."""
    started = time.perf_counter()
    with PitchComputer(settings.workers) as computer:
        stats = write_features(computer, shards, folder, keys=None, dtype="float32",
                               batch_seconds=settings.batch_seconds, pool=1, rank=rank, world_size=world_size,
                               meta={}, started=started)
    unvoiced = stats["unvoiced_keys"]
    if unvoiced:
        logger.warning("%d utterances have no voiced frame (their pitch input is all zeros): %s%s",
                       len(unvoiced), ", ".join(unvoiced[:10]), " ..." if len(unvoiced) > 10 else "")
    return stats
