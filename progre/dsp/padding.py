"""Padding a list of 1-D signals into one batch tensor, with their lengths (waveforms for MFCC and the
encoder, pitch contours for the pitch branch)."""

from __future__ import annotations

import numpy as np
import torch


def pad_batch(wavs: list, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """List of 1-D numpy/torch waveforms -> (B, N_max) float32 tensor and (B,) lengths."""
    # numpy input is copied: it may be a read-only memmap, which torch.from_numpy refuses to wrap
    tensors = [w.float() if isinstance(w, torch.Tensor) else torch.from_numpy(np.array(w, dtype=np.float32))
               for w in wavs]
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)
    batch = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
    return batch.to(device), lengths.to(device)
