"""HuBERT / wav2vec 2.0 span masking (fairseq's `compute_mask_indices`, static span lengths, overlap
allowed), per utterance over its valid frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor


def num_spans(num_frames: int, mask_prob: float, mask_length: int, min_masks: int,
              generator: Optional[torch.Generator] = None) -> int:
    """Spans for an utterance: mask_prob * T / mask_length rounded at random (so its mean is exact),
    at least `min_masks`."""
    u = float(torch.rand((), generator=generator))
    return max(min_masks, int(mask_prob * num_frames / mask_length + u))


def sample_span_starts(num_frames: int, mask_prob: float = 0.8, mask_length: int = 10, min_masks: int = 2,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Distinct start frames of the masked spans of one utterance of `num_frames` valid frames.

    As fairseq: starts are drawn without replacement from [0, T - mask_length), widened to
    [0, n + 1) for utterances too short to hold n spans that way; spans run past the end are cut.
    """
    if num_frames <= 0 or mask_prob <= 0:
        return torch.zeros(0, dtype=torch.long)
    n = num_spans(num_frames, mask_prob, mask_length, min_masks, generator)
    candidates = max(num_frames - mask_length, n + 1)
    return torch.randperm(candidates, generator=generator)[:n]


def compute_span_mask(lengths: Union[Tensor, Sequence[int]], num_frames: int, mask_prob: float = 0.8,
                      mask_length: int = 10, min_masks: int = 2,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """Span mask of a batch: (B, num_frames) bool, True on masked frames, never on padding.

    Args:
        lengths: (B,) valid frames per utterance.
        num_frames: T, the padded frame count.
        mask_prob: HuBERT's 0.8: about mask_prob * T / mask_length spans per utterance (before overlaps).
        mask_length: frames per span.
        min_masks: at least this many spans per utterance.
        generator: CPU generator for reproducible masks.

    Unlike fairseq, utterances are not cut to the batch's smallest masked count (nothing here needs
    equal counts), so an utterance's mask does not depend on its batch-mates.
    """
    lengths = [int(n) for n in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)]
    mask = torch.zeros(len(lengths), num_frames, dtype=torch.bool)
    offsets = torch.arange(mask_length)
    for i, length in enumerate(lengths):
        length = min(length, num_frames)
        starts = sample_span_starts(length, mask_prob, mask_length, min_masks, generator)
        frames = (starts[:, None] + offsets).flatten()
        mask[i, frames[frames < length]] = True
    return mask
