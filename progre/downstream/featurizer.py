"""SUPERB's featurizer: a learned, softmax-normalised weighted sum of an upstream's hidden states.

Input is the stack of S hidden states of width D in the last two axes, ``(..., S, D)``: frames
``(B, T, S, D)`` or utterance means ``(B, S, D)``. Before the sum each state can go through fixed
(parameter-free) normalisations:

- ``layer_norm``: LayerNorm over D per frame and state, no affine (SUPERB's option);
- ``mean``/``std``: per-state, per-dimension standardisation with statistics of the training
  frames. A fixed affine map, so it changes no information, but it keeps a state with a large
  scale from dominating the sum just by its scale, which makes the learned weights comparable.

`normalize` applies those fixed maps and `combine` the learned weighted sum; `forward` does both.
Because `combine` is linear, the mean over frames of ``forward(frames)`` equals
``combine(mean over frames of normalize(frames))``, so utterance-level tasks can pool once up front.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Featurizer(nn.Module):
    """One learnable weight per hidden state, zero-initialised (uniform after softmax)."""

    def __init__(self, num_states: int, dim: int, layer_norm: bool = False,
                 mean: Optional[Tensor] = None, std: Optional[Tensor] = None):
        """num_states: S; dim: D; mean, std: (S, D) training statistics (both or neither)."""
        super().__init__()
        if num_states < 1:
            raise ValueError(f"a featurizer needs at least one hidden state, got {num_states}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.num_states, self.dim, self.layer_norm = num_states, dim, layer_norm
        self.weights = nn.Parameter(torch.zeros(num_states))
        if mean is not None and std is not None:
            if tuple(mean.shape) != (num_states, dim) or tuple(std.shape) != (num_states, dim):
                raise ValueError(f"mean and std must be ({num_states}, {dim}), got {tuple(mean.shape)} "
                                 f"and {tuple(std.shape)}")
            self.register_buffer("mean", mean.detach().float().clone())
            self.register_buffer("inv_std", 1.0 / std.detach().float().clamp_min(1e-5))
        else:
            self.mean = None
            self.inv_std = None

    def normalized_weights(self) -> Tensor:
        """(S,) softmax of the weights: what each state contributes; sums to 1."""
        return torch.softmax(self.weights, dim=0)

    def normalize(self, states: Tensor) -> Tensor:
        """(..., S, D) -> (..., S, D): the fixed per-state normalisations (no learned parameters)."""
        self._check(states)
        states = states.float()
        if self.layer_norm:
            states = F.layer_norm(states, (self.dim,))
        if self.mean is not None:
            states = (states - self.mean) * self.inv_std
        return states

    def combine(self, states: Tensor) -> Tensor:
        """(..., S, D) -> (..., D): the weighted sum over states with the softmax weights."""
        self._check(states)
        return torch.einsum("...sd,s->...d", states, self.normalized_weights().to(states.dtype))

    def forward(self, states: Tensor) -> Tensor:
        """(..., S, D) hidden states -> (..., D) features."""
        return self.combine(self.normalize(states))

    def _check(self, states: Tensor) -> None:
        if states.dim() < 2 or tuple(states.shape[-2:]) != (self.num_states, self.dim):
            raise ValueError(f"expected (..., {self.num_states}, {self.dim}) hidden states, "
                             f"got {tuple(states.shape)}")
