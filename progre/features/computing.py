"""The one feature loop, and what it runs: utterances are grouped into batches of about `batch_seconds`
of audio, each batch goes through a computer, and the results come back utterance by utterance.

Every writer and collector of per-utterance features runs `compute_in_batches`: the feature folders of
`progre features` (pitch, MFCC, a layer), the evaluation's hidden-state cache, the labelling of
`progre cluster` and the utterance embeddings of `progre pseudo-speakers`. Computers:

- `BatchComputer`: utterances -> one array per utterance, frames first;
- `FeatureComputer`: (frames, dim) features of one kind, as a feature folder stores them;
- `StateExtractor`: (frames, S, D) states of an upstream, S named states of D dims.

This module computes nothing itself, writes nothing and never loads a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..data.shards import Utterance
from ..frames import SAMPLE_RATE, num_frames
from ..log import progress_bar


class BatchComputer(ABC):
    """Utterances -> one float32 array per utterance, frames first, `frame_rate` frames per second of
    audio. A computer that holds resources (worker processes) releases them in `close`: use it in a
    `with` block."""

    frame_rate: int

    @abstractmethod
    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        """The arrays of `utts`, in their order."""

    def expected_frames(self, num_samples: int) -> int:
        """Frames of an utterance of `num_samples` samples (`frames.num_frames` at `frame_rate`)."""
        return num_frames(num_samples, self.frame_rate)

    def close(self) -> None:
        """Release what the computer holds (nothing, unless a subclass says otherwise)."""

    def __enter__(self) -> BatchComputer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureComputer(BatchComputer):
    """(frames, dim) features of one `kind` (mfcc, pitch, layer), as a feature folder stores them."""

    kind: str
    dim: int

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """How the features are computed, for the folder's meta.json (kind, dim, frame rate, ...)."""

    def summary(self) -> dict[str, Any]:
        """What the computer counted over the utterances it saw, for the writer's summary (nothing by
        default)."""
        return {}


class StateExtractor(BatchComputer):
    """An upstream's (frames, S, D) states of each utterance: S states named `state_names`, of `dim` each."""

    state_names: list[str]
    dim: int


def batches_by_seconds(utts: Iterable[Utterance], batch_seconds: float, pool: int = 1) -> Iterator[list[Utterance]]:
    """Group utterances into batches of about `batch_seconds` of audio.

    With pool > 1, `pool` batches' worth of utterances are sorted by length before
    batching, so padding stays small (the order inside the output is then by length).
    """
    budget = batch_seconds * SAMPLE_RATE
    buffer: list[Utterance] = []
    for utt in utts:
        buffer.append(utt)
        if sum(len(u.wav) for u in buffer) >= budget * pool:
            yield from _split(buffer, budget, sort=pool > 1)
            buffer = []
    if buffer:
        yield from _split(buffer, budget, sort=pool > 1)


def _split(buffer: list[Utterance], budget: float, sort: bool) -> Iterator[list[Utterance]]:
    items = sorted(buffer, key=lambda u: len(u.wav)) if sort else buffer
    batch: list[Utterance] = []
    longest = 0
    for utt in items:
        longest_if_added = max(longest, len(utt.wav))
        if batch and longest_if_added * (len(batch) + 1) > budget:  # padded size of the batch
            yield batch
            batch, longest_if_added = [], len(utt.wav)
        batch.append(utt)
        longest = longest_if_added
    if batch:
        yield batch


def compute_in_batches(computer: BatchComputer, utts: Iterable[Utterance], batch_seconds: float, *,
                       description: str, total: int | None = None,
                       pool: int = 1) -> Iterator[tuple[Utterance, np.ndarray]]:
    """(utterance, its array) for every utterance of `utts`, computed by `computer` a batch at a time
    (`batches_by_seconds`: with pool > 1 in length-sorted pools, which reorders the utterances), in batch
    order, under a progress bar (`description`, `total` utterances) that advances when a batch has been
    handed back. Memory holds one batch (one pool)."""
    with progress_bar() as progress:
        task = progress.add_task(description, total=total)
        for batch in batches_by_seconds(utts, batch_seconds, pool=pool):
            yield from zip(batch, computer(batch))
            progress.advance(task, len(batch))
