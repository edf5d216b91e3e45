"""WORLD vocoder features for voice conversion: 16 kHz speech to F0, a coded spectral envelope and
coded band aperiodicity every 10 ms, and back to audio.

A voice conversion head predicts the target speaker's envelope (and aperiodicity) from the
upstream's 50 Hz frames; WORLD turns them, with the source's F0 moved to the target's range
(`convert_f0`), into audio. The analysis is DIO + StoneMask F0 (floor 40 Hz, as
progre/data/voice_quality.py, so low voices stay voiced), CheapTrick envelope and D4C
aperiodicity, FFT size 2048 (CheapTrick's size for that floor); pyworld codes them:

- the envelope with `code_spectral_envelope` to ENVELOPE_DIM = 40 coefficients (a DCT of the log
  envelope on a mel axis; not SPTK's all-pass mel-cepstrum). 40 is where the coding stops
  mattering to the VC metric: on three eSpeak utterances, the frame-by-frame MCD (c1..c24)
  between the analysed envelope and the coded-and-decoded one is 0.91 dB at 24 coefficients,
  0.11 at 30, 0.04 at 40 and 0.02 at 60, while analysis and resynthesis alone cost 3.5-4.1 dB
  on the same speech; the coding's log-spectral distortion is 3.3, 2.6, 1.9 and 1.3 dB. More
  coefficients would give the head more outputs for nothing the metric sees;
- the aperiodicity with `code_aperiodicity` to WORLD's 3 kHz-spaced bands below fs/2 - 3 kHz:
  one band, centred on 3 kHz, at 16 kHz.

Frames: WORLD frame t is centred on sample 160 t, so N samples give N // 160 + 1 frames
(`world_num_frames`). A model frame i covers samples [320 i, 320 i + 400) (progre/frames.py),
centred on 320 i + 200; WORLD frames 2 i + 1 and 2 i + 2 lie 2.5 and 7.5 ms from that centre and
each is nearer to it than to any other model frame's, so `model_frame_index` maps WORLD frame t
to model frame (t - 1) // 2, clipped to the model's frames: WORLD frame 0 and the up to two
frames after the last model frame's pair repeat the edge model frames. A head therefore
predicts exactly the source's WORLD frame count (two per model frame, plus one to three at the
edges), and synthesis gives audio of the source's length (`synthesise(..., num_samples=N)`).

Speed per 3 s utterance, one thread, CPU time on this project's 2-core dev machine (wall time was
about twice that under load): `analyse` 65 ms, `synthesise` 53 ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyworld

from ..errors import UserError
from ..frames import MODEL_HOP, SAMPLE_RATE

FRAME_PERIOD_MS = 10.0
WORLD_HOP = SAMPLE_RATE * int(FRAME_PERIOD_MS) // 1000
"""160 samples: two WORLD frames per 320-sample model frame."""
F0_FLOOR_HZ = 40.0
F0_CEIL_HZ = 800.0
FFT_SIZE = pyworld.get_cheaptrick_fft_size(SAMPLE_RATE, F0_FLOOR_HZ)
ENVELOPE_DIM = 40


@dataclass
class WorldFeatures:
    """One utterance's WORLD features, one row per 10 ms frame."""

    f0: np.ndarray  # (T,) Hz, 0 where unvoiced
    envelope: np.ndarray  # (T, D_sp) coded spectral envelope (pyworld.code_spectral_envelope)
    aperiodicity: np.ndarray  # (T, D_ap) coded band aperiodicity (pyworld.code_aperiodicity)

    @property
    def num_frames(self) -> int:
        return len(self.f0)


def f0_and_envelope(wav: np.ndarray, frame_period_ms: float = FRAME_PERIOD_MS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F0 in Hz, frame times in s, CheapTrick power envelope (T, FFT_SIZE // 2 + 1)) of 16 kHz `wav`."""
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, times = pyworld.dio(x, SAMPLE_RATE, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=frame_period_ms)
    f0 = pyworld.stonemask(x, f0, times, SAMPLE_RATE)
    envelope = pyworld.cheaptrick(x, f0, times, SAMPLE_RATE, f0_floor=F0_FLOOR_HZ, fft_size=FFT_SIZE)
    return f0, times, envelope


def analyse(wav: np.ndarray, envelope_dim: int = ENVELOPE_DIM) -> WorldFeatures:
    """WORLD features of 16 kHz mono `wav`: world_num_frames(len(wav)) frames. Silence analyses
    to unvoiced frames with a floor-level envelope (no error)."""
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, times, envelope = f0_and_envelope(x)
    aperiodicity = pyworld.d4c(x, f0, times, SAMPLE_RATE, fft_size=FFT_SIZE)
    return WorldFeatures(f0=f0,
                         envelope=pyworld.code_spectral_envelope(envelope, SAMPLE_RATE, envelope_dim),
                         aperiodicity=pyworld.code_aperiodicity(aperiodicity, SAMPLE_RATE))


def synthesise(features: WorldFeatures, num_samples: int | None = None) -> np.ndarray:
    """Audio (float32, 16 kHz) from WORLD features; WORLD gives 160 samples per frame, cut or
    zero-padded to `num_samples` when given (the analysed audio's length for a round trip)."""
    f0 = np.ascontiguousarray(features.f0, dtype=np.float64)
    envelope = pyworld.decode_spectral_envelope(np.ascontiguousarray(features.envelope, dtype=np.float64),
                                                SAMPLE_RATE, FFT_SIZE)
    aperiodicity = pyworld.decode_aperiodicity(np.ascontiguousarray(features.aperiodicity, dtype=np.float64),
                                               SAMPLE_RATE, FFT_SIZE)
    wav = pyworld.synthesize(f0, envelope, aperiodicity, SAMPLE_RATE, FRAME_PERIOD_MS)
    if num_samples is not None:
        wav = np.pad(wav, (0, max(0, num_samples - len(wav))))[:num_samples]
    return wav.astype(np.float32)


# --------------------------------------------------------------------------- frames


def world_num_frames(num_samples: int) -> int:
    """WORLD frames (10 ms, centred on samples 0, 160, ...) of `num_samples` samples: N // 160 + 1."""
    return num_samples // WORLD_HOP + 1


def model_frame_index(num_world_frames: int, num_model_frames: int) -> np.ndarray:
    """For each WORLD frame t, the model frame nearest to it: (t - 1) // 2, clipped to
    [0, num_model_frames - 1] (so `hidden[index]` gives the model features at 100 Hz)."""
    if num_model_frames < 1:
        raise ValueError("no model frames to map WORLD frames onto")
    t = np.arange(num_world_frames)
    return np.clip((t - 1) // (MODEL_HOP // WORLD_HOP), 0, num_model_frames - 1)


# --------------------------------------------------------------------------- F0 conversion


@dataclass(frozen=True)
class F0Stats:
    """Mean and standard deviation of log F0 (natural log of Hz) over a speaker's voiced frames."""

    mean: float
    std: float


def log_f0_stats(f0s: Iterable[np.ndarray]) -> F0Stats:
    """Log-F0 statistics over the voiced frames (F0 > 0) of all the given contours together
    (frames weigh alike, so long utterances count more). No voiced frame at all is a UserError."""
    logs = [np.log(f0[f0 > 0]) for f0 in f0s]
    voiced = np.concatenate(logs) if logs else np.zeros(0)
    if len(voiced) == 0:
        raise UserError("no voiced frame in the speaker's utterances: cannot estimate their F0 range")
    return F0Stats(mean=float(voiced.mean()), std=float(voiced.std()))


def convert_f0(f0: np.ndarray, source: F0Stats, target: F0Stats) -> np.ndarray:
    """`f0` with log F0 moved from the source speaker's mean and deviation to the target's (the
    usual linear transform of log F0); unvoiced frames stay 0. A source deviation of 0 only shifts."""
    out = np.zeros(len(f0), dtype=np.float64)
    voiced = f0 > 0
    scale = target.std / source.std if source.std > 0 else 1.0
    out[voiced] = np.exp((np.log(f0[voiced]) - source.mean) * scale + target.mean)
    return out
