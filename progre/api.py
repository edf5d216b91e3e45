"""The Python API for features: `progre.load(path)` and `Model.hidden_states(wav, sample_rate)`.

    import progre
    model = progre.load("runs/iter2/progre/model")           # or a run folder, an export, an import
    states = model.hidden_states(wav, sample_rate=16000)    # list of (T, D) tensors, model.state_names
    batch = model.hidden_states([wav1, wav2])               # BatchStates: (B, T, D) each, padded, lengths

The states are the pipeline's own: the same extractor (`features.hidden.HiddenStateExtractor`) that
`progre evaluate` caches and `progre features --kind layer` stores, with a ProgRE model's pitch contours
computed from each whole utterance as `progre features --kind pitch` computes them (`dsp.pitch`). Audio at
another sample rate is resampled to 16 kHz (`audio.resample`). The model is frozen (inference only); it
never writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .audio import resample
from .data.shards import Utterance
from .features.hidden import HiddenStateExtractor
from .frames import MODEL_RATE, SAMPLE_RATE, WINDOW
from .model.encoder import ProgREEncoder
from .model.export import load_model_folder

Waveform = Union[Tensor, np.ndarray, Sequence[float]]


@dataclass
class BatchStates:
    """The hidden states of a batch of B waveforms, zero-padded to the longest one's T frames."""

    states: list[Tensor]
    """(B, T, D) per state, in the order of `names`."""
    lengths: Tensor
    """(B,) long: valid frames of each waveform."""
    padding_mask: Tensor
    """(B, T) bool: True on padded frames."""
    names: list[str]

    def __getitem__(self, name: str) -> Tensor:
        """The (B, T, D) state called `name` ("layer6", "speaker", ...)."""
        return self.states[self.names.index(name)]


class Model:
    """A frozen progre encoder (ProgRE or HuBERT) that turns waveforms into its hidden states.

    `state_names` says what each state is: ProgRE's are "pitch" (the pitch branch's output), "layer1" ...
    "layer<k>", "speaker" (the speaker branch's output after layer k), "layer<k>-speaker" (layer k minus
    the speaker output: the input of layer k+1), then "layer<k+1>" ... (k = 4 in Base, 2 in the tiny
    demo model); HuBERT's are "input" (the first Transformer layer's input) and "layer1" ...
    """

    frame_rate = MODEL_RATE
    """Frames per second of every state (50: one per 320 samples, 400-sample windows)."""
    sample_rate = SAMPLE_RATE
    """The rate the model hears; other rates are resampled to it."""

    def __init__(self, encoder: ProgREEncoder, source: Path, device: Union[str, torch.device] = "cpu",
                 precision: str = "fp32", chunk_seconds: float = 30.0):
        self.encoder = encoder.eval()
        self.source = Path(source)
        self.precision = precision
        self.chunk_seconds = chunk_seconds
        self.state_names: list[str] = encoder.hidden_state_names()
        self.dim: int = encoder.config.encoder_embed_dim
        self.to(device)

    @property
    def config(self):
        """The `ModelConfig` of the encoder."""
        return self.encoder.config

    @property
    def kind(self) -> str:
        """"progre" or "hubert"."""
        return self.encoder.config.kind

    @property
    def device(self) -> torch.device:
        return self._extractor.device

    def to(self, device: Union[str, torch.device]) -> "Model":
        """Run on `device` ("cuda", "cpu", ...) from now on; returns the model."""
        device = torch.device(device)
        self._extractor = HiddenStateExtractor(self.encoder, device, None, self.chunk_seconds,
                                               precision=self.precision, whole_pitch=True)
        return self

    def cuda(self) -> "Model":
        return self.to("cuda")

    def cpu(self) -> "Model":
        return self.to("cpu")

    def hidden_states(self, wav: Union[Waveform, list[Waveform]],
                      sample_rate: int = SAMPLE_RATE) -> Union[list[Tensor], BatchStates]:
        """Every hidden state of one waveform (1-D: a tensor, array or list of samples, mono) as a list of
        (T, D) float32 tensors on the model's device, in the order of `state_names`; of a list (or tuple)
        of waveforms as `BatchStates`. T = floor((N - 400) / 320) + 1 for N samples at 16 kHz."""
        if isinstance(wav, (list, tuple)) and wav and not np.isscalar(wav[0]):
            return self._batch([self._prepare(w, sample_rate, i) for i, w in enumerate(wav)])
        single = self._batch([self._prepare(wav, sample_rate, 0)])
        return [state[0] for state in single.states]

    __call__ = hidden_states

    def _prepare(self, wav: Waveform, sample_rate: int, index: int) -> np.ndarray:
        """A waveform as 16 kHz mono float32 numpy, checked."""
        array = wav.detach().float().cpu().numpy() if isinstance(wav, Tensor) else np.asarray(wav, dtype=np.float32)
        if array.ndim != 1:
            raise ValueError(f"waveform {index} has shape {tuple(array.shape)}: pass 1-D mono waveforms (a list of "
                             f"them for a batch)")
        if not np.isfinite(array).all():
            raise ValueError(f"waveform {index} has non-finite samples (NaN or inf)")
        array = resample(np.ascontiguousarray(array, dtype=np.float32), int(sample_rate))
        if len(array) < WINDOW:
            raise ValueError(f"waveform {index} has {len(array)} samples at {SAMPLE_RATE} Hz, fewer than one frame "
                             f"({WINDOW})")
        return array

    def _batch(self, wavs: list[np.ndarray]) -> BatchStates:
        per_utt = self._extractor([Utterance(str(i), w, {}) for i, w in enumerate(wavs)])  # (T, S, D) each
        lengths = torch.tensor([len(s) for s in per_utt], dtype=torch.long)
        frames = int(lengths.max())
        stacked = torch.zeros(len(wavs), frames, len(self.state_names), self.dim)
        for i, states in enumerate(per_utt):
            stacked[i, :len(states)] = torch.from_numpy(states)
        stacked = stacked.to(self.device)
        padding = torch.arange(frames) >= lengths[:, None]
        return BatchStates([stacked[:, :, s] for s in range(len(self.state_names))], lengths.to(self.device),
                           padding.to(self.device), list(self.state_names))

    def __repr__(self) -> str:
        return (f"progre.Model({self.kind}, {len(self.state_names)} states of {self.dim} dims, from {self.source}, "
                f"on {self.device})")


def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu", precision: str = "fp32",
         chunk_seconds: float = 30.0) -> Model:
    """The model of `path`: a checkpoint folder of ours (a run's `model/`, an export, an imported release
    checkpoint made by `progre import-official`), a run folder, an export in the release's layout or a
    transformers export (`model.export.load_model_folder`). `precision` "bf16" runs under bf16 autocast on
    CUDA; utterances longer than `chunk_seconds` are encoded in chunks, as the pipeline does."""
    found = load_model_folder(Path(path))
    return Model(found.encoder, found.folder, device, precision, chunk_seconds)
