"""`progre features --kind mfcc`: HuBERT's iteration-1 features (39-d Kaldi MFCC with deltas at 100 Hz,
`progre.dsp.mfcc`) of the k-means sample into a feature folder, and the computer that `progre cluster`,
`progre pseudo-speakers` and the MFCC upstream use for any utterance.

It never loads a model, so editing the model's code does not invalidate the mfcc stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.shards import Shards, Utterance
from ..dsp import mfcc as mfcc_lib
from ..device import use_device
from ..dsp.padding import pad_batch
from .computing import FeatureComputer
from .writing import FeatureSettings, sample_meta, select_sample, write_features


class MfccComputer(FeatureComputer):
    """39-d Kaldi MFCC + deltas at 100 Hz (HuBERT iteration 1), batched, on CPU or GPU."""

    kind = "mfcc"
    dim = mfcc_lib.DIM
    frame_rate = mfcc_lib.LABEL_RATE

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        wavs, lengths = pad_batch([u.wav for u in utts], self.device)
        feats, frames = mfcc_lib.mfcc_batch(wavs, lengths)
        feats = feats.cpu().numpy()
        return [feats[i, :n] for i, n in enumerate(frames.tolist())]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "frame_rate": self.frame_rate}


def write_mfcc_features(shards: Shards, settings: FeatureSettings, device: torch.device, folder: Path, *,
                        rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Write this rank's MFCC of the k-means sample into `folder` (rank 0 also its meta.json); returns
    the rank's summary."""
    started = time.perf_counter()
    use_device(device)  # this rank's GPU
    keys = select_sample(shards, settings.sample_fraction, settings.sample_split, settings.seed)
    return write_features(MfccComputer(device), shards, folder, keys=keys, dtype="float32",
                          batch_seconds=settings.batch_seconds, pool=1, rank=rank, world_size=world_size,
                          meta=sample_meta(settings, keys), started=started)
