"""The Transformer of HuBERT / wav2vec 2.0: convolutional position embedding and post-LN or pre-LN
layers with scaled dot-product attention."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvPositionEmbedding(nn.Module):
    """Grouped Conv1d over time with weight norm (over the kernel axis), GELU: (B, T, D) -> (B, T, D).

    The weight is ``weight_g * weight_v / ||weight_v||`` with the norm taken per kernel position,
    as torch's weight_norm with dim=2; the parameters keep fairseq's names. An even kernel gets
    kernel/2 padding on both sides and drops the last output frame, so T is kept.
    """

    def __init__(self, embed_dim: int, kernel: int = 128, groups: int = 16):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        std = math.sqrt(4.0 / (kernel * embed_dim))
        weight_v = torch.randn(embed_dim, embed_dim // groups, kernel) * std
        self.weight_g = nn.Parameter(weight_v.norm(dim=(0, 1), keepdim=True))
        self.weight_v = nn.Parameter(weight_v)
        self.bias = nn.Parameter(torch.zeros(embed_dim))

    @property
    def weight(self) -> Tensor:
        # the fused kernel behind torch.nn.utils.parametrizations.weight_norm
        return torch._weight_norm(self.weight_v, self.weight_g, 2)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, D); attn_mask: (B, 1, 1, T) bool, True where a key may be attended, or None."""
        batch, frames, dim = x.shape
        # one GEMM for q, k and v instead of three
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        qkv = F.linear(x, weight, bias).view(batch, frames, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D/H)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(batch, frames, dim))


class TransformerLayer(nn.Module):
    """Self-attention + feed-forward block, post-LN (HuBERT Base) or pre-LN (HuBERT Large)."""

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0,
                 layer_norm_first: bool = False):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim, num_heads, attention_dropout)
        self.attention_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.ffn_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def _ffn(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(F.gelu(self.fc1(x)))))

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, D) -> (B, T, D); attn_mask as in `SelfAttention`."""
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.attention_norm(x), attn_mask))
            return x + self._ffn(self.ffn_norm(x))
        x = self.attention_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.ffn_norm(x + self._ffn(x))


class Transformer(nn.Module):
    """Position embedding, LayerNorm and the layers. The encoder runs the layers itself (it inserts
    the speaker branch between them); `embed` prepares their input and `finish` the final output.

    Arguments carry the names of fairseq's options (`ModelConfig`'s fields)."""

    def __init__(self, encoder_embed_dim: int, encoder_layers: int, encoder_attention_heads: int,
                 encoder_ffn_embed_dim: int, dropout: float = 0.1, attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0, layer_norm_first: bool = False, conv_pos: int = 128,
                 conv_pos_groups: int = 16):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.pos_conv = ConvPositionEmbedding(encoder_embed_dim, conv_pos, conv_pos_groups)
        self.layer_norm = nn.LayerNorm(encoder_embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(encoder_embed_dim, encoder_attention_heads, encoder_ffn_embed_dim, dropout,
                             attention_dropout, activation_dropout, layer_norm_first)
            for _ in range(encoder_layers))

    def embed(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """(B, T, D) projected features -> the first layer's input. Padded frames are zeroed first, so
        the position conv sees the zeros an unbatched utterance is padded with."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        return self.dropout(x)

    def finish(self, x: Tensor) -> Tensor:
        """The last layer's output -> the model output (pre-LN models end with the LayerNorm)."""
        return self.layer_norm(x) if self.layer_norm_first else x
