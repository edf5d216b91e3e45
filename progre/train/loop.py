"""The pretraining loop: masked prediction of k-means labels, resumable, single process or DDP.

One optimizer update = `grad_accum` micro-batches per rank. Everything random in update s is
seeded by (seed, micro-batch index): dropout through torch's global generator, span masks
through their own generator, crops in the data plan. A resumed run therefore needs only the
weights, the optimizer state and the step, and continues exactly as if never stopped.

A step whose loss or gradient is not finite is skipped (no update, BatchNorm statistics
restored) and counted; `max_bad_steps` of them in a row stop the run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..device import PRECISIONS, resolve_precision
from ..errors import UserError
from ..log import logger, progress_bar
from ..model import (ModelConfig, ProgREEncoder, ProgREPretrainModel, build_encoder, load_state_dict_checked,
                     pretraining_losses)
from ..model.model_config import upgrade_config_dict
from ..settings import default_of, setting
from .checkpoint_store import CheckpointStore
from .batches import PlanSettings, PretrainData, audio_seconds, loader
from .distributed import DistInfo, all_true, barrier, check_shared_run_folder, mean_over_ranks
from .metrics_log import MetricsLog
from .schedule import learning_rate


@dataclass(frozen=True)
class TrainRecipe:
    """The training settings that change the trained weights (part of the `pretrain` params section).
    A checkpoint resumes only when these, the batch plan (`PlanSettings`) and the `RunSpec` are what it
    was trained with (`resume_key`); a setting that a checkpoint predates counts as unchanged while it
    keeps its default, so adding one never sets runs aside."""

    # the pretraining heads and the loss
    mask_prob: float = setting(0.8, "fraction of frames that start a masked span (HuBERT: 0.8)", min=0.0, max=1.0)
    mask_length: int = setting(10, "masked span length in frames", min=1)
    min_masks: int = setting(2, "at least this many spans per utterance", min=0)
    logit_temp: float = setting(0.1, "cosine-similarity logits are divided by this", min=1e-4)
    final_dim: int = setting(256, "dimension of the prediction projection and label embeddings", min=1)
    feature_pen_weight: float = setting(10.0, "weight of the mean square of the CNN features", min=0.0)
    unmasked_loss_weight: float = setting(0.0, "weight of the prediction loss on unmasked frames (fairseq's "
                                               "pred_nomask_weight; HuBERT: 0)", min=0.0)
    speaker_loss_weight: float = setting(1.0, "weight of the speaker-classification loss", min=0.0)
    # optimisation
    lr: float = setting(5e-4, "peak learning rate", above=0.0)
    betas: list[float] = setting([0.9, 0.98], "Adam betas")
    eps: float = setting(1e-6, "Adam epsilon", above=0.0)
    weight_decay: float = setting(0.01, "weight decay (AdamW-style, decoupled)", min=0.0)
    warmup_steps: int = setting(32000, "linear warm-up steps", min=0)
    lr_end: float = setting(0.0, "learning rate at the last step of the polynomial decay", min=0.0)
    decay_power: float = setting(1.0, "power of the polynomial decay (1: linear)", min=0.0)
    clip_norm: float = setting(10.0, "gradient-norm clip (0: off)", min=0.0)
    grad_accum: int = setting(1, "gradient-accumulation steps per update", min=1)
    precision: str = setting("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=PRECISIONS)
    seed: int = setting(1234, "random seed of init, masking, crops and order")

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise UserError(f"betas: expected two numbers in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class RunControl:
    """How long a run goes and how it reports, checkpoints and feeds itself (part of the `pretrain` params
    section): free to change between a kill and the resume. A larger `max_steps` continues a finished
    run (the polynomial decay then restarts over the new horizon)."""

    max_steps: int = setting(400000, "optimizer updates", min=1)
    max_bad_steps: int = setting(20, "stop after this many non-finite steps in a row", min=1)
    num_workers: int = setting(1, "data-loader worker processes", min=0)
    fused_optimizer: bool | None = setting(None, "AdamW's fused kernel (null: on CUDA only; on the CPU it rounds "
                                                 "differently, by about one float32 ulp per update, from the for-loop "
                                                 "AdamW whose numbers the demo reports hold)")
    compile: bool = setting(False, "torch.compile the Transformer layers and CNN blocks (GPU; dynamic shapes, the "
                                   "first steps compile; measured by make gpu-check)")
    log_every: int = setting(10, "log metrics every N updates", min=1)
    checkpoint_every: int = setting(500, "save a resumable checkpoint every N updates", min=1)
    keep_last: int = setting(2, "resumable checkpoints kept", min=1)
    valid_every: int = setting(500, "validate every N updates", min=1)
    valid_batches: int = setting(20, "batches per validation", min=1)


DEFAULTS = {f.name: default_of(f) for cls in (TrainRecipe, PlanSettings) for f in fields(cls)}
"""The defaults of every setting in the resume key: a checkpoint that predates one resumes while it keeps it."""


@dataclass
class RunSpec:
    """What a run trains and on what; checked on resume like `TrainRecipe`."""

    model_config: ModelConfig
    num_labels: int
    num_speakers: int
    label_rate: int
    corpus: str
    speakers: list[str]
    speaker_labels: str = "corpus"
    """Where the speaker ids come from: "corpus" or "pseudo" (`progre pseudo-speakers`)."""
    init: str | None = None
    """The sha256 of the weights the encoder started from (`pretrain.init`), or None: random init."""

    def compatibility(self) -> dict[str, Any]:
        key = {"model_config": self.model_config.to_dict(), "num_labels": self.num_labels,
               "num_speakers": self.num_speakers, "label_rate": self.label_rate, "corpus": self.corpus,
               "speaker_labels": self.speaker_labels}
        # only when set: the key of a run from random init stays what it was, and a checkpoint made from
        # another init (or from none) does not resume one that starts from these weights
        return key | ({"init": self.init} if self.init is not None else {})


VALID_SEED_OFFSET = 1 << 40  # micro-batch numbers of validation batches, far from training ones


def micro_seed(seed: int, k: int) -> int:
    """A 63-bit seed for micro-batch k, independent of how micro-batches are spread over ranks."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)[0] >> 1)


def resume_key(spec: RunSpec, recipe: TrainRecipe, plan: PlanSettings) -> dict[str, Any]:
    """Everything a checkpoint must share with the run that resumes it."""
    return spec.compatibility() | asdict(recipe) | asdict(plan)


def saved_resume_key(state: dict[str, Any]) -> dict[str, Any]:
    """The resume key stored in a checkpoint's state.pt, also from checkpoints of earlier versions
    (which stored all pretrain params as "recipe" beside a "compat" record, or the model config with
    the field names it had before it took fairseq's)."""
    if "resume" in state:
        key = dict(state["resume"])
    else:
        compat = state.get("compat", {})
        key = dict(state.get("recipe", {}))
        key["model_config"] = compat.get("model")
        key |= {k: compat[k] for k in ("num_labels", "num_speakers", "label_rate", "corpus") if k in compat}
    if isinstance(key.get("model_config"), dict):
        key["model_config"] = upgrade_config_dict(key["model_config"])
    return key


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, without its multiplication of every gradient by 1.0 when the norm
    is within `max_norm` (the usual case): the same gradients, bit for bit, one pass over them fewer.
    Returns the total norm (non-finite when a gradient is)."""
    grads = [p.grad for p in params]
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # as torch computes it
    if bool(coefficient < 1.0):  # (a NaN norm leaves the gradients as they are: the update is skipped)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


@contextmanager
def optimizer_threads(device: torch.device):
    """Run the optimizer step on one CPU thread. Its ~1,500 element-wise kernels per step (AdamW, one
    tensor at a time) are memory-bound, and each is a fork and join of torch's thread pool: on a small
    machine shared with other jobs a join waits for a descheduled thread (bench.train: 0.23 s per Base
    step on one thread vs 0.32 s on two). Element-wise results do not depend on the thread count."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compile_blocks(encoder: ProgREEncoder) -> None:
    """`torch.compile` the encoder's repeated blocks in place (the Transformer layers and the CNN
    blocks, which hold nearly all its FLOPs), for any sequence length. Their parameters and
    state-dict names are unchanged; the data-dependent parts around them (span masks, masked frame
    selection, padding) stay eager."""
    for layer in encoder.transformer.layers:
        layer.compile(dynamic=True)
    for block in encoder.feature_extractor.conv_layers:
        block.compile(dynamic=True)


def differing_settings(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names whose values differ; a name the checkpoint lacks differs only if its wanted value is not the default."""
    return sorted(k for k, v in wanted.items()
                  if (saved[k] != v if k in saved else (k not in DEFAULTS or v != DEFAULTS[k])))


class Trainer:
    """Masked-prediction pretraining of one model: `run` trains (resuming when it can) to `max_steps`."""

    def __init__(self, recipe: TrainRecipe, control: RunControl, spec: RunSpec, data: PretrainData,
                 valid: PretrainData | None, run_dir: Path, dist: DistInfo,
                 init: Mapping[str, torch.Tensor] | None = None):
        """`init`: encoder weights to start from (continued pretraining; `spec.init` names them), loaded
        over the fresh encoder before the heads are built, so the heads are a fresh run's."""
        self.recipe, self.control, self.spec, self.data, self.valid = recipe, control, spec, data, valid
        self.run_dir, self.dist = Path(run_dir), dist
        self.device = dist.device
        self.store = CheckpointStore(self.run_dir / "train_state" / "checkpoints", control.keep_last)
        self.metrics_dir = self.run_dir / "train_state" / "dvclive"
        r, c = recipe, control
        torch.manual_seed(r.seed)
        encoder = build_encoder(spec.model_config)
        if init is not None:
            load_state_dict_checked(encoder, init, "pretrain.init")
        self.model = ProgREPretrainModel(encoder, spec.num_labels, spec.num_speakers, final_dim=r.final_dim,
                                         logit_temp=r.logit_temp, mask_prob=r.mask_prob,
                                         mask_length=r.mask_length, min_masks=r.min_masks).to(self.device)
        fused = c.fused_optimizer if c.fused_optimizer is not None else self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=r.lr, betas=tuple(r.betas), eps=r.eps,
                                           weight_decay=r.weight_decay, fused=fused)
        if c.compile:
            compile_blocks(self.model.encoder)
        self.step = 0
        self.bad_steps = 0
        self.consecutive_bad = 0
        self.audio_seconds = 0.0
        self.wall_seconds = 0.0
        self.ddp = None
        if dist.enabled:
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                               else None, find_unused_parameters=spec.model_config.speaker_branch)
        self.autocast_dtype = torch.bfloat16 if resolve_precision(r.precision, self.device) == "bf16" else None

    # ------------------------------------------------------------------ resume

    def resume_key(self) -> dict[str, Any]:
        return resume_key(self.spec, self.recipe, self.data.plan)

    def resume(self) -> bool:
        """Load the newest checkpoint that loads, if any; True if training continues from it. Newer ones
        that do not load are set aside (with a warning naming them), and one made with other settings
        is superseded."""
        if self.dist.is_main:
            self.store.remove_leftovers()
        barrier(self.dist)
        check_shared_run_folder(self.run_dir, lambda: [c.name for c in self.store.complete()], self.dist)
        found = self.store.load_latest(self.device)
        barrier(self.dist)  # every rank has read the checkpoints before rank 0 moves anything
        if self.dist.is_main:
            self.store.set_aside_unloadable()
        if found is None:
            return False
        latest, state, trained = found
        differing = differing_settings(saved_resume_key(state), self.resume_key())
        if differing:
            self._supersede(latest, differing)
            return False
        self.model.load_state_dict(trained.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.audio_seconds, self.wall_seconds = state["audio_seconds"], state["wall_seconds"]
        logger.info("resuming from %s (update %d of %d)", latest, self.step, self.control.max_steps)
        return True

    def _supersede(self, latest: Path, differing: list[str]) -> None:
        """Another run's checkpoints (e.g. a `dvc exp run -S` sweep changed a parameter): keep them
        aside, in train_state/superseded/ (replacing any older superseded run), and start afresh."""
        folder = self.run_dir / "train_state"
        aside = folder / "superseded"
        logger.warning("%s was trained with other settings (%s differ): starting afresh; its checkpoints "
                       "are kept in %s", latest, ", ".join(differing), aside)
        if not self.dist.is_main:
            return
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir(parents=True)
        for name in ("checkpoints", "dvclive"):
            if (folder / name).exists():
                os.replace(folder / name, aside / name)

    def save(self) -> Path:
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "bad_steps": self.bad_steps,
                 "audio_seconds": self.audio_seconds, "wall_seconds": self.wall_seconds,
                 "resume": self.resume_key()}
        extra = {"speakers": self.spec.speakers, "label_rate": self.spec.label_rate, "corpus": self.spec.corpus,
                 "step": self.step} | ({"init_sha256": self.spec.init} if self.spec.init is not None else {})
        return self.store.save(self.step, self.model, state, extra)

    # ------------------------------------------------------------------ one update

    def _forward(self, batch: dict[str, Any], k: int, distributed: bool = True) -> dict[str, torch.Tensor]:
        """Losses of micro-batch k. Validation passes distributed=False: the DDP wrapper's forward is a
        collective (buffer broadcast), and ranks may validate different numbers of batches."""
        r = self.recipe
        torch.manual_seed(micro_seed(r.seed, k))  # dropout
        masks = torch.Generator().manual_seed(micro_seed(r.seed, k) ^ 0x5DEECE66D)
        wav = batch["wav"].to(self.device, non_blocking=True)
        lengths = batch["lengths"]  # on the CPU: the model reads them there (no wait for the GPU)
        pitch = batch["pitch"].to(self.device, non_blocking=True) if batch["pitch"] is not None else None
        module = self.ddp if self.ddp is not None and distributed else self.model
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            out = module(wav, lengths, batch["labels"], pitch=pitch, generator=masks)
        return pretraining_losses(out, batch["speakers"].to(self.device), unmasked_weight=r.unmasked_loss_weight,
                                  feature_penalty_weight=r.feature_pen_weight, speaker_weight=r.speaker_loss_weight)

    def train_step(self, batches) -> dict[str, float]:
        """One optimizer update from `grad_accum` micro-batches; returns its statistics."""
        r, c = self.recipe, self.control
        self.model.train()
        lr = learning_rate(self.step, peak=r.lr, warmup_steps=r.warmup_steps, max_steps=c.max_steps,
                           end=r.lr_end, power=r.decay_power)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        stats: dict[str, float] = defaultdict(float)
        seconds = 0.0
        for micro in range(r.grad_accum):
            k = (self.step * r.grad_accum + micro) * self.dist.world_size + self.dist.rank
            batch = next(batches)
            seconds += audio_seconds(batch)
            sync = micro == r.grad_accum - 1
            context = self.ddp.no_sync() if (self.ddp is not None and not sync) else nullcontext()
            with context:
                losses = self._forward(batch, k)
                (losses["loss"] / r.grad_accum).backward()
            # one device-to-host copy for all of them (each float() would wait for the GPU)
            values = torch.stack([value.detach().double() for value in losses.values()]).tolist()
            for name, value in zip(losses, values):
                stats[name] += value / r.grad_accum
        params = [q for q in self.model.parameters() if q.grad is not None]
        grad_norm = clip_grad_norm(params, r.clip_norm if r.clip_norm > 0 else float("inf"))
        finite = all_true(bool(torch.isfinite(grad_norm)) and all(np.isfinite(v) for v in stats.values()), self.dist)
        if finite:
            with optimizer_threads(self.device):
                self.optimizer.step()
            self.consecutive_bad = 0
        else:
            with torch.no_grad():
                for name, buffer in self.model.named_buffers():
                    buffer.copy_(buffers[name])
            self.bad_steps += 1
            self.consecutive_bad += 1
            logger.warning("update %d: non-finite loss or gradient, skipped (%d in a row)", self.step,
                           self.consecutive_bad)
            if self.consecutive_bad >= c.max_bad_steps:
                raise UserError(f"{self.consecutive_bad} non-finite updates in a row (last at {self.step}); "
                                f"lower pretrain.lr or check the data; the last checkpoint is intact")
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        # ranks hold different crops: the audio of this update is the sum over ranks
        self.audio_seconds += mean_over_ranks({"seconds": seconds}, self.dist)["seconds"] * self.dist.world_size
        return dict(stats) | {"lr": lr, "grad_norm": float(grad_norm), "skipped": 0.0 if finite else 1.0,
                              "audio_seconds": seconds}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Masked-prediction loss and accuracy on the first `valid_batches` valid batches (eval mode)."""
        if self.valid is None:
            return {}
        self.model.eval()
        # sums and counts over ranks (a rank may get no batch when there are few), the same keys everywhere
        totals = {"loss_masked": 0.0, "acc_masked": 0.0, "batches": 0.0}
        for j in range(self.dist.rank, min(self.control.valid_batches, self.valid.batches_per_epoch()),
                       self.dist.world_size):
            batch = self.valid.load(self.valid.batch_at(j))
            losses = self._forward(batch, VALID_SEED_OFFSET + j, distributed=False)  # same masks every time
            totals["loss_masked"] += float(losses["loss_masked"])
            totals["acc_masked"] += float(losses["acc_masked"])
            totals["batches"] += 1
        totals = {n: v * self.dist.world_size for n, v in mean_over_ranks(totals, self.dist).items()}
        batches = max(totals.pop("batches"), 1.0)
        return {f"valid/{n}": v / batches for n, v in totals.items()}

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        r, c = self.recipe, self.control
        self.resume()
        if self.step >= c.max_steps:
            logger.info("training already finished (%d updates)", self.step)
            return self._summary()
        metrics = MetricsLog(self.metrics_dir, resume=self.step > 0) if self.dist.is_main else None
        batches = iter(loader(self.data, self.step * r.grad_accum * self.dist.world_size, self.dist.rank,
                              self.dist.world_size, c.num_workers, pin_memory=self.device.type == "cuda"))
        window: dict[str, list[float]] = defaultdict(list)
        started = time.perf_counter()
        wall_before = self.wall_seconds
        with progress_bar() as progress:
            task = progress.add_task("pretraining", total=c.max_steps, completed=self.step)
            while self.step < c.max_steps:
                t0 = time.perf_counter()
                stats = self.train_step(batches)
                stats["audio_per_second"] = stats.pop("audio_seconds") / max(time.perf_counter() - t0, 1e-9)
                for name, value in stats.items():
                    window[name].append(value)
                self.wall_seconds = wall_before + time.perf_counter() - started
                done = self.step == c.max_steps
                # every rank takes the same branches, so the collectives inside line up
                log_now = self.step % c.log_every == 0 or done
                valid_now = self.step % c.valid_every == 0 or done
                record: dict[str, float] = {}
                if log_now:
                    record |= mean_over_ranks({f"train/{n}": float(np.mean(v)) for n, v in window.items()},
                                              self.dist)
                    window.clear()
                    progress.update(task, description=f"pretraining loss {record['train/loss_masked']:.3f} "
                                                      f"acc {record['train/acc_masked']:.3f}")
                if valid_now:
                    record |= self.validate()
                if record and metrics is not None:
                    metrics.log(self.step, record | {"bad_steps": self.bad_steps, "wall_seconds": self.wall_seconds})
                if self.step % c.checkpoint_every == 0 or done:
                    self._checkpoint()
                progress.update(task, completed=self.step)
        return self._summary()

    def _checkpoint(self) -> None:
        """Rank 0 writes; every rank learns whether it worked, so a failed write (a full disk) stops
        them all instead of leaving the others waiting in the next collective."""
        error: UserError | None = None
        if self.dist.is_main:
            try:
                self.save()
            except UserError as exc:
                error = exc
        if not all_true(error is None, self.dist):
            raise error or UserError("rank 0 could not write a checkpoint (see its error); the previous "
                                     "checkpoints are intact")

    def _summary(self) -> dict[str, Any]:
        latest = MetricsLog.latest(self.metrics_dir)
        return {"steps": self.step, "bad_steps": self.bad_steps, "wall_seconds": round(self.wall_seconds, 1),
                "audio_hours_seen": round(self.audio_seconds / 3600, 4),
                **{k: v for k, v in latest.items() if k.startswith(("train/", "valid/"))}}
