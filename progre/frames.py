"""The frame grid that every stage shares: 16 kHz audio, 50 Hz model frames, 100 Hz MFCC frames.

Frame i at hop h covers samples [i * h, i * h + 400): 25 ms windows every 20 ms (the CNN feature
encoder, h = 320) or every 10 ms (Kaldi MFCC with snip edges, h = 160). So N samples give
floor((N - 400) / h) + 1 frames, none below 400 samples. Labels at 100 Hz map to model frame i as
label 2i; at 50 Hz one to one. Long audio is cut into chunks that start on the 320-sample grid, so
the frames of the chunks are exactly the frames of the whole.

Nothing else in the toolkit does frame arithmetic (the model's CNN derives its own lengths from its
kernel sizes and strides, and a test checks that they agree with this grid).
"""

from __future__ import annotations

from typing import TypeVar

SAMPLE_RATE = 16_000
"""Every model and feature in the toolkit works on 16 kHz mono audio."""

WINDOW = 400
"""Samples under one frame (25 ms): the CNN's receptive field and the MFCC window."""

MODEL_RATE = 50
"""Frames per second of the model (the CNN's output, pitch contours, iteration-2 labels)."""

MFCC_RATE = 100
"""Frames per second of MFCC (iteration-1 labels)."""

HOPS = {MODEL_RATE: SAMPLE_RATE // MODEL_RATE, MFCC_RATE: SAMPLE_RATE // MFCC_RATE}
MODEL_HOP = HOPS[MODEL_RATE]
"""320 samples (20 ms) between model frames."""

N = TypeVar("N")  # an int, or a torch/numpy integer array


def hop(rate: int) -> int:
    """Samples between frames at `rate` frames per second (50 or 100)."""
    if rate not in HOPS:
        raise ValueError(f"frame rate {rate} Hz is not on the grid (50 Hz model frames or 100 Hz MFCC frames)")
    return HOPS[rate]


def num_frames(num_samples: N, rate: int = MODEL_RATE) -> N:
    """Frames at `rate` for `num_samples` samples: floor((N - 400) / hop) + 1, at least 0.

    Works elementwise on torch and numpy integer arrays too.
    """
    frames = (num_samples - WINDOW) // hop(rate) + 1
    if isinstance(frames, int):
        return max(frames, 0)  # type: ignore[return-value]
    return frames.clip(min=0)  # type: ignore[union-attr]


def labels_per_frame(label_rate: int) -> int:
    """How many label frames one model frame spans: 1 at 50 Hz, 2 at 100 Hz (model frame i <- label 2i)."""
    return hop(MODEL_RATE) // hop(label_rate)


def chunk_starts(num_samples: int, chunk_seconds: float) -> list[tuple[int, int]]:
    """(start sample, first frame) of the chunks that cut `num_samples` samples into pieces of about
    `chunk_seconds`: each chunk starts on the 320-sample grid and holds its frames' whole windows
    (samples [start, start + chunk hop + 80)), so the chunks' frames are exactly the whole's."""
    frames_per_chunk = max(1, int(chunk_seconds * SAMPLE_RATE) // MODEL_HOP)
    step = frames_per_chunk * MODEL_HOP
    return [(start, start // MODEL_HOP) for start in range(0, max(num_samples - WINDOW, 0) + 1, step)]


def chunk_samples(chunk_seconds: float) -> int:
    """Samples of one chunk of `chunk_starts`: its frames' hops plus the 80 extra samples the last one needs."""
    return max(1, int(chunk_seconds * SAMPLE_RATE) // MODEL_HOP) * MODEL_HOP + WINDOW - MODEL_HOP
