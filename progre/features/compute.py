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

from ..audio import SAMPLE_RATE, num_frames
from ..data.reader import Utterance
from ..errors import UserError
from . import mfcc as mfcc_lib
from .pitch import pitch_contour_and_voicing
from .store import open_pitch_store, pitch_contour


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
    """Hidden states of one transformer layer (1-based) of a checkpoint, at 50 Hz.

    Utterances longer than `chunk_seconds` go through the model in consecutive chunks whose
    frames line up exactly with the whole utterance's frames (chunk starts on a multiple of
    the 320-sample hop and carries the 80 extra samples the last frame needs).
    """

    kind = "layer"
    frame_rate = SAMPLE_RATE // 320

    def __init__(self, checkpoint: Path, layer: int, device: torch.device, chunk_seconds: float = 30.0,
                 pitch: Path | None = None):
        from ..model.checkpoint import load_encoder

        self.checkpoint = Path(checkpoint)
        self.encoder = load_encoder(self.checkpoint, device=device).eval()
        self.device = device
        # a ProgRE model reads pitch contours: from the pitch stage's folder, else computed per chunk
        self.pitch_folder = Path(pitch) if pitch is not None and self.encoder.config.pitch_branch else None
        self.pitch = open_pitch_store(self.pitch_folder) if self.pitch_folder is not None else None
        names = self.encoder.hidden_state_names()
        candidates = [f"layer{layer}", f"layer{layer}-speaker"]
        found = [names.index(c) for c in candidates if c in names]
        n_layers = self.encoder.config.encoder_layers
        if not found or not 1 <= layer <= n_layers:
            raise UserError(f"layer {layer} is out of range: the checkpoint has {n_layers} transformer layers")
        self.layer, self.state_index = layer, found[0]
        self.state_name = names[self.state_index]
        self.dim = self.encoder.config.encoder_embed_dim
        self.chunk_seconds = chunk_seconds
        frames_per_chunk = max(1, int(chunk_seconds * SAMPLE_RATE) // 320)
        self.chunk_hop = frames_per_chunk * 320

    @torch.no_grad()
    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        pieces: list[tuple[int, np.ndarray]] = []  # (utterance position, chunk waveform)
        contours: list[np.ndarray] = []
        for i, utt in enumerate(utts):
            contour = pitch_contour(self.pitch, utt.key, len(utt.wav)) if self.pitch is not None else None
            for start in range(0, max(len(utt.wav) - 400, 0) + 1, self.chunk_hop):
                chunk = utt.wav[start:start + self.chunk_hop + 80]
                if num_frames(len(chunk)) > 0:
                    pieces.append((i, chunk))
                    if contour is not None:
                        first = start // 320
                        contours.append(contour[first:first + num_frames(len(chunk))])
        wavs, lengths = mfcc_lib.pad_batch([c for _, c in pieces], self.device)
        pitch = mfcc_lib.pad_batch(contours, self.device)[0] if contours else None
        states, frame_lengths = self.encoder.extract(wavs, pitch=pitch, lengths=lengths)
        layer = states[self.state_index].float().cpu().numpy()
        out: list[list[np.ndarray]] = [[] for _ in utts]
        for row, ((i, _), n) in enumerate(zip(pieces, frame_lengths.tolist())):
            out[i].append(layer[row, :n])
        return [np.concatenate(parts) for parts in out]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "frame_rate": self.frame_rate, "layer": self.layer,
                "state": self.state_name, "checkpoint": str(self.checkpoint), "chunk_seconds": self.chunk_seconds,
                "pitch": None if self.pitch_folder is None else str(self.pitch_folder)}


def computer_from_meta(meta: dict[str, Any], device: torch.device) -> FeatureComputer:
    """Rebuild the computer that produced a feature folder (for features of unsampled utterances),
    chunking included: chunks are normalised and attended to on their own, so they shape the features."""
    if meta["kind"] == "mfcc":
        return MfccComputer(device)
    if meta["kind"] == "layer":
        checkpoint = Path(meta["checkpoint"])
        if not checkpoint.exists():
            raise UserError(f"the features were computed with checkpoint {checkpoint}, which no longer exists")
        return LayerComputer(checkpoint, int(meta["layer"]), device, float(meta.get("chunk_seconds", 30.0)),
                             meta.get("pitch"))
    raise UserError(f"cannot cluster features of kind {meta['kind']!r} (use mfcc or layer features)")


def pitch_of(utt: Utterance) -> tuple[str, np.ndarray, float, float]:
    """(key, (T, 1) contour, voiced fraction, audio seconds) of one utterance; runs in worker processes."""
    contour, voiced = pitch_contour_and_voicing(utt.wav)
    return utt.key, contour[:, None], float(voiced.mean()) if len(voiced) else 0.0, len(utt.wav) / SAMPLE_RATE
