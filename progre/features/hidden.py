"""Hidden states of a frozen encoder, utterance by utterance: the toolkit's one extractor.

`progre features --kind layer` keeps one state of it (the iteration-2 k-means features, through
`layer_features.LayerComputer`), `progre pseudo-speakers` the utterance means of some layers, and
`progre evaluate` caches all of them.

Utterances go through the encoder in padded batches (the encoder is padding-invariant). Those longer
than `chunk_seconds` are cut into consecutive chunks on the 50 Hz grid (`frames.chunk_starts`), each
encoded on its own, and their frames are concatenated: the result has exactly one frame per model
frame of the whole utterance. ProgRE models read their pitch contours from a pitch folder, or
compute them without one (WORLD DIO, slower): per chunk, or with `whole_pitch` per utterance before it
is cut, as `progre features --kind pitch` computes them (the Python API, `progre.api`). It never trains
and never writes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.shards import Utterance
from ..dsp.padding import pad_batch
from ..errors import UserError
from ..device import resolve_precision
from ..frames import MODEL_RATE, chunk_samples, chunk_starts, num_frames
from .computing import StateExtractor
from .store import FeatureStore, read_pitch


class HiddenStateExtractor(StateExtractor):
    """Utterances -> per-utterance (T, S, D) float32 hidden states of `encoder` (the states `states`
    of `encoder.extract`'s, by index; all when None). With precision "bf16" the encoder runs under
    bf16 autocast (the model's own float32 islands stay float32); the states are returned in float32.
    Without a `pitch` folder a ProgRE encoder computes its contours per chunk, or with `whole_pitch`
    over each whole utterance (as the pitch folder holds them)."""

    frame_rate = MODEL_RATE

    def __init__(self, encoder, device: torch.device, pitch: Optional[FeatureStore] = None,
                 chunk_seconds: float = 30.0, states: Optional[list[int]] = None, precision: str = "fp32",
                 whole_pitch: bool = False):
        self.encoder = encoder.to(device).eval()
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.pitch = pitch if encoder.config.pitch_branch else None
        self.whole_pitch = whole_pitch and encoder.config.pitch_branch and pitch is None
        names = encoder.hidden_state_names()
        self.states = list(range(len(names))) if states is None else list(states)
        self.state_names = [names[i] for i in self.states]
        self.dim = encoder.config.encoder_embed_dim
        self.chunk_seconds = chunk_seconds

    @torch.inference_mode()
    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        pieces: list[tuple[int, np.ndarray]] = []  # (utterance position, chunk waveform)
        contours: list[np.ndarray] = []
        length = chunk_samples(self.chunk_seconds)
        for i, utt in enumerate(utts):
            contour = None
            if self.pitch is not None:
                contour = read_pitch(self.pitch, utt.key, len(utt.wav))
            elif self.whole_pitch:
                from ..dsp.pitch import compute_pitch

                contour = compute_pitch(utt.wav)
            for start, first in chunk_starts(len(utt.wav), self.chunk_seconds):
                chunk = utt.wav[start:start + length]
                pieces.append((i, chunk))
                if contour is not None:
                    contours.append(contour[first:first + num_frames(len(chunk))])
        wavs, lengths = pad_batch([c for _, c in pieces], self.device)
        pitch = pad_batch(contours, self.device)[0] if contours else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            states, frame_lengths = self.encoder.extract(wavs, pitch=pitch, lengths=lengths)
        stacked = torch.stack([states[i] for i in self.states], dim=2).float().cpu().numpy()  # (B, T, S, D)
        out: list[list[np.ndarray]] = [[] for _ in utts]
        for row, ((i, _), n) in enumerate(zip(pieces, frame_lengths.tolist())):
            out[i].append(stacked[row, :n])
        return [parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in out]


def layer_state(encoder, layer: int) -> int:
    """Index in `encoder.extract`'s states of transformer layer `layer` (1-based; the speaker layer's
    output after the speaker branch's subtraction)."""
    names = encoder.hidden_state_names()
    n_layers = encoder.config.encoder_layers
    found = [names.index(c) for c in (f"layer{layer}", f"layer{layer}-speaker") if c in names]
    if not found or not 1 <= layer <= n_layers:
        raise UserError(f"layer {layer} is out of range: the checkpoint has {n_layers} transformer layers")
    return found[0]


def load_frozen_encoder(checkpoint: Path, device: torch.device):
    """The encoder of a checkpoint folder, on `device`; a folder that does not load is a one-line UserError."""
    from ..model.checkpoint import load_encoder

    try:
        return load_encoder(checkpoint, device=device)
    except UserError:
        raise
    except Exception as exc:  # anything else a broken folder raises: one line, not a traceback
        raise UserError(f"checkpoint {checkpoint} does not load: {type(exc).__name__}: {exc}") from None
