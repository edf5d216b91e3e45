"""HuBERT's iteration-1 features: Kaldi MFCC + deltas + delta-deltas, batched over utterances.

The recipe is fairseq's ``dump_mfcc_feature.py``: ``torchaudio.compliance.kaldi.mfcc`` on the
float waveform with ``use_energy=False`` (13 cepstra, 23 mel bins, 25 ms / 10 ms frames, no
dither, snip edges, pre-emphasis 0.97, Povey window, 512-point FFT, lifter 22), then
``torchaudio.functional.compute_deltas`` twice (window 5, edge frames replicated), giving
39 dims at 100 Hz without CMVN.

`mfcc_batch` computes the same numbers for a padded batch in one pass (frames of all
utterances go through one FFT and one matrix product), on CPU or GPU. Deltas need each
utterance's own last frame replicated past its end, so padded frames are filled with it
before each delta.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torchaudio.functional as AF
from torchaudio.compliance import kaldi

from ..frames import MFCC_RATE, SAMPLE_RATE, WINDOW, hop, num_frames

SHIFT = hop(MFCC_RATE)  # 160 samples, 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 23
NUM_CEPS = 13
PREEMPHASIS = 0.97
LIFTER = 22.0
DELTA_WINDOW = 5
DIM = 3 * NUM_CEPS
LABEL_RATE = MFCC_RATE  # frames per second


def mfcc_reference(wav: torch.Tensor) -> torch.Tensor:
    """fairseq's per-utterance loop body: (N,) float waveform -> (frames, 39)."""
    ceps = kaldi.mfcc(wav.unsqueeze(0), sample_frequency=SAMPLE_RATE, use_energy=False).transpose(0, 1)
    deltas = AF.compute_deltas(ceps)
    ddeltas = AF.compute_deltas(deltas)
    return torch.cat([ceps, deltas, ddeltas], dim=0).transpose(0, 1).contiguous()


@lru_cache(maxsize=8)
def _constants(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Povey window (N,), mel filterbank (bins, F) and liftered DCT (bins, ceps)."""
    window = torch.hann_window(WINDOW, periodic=False, dtype=torch.float64).pow(0.85)
    banks, _ = kaldi.get_mel_banks(NUM_MEL_BINS, FFT_SIZE, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
    banks = torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin carries no mel weight
    dct = AF.create_dct(NUM_MEL_BINS, NUM_MEL_BINS, "ortho")
    dct[:, 0] = math.sqrt(1.0 / NUM_MEL_BINS)  # Kaldi's C0 scaling
    lifter = 1.0 + 0.5 * LIFTER * torch.sin(math.pi * torch.arange(NUM_CEPS) / LIFTER)
    dct = dct[:, :NUM_CEPS] * lifter
    return (window.to(device, dtype), banks.to(device, dtype), dct.to(device, dtype))


def _power_spectrum(frames: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """(n, 400) raw frames -> (n, 257) power spectra after DC removal, pre-emphasis and window.

    Pre-emphasis is linear, so it is applied to the raw frame and the DC offset removed after:
    (x_j - m) - 0.97 (x_{j-1} - m) = x_j - 0.97 x_{j-1} - 0.03 m, and likewise 0.03 (x_0 - m)
    for the first sample, whose predecessor Kaldi takes to be itself.
    """
    mean = frames.mean(dim=1, keepdim=True)
    emphasised = torch.empty(frames.shape, dtype=frames.dtype, device=frames.device)
    torch.sub(frames[:, 1:], frames[:, :-1], alpha=PREEMPHASIS, out=emphasised[:, 1:])
    emphasised[:, 0] = frames[:, 0] * (1.0 - PREEMPHASIS)
    emphasised.sub_((1.0 - PREEMPHASIS) * mean).mul_(window)
    spectrum = torch.fft.rfft(emphasised, n=FFT_SIZE)
    return spectrum.real.square() + spectrum.imag.square()


def _replicate_past_end(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D): frames at or beyond each length become a copy of that utterance's last frame."""
    t = torch.arange(x.shape[1], device=x.device)
    index = torch.minimum(t.unsqueeze(0), (lengths - 1).clamp(min=0).unsqueeze(1))
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def _deltas(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """compute_deltas over time for (B, T, D), replicating each utterance's own edge frames."""
    x = _replicate_past_end(x, lengths)
    return AF.compute_deltas(x.transpose(1, 2), win_length=DELTA_WINDOW).transpose(1, 2)


def mfcc_batch(wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) padded float waveforms + sample lengths -> ((B, T, 39) features, (B,) frame lengths).

    Frames past an utterance's length are zero. Equal to `mfcc_reference` per utterance.
    """
    if wavs.dim() != 2:
        raise ValueError(f"expected (batch, samples), got shape {tuple(wavs.shape)}")
    window, banks, dct = _constants(str(wavs.device), wavs.dtype)
    frame_lengths = num_frames(lengths, MFCC_RATE)
    frames = wavs.unfold(1, WINDOW, SHIFT)  # (B, T, 400) view; T from the longest utterance
    spectrum = torch.zeros(*frames.shape[:2], FFT_SIZE // 2 + 1, device=wavs.device, dtype=wavs.dtype)
    chunk = 2048 if wavs.device.type == "cpu" else 65536  # rows that stay in cache on CPU
    for b, n in enumerate(frame_lengths.tolist()):
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            spectrum[b, start:stop] = _power_spectrum(frames[b, start:stop], window)
    eps = torch.finfo(wavs.dtype).eps
    log_mel = torch.clamp(spectrum @ banks.T, min=eps).log()
    ceps = log_mel @ dct
    deltas = _deltas(ceps, frame_lengths)
    ddeltas = _deltas(deltas, frame_lengths)
    feats = torch.cat([ceps, deltas, ddeltas], dim=2)
    valid = torch.arange(feats.shape[1], device=feats.device).unsqueeze(0) < frame_lengths.unsqueeze(1)
    return feats * valid.unsqueeze(-1), frame_lengths

