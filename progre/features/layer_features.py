"""`progre features --kind layer`: one transformer layer's hidden states of a checkpoint (the
iteration-2 k-means features) for the k-means sample into a feature folder, and the computer that
`progre cluster` and `progre pseudo-speakers` use for any utterance (`hidden.HiddenStateExtractor`,
long audio in chunks).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..data.shards import Shards, Utterance
from ..device import use_device
from .computing import FeatureComputer
from .hidden import HiddenStateExtractor, layer_state, load_frozen_encoder
from .store import FeatureStore
from .writing import FeatureSettings, sample_meta, select_sample, write_features


class LayerComputer(FeatureComputer):
    """Hidden states of one transformer layer (1-based) of a checkpoint, at 50 Hz, long audio in
    chunks (`HiddenStateExtractor`). A ProgRE model reads its pitch contours from `pitch` (an opened
    pitch folder), else computes them per chunk; other models ignore `pitch`."""

    kind = "layer"

    def __init__(self, checkpoint: Path, layer: int, device: torch.device, chunk_seconds: float = 30.0,
                 pitch: Optional[FeatureStore] = None, precision: str = "fp32"):
        self.checkpoint = Path(checkpoint)
        encoder = load_frozen_encoder(self.checkpoint, device)
        self.pitch = pitch if encoder.config.pitch_branch else None
        self.layer = layer
        self.extractor = HiddenStateExtractor(encoder, device, self.pitch, chunk_seconds,
                                              [layer_state(encoder, layer)], precision)
        self.state_name = self.extractor.state_names[0]
        self.dim = self.extractor.dim
        self.frame_rate = self.extractor.frame_rate
        self.chunk_seconds = chunk_seconds

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        return [states[:, 0] for states in self.extractor(utts)]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "frame_rate": self.frame_rate, "layer": self.layer,
                "state": self.state_name, "checkpoint": str(self.checkpoint), "chunk_seconds": self.chunk_seconds,
                "pitch": None if self.pitch is None else str(self.pitch.folder),
                "precision": self.extractor.precision}


def write_layer_features(shards: Shards, checkpoint: Path, pitch: Optional[FeatureStore], settings: FeatureSettings,
                         device: torch.device, folder: Path, *, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Write this rank's states of layer `settings.layer` of `checkpoint` for the k-means sample into
    `folder` (rank 0 also its meta.json), stored as `settings.hidden_dtype`; returns the rank's summary."""
    started = time.perf_counter()
    use_device(device)  # this rank's GPU
    keys = select_sample(shards, settings.sample_fraction, settings.sample_split, settings.seed)
    computer = LayerComputer(checkpoint, settings.layer, device, settings.chunk_seconds, pitch, settings.precision)
    return write_features(computer, shards, folder, keys=keys, dtype=settings.hidden_dtype,
                          batch_seconds=settings.batch_seconds, pool=4,  # sorted by length: less padding
                          rank=rank, world_size=world_size, meta=sample_meta(settings, keys), started=started)
