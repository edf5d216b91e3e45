"""`progre pretrain`: one pretraining run of ProgRE or the HuBERT baseline, from shards, labels and pitch.

Checks that labels, pitch contours and speaker ids belong to the corpus, builds the model (from random
weights, or continuing from the encoder of `init`: continued pretraining), trains it (`Trainer`,
resumable: the same call again continues a killed run) and, on rank 0, writes into the run folder
``model/`` (the final checkpoint every later stage reads) and ``curves.png``. Returns the run's summary
metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cluster.labels import LabelSet
from ..data.shards import Shards
from ..errors import UserError
from ..features.store import FeatureStore
from ..log import logger
from ..model import ModelConfig, model_config, save_checkpoint
from ..model.model_config import KINDS, SIZES
from ..settings import setting
from .batches import PlanSettings, PretrainData, speaker_ids
from .distributed import DistInfo
from .loop import RunControl, RunSpec, Trainer, TrainRecipe
from .metrics_log import plot_curves


@dataclass(frozen=True)
class ModelChoice:
    """Which model to pretrain: a size preset, ProgRE or HuBERT, the branch switches, and what the speaker
    branch learns from (part of the `pretrain` params section)."""

    model: str = setting("progre", "progre, or the HuBERT baseline (both branches off)", choices=KINDS)
    size: str = setting("tiny", "model size preset", choices=SIZES)
    pitch_branch: bool | None = setting(None, "ablation switch for the pitch branch (null: on for progre)")
    speaker_branch: bool | None = setting(None, "ablation switch for the speaker branch (null: on for progre)")
    speaker_layer: int | None = setting(None, "the speaker branch reads the output of this transformer layer "
                                              "(null: the size preset's, 4 for base, 2 for tiny)", min=1)
    speaker_grad_through: bool = setting(False, "let gradient flow through the speaker subtraction "
                                                "(the release detaches it)")
    speaker_labels: str = setting("corpus", "corpus speaker ids, or a pseudo-speaker table (--speakers)",
                                  choices=("corpus", "pseudo"))
    feature_grad_mult: float = setting(0.1, "gradient scale of the CNN feature encoder (fairseq's "
                                            "feature_grad_mult)", min=0.0)
    encoder_layerdrop: float | None = setting(None, "probability of skipping each transformer layer in a training "
                                                    "step (null: the size preset's; base: 0 for ProgRE, 0.05 for "
                                                    "HuBERT, as each release trains)", min=0.0)
    init: str | None = setting(None, "continued pretraining: start the encoder from this model (a checkpoint or "
                                     "run folder, an export, or a release checkpoint imported by `progre "
                                     "import-official`) of the same size and kind; the training heads, optimiser "
                                     "and schedule start fresh (null: random init)")

    def config(self) -> ModelConfig:
        overrides: dict[str, Any] = {"feature_grad_mult": self.feature_grad_mult}
        for name in ("pitch_branch", "speaker_branch", "speaker_layer", "encoder_layerdrop"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        overrides["speaker_grad_through"] = self.speaker_grad_through
        try:
            return model_config(self.size, self.model, **overrides)
        except ValueError as exc:
            raise UserError(f"pretrain: {exc}") from None


@dataclass(frozen=True)
class InitWeights:
    """The encoder weights a continued pretraining starts from."""

    path: str
    """As `pretrain.init` gave it."""
    folder: str
    """The folder that holds them."""
    sha256: str
    """Of the weights file: what the resume key compares."""
    state: dict[str, Any]

    def record(self) -> dict[str, str]:
        """For the run's config.json and metrics."""
        return {"path": self.path, "folder": self.folder, "weights_sha256": self.sha256}


def init_weights(path: str, config: ModelConfig) -> tuple[InitWeights, ModelConfig]:
    """The encoder weights of `path` (anything `model.export.load_model_folder` reads), checked to be a model
    of `config`'s size and kind (one line naming the differences otherwise), and the config to train: `config`
    with the init's `speaker_norm` (the LayerNorm after the speaker subtraction, which the release's Large
    has and no pretrain setting names)."""
    from ..io import file_sha256
    from ..model.checkpoint import check_same_model
    from ..model.export import load_model_folder

    found = load_model_folder(Path(path))
    if config.speaker_branch and found.encoder.config.speaker_branch:
        config = dataclasses.replace(config, speaker_norm=found.encoder.config.speaker_norm)
    check_same_model(f"pretrain.init {path}", found.encoder.config, config)
    weights = InitWeights(path, str(found.folder), file_sha256(found.weights), found.encoder.state_dict())
    return weights, config


def speaker_names(shards: Shards, speakers: dict[str, str] | None, source: str) -> dict[str, str | None]:
    """key -> speaker name, from the corpus index ("corpus") or a pseudo-speaker table ("pseudo")."""
    if source == "pseudo":
        if speakers is None:
            raise UserError("pretrain.speaker_labels=pseudo needs --speakers (from `progre pseudo-speakers`)")
        return speakers
    return shards.column("speaker")


def pretrain(shards: Shards, labels: LabelSet, pitch: FeatureStore | None, speakers: dict[str, str] | None,
             choice: ModelChoice, plan: PlanSettings, recipe: TrainRecipe, control: RunControl, dist: DistInfo,
             out: Path) -> dict[str, Any]:
    """Train into the run folder `out` on `shards` with their k-means `labels`, pitch contours (for a model
    with a pitch branch) and pseudo speakers (key -> id, for `speaker_labels` pseudo); returns the summary
    (steps, final losses and accuracies, data counts)."""
    if labels.meta.get("corpus") != shards.fingerprint:
        raise UserError(f"the labels in {labels.source} belong to another corpus than {shards.folder}; relabel it")
    config = choice.config()
    init = None
    if choice.init:
        init, config = init_weights(choice.init, config)
    if config.pitch_branch and pitch is None:
        raise UserError("the ProgRE model needs --pitch (from `progre features --kind pitch`)")
    pitch_store = pitch if config.pitch_branch else None
    speaker_map, vocabulary = None, []
    if config.speaker_branch:
        names = speaker_names(shards, speakers, choice.speaker_labels)
        speaker_map, vocabulary = speaker_ids(names, shards.keys("train"))
        if not vocabulary:
            raise UserError("the speaker branch needs speaker labels: the corpus has none "
                            "(use pretrain.speaker_labels=pseudo with --speakers)")
    data = PretrainData(shards, "train", labels, pitch_store, speaker_map, plan, recipe.seed)
    valid = PretrainData(shards, "valid", labels, pitch_store, speaker_map, plan, recipe.seed) \
        if shards.keys("valid") else None
    speaker_labels = choice.speaker_labels
    spec = RunSpec(config, labels.n_clusters, len(vocabulary), labels.label_rate, shards.fingerprint,
                   vocabulary, speaker_labels, None if init is None else init.sha256)
    trainer = Trainer(recipe, control, spec, data, valid, out, dist, None if init is None else init.state)
    logger.info("pretraining %s (%s, %.2fM parameters) on %d utterances, %d batches per epoch, labels k=%d at "
                "%d Hz%s%s", config.kind, choice.size, trainer.model.encoder.num_parameters() / 1e6, data.report.usable,
                data.batches_per_epoch(), labels.n_clusters, labels.label_rate,
                f", {len(vocabulary)} {speaker_labels} speakers" if vocabulary else "",
                "" if init is None else f", continuing from {init.folder}")
    summary = trainer.run()
    if dist.is_main:
        started = {} if init is None else {"init": init.record()}
        save_checkpoint(out / "model", trainer.model, {"speakers": vocabulary, "label_rate": labels.label_rate,
                                                       "corpus": shards.fingerprint, "step": trainer.step,
                                                       "labels": str(labels.source), "speaker_labels": speaker_labels}
                        | started)
        summary |= data.report.as_dict() | {"model": config.kind, "size": choice.size,
                                            "parameters": trainer.model.encoder.num_parameters(),
                                            "speaker_labels": speaker_labels if vocabulary else None} | started
        plot_curves(trainer.metrics_dir, out / "curves.png",
                    f"{config.kind} ({choice.size}), labels k={labels.n_clusters}")
    return summary
