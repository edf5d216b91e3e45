"""Batches of cached hidden states for the downstream heads.

Two views of a split's labelled utterances:

- `FrameSplit`: padded frame sequences (B, T, S, D) with their lengths, read from the cache per
  batch (memory stays at one batch), for the sequence tasks (PR, ASR);
- `PooledSplit`: one (S, D) vector per utterance, the mean over its frames of the normalised states
  (`utterance_means`, computed once), for the utterance tasks (SID, ER).

Both yield `HeadBatch`es whose `targets` and `references` are the task's own (class ids, token lists).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .upstreams import HiddenStates


@dataclass
class Examples:
    """The labelled utterances of one split for one task, in a fixed order."""

    keys: list[str]
    targets: list[Any]
    """What the loss trains on: a class id, or a list of token ids (CTC)."""
    references: list[Any]
    """What the metric compares predictions with: a class name, a phone list, a transcript."""

    def __post_init__(self) -> None:
        if not len(self.keys) == len(self.targets) == len(self.references):
            raise ValueError("keys, targets and references must have the same length")

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class HeadBatch:
    """B utterances. states: (B, T, S, D) frames or (B, S, D) means; lengths: (B,) frames or None."""

    states: Tensor
    lengths: Optional[Tensor]
    targets: list[Any]
    references: list[Any]


def batch_order(count: int, batch_size: int, generator: Optional[torch.Generator]) -> list[list[int]]:
    """Index lists of consecutive batches: a permutation from `generator`, or the natural order when None."""
    order = torch.randperm(count, generator=generator).tolist() if generator is not None else list(range(count))
    return [order[i:i + batch_size] for i in range(0, count, batch_size)]


class FrameSplit:
    """Frame sequences of `examples` from the cache."""

    def __init__(self, hidden: HiddenStates, examples: Examples):
        self.hidden, self.examples = hidden, examples

    def __len__(self) -> int:
        return len(self.examples)

    def batches(self, batch_size: int, generator: Optional[torch.Generator] = None,
                device: torch.device = torch.device("cpu")) -> Iterator[HeadBatch]:
        ex = self.examples
        for rows in batch_order(len(ex), batch_size, generator):
            arrays = [torch.from_numpy(np.array(self.hidden[ex.keys[i]], dtype=np.float32)) for i in rows]
            lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
            states = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)  # (B, T, S, D), zeros after lengths
            yield HeadBatch(states.to(device), lengths.to(device), [ex.targets[i] for i in rows],
                        [ex.references[i] for i in rows])


class PooledSplit:
    """Utterance means of `examples`, looked up in a key -> (S, D) table; batches come out as float32."""

    def __init__(self, means: dict[str, np.ndarray], examples: Examples):
        self.examples = examples
        self.states = torch.from_numpy(np.stack([means[k] for k in examples.keys])) if len(examples) else None

    def __len__(self) -> int:
        return len(self.examples)

    def batches(self, batch_size: int, generator: Optional[torch.Generator] = None,
                device: torch.device = torch.device("cpu")) -> Iterator[HeadBatch]:
        ex = self.examples
        assert self.states is not None or not len(ex)
        for rows in batch_order(len(ex), batch_size, generator):
            index = torch.tensor(rows, dtype=torch.long)
            yield HeadBatch(self.states[index].to(device).float(), None,  # type: ignore[index]
                        [ex.targets[i] for i in rows], [ex.references[i] for i in rows])


def state_statistics(hidden: HiddenStates, keys: Sequence[str], layer_norm: bool) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (S, D) of every state over all frames of `keys` (after the per-frame
    layer norm when `layer_norm`), accumulated in float64."""
    total = np.zeros((hidden.num_states, hidden.dim))
    squares = np.zeros((hidden.num_states, hidden.dim))
    count = 0
    for key in keys:
        frames = _frames(hidden, key, layer_norm).double()
        total += frames.sum(0).numpy()
        squares += frames.square().sum(0).numpy()
        count += len(frames)
    if count == 0:
        raise ValueError("no frames to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def utterance_means(hidden: HiddenStates, keys: Sequence[str],
                    normalize: Callable[[Tensor], Tensor]) -> dict[str, np.ndarray]:
    """key -> (S, D) float16 (half the memory; the values are standardised): the mean over the
    utterance's frames of `normalize(frames)`, computed in float32.

    `normalize` is the featurizer's fixed per-frame map; since its learned weighted sum is linear,
    training on these means is exactly mean pooling of the weighted sum.
    """
    means = {}
    with torch.no_grad():
        for key in keys:
            means[key] = normalize(_frames(hidden, key, layer_norm=False)).mean(0).numpy().astype(np.float16)
    return means


def _frames(hidden: HiddenStates, key: str, layer_norm: bool) -> Tensor:
    """(T, S, D) float32 frames of one utterance (a copy), optionally layer-normalised per state."""
    frames = torch.from_numpy(np.array(hidden[key], dtype=np.float32))
    return torch.nn.functional.layer_norm(frames, (hidden.dim,)) if layer_norm else frames
