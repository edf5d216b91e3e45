"""Normalisations over time whose statistics skip padded frames.

Without them a batch would change each utterance's output: GroupNorm over time and BatchNorm both
pool statistics over the padded tail. Without padding each behaves exactly as its torch parent,
so an utterance alone gives the plain module's output bit for bit.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _masked_moments(x: Tensor, weight: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased variance and count of `x` over `dims`, counting only where `weight` is 1."""
    count = weight.expand_as(x).sum(dims, keepdim=True).clamp_min(1)
    mean = (x * weight).sum(dims, keepdim=True) / count
    var = ((x - mean).square() * weight).sum(dims, keepdim=True) / count
    return mean, var, count


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm over (channels of a group, time) of (B, C, T) input, time limited to valid frames.

    Each padded utterance is normalised alone by the native kernel (cheaper than masked statistics,
    and bit-identical to the unbatched result); padded frames come out as zeros.
    """

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """x: (B, C, T); lengths: (B,) valid frames, or None (no padding)."""
        frames = x.shape[-1]
        if lengths is None or bool((lengths >= frames).all()):
            return super().forward(x)
        rows = []
        for i, n in enumerate(lengths.tolist()):
            row = F.group_norm(x[i:i + 1, :, :n], self.num_groups, self.weight, self.bias, self.eps)
            rows.append(F.pad(row, (0, frames - n)) if n < frames else row)
        return torch.cat(rows)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d of (B, C, T) input whose training statistics skip padded frames.

    Parameter and buffer names are nn.BatchNorm1d's. In eval mode (running statistics) padding
    cannot leak, so it is the parent's forward.
    """

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """x: (B, C, T); valid: (B, T) bool, True on real frames, or None (no padding)."""
        use_batch_stats = self.training or not self.track_running_stats
        if valid is None or not use_batch_stats or bool(valid.all()):
            return super().forward(x)
        xf = x.float()  # statistics in float32 under autocast too, as F.batch_norm
        mean, var, count = _masked_moments(xf, valid[:, None, :].float(), (0, 2))
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.flatten(), var.flatten(), count.flatten()[0])
        y = ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm1d
            momentum = 1.0 / float(self.num_batches_tracked)
        else:
            momentum = self.momentum
        unbiased = var * (count / (count - 1).clamp_min(1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, T) input (HuBERT Large's conv blocks); per frame, so
    padding never enters its statistics."""

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        return F.layer_norm(x.transpose(1, 2), self.normalized_shape, self.weight, self.bias,
                            self.eps).transpose(1, 2)


class WaveformNorm(nn.Module):
    """Zero mean, unit variance per utterance of (B, N) audio, over its valid samples (fairseq's
    ``normalize=True``, HuBERT Large's input); padded samples come out as zeros. No parameters."""

    def forward(self, wav: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """wav: (B, N); lengths: (B,) valid samples, or None (no padding)."""
        if lengths is None:
            return F.layer_norm(wav, wav.shape[1:])
        valid = (torch.arange(wav.shape[1], device=wav.device) < lengths[:, None]).to(wav.dtype)
        count = valid.sum(1, keepdim=True)
        mean = (wav * valid).sum(1, keepdim=True) / count
        var = ((wav - mean).square() * valid).sum(1, keepdim=True) / count
        return (wav - mean) * torch.rsqrt(var + 1e-5) * valid
