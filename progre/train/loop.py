"""The pretraining loop: masked prediction of k-means labels, resumable, single process or DDP.

One optimizer update = `grad_accum` micro-batches per rank. Everything random in update s is
seeded by (seed, micro-batch index): dropout through torch's global generator, span masks
through their own generator, crops in the data plan. A resumed run therefore needs only the
weights, the optimizer state and the step, and continues exactly as if never stopped.

A step whose loss or gradient is not finite is skipped (no update, BatchNorm statistics
restored) and counted; `max_bad_steps` of them in a row stop the run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..config import PretrainParams
from ..errors import UserError
from ..log import logger, progress_bar
from ..model import ModelConfig, ProgREEncoder, ProgREPretrainModel, load_pretrain_model
from .checkpoints import CheckpointStore
from .data import IGNORE, PretrainData, audio_seconds, loader
from .distributed import DistInfo, all_true, barrier, mean_over_ranks
from .schedule import learning_rate


@dataclass
class RunSpec:
    """What a run trains and on what; stored in every checkpoint and checked on resume."""

    model_config: ModelConfig
    num_labels: int
    num_speakers: int
    label_rate: int
    corpus: str
    speakers: list[str]

    def compatibility(self) -> dict[str, Any]:
        return {"model": self.model_config.to_dict(), "num_labels": self.num_labels,
                "num_speakers": self.num_speakers, "label_rate": self.label_rate, "corpus": self.corpus}


BOOKKEEPING = {"log_every", "valid_every", "valid_batches", "checkpoint_every", "keep_last", "num_workers",
               "max_bad_steps", "max_steps"}
"""Parameters a run may change and still resume (more `max_steps` continues training)."""

VALID_SEED_OFFSET = 1 << 40  # micro-batch numbers of validation batches, far from training ones


def micro_seed(seed: int, k: int) -> int:
    """A 63-bit seed for micro-batch k, independent of how micro-batches are spread over ranks."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)[0] >> 1)


def compute_losses(out, speakers: torch.Tensor, p: PretrainParams) -> dict[str, torch.Tensor]:
    """Masked (and, if weighted, unmasked) prediction cross-entropy, feature penalty, speaker loss, their
    weighted sum, and the prediction accuracies."""
    zero = out.feature_penalty.new_zeros(())
    masked = F.cross_entropy(out.masked_logits, out.masked_targets) if out.masked_targets.numel() else zero
    unmasked = F.cross_entropy(out.unmasked_logits, out.unmasked_targets) \
        if out.unmasked_targets.numel() and p.unmasked_loss_weight > 0 else zero
    speaker = zero
    if out.speaker_logits is not None and bool((speakers != IGNORE).any()):
        speaker = F.cross_entropy(out.speaker_logits.float(), speakers, ignore_index=IGNORE)
    total = masked + p.unmasked_loss_weight * unmasked + p.feature_pen_weight * out.feature_penalty \
        + p.speaker_loss_weight * speaker
    with torch.no_grad():
        acc_m = (out.masked_logits.argmax(-1) == out.masked_targets).float().mean() \
            if out.masked_targets.numel() else zero
        acc_u = (out.unmasked_logits.argmax(-1) == out.unmasked_targets).float().mean() \
            if out.unmasked_targets.numel() else zero
    return {"loss": total, "loss_masked": masked, "loss_unmasked": unmasked, "feature_penalty": out.feature_penalty,
            "loss_speaker": speaker,
            "acc_masked": acc_m, "acc_unmasked": acc_u}


class Trainer:
    def __init__(self, p: PretrainParams, spec: RunSpec, data: PretrainData, valid: PretrainData | None,
                 run_dir: Path, dist: DistInfo):
        self.p, self.spec, self.data, self.valid = p, spec, data, valid
        self.run_dir, self.dist = Path(run_dir), dist
        self.device = dist.device
        self.store = CheckpointStore(self.run_dir / "train_state" / "checkpoints", p.keep_last)
        self.log_path = self.run_dir / "train_state" / "log.jsonl"
        torch.manual_seed(p.seed)
        encoder = ProgREEncoder(spec.model_config)
        self.model = ProgREPretrainModel(encoder, spec.num_labels, spec.num_speakers, final_dim=p.final_dim,
                                         logit_temp=p.logit_temp, mask_prob=p.mask_prob,
                                         mask_length=p.mask_length, min_masks=p.min_masks).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=p.lr, betas=tuple(p.betas), eps=p.eps,
                                           weight_decay=p.weight_decay)
        self.step = 0
        self.bad_steps = 0
        self.consecutive_bad = 0
        self.audio_seconds = 0.0
        self.wall_seconds = 0.0
        self.ddp = None
        if dist.enabled:
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                               else None, find_unused_parameters=spec.model_config.speaker_branch)
        use_bf16 = p.precision == "bf16" or (p.precision == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None

    # ------------------------------------------------------------------ resume

    def resume(self) -> bool:
        """Load the newest checkpoint if there is one; True if training continues from it."""
        latest = self.store.latest()
        if latest is None:
            return False
        state = torch.load(latest / "state.pt", map_location="cpu", weights_only=False)
        saved = state["compat"] | state.get("recipe", {})
        wanted = self.spec.compatibility() | self.recipe()
        differing = sorted(k for k in wanted if saved.get(k) != wanted[k])
        trained = None if differing else load_pretrain_model(latest / "model", device=self.device)
        barrier(self.dist)  # every rank has read the checkpoint before rank 0 moves or truncates anything
        if differing:
            self._supersede(latest, differing)
            return False
        self.model.load_state_dict(trained.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.bad_steps = state["step"], state["bad_steps"]
        self.audio_seconds, self.wall_seconds = state["audio_seconds"], state["wall_seconds"]
        if self.dist.is_main:
            _truncate_log(self.log_path, self.step)
        logger.info("resuming from %s (update %d of %d)", latest, self.step, self.p.max_steps)
        return True

    def recipe(self) -> dict[str, Any]:
        """The parameters that define the training run; a checkpoint resumes only under the same ones."""
        return {k: v for k, v in self.p.to_dict().items() if k not in BOOKKEEPING}

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
        for name in ("checkpoints", "log.jsonl", "dvclive"):
            if (folder / name).exists():
                os.replace(folder / name, aside / name)

    def save(self) -> Path:
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "bad_steps": self.bad_steps,
                 "audio_seconds": self.audio_seconds, "wall_seconds": self.wall_seconds,
                 "compat": self.spec.compatibility(), "recipe": self.recipe(), "torch_rng": torch.get_rng_state(),
                 "data_position": self.step * self.p.grad_accum * self.dist.world_size}
        extra = {"speakers": self.spec.speakers, "label_rate": self.spec.label_rate, "corpus": self.spec.corpus,
                 "step": self.step}
        return self.store.save(self.step, self.model, state, extra)

    # ------------------------------------------------------------------ one update

    def _forward(self, batch: dict[str, Any], k: int, distributed: bool = True) -> dict[str, torch.Tensor]:
        """Losses of micro-batch k. Validation passes distributed=False: the DDP wrapper's forward is a
        collective (buffer broadcast), and ranks may validate different numbers of batches."""
        torch.manual_seed(micro_seed(self.p.seed, k))  # dropout
        masks = torch.Generator().manual_seed(micro_seed(self.p.seed, k) ^ 0x5DEECE66D)
        wav = batch["wav"].to(self.device, non_blocking=True)
        lengths = batch["lengths"].to(self.device)
        pitch = batch["pitch"].to(self.device) if batch["pitch"] is not None else None
        module = self.ddp if self.ddp is not None and distributed else self.model
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            out = module(wav, lengths, batch["labels"], pitch=pitch, generator=masks)
        return compute_losses(out, batch["speakers"].to(self.device), self.p)

    def train_step(self, batches) -> dict[str, float]:
        """One optimizer update from `grad_accum` micro-batches; returns its statistics."""
        p = self.p
        self.model.train()
        lr = learning_rate(self.step, peak=p.lr, warmup_steps=p.warmup_steps, max_steps=p.max_steps,
                           end=p.lr_end, power=p.decay_power)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        stats: dict[str, float] = defaultdict(float)
        seconds = 0.0
        for micro in range(p.grad_accum):
            k = (self.step * p.grad_accum + micro) * self.dist.world_size + self.dist.rank
            batch = next(batches)
            seconds += audio_seconds(batch)
            sync = micro == p.grad_accum - 1
            context = self.ddp.no_sync() if (self.ddp is not None and not sync) else nullcontext()
            with context:
                losses = self._forward(batch, k)
                (losses["loss"] / p.grad_accum).backward()
            for name, value in losses.items():
                stats[name] += float(value.detach()) / p.grad_accum
        params = [q for q in self.model.parameters() if q.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, p.clip_norm if p.clip_norm > 0 else float("inf"))
        finite = all_true(bool(torch.isfinite(grad_norm)) and all(np.isfinite(v) for v in stats.values()), self.dist)
        if finite:
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
            if self.consecutive_bad >= p.max_bad_steps:
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
        for j in range(self.dist.rank, min(self.p.valid_batches, self.valid.batches_per_epoch()),
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
        p = self.p
        self.resume()
        if self.step >= p.max_steps:
            logger.info("training already finished (%d updates)", self.step)
            return self._summary({})
        batches = iter(loader(self.data, self.step * p.grad_accum * self.dist.world_size, self.dist.rank,
                              self.dist.world_size, p.num_workers))
        live = _Live(self.run_dir / "train_state" / "dvclive", self.step) if self.dist.is_main else None
        window: dict[str, list[float]] = defaultdict(list)
        last_valid: dict[str, float] = {}
        started = time.perf_counter()
        wall_before = self.wall_seconds
        with progress_bar() as progress:
            task = progress.add_task("pretraining", total=p.max_steps, completed=self.step)
            while self.step < p.max_steps:
                t0 = time.perf_counter()
                stats = self.train_step(batches)
                stats["audio_per_second"] = stats.pop("audio_seconds") / max(time.perf_counter() - t0, 1e-9)
                for name, value in stats.items():
                    window[name].append(value)
                self.wall_seconds = wall_before + time.perf_counter() - started
                done = self.step == p.max_steps
                # every rank takes the same branches, so the collectives inside line up
                log_now = self.step % p.log_every == 0 or done
                valid_now = self.step % p.valid_every == 0 or done
                record: dict[str, float] = {}
                if log_now:
                    record |= mean_over_ranks({f"train/{n}": float(np.mean(v)) for n, v in window.items()},
                                              self.dist)
                    window.clear()
                    progress.update(task, description=f"pretraining loss {record['train/loss_masked']:.3f} "
                                                      f"acc {record['train/acc_masked']:.3f}")
                if valid_now:
                    last_valid = self.validate()
                    record |= last_valid
                if record:
                    record |= {"step": self.step, "bad_steps": self.bad_steps, "wall_seconds": self.wall_seconds}
                    if live is not None:
                        self._log(record, live)
                if self.step % p.checkpoint_every == 0 or done:
                    self._checkpoint()
                progress.update(task, completed=self.step)
        return self._summary(last_valid)

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

    def _log(self, record: dict[str, float], live: _Live) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        live.log(record)

    def _summary(self, last_valid: dict[str, float]) -> dict[str, Any]:
        history = read_log(self.log_path)
        last = history[-1] if history else {}
        return {"steps": self.step, "bad_steps": self.bad_steps, "wall_seconds": round(self.wall_seconds, 1),
                "audio_hours_seen": round(self.audio_seconds / 3600, 4),
                **{k: v for k, v in last.items() if k.startswith(("train/", "valid/"))}}


class _Live:
    """dvclive metrics and plots, continuing at `step` after a resume."""

    def __init__(self, folder: Path, step: int):
        from dvclive import Live

        _truncate_dvclive(folder, step)
        self.live = Live(str(folder), resume=step > 0, save_dvc_exp=False, dvcyaml=None, report=None)

    def log(self, record: dict[str, float]) -> None:
        self.live.step = int(record["step"])
        for name, value in record.items():
            if name != "step":
                self.live.log_metric(name, value)
        self.live.next_step()


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint a run resumes from (they will be logged again)."""
    records = [r for r in read_log(path) if r["step"] <= step]
    if path.is_file():
        path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _truncate_dvclive(folder: Path, step: int) -> None:
    for tsv in folder.glob("plots/metrics/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        column = lines[0].split("\t").index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(float(ln.split("\t")[column])) <= step]
        tsv.write_text("\n".join(kept) + "\n")


def plot_curves(log_path: Path, out: Path, title: str) -> None:
    """Masked-prediction loss and accuracy (train and valid) against updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    if not records:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, name in zip(axes, ("loss_masked", "acc_masked")):
        for split, style in (("train", "-"), ("valid", "o--")):
            points = [(r["step"], r[f"{split}/{name}"]) for r in records if f"{split}/{name}" in r]
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
        ax.set_xlabel("update")
        ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
