"""Batches of cached hidden states for the downstream heads.

`StateTable` holds the normalised hidden states of the utterances an evaluation reads: in memory as
float32 when they fit in `max_bytes` (read and normalised once, for every task, epoch and seed),
else read from the cache and normalised per request. Two views of a split's labelled utterances:

- `FrameSplit`: padded frame sequences (B, T, S, D) with their lengths, for the sequence tasks;
- `PooledSplit`: one (S, D) vector per utterance, the mean over its frames of the normalised states
  (`utterance_means`, computed once), for the utterance tasks (SID, ER).

Both yield `HeadBatch`es whose `targets` and `references` are the task's own (class ids, token lists).
Frame batches group utterances of similar length (`batch_order`): with random batches of 16 demo
utterances 42% of the frames a BiLSTM head ran over were padding, with length buckets 11%.
Conversions from the cache's float16 go through numpy: torch's own half-to-float copy on the CPU
was 10x slower (0.57 us per value), and it dominated head training.
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
    indices: list[int]
    """The utterances' positions in their split."""


BUCKET_BATCHES = 8
"""Shuffled training batches are cut from buckets of this many batches' worth of utterances sorted by length."""


def batch_order(count: int, batch_size: int, generator: Optional[torch.Generator],
                lengths: Optional[Sequence[int]] = None) -> list[list[int]]:
    """Index lists of consecutive batches.

    Without `generator`: the natural order, or with `lengths` longest first (evaluation: least padding).
    With it: a permutation; with `lengths` each run of `BUCKET_BATCHES` batches' worth of the
    permutation is sorted by length before it is cut into batches, and the batches are shuffled, so
    a batch holds utterances of similar length and the order still changes every pass.
    """
    if generator is None:
        order = list(range(count)) if lengths is None else sorted(range(count), key=lambda i: -lengths[i])
        return [order[i:i + batch_size] for i in range(0, count, batch_size)]
    order = torch.randperm(count, generator=generator).tolist()
    if lengths is None:
        return [order[i:i + batch_size] for i in range(0, count, batch_size)]
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, count, bucket):
        chunk = sorted(order[start:start + bucket], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


class StateTable:
    """key -> (T, S, D) float32 normalised hidden states of one evaluation's utterances."""

    def __init__(self, hidden: HiddenStates, keys: Sequence[str], normalize: Callable[[Tensor], Tensor],
                 max_bytes: float = 8e9):
        self.hidden, self.normalize = hidden, normalize
        keys = list(dict.fromkeys(keys))
        frames = [hidden.num_frames(k) for k in keys]
        self.in_memory = sum(frames) * hidden.num_states * hidden.dim * 4 <= max_bytes
        self._rows: dict[str, tuple[int, int]] = {}
        if self.in_memory:
            self._table = torch.empty(sum(frames), hidden.num_states, hidden.dim)
            start = 0
            with torch.no_grad():
                for key, n in zip(keys, frames):
                    self._table[start:start + n] = self._read(key)
                    self._rows[key] = (start, n)
                    start += n

    def _read(self, key: str) -> Tensor:
        with torch.no_grad():
            return self.normalize(torch.from_numpy(np.array(self.hidden[key], dtype=np.float32)))

    def __getitem__(self, key: str) -> Tensor:
        if not self.in_memory:
            return self._read(key)
        start, n = self._rows[key]
        return self._table[start:start + n]

    def num_frames(self, key: str) -> int:
        return self.hidden.num_frames(key)


class FrameSplit:
    """Frame sequences of `examples` from a `StateTable`."""

    def __init__(self, table: StateTable, examples: Examples):
        self.table, self.examples = table, examples
        self.lengths = [table.num_frames(k) for k in examples.keys]

    def __len__(self) -> int:
        return len(self.examples)

    def batches(self, batch_size: int, generator: Optional[torch.Generator] = None,
                device: torch.device = torch.device("cpu")) -> Iterator[HeadBatch]:
        ex = self.examples
        for rows in batch_order(len(ex), batch_size, generator, self.lengths):
            arrays = [self.table[ex.keys[i]] for i in rows]
            lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
            states = torch.zeros(len(arrays), int(lengths.max()), *arrays[0].shape[1:])
            for i, array in enumerate(arrays):  # zeros after each length
                states[i, :len(array)] = array
            yield HeadBatch(states.to(device), lengths.to(device), [ex.targets[i] for i in rows],
                            [ex.references[i] for i in rows], rows)


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
                            [ex.targets[i] for i in rows], [ex.references[i] for i in rows], rows)


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


def utterance_means(table: StateTable, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """key -> (S, D) float16 (half the memory; the values are normalised): the mean over the
    utterance's frames of its normalised states, computed in float32.

    Normalisation is a fixed per-frame map and the featurizer's learned weighted sum is linear, so
    training on these means is exactly mean pooling of the weighted sum.
    """
    with torch.no_grad():
        return {key: table[key].mean(0).numpy().astype(np.float16) for key in keys}


def _frames(hidden: HiddenStates, key: str, layer_norm: bool) -> Tensor:
    """(T, S, D) float32 frames of one utterance (a copy), optionally layer-normalised per state."""
    frames = torch.from_numpy(np.asarray(hidden[key], dtype=np.float32))
    return torch.nn.functional.layer_norm(frames, (hidden.dim,)) if layer_norm else frames
