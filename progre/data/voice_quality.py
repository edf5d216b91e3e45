"""Voice quality of a speaking style, applied by WORLD analysis and resynthesis.

eSpeak can change pitch level, pitch range, rate and volume, but not how the voice itself
sounds. Emotional speech also differs there: smiling shortens the vocal tract and raises the
formants, high vocal effort (anger) flattens the spectral slope, soft or sad speech steepens it
and turns breathy. `apply_voice_quality` analyses a signal with WORLD (DIO + StoneMask F0,
CheapTrick spectral envelope, D4C aperiodicity), then

- stretches the envelope's frequency axis by `formant_scale` (every formant moves by that factor),
- adds `tilt_db_per_octave` dB per octave above TILT_CORNER_HZ to the envelope,
- turns the fraction `breathiness` of the periodic part aperiodic,

and resynthesises with the same F0 and frame timing, so phone times do not move. The output has
the input's length and RMS level (volume stays eSpeak's). WORLD's synthesis seeds its own noise
on every call, so the output depends only on the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyworld

FRAME_PERIOD_MS = 5.0
F0_FLOOR_HZ = 40.0
"""Below WORLD's default of 71 Hz: low male voices in a sad style reach 50-70 Hz, and frames whose
F0 the analysis misses would be resynthesised as noise (whispered)."""
F0_CEIL_HZ = 800.0
TILT_CORNER_HZ = 500.0


@dataclass(frozen=True)
class VoiceQuality:
    """How a style changes the voice, relative to the speaker's own."""

    formant_scale: float = 1.0  # > 1 raises every formant (a smile, a shorter vocal tract)
    tilt_db_per_octave: float = 0.0  # > 0 pressed / high effort, < 0 soft / lax
    breathiness: float = 0.0  # 0..1, the fraction of the periodic part made aperiodic

    def __post_init__(self) -> None:
        if not 0.5 <= self.formant_scale <= 2.0:
            raise ValueError(f"formant_scale {self.formant_scale} outside [0.5, 2]")
        if not 0.0 <= self.breathiness <= 1.0:
            raise ValueError(f"breathiness {self.breathiness} outside [0, 1]")


def warp_envelope(envelope: np.ndarray, formant_scale: float) -> np.ndarray:
    """`envelope` (frames x bins, power) with its frequency axis stretched: new(f) = old(f / scale).

    Linear interpolation between bins; above the top bin / scale the top bin is repeated.
    """
    bins = envelope.shape[1]
    source = np.clip(np.arange(bins) / formant_scale, 0, bins - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    weight = source - low
    return envelope[:, low] * (1.0 - weight) + envelope[:, high] * weight


def tilt_gain(bins: int, sample_rate: int, db_per_octave: float) -> np.ndarray:
    """Power gain per bin: 1 up to TILT_CORNER_HZ, then `db_per_octave` dB per octave above it."""
    freqs = np.arange(bins) * (sample_rate / 2) / (bins - 1)
    octaves = np.log2(np.maximum(freqs, TILT_CORNER_HZ) / TILT_CORNER_HZ)
    return 10.0 ** (db_per_octave * octaves / 10.0)


def apply_voice_quality(wav: np.ndarray, quality: VoiceQuality, sample_rate: int) -> np.ndarray:
    """`wav` (float, mono) resynthesised with `quality`; same length and RMS, float32.

    Every style goes through the vocoder, the neutral one (all defaults) included, so that the
    vocoder's own colouring is not a cue that tells styles apart. Silent input comes back as is.
    """
    x = np.ascontiguousarray(wav, dtype=np.float64)
    rms_in = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    if rms_in == 0.0:
        return wav.astype(np.float32)
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    fft_size = pyworld.get_cheaptrick_fft_size(sample_rate, F0_FLOOR_HZ)
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate, f0_floor=F0_FLOOR_HZ, fft_size=fft_size)
    aperiodicity = pyworld.d4c(x, f0, times, sample_rate, fft_size=fft_size)
    if quality.formant_scale != 1.0:
        envelope = warp_envelope(envelope, quality.formant_scale)
    if quality.tilt_db_per_octave != 0.0:
        envelope = envelope * tilt_gain(envelope.shape[1], sample_rate, quality.tilt_db_per_octave)
    if quality.breathiness > 0.0:
        aperiodicity = 1.0 - (1.0 - aperiodicity) * (1.0 - quality.breathiness)
    y = pyworld.synthesize(f0, np.ascontiguousarray(envelope), np.ascontiguousarray(aperiodicity),
                           sample_rate, FRAME_PERIOD_MS)
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    rms_out = float(np.sqrt(np.mean(y**2)))
    if rms_out > 0.0:
        y = y * (rms_in / rms_out)
    return y.astype(np.float32)
