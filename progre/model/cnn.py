"""The CNN feature encoder: raw 16 kHz waveform -> 50 Hz frames (HuBERT / wav2vec 2.0)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norms import ChannelLayerNorm, MaskedGroupNorm


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by `scale` in the backward pass."""
    return x if scale == 1.0 else _ScaleGrad.apply(x, scale)


def conv_output_length(length: Tensor, kernel: int, stride: int) -> Tensor:
    """Valid output frames of an unpadded conv for `length` valid input frames (never negative)."""
    return torch.div(length - kernel, stride, rounding_mode="floor").add(1).clamp_min(0)


class ConvBlock(nn.Module):
    """Conv1d -> optional normalisation -> GELU, on (B, C_in, L) -> (B, C_out, L')."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool,
                 norm: Optional[nn.Module]):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.norm = norm

    def forward(self, x: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        x = self.conv(x)
        if lengths is not None:
            lengths = conv_output_length(lengths, self.kernel, self.stride)
        if self.norm is not None:
            x = self.norm(x, lengths)
        return F.gelu(x), lengths


class ConvFeatureEncoder(nn.Module):
    """Stack of `ConvBlock`s over the waveform.

    Args (fairseq's option names):
        conv_feature_layers: (channels, kernel, stride) per layer.
        conv_bias: conv bias.
        extractor_mode: "default" (GroupNorm with one group per channel after the first conv only, its
            statistics over each utterance's valid frames) or "layer_norm" (LayerNorm over channels after
            every conv).
    """

    def __init__(self, conv_feature_layers: list[tuple[int, int, int]], conv_bias: bool = False,
                 extractor_mode: str = "default"):
        super().__init__()
        if extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {extractor_mode!r}")
        blocks = []
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(conv_feature_layers):
            if extractor_mode == "default":
                block_norm = MaskedGroupNorm(channels, channels) if i == 0 else None
            else:
                block_norm = ChannelLayerNorm(channels)
            blocks.append(ConvBlock(in_channels, channels, kernel, stride, conv_bias, block_norm))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames for `lengths` samples: floor((N - 400) / 320) + 1 for the standard stack."""
        for block in self.conv_layers:
            lengths = conv_output_length(lengths, block.kernel, block.stride)
        return lengths

    def forward(self, wav: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """wav: (B, N); lengths: (B,) valid samples or None. Returns (B, T, C)."""
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        return x.transpose(1, 2)
