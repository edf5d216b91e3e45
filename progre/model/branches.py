"""ProgRE's two residual-extraction branches: pitch variation (before the Transformer) and speaker
(after a Transformer layer). Each returns what is subtracted from the main stream."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .norms import MaskedBatchNorm1d


class PitchBlock(nn.Module):
    """Conv1d ('same' padding, bias) -> BatchNorm -> ReLU on (B, C, T)."""

    def __init__(self, in_channels: int, channels: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, kernel, padding=kernel // 2)
        self.norm = MaskedBatchNorm1d(channels, momentum=0.1)

    def forward(self, x: Tensor, valid: Optional[Tensor]) -> Tensor:
        return F.relu(self.norm(self.conv(x), valid))


class PitchBranch(nn.Module):
    """Pitch-variation encoder: 50 Hz pitch contour (B, T) -> (B, T, D), zero on padding.

    Three `PitchBlock`s, a one-layer bidirectional GRU and a linear projection to the model width.
    Padded frames are zeroed before every conv, so that the 'same' padding of a batched utterance sees
    the zeros it sees alone.
    """

    def __init__(self, embed_dim: int, channels: int = 256, kernel: int = 5, gru_hidden: int = 32,
                 num_blocks: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(
            PitchBlock(1 if i == 0 else channels, channels, kernel) for i in range(num_blocks))
        self.gru = nn.GRU(channels, gru_hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * gru_hidden, embed_dim)

    def forward(self, pitch: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """pitch: (B, T) float; lengths: (B,) valid frames or None. Returns (B, T, D)."""
        frames = pitch.shape[1]
        valid = None
        if lengths is not None and bool((lengths < frames).any()):
            valid = torch.arange(frames, device=pitch.device) < lengths[:, None]
        x = pitch.unsqueeze(1)
        for block in self.blocks:
            if valid is not None:
                x = x * valid[:, None, :].to(x.dtype)
            x = block(x, valid)
        x = x.transpose(1, 2).float()
        with torch.autocast(x.device.type, enabled=False):  # a small recurrence: float32 is cheap and safe
            if valid is None:
                x, _ = self.gru(x)
            else:
                packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
                x, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=frames)
        x = self.proj(x)
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)
        return x


class SpeakerBranch(nn.Module):
    """Attentive statistics per frame (ASTP without the pooling): (B, T, D) -> (B, T, D).

    a = softmax over time of W2 tanh(W1 h) (one attention distribution per channel); per frame
    mean = a h and std = sqrt(a h^2 - mean^2 + 1e-5); [mean, std] -> Linear -> LayerNorm.
    W1 (D -> bottleneck) and W2 (bottleneck -> D) have no bias (the release's 1x1 convs).
    """

    PAD_SCORE = -1000.0  # the release's fill value; exp(-1000) underflows to 0, so padding gets no weight

    def __init__(self, embed_dim: int, bottleneck: int = 256):
        super().__init__()
        self.attention_hidden = nn.Linear(embed_dim, bottleneck, bias=False)
        self.attention_score = nn.Linear(bottleneck, embed_dim, bias=False)
        self.out = nn.Linear(2 * embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, h: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """h: (B, T, D); padding_mask: (B, T) bool, True on padding, or None. Returns (B, T, D)."""
        if padding_mask is not None:
            h = h.masked_fill(padding_mask[..., None], 0.0)
        score = self.attention_score(torch.tanh(self.attention_hidden(h)))
        if padding_mask is not None:
            score = score.masked_fill(padding_mask[..., None], self.PAD_SCORE)
        # a * h^2 - (a * h)^2 cancels badly in half precision: statistics in float32
        a = torch.softmax(score.float(), dim=1)
        h = h.float()
        mean = a * h
        std = torch.sqrt(a * h.square() - mean.square() + 1e-5)
        return self.layer_norm(self.out(torch.cat([mean, std], dim=-1)))
