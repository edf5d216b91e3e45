"""Feature computers: batches of utterances -> per-utterance (frames, dim) arrays.

The same computer serves `progre features` (which stores a sample of utterances) and
`progre cluster` (which labels every utterance, computing features on the fly for those not
stored), so both always see identical features. `computer_from_meta` rebuilds a computer
from a feature folder's meta.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..data.shards import Utterance
from ..errors import UserError
from ..frames import SAMPLE_RATE
from . import mfcc as mfcc_lib
from .hidden import HiddenStateExtractor, layer_state, load_frozen_encoder
from .pitch import compute_pitch_and_voicing
from .store import open_pitch_store


class FeatureComputer(Protocol):
    kind: str
    dim: int
    frame_rate: int

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


def batches_by_seconds(utts: Iterable[Utterance], batch_seconds: float, pool: int = 1) -> Iterator[list[Utterance]]:
    """Group utterances into batches of about `batch_seconds` of audio.

    With pool > 1, `pool` batches' worth of utterances are sorted by length before
    batching, so padding stays small (the order inside the output is then by length).
    """
    budget = batch_seconds * SAMPLE_RATE
    buffer: list[Utterance] = []
    for utt in utts:
        buffer.append(utt)
        if sum(len(u.wav) for u in buffer) >= budget * pool:
            yield from _split(buffer, budget, sort=pool > 1)
            buffer = []
    if buffer:
        yield from _split(buffer, budget, sort=pool > 1)


def _split(buffer: list[Utterance], budget: float, sort: bool) -> Iterator[list[Utterance]]:
    items = sorted(buffer, key=lambda u: len(u.wav)) if sort else buffer
    batch: list[Utterance] = []
    longest = 0
    for utt in items:
        longest_if_added = max(longest, len(utt.wav))
        if batch and longest_if_added * (len(batch) + 1) > budget:  # padded size of the batch
            yield batch
            batch, longest_if_added = [], len(utt.wav)
        batch.append(utt)
        longest = longest_if_added
    if batch:
        yield batch


class MfccComputer:
    """39-d Kaldi MFCC + deltas at 100 Hz (HuBERT iteration 1), batched, on CPU or GPU."""

    kind = "mfcc"
    dim = mfcc_lib.DIM
    frame_rate = mfcc_lib.LABEL_RATE

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        wavs, lengths = mfcc_lib.pad_batch([u.wav for u in utts], self.device)
        feats, frames = mfcc_lib.mfcc_batch(wavs, lengths)
        feats = feats.cpu().numpy()
        return [feats[i, :n] for i, n in enumerate(frames.tolist())]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "frame_rate": self.frame_rate}


class LayerComputer:
    """Hidden states of one transformer layer (1-based) of a checkpoint, at 50 Hz, long audio in
    chunks (`HiddenStateExtractor`)."""

    kind = "layer"

    def __init__(self, checkpoint: Path, layer: int, device: torch.device, chunk_seconds: float = 30.0,
                 pitch: Path | None = None, precision: str = "fp32"):
        self.checkpoint = Path(checkpoint)
        encoder = load_frozen_encoder(self.checkpoint, device)
        # a ProgRE model reads pitch contours: from the pitch stage's folder, else computed per chunk
        self.pitch_folder = Path(pitch) if pitch is not None and encoder.config.pitch_branch else None
        store = open_pitch_store(self.pitch_folder) if self.pitch_folder is not None else None
        self.layer = layer
        self.extractor = HiddenStateExtractor(encoder, device, store, chunk_seconds, [layer_state(encoder, layer)],
                                              precision)
        self.state_name = self.extractor.state_names[0]
        self.dim = self.extractor.dim
        self.frame_rate = self.extractor.frame_rate
        self.chunk_seconds = chunk_seconds

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        return [states[:, 0] for states in self.extractor(utts)]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "frame_rate": self.frame_rate, "layer": self.layer,
                "state": self.state_name, "checkpoint": str(self.checkpoint), "chunk_seconds": self.chunk_seconds,
                "pitch": None if self.pitch_folder is None else str(self.pitch_folder),
                "precision": self.extractor.precision}


def computer_from_meta(meta: dict[str, Any], device: torch.device) -> FeatureComputer:
    """Rebuild the computer that produced a feature folder (for features of unsampled utterances),
    chunking included: chunks are normalised and attended to on their own, so they shape the features."""
    if meta["kind"] == "mfcc":
        return MfccComputer(device)
    if meta["kind"] == "layer":
        checkpoint = Path(meta["checkpoint"])
        if not checkpoint.exists():
            raise UserError(f"the features were computed with checkpoint {checkpoint}, which no longer exists")
        # in the folder's precision (a bf16 folder is labelled in bf16 on the CPU too)
        return LayerComputer(checkpoint, int(meta["layer"]), device, float(meta.get("chunk_seconds", 30.0)),
                             meta.get("pitch"), meta.get("precision", "fp32"))
    raise UserError(f"cannot cluster features of kind {meta['kind']!r} (use mfcc or layer features)")


def pitch_of(utt: Utterance) -> tuple[str, np.ndarray, float, float]:
    """(key, (T, 1) contour, voiced fraction, audio seconds) of one utterance; runs in worker processes."""
    contour, voiced = compute_pitch_and_voicing(utt.wav)
    return utt.key, contour[:, None], float(voiced.mean()) if len(voiced) else 0.0, len(utt.wav) / SAMPLE_RATE
