"""`progre pretrain`: one pretraining run of ProgRE or the HuBERT baseline, from shards, labels and pitch.

Checks that labels, pitch contours and speaker ids belong to the corpus, builds the model, trains it
(`Trainer`, resumable: the same call again continues a killed run) and, on rank 0, writes into the
run folder ``model/`` (the final checkpoint every later stage reads) and ``curves.png``. Returns
the run's summary metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cluster.labels import read_labels
from ..cluster.speakers import read_speakers
from ..data.shards import Shards
from ..errors import UserError
from ..features.store import open_pitch_store
from ..log import logger
from ..model import ModelConfig, model_config, save_checkpoint
from .data import PlanSettings, PretrainData, speaker_ids
from .distributed import DistInfo
from .loop import RunSpec, Trainer, TrainSettings
from .metrics import plot_curves


@dataclass(frozen=True)
class ModelChoice:
    """Which model to pretrain: a size preset, ProgRE or HuBERT, and the branch switches."""

    model: str = "progre"
    size: str = "tiny"
    pitch_branch: bool | None = None
    speaker_branch: bool | None = None
    speaker_layer: int | None = None
    speaker_grad_through: bool = False
    feature_grad_mult: float = 0.1

    def config(self) -> ModelConfig:
        overrides: dict[str, Any] = {"feature_grad_mult": self.feature_grad_mult}
        for name in ("pitch_branch", "speaker_branch", "speaker_layer"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        overrides["speaker_grad_through"] = self.speaker_grad_through
        try:
            return model_config(self.size, self.model, **overrides)
        except ValueError as exc:
            raise UserError(f"pretrain: {exc}") from None


def speaker_names(shards: Shards, speakers: Path | None, source: str) -> dict[str, str | None]:
    """key -> speaker name, from the corpus index ("corpus") or a pseudo-speaker folder ("pseudo")."""
    if source == "pseudo":
        if speakers is None:
            raise UserError("pretrain.speaker_labels=pseudo needs --speakers (from `progre pseudo-speakers`)")
        return read_speakers(speakers)
    return shards.column("speaker")


def pretrain(shards: Shards, labels: Path, out: Path, choice: ModelChoice, plan: PlanSettings,
             settings: TrainSettings, dist: DistInfo, pitch: Path | None = None, speakers: Path | None = None,
             speaker_labels: str = "corpus") -> dict[str, Any]:
    """Train into the run folder `out`; returns the summary (steps, final losses and accuracies, data counts)."""
    label_set = read_labels(labels)
    if label_set.meta.get("corpus") != shards.fingerprint:
        raise UserError(f"the labels in {labels} belong to another corpus than {shards.folder}; relabel it")
    config = choice.config()
    pitch_store = None
    if config.pitch_branch:
        if pitch is None:
            raise UserError("the ProgRE model needs --pitch (from `progre features --kind pitch`)")
        pitch_store = open_pitch_store(pitch, shards)
    speaker_map, vocabulary = None, []
    if config.speaker_branch:
        speaker_map, vocabulary = speaker_ids(speaker_names(shards, speakers, speaker_labels), shards.keys("train"))
        if not vocabulary:
            raise UserError("the speaker branch needs speaker labels: the corpus has none "
                            "(use pretrain.speaker_labels=pseudo with --speakers)")
    data = PretrainData(shards, "train", label_set, pitch_store, speaker_map, plan)
    valid = PretrainData(shards, "valid", label_set, pitch_store, speaker_map, plan) if shards.keys("valid") else None
    spec = RunSpec(config, label_set.n_clusters, len(vocabulary), label_set.label_rate, shards.fingerprint,
                   vocabulary, speaker_labels)
    trainer = Trainer(settings, spec, data, valid, out, dist)
    logger.info("pretraining %s (%s, %.2fM parameters) on %d utterances, %d batches per epoch, labels k=%d at "
                "%d Hz%s", config.kind, choice.size, trainer.model.encoder.num_parameters() / 1e6, data.report.usable,
                data.batches_per_epoch(), label_set.n_clusters, label_set.label_rate,
                f", {len(vocabulary)} {speaker_labels} speakers" if vocabulary else "")
    summary = trainer.run()
    if dist.is_main:
        save_checkpoint(out / "model", trainer.model, {"speakers": vocabulary, "label_rate": label_set.label_rate,
                                                       "corpus": shards.fingerprint, "step": trainer.step,
                                                       "labels": str(labels), "speaker_labels": speaker_labels})
        summary |= data.report.as_dict() | {"model": config.kind, "size": choice.size,
                                            "parameters": trainer.model.encoder.num_parameters(),
                                            "speaker_labels": speaker_labels if vocabulary else None}
        plot_curves(trainer.metrics_dir, out / "curves.png",
                    f"{config.kind} ({choice.size}), labels k={label_set.n_clusters}")
    return summary
