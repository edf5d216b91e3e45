"""DVC stage `pretrain`: masked-prediction pretraining of ProgRE or HuBERT; rerun to resume.

Run folder: train_state/ (resumable checkpoints, log.jsonl, dvclive; a persistent DVC output),
model/ (the final checkpoint every later stage reads), metrics.json, curves.png.
"""

from __future__ import annotations

from pathlib import Path

from progre.cluster.labels import read_labels
from progre.config import PretrainParams
from progre.data.reader import corpus_fingerprint, read_index
from progre.errors import UserError
from progre.features.store import FeatureStore
from progre.io import write_json
from progre.log import logger
from progre.model import model_config, save_checkpoint
from progre.train.data import PretrainData, speaker_ids
from progre.train.distributed import init_distributed, shutdown
from progre.train.loop import RunSpec, Trainer, plot_curves


def build_model_config(p: PretrainParams):
    overrides = {"conv_grad_scale": p.conv_grad_scale}
    for name in ("pitch_branch", "speaker_branch", "speaker_layer"):
        if getattr(p, name) is not None:
            overrides[name] = getattr(p, name)
    overrides["speaker_grad_through"] = p.speaker_grad_through
    try:
        return model_config(p.size, p.model, **overrides)
    except ValueError as exc:
        raise UserError(f"pretrain: {exc}") from None


def corpus_speakers(shards: Path, speakers: Path | None, source: str) -> dict[str, str | None]:
    """key -> speaker name, from the corpus index or from a pseudo-speaker table."""
    if source == "pseudo":
        if speakers is None:
            raise UserError("pretrain.speaker_labels=pseudo needs --speakers (from `progre pseudo-speakers`)")
        from stages.speakers import read_speakers

        return read_speakers(speakers)
    table = read_index(shards)
    names = dict(zip(table.column("key").to_pylist(), table.column("speaker").to_pylist()))
    return names


def run(p: PretrainParams, out: Path, shards: Path, labels: Path, pitch: Path | None = None,
        speakers: Path | None = None) -> dict:
    dist = init_distributed()
    try:
        return _run(p, out, shards, labels, pitch, speakers, dist)
    finally:
        shutdown(dist)


def _run(p, out, shards, labels, pitch, speakers, dist) -> dict:
    label_set = read_labels(labels)
    fingerprint = corpus_fingerprint(shards)
    if label_set.meta.get("corpus") != fingerprint:
        raise UserError(f"the labels in {labels} belong to another corpus than {shards}; relabel it")
    config = build_model_config(p)
    pitch_store = None
    if config.pitch_branch:
        if pitch is None:
            raise UserError("the ProgRE model needs --pitch (from `progre features --kind pitch`)")
        pitch_store = FeatureStore(pitch)
        if pitch_store.kind != "pitch" or pitch_store.meta.get("corpus") != fingerprint:
            raise UserError(f"{pitch} does not hold pitch contours of {shards}")
    speaker_map, vocabulary = None, []
    if config.speaker_branch:
        names = corpus_speakers(shards, speakers, p.speaker_labels)
        train_keys = read_index(shards, "train").column("key").to_pylist()
        speaker_map, vocabulary = speaker_ids(names, train_keys)
        if not vocabulary:
            raise UserError("the speaker branch needs speaker labels: the corpus has none "
                            "(use pretrain.speaker_labels=pseudo with --speakers)")
    common = dict(batch_seconds=p.batch_seconds, crop_min_seconds=p.crop_min_seconds,
                  crop_max_seconds=p.crop_max_seconds, bucket_size=p.bucket_size, seed=p.seed)
    data = PretrainData(shards, "train", label_set, pitch_store, speaker_map, **common)
    valid = None
    if len(read_index(shards, "valid")):
        valid = PretrainData(shards, "valid", label_set, pitch_store, speaker_map, **common)
    spec = RunSpec(config, label_set.n_clusters, len(vocabulary), label_set.label_rate, fingerprint, vocabulary)
    trainer = Trainer(p, spec, data, valid, out, dist)
    logger.info("pretraining %s (%s, %.2fM parameters) on %d utterances, %d batches per epoch, labels k=%d at "
                "%d Hz%s", config.kind, p.size, trainer.model.encoder.num_parameters() / 1e6, data.report.usable,
                data.batches_per_epoch(), label_set.n_clusters, label_set.label_rate,
                f", {len(vocabulary)} speakers" if vocabulary else "")
    summary = trainer.run()
    if dist.is_main:
        save_checkpoint(out / "model", trainer.model, {"speakers": vocabulary, "label_rate": label_set.label_rate,
                                                       "corpus": fingerprint, "step": trainer.step,
                                                       "labels": str(labels)})
        summary |= data.report.as_dict() | {"model": config.kind, "size": p.size,
                                            "parameters": trainer.model.encoder.num_parameters()}
        write_json(out / "metrics.json", summary)
        plot_curves(trainer.log_path, out / "curves.png", f"{config.kind} ({p.size}), labels k={label_set.n_clusters}")
        logger.info("finished %d updates in %.0f s: masked accuracy %.3f (train)%s", trainer.step,
                    summary["wall_seconds"], summary.get("train/acc_masked", float("nan")),
                    f", {summary['valid/acc_masked']:.3f} (valid)" if "valid/acc_masked" in summary else "")
    return summary
