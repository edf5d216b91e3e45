"""Pretraining batches: deterministic plans from the shard index, audio read by offset.

An epoch's plan is a pure function of (seed, epoch) and the index: utterances are shuffled,
pooled `bucket_size` at a time, sorted by length inside a pool, and grouped into batches whose
crop length x size fits `batch_seconds`. As in fairseq's HuBERT (no audio padding), every
utterance of a batch is cropped to the batch's shortest one (at most `crop_max_seconds`), at a
random start on the 320-sample frame grid, so labels and pitch are cut at exact frame offsets.

The epochs' batches form one endless sequence of micro-batches k = 0, 1, 2, ...; under DDP
rank r takes k = r, r + W, r + 2W, ... Micro-batch k depends only on k, so

- resuming needs only the number of micro-batches consumed (no data is re-read to skip),
- W ranks with gradient accumulation A see exactly the micro-batches one process sees with
  accumulation W x A,
- every rank gets the same number of batches: none starves, whatever the number of shards.

Audio is read by seeking to the FLAC member's offset recorded in the index (our tar shards stay
standard WebDataset shards for every streaming reader).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..cluster.labels import LabelSet
from ..data.shards import Shards
from ..errors import UserError
from ..features.store import FeatureStore
from ..frames import MODEL_HOP, SAMPLE_RATE, WINDOW, labels_per_frame, num_frames
from ..log import logger
from ..model.masked_prediction import IGNORE_LABEL
from ..settings import setting

LABEL_LENGTH_TOLERANCE = 2  # frames; more is a misalignment, not rounding


@dataclass(frozen=True)
class PlanSettings:
    """How training batches are planned (part of the `pretrain` params section; the plan's seed is the
    run's, `TrainRecipe.seed`)."""

    batch_seconds: float = setting(87.5, "audio seconds per batch per process (HuBERT base: ~87.5)", min=0.1)
    crop_min_seconds: float = setting(2.0, "shortest crop; shorter utterances are skipped (and counted)", min=0.03)
    crop_max_seconds: float = setting(15.6, "longest crop", min=0.03)
    bucket_size: int = setting(64, "utterances pooled for length bucketing", min=1)

    def __post_init__(self) -> None:
        if self.crop_min_seconds > self.crop_max_seconds:
            raise UserError(f"crop_min_seconds ({self.crop_min_seconds}) is above "
                            f"crop_max_seconds ({self.crop_max_seconds})")


@dataclass
class Item:
    """One usable training utterance."""

    key: str
    shard: str
    offset: int
    size: int
    num_samples: int
    speaker: int


@dataclass
class PlannedBatch:
    """A planned micro-batch: item positions, their crop starts (samples) and the common crop length."""

    items: list[int]
    starts: list[int]
    crop: int


@dataclass
class DataReport:
    """What was left out of training and why (logged and stored in the run's metrics)."""

    usable: int
    no_labels: list[str]
    no_pitch: list[str]
    too_short: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"usable_utterances": self.usable, "skipped_no_labels": len(self.no_labels),
                "skipped_no_pitch": len(self.no_pitch), "skipped_too_short": len(self.too_short)}


class PretrainData:
    """The utterances of one split joined with their labels, pitch and speaker ids."""

    def __init__(self, shards: Shards, split: str, labels: LabelSet, pitch: FeatureStore | None,
                 speakers: dict[str, int] | None, plan: PlanSettings, seed: int):
        self.shards = shards
        self.labels, self.pitch = labels, pitch
        if labels.label_rate not in (50, 100):
            raise UserError(f"labels at {labels.label_rate} Hz cannot be mapped to 50 Hz frames (use 50 or 100 Hz)")
        self.label_step = labels_per_frame(labels.label_rate)
        self.plan = plan
        self.budget = int(plan.batch_seconds * SAMPLE_RATE)
        self.crop_min = int(plan.crop_min_seconds * SAMPLE_RATE)
        self.crop_max = int(plan.crop_max_seconds * SAMPLE_RATE)
        if self.budget < max(self.crop_min, WINDOW):
            raise UserError(f"pretrain.batch_seconds ({plan.batch_seconds}) is below the shortest usable utterance "
                            f"(crop_min_seconds {plan.crop_min_seconds}): no batch could hold one")
        self.bucket_size, self.seed = plan.bucket_size, seed
        self.items, self.report = self._join(split, speakers)
        if not self.items:
            raise UserError(f"no usable {split} utterances in {shards.folder} (see the skipped counts above)")
        self._plans: dict[int, list[PlannedBatch]] = {}
        self._epoch_starts = [0]

    # ------------------------------------------------------------------ joining and checks

    def _join(self, split: str, speakers: dict[str, int] | None) -> tuple[list[Item], DataReport]:
        rows = self.shards.rows(split)
        items, no_labels, no_pitch, too_short, misaligned = [], [], [], [], []
        for row in rows:
            key, n = row["key"], row["num_samples"]
            labels = self.labels.labels.get(key)
            if labels is None:
                no_labels.append(key)
                continue
            expected = num_frames(n, self.labels.label_rate)
            if abs(len(labels) - expected) > LABEL_LENGTH_TOLERANCE:
                misaligned.append(f"{key} ({len(labels)} labels, {expected} expected)")
                continue
            if self.pitch is not None:
                if key not in self.pitch:
                    no_pitch.append(key)
                    continue
                if len(self.pitch[key]) != num_frames(n):
                    misaligned.append(f"{key} (pitch has {len(self.pitch[key])} frames, {num_frames(n)} expected)")
                    continue
            if n < self.crop_min:
                too_short.append(key)
                continue
            speaker = IGNORE_LABEL if speakers is None else speakers.get(key, IGNORE_LABEL)
            items.append(Item(key, row["shard"], row["flac_offset"], row["flac_bytes"], n, speaker))
        if misaligned:
            raise UserError(f"{len(misaligned)} {split} utterances do not match their labels or pitch, e.g. "
                            f"{misaligned[0]}: were they computed on other audio or at another label rate?")
        report = DataReport(len(items), no_labels, no_pitch, too_short)
        for what, keys in (("have no labels", no_labels), ("have no pitch", no_pitch),
                           ("are shorter than crop_min_seconds", too_short)):
            if keys:
                logger.warning("%d %s utterances %s and are skipped: %s%s", len(keys), split, what,
                               ", ".join(keys[:5]), " ..." if len(keys) > 5 else "")
        return items, report

    # ------------------------------------------------------------------ planning

    def epoch_plan(self, epoch: int) -> list[PlannedBatch]:
        """The batches of one epoch, in order (deterministic for seed and epoch)."""
        if epoch in self._plans:
            return self._plans[epoch]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.items))
        batches: list[PlannedBatch] = []
        for pool_start in range(0, len(order), self.bucket_size):
            pool = sorted(order[pool_start:pool_start + self.bucket_size],
                          key=lambda i: (self.items[i].num_samples, i))
            batches.extend(self._batches_of_pool(pool, rng))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._plans = {epoch: batches}  # keep one epoch in memory
        return batches

    def _batches_of_pool(self, pool: list[int], rng: np.random.Generator) -> list[PlannedBatch]:
        """Greedy batches over a pool sorted by length: the first item's length sets the crop."""
        out = []
        start = 0
        while start < len(pool):
            crop = min(self.items[pool[start]].num_samples, self.crop_max, self.budget)
            crop = (crop - WINDOW) // MODEL_HOP * MODEL_HOP + WINDOW  # whole frames only
            size = max(1, min(self.budget // crop, len(pool) - start))
            members = [int(i) for i in pool[start:start + size]]
            starts = [int(rng.integers(0, (self.items[i].num_samples - crop) // MODEL_HOP + 1)) * MODEL_HOP
                      for i in members]
            out.append(PlannedBatch(members, starts, crop))
            start += size
        return out

    def batch_at(self, k: int) -> PlannedBatch:
        """Micro-batch k of the endless sequence of epochs."""
        epoch = 0
        while True:
            if epoch + 1 >= len(self._epoch_starts):
                self._epoch_starts.append(self._epoch_starts[-1] + len(self.epoch_plan(epoch)))
            if k < self._epoch_starts[epoch + 1]:
                return self.epoch_plan(epoch)[k - self._epoch_starts[epoch]]
            epoch += 1

    def batches_per_epoch(self) -> int:
        return len(self.epoch_plan(0))

    # ------------------------------------------------------------------ loading

    def load(self, batch: PlannedBatch) -> dict[str, Any]:
        """Read, crop and collate one planned micro-batch."""
        frames = num_frames(batch.crop)
        wavs, labels, pitch, speakers, keys = [], [], [], [], []
        for i, start in zip(batch.items, batch.starts):
            item = self.items[i]
            wav = self.shards.read_audio(item.shard, item.offset, item.size)
            wavs.append(wav[start:start + batch.crop])
            first = start // MODEL_HOP
            index = (first + np.arange(frames)) * self.label_step
            source = self.labels.labels[item.key]
            row = np.full(frames, IGNORE_LABEL, dtype=np.int64)
            inside = index < len(source)
            row[inside] = source[index[inside]]
            labels.append(row)
            if self.pitch is not None:
                pitch.append(np.asarray(self.pitch[item.key][first:first + frames, 0], dtype=np.float32))
            speakers.append(item.speaker)
            keys.append(item.key)
        out = {"wav": torch.from_numpy(np.stack(wavs)),
               "lengths": torch.full((len(wavs),), batch.crop, dtype=torch.long),
               "labels": torch.from_numpy(np.stack(labels)),
               "pitch": torch.from_numpy(np.stack(pitch)) if pitch else None,
               "speakers": torch.tensor(speakers, dtype=torch.long),
               "keys": keys}
        return out


class MicroBatches(torch.utils.data.IterableDataset):
    """This rank's micro-batches from global position `start`: k = start + rank + j * world_size.

    DataLoader workers take every `num_workers`-th j; the DataLoader's round-robin over
    workers returns them in j order, so the sequence does not depend on the worker count.
    """

    def __init__(self, data: PretrainData, start: int, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.data, self.start, self.rank, self.world_size = data, start, rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        j = worker
        while True:
            yield self.data.load(self.data.batch_at(self.start + self.rank + j * self.world_size))
            j += workers


def loader(data: PretrainData, start: int, rank: int, world_size: int, num_workers: int, pin_memory: bool = False):
    """An endless DataLoader of collated micro-batches for this rank (in page-locked memory with
    `pin_memory`, for asynchronous copies to a GPU)."""
    return torch.utils.data.DataLoader(MicroBatches(data, start, rank, world_size), batch_size=None,
                                       num_workers=num_workers, persistent_workers=False,
                                       prefetch_factor=4 if num_workers else None, pin_memory=pin_memory)


def audio_seconds(batch: dict[str, Any]) -> float:
    return float(batch["lengths"].sum()) / SAMPLE_RATE


def speaker_ids(names: dict[str, str | None], split_keys: list[str]) -> tuple[dict[str, int], list[str]]:
    """Map speaker names to ids, numbering the speakers seen in `split_keys` (sorted)."""
    vocabulary = sorted({names[k] for k in split_keys if names.get(k)})
    ids = {name: i for i, name in enumerate(vocabulary)}
    return {k: ids[v] for k, v in names.items() if v in ids}, vocabulary

