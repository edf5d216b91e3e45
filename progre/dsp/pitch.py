"""The pitch branch's input: a 50 Hz log-F0 contour aligned to the CNN frames.

WORLD DIO F0 (pyworld) with a 20 ms frame period on float64 16 kHz audio. On voiced frames
log F0 is z-normalised over the utterance's voiced frames; unvoiced frames are 0. The
contour is cut to the CNN frame count T = floor((N - 400) / 320) + 1, as the release does;
the normalisation uses the frames kept (DIO gives one or two more at the end), so the stored
contour is exactly zero-mean and unit-variance on its voiced frames.
"""

from __future__ import annotations

import numpy as np
import pyworld

from ..frames import MODEL_HOP, SAMPLE_RATE, num_frames

FRAME_PERIOD_MS = 1000.0 * MODEL_HOP / SAMPLE_RATE  # 20 ms
NORM_EPS = 1e-8


def dio_f0(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Raw DIO F0 in Hz (0 where unvoiced), one value per 20 ms from t = 0."""
    x = np.ascontiguousarray(wav, dtype=np.float64)
    f0, _ = pyworld.dio(x, sample_rate, frame_period=FRAME_PERIOD_MS)
    return f0


def normalise_log_f0(f0: np.ndarray) -> np.ndarray:
    """log F0 z-normalised over voiced frames; unvoiced frames (f0 <= 0) become 0."""
    out = np.zeros(len(f0), dtype=np.float32)
    voiced = f0 > 0
    if voiced.any():
        log_f0 = np.log(f0[voiced])
        out[voiced] = (log_f0 - log_f0.mean()) / (log_f0.std() + NORM_EPS)
    return out


def compute_pitch_and_voicing(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """The normalised contour (float32) and the voiced-frame mask (bool), both of num_frames(len(wav))."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"pitch contours are defined on {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    frames = num_frames(len(wav))
    f0 = dio_f0(wav, sample_rate)[:frames]
    if len(f0) < frames:  # cannot happen for DIO's floor(N/320)+1 frames, kept as a guard
        f0 = np.pad(f0, (0, frames - len(f0)))
    return normalise_log_f0(f0), f0 > 0


def compute_pitch(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The normalised contour for one utterance, float32 of length num_frames(len(wav)).

    An all-unvoiced utterance gives all zeros (callers record it).
    """
    return compute_pitch_and_voicing(wav, sample_rate)[0]
