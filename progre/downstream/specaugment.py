"""SpecAugment on the featurizer's output, as s3prl's downstream runner applies it to ASR's weighted
representation (`downstream/asr/config.yaml`'s ``specaug`` block, the `superb` protocol): only while
the head trains, never when valid or test are scored.

On a padded batch of features (B, T, D) with their lengths, in this order:

- **time warp** (window W = 5): in each utterance longer than 2 W frames, a centre frame c is drawn
  in [W, T_u - W), a new position w in [c - W + 1, c + W], and the frames before c are stretched
  to w frames and those after to T_u - w frames (bicubic interpolation along time; the feature axis
  keeps its size, so its values are untouched);
- **feature masks**: 4 per utterance, each of a width drawn in [0, 50) and set to zero from a start
  drawn in [0, D - the widest mask of the batch);
- **time masks**: 2 per utterance, each of a width drawn in [0, 40), from a start drawn in
  [0, T - the widest mask of the batch) of the padded length T.

The widths, the start ranges and the order are s3prl's (its `SpecAug` with ``adaptive: false``). Every
random number comes from the `torch.Generator` given to `forward` (the fit's: so a seeded fit stays
deterministic), drawn on the CPU. Nothing here has parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class SpecAugmentSettings:
    """s3prl's ASR ``specaug`` settings (the defaults are its values)."""

    time_warp_window: int = 5
    time_masks: int = 2
    time_mask_width: int = 40
    """Time mask widths are drawn in [0, time_mask_width)."""
    feature_masks: int = 4
    feature_mask_width: int = 50
    """Feature mask widths are drawn in [0, feature_mask_width)."""


class SpecAugment(nn.Module):
    """Time warp, feature masks and time masks of (B, T, D) features while training; the identity in
    eval mode."""

    def __init__(self, settings: SpecAugmentSettings):
        super().__init__()
        self.settings = settings

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """x: (B, T, D) features (zeros after each length); lengths: (B,) frames (None: all T)."""
        if not self.training:
            return x
        batch, frames, dim = x.shape
        lengths_list = [frames] * batch if lengths is None else [int(n) for n in lengths]
        s = self.settings
        x = time_warp(x, lengths_list, s.time_warp_window, generator)
        x = mask_along(x, 2, s.feature_masks, s.feature_mask_width, generator)
        return mask_along(x, 1, s.time_masks, s.time_mask_width, generator)


def time_warp(x: Tensor, lengths: list[int], window: int, generator: Optional[torch.Generator]) -> Tensor:
    """Each utterance's frames stretched around a random centre (see the module's description)."""
    if window <= 0:
        return x
    rows = []
    for b, length in enumerate(lengths):
        row = x[b]
        if length - window > window:
            centre = int(torch.randint(window, length - window, (1,), generator=generator))
            moved = int(torch.randint(centre - window, centre + window, (1,), generator=generator)) + 1
            valid = row[:length][None, None]  # (1, 1, T_u, D): interpolate along time, D unchanged
            left = F.interpolate(valid[:, :, :centre], (moved, x.shape[2]), mode="bicubic", align_corners=False)
            right = F.interpolate(valid[:, :, centre:], (length - moved, x.shape[2]), mode="bicubic",
                                  align_corners=False)
            row = torch.cat([left[0, 0], right[0, 0], row[length:]], dim=0)
        rows.append(row)
    return torch.stack(rows)


def mask_along(x: Tensor, axis: int, count: int, max_width: int, generator: Optional[torch.Generator]) -> Tensor:
    """`count` masks per utterance along `axis` (1: time, 2: features), widths in [0, max_width), set to 0."""
    if count <= 0 or max_width <= 0:
        return x
    batch, size = x.shape[0], x.shape[axis]
    widths = torch.randint(0, max_width, (batch, count), generator=generator)
    starts = torch.randint(0, max(1, size - int(widths.max())), (batch, count), generator=generator)
    positions = torch.arange(size)[None, None, :]
    masked = ((starts[..., None] <= positions) & (positions < (starts + widths)[..., None])).any(dim=1)  # (B, size)
    masked = masked.to(x.device)
    return x.masked_fill(masked[:, :, None] if axis == 1 else masked[:, None, :], 0.0)
