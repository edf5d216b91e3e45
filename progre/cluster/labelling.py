"""`progre cluster`: fit FAISS k-means on a feature folder's sample, label every frame of the corpus.

Writes into a folder: ``kmeans.npy`` / ``kmeans.json`` (the centroids and what they were fitted
on), ``labels.parquet`` (every utterance of every split, labelled by the one model fitted on train),
and ``cooccurrence.png`` where frame phone alignments exist. Utterances outside the stored sample
get their features from the computer that made the sample (`computer_from_meta`), so every label
comes from identical features. Returns the label-quality metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.corpus import SPLITS
from ..data.shards import Shards, Utterance
from ..device import resolve_device
from ..errors import UserError
from ..features.computing import FeatureComputer, compute_in_batches
from ..features.layer_features import LayerComputer
from ..features.mfcc_features import MfccComputer
from ..features.store import FeatureStore, open_pitch_store
from ..frames import num_frames
from ..log import logger
from ..settings import setting
from .kmeans import KMeansModel, faiss_gpus, faiss_installation, fit_kmeans
from .labels import LabelWriter
from .quality import JointCounts, cluster_usage, frame_phones, plot_cooccurrence, purity_and_pnmi


@dataclass(frozen=True)
class ClusterSettings:
    """k-means and labelling (the `cluster` params section and its per-iteration overlay)."""

    n_clusters: int = setting(100, "k of k-means (HuBERT: 100 on MFCC, 500 on layer features)", min=2, max=65535)
    niter: int = setting(100, "k-means iterations", min=1)
    nredo: int = setting(1, "k-means restarts; the best objective wins", min=1)
    init: str = setting("kmeans++", "centroid initialisation", choices=("kmeans++", "random"))
    max_points_per_centroid: int | None = setting(None, "FAISS subsamples to this many points per centroid (null: "
                                                        "use every sampled point)", min=1)
    seed: int = setting(1234, "random seed of the initialisation")
    batch_seconds: float = setting(120.0, "audio seconds per batch when labelling (features of unsampled "
                                          "utterances are computed on the fly)", min=1.0)
    phone_splits: tuple[str, ...] = setting(("valid", "test"), "splits whose frame phone alignments score the "
                                                               "labels (phone purity, cluster purity, PNMI)",
                                            choices=SPLITS)


def resolve_cluster_device(name: str) -> torch.device:
    """The device of `cluster.device` (`device.resolve_device`: auto is CUDA when torch sees it); cuda
    also needs FAISS to see a GPU, since it asks for k-means on the GPU too."""
    device = resolve_device(name)
    if name == "cuda" and faiss_gpus() == 0:
        raise UserError("cluster.device=cuda but FAISS sees no GPU (FAISS for GPU: pip install -e '.[gpu]', "
                        "or `make venv-gpu`, on a machine with a CUDA GPU)")
    return device


def kmeans_on_gpu(device: torch.device) -> bool:
    """k-means runs on the GPU when the device is CUDA and FAISS sees a GPU (faiss-gpu), else on the CPU."""
    return device.type == "cuda" and faiss_gpus() > 0


def fit_and_label(store: FeatureStore, shards: Shards, settings: ClusterSettings, device: torch.device,
                  folder: Path) -> dict[str, Any]:
    """Fit k-means on `store`'s frames (on the GPU when `device` is CUDA and FAISS sees one), write the
    model and the labels of every utterance of `shards` into `folder`, computing the features of unsampled
    utterances on `device`; returns the metrics."""
    if store.kind not in ("mfcc", "layer"):
        raise UserError(f"{store.folder} holds {store.kind} features; k-means labels come from mfcc or layer "
                        f"features")
    if store.meta.get("corpus") != shards.fingerprint:
        raise UserError(f"the features in {store.folder} were computed on another corpus than {shards.folder} "
                        f"(fingerprint {store.meta.get('corpus')} vs {shards.fingerprint}); recompute them")
    gpu = kmeans_on_gpu(device)
    installed = faiss_installation()
    used = {"faiss_version": installed["version"], "faiss_build": installed["build"],
            "kmeans_device": "cuda" if gpu else "cpu"}
    start = time.perf_counter()
    logger.info("fitting k-means on %s: k=%d on %d frames of %d-d %s features (FAISS %s, %s build, %d GPU%s "
                "visible)", "GPU" if gpu else "CPU", settings.n_clusters, store.total_frames(), store.dim, store.kind,
                installed["version"], installed["build"], installed["gpus"], "" if installed["gpus"] == 1 else "s")
    sample = fit_sample(store, settings)
    fit_frames = len(sample)
    centroids, fit_objective = fit_kmeans(sample, settings.n_clusters, niter=settings.niter, nredo=settings.nredo,
                                          init=settings.init, seed=settings.seed,
                                          max_points_per_centroid=settings.max_points_per_centroid, gpu=gpu)
    del sample
    fit_seconds = time.perf_counter() - start
    provenance = {key: store.meta.get(key) for key in ("kind", "layer", "state", "checkpoint", "frame_rate")}
    model = KMeansModel(centroids, provenance | {
        "corpus": shards.fingerprint, "fit_frames": fit_frames, "fit_objective_per_frame": fit_objective,
        "niter": settings.niter, "nredo": settings.nredo, "init": settings.init, "seed": settings.seed}, gpu)
    label_meta = {"label_rate": int(store.meta["frame_rate"]), "n_clusters": settings.n_clusters,
                  "corpus": shards.fingerprint, "kind": store.kind, "layer": store.meta.get("layer"),
                  "checkpoint": store.meta.get("checkpoint")}
    computer = computer_from_meta(store.meta, device)
    model.save(folder)
    metrics = label_corpus(model, store, computer, shards, folder, label_meta, settings)
    return metrics | {"fit_objective_per_frame": fit_objective, "fit_frames": fit_frames, "fit_seconds": fit_seconds, "n_clusters": settings.n_clusters,
                      "label_rate": label_meta["label_rate"]} | used


def fit_sample(store: FeatureStore, settings: ClusterSettings) -> np.ndarray:
    """The float32 frames k-means is fitted on: every stored one, or with `max_points_per_centroid` set
    a seeded uniform sample of that many per centroid, read from the memory-mapped folder: memory then
    stays bounded by the sample (500 x 1000 x 768-d: 1.5 GB) whatever the corpus size, where FAISS
    would subsample only after the whole folder had been loaded as float32."""
    total = store.total_frames()
    per_centroid = settings.max_points_per_centroid
    limit = total if per_centroid is None else per_centroid * settings.n_clusters
    if limit < total:
        logger.info("k-means on a sample of %d of the %d stored frames (max_points_per_centroid %d)", limit, total,
                    settings.max_points_per_centroid)
        return store.sample_frames(limit, settings.seed)
    return store.stacked()


def label_corpus(model: KMeansModel, store: FeatureStore, computer: FeatureComputer, shards: Shards, folder: Path,
                 label_meta: dict, settings: ClusterSettings) -> dict[str, Any]:
    """Label every frame of every utterance (stored features, or computed on the fly) into
    folder/labels.parquet; returns usage, objective and, with phone alignments, purity and PNMI."""
    rate = label_meta["label_rate"]
    k = settings.n_clusters
    counts = np.zeros(k, dtype=np.int64)
    joint = JointCounts(k)
    objective = {"frames": 0, "sum": 0.0}
    writer = LabelWriter(folder, label_meta)
    try:
        for utt, feats in compute_in_batches(StoredOrComputed(store, computer), shards.stream(), settings.batch_seconds,
                                             description="labelling", total=len(shards)):
            expected = num_frames(len(utt.wav), rate)
            if len(feats) != expected:
                raise UserError(f"{utt.key}: {len(feats)} feature frames for {len(utt.wav)} samples, "
                                f"expected {expected} at {rate} Hz (features of other audio?)")
            labels, distances = model.assign(feats)
            writer.add(utt.key, utt.meta["split"], labels)
            counts += np.bincount(labels, minlength=k)
            objective["frames"] += len(labels)
            objective["sum"] += float(distances.sum())
            if utt.meta["split"] in settings.phone_splits and utt.meta.get("phone_start"):
                phones = frame_phones(utt.meta["phones"], utt.meta["phone_start"], utt.meta["phone_end"],
                                      len(labels), rate)
                joint.add(phones, labels)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    metrics: dict = {"objective_per_frame": objective["sum"] / max(objective["frames"], 1),
                     "labelled_frames": objective["frames"]} | cluster_usage(counts)
    names, matrix = joint.matrix()
    if matrix.sum() > 0:
        metrics |= purity_and_pnmi(matrix) | {"phone_frames": int(matrix.sum()), "phones": len(names)}
        title = f"{label_meta['kind']}{'' if label_meta['layer'] is None else ' layer ' + str(label_meta['layer'])}" \
                f", k={k}: PNMI {metrics['pnmi']:.3f}"
        plot_cooccurrence(names, matrix, folder / "cooccurrence.png", title)
    else:
        logger.info("no frame phone alignments in splits %s: phone purity and PNMI are not reported",
                    ", ".join(settings.phone_splits))
    return metrics


class StoredOrComputed(FeatureComputer):
    """The features of a feature folder where it holds the utterance, else `computer`'s (which made the
    folder): the features every utterance is labelled with."""

    def __init__(self, store: FeatureStore, computer: FeatureComputer):
        self.store, self.computer = store, computer
        self.kind, self.dim, self.frame_rate = computer.kind, computer.dim, computer.frame_rate

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        missing = [u for u in utts if u.key not in self.store]
        computed = dict(zip((u.key for u in missing), self.computer(missing))) if missing else {}
        return [self.store[u.key] if u.key in self.store else computed[u.key] for u in utts]

    def describe(self) -> dict[str, Any]:
        return self.store.meta


def computer_from_meta(meta: dict[str, Any], device: torch.device) -> FeatureComputer:
    """Rebuild the computer that produced a feature folder (for features of unsampled utterances),
    chunking included: chunks are normalised and attended to on their own, so they shape the features."""
    if meta["kind"] == "mfcc":
        return MfccComputer(device)
    if meta["kind"] == "layer":
        checkpoint = Path(meta["checkpoint"])
        if not checkpoint.exists():
            raise UserError(f"the features were computed with checkpoint {checkpoint}, which no longer exists")
        pitch = open_pitch_store(Path(meta["pitch"])) if meta.get("pitch") is not None else None
        # in the folder's precision (a bf16 folder is labelled in bf16 on the CPU too)
        return LayerComputer(checkpoint, int(meta["layer"]), device, float(meta.get("chunk_seconds", 30.0)),
                             pitch, meta.get("precision", "fp32"))
    raise UserError(f"cannot cluster features of kind {meta['kind']!r} (use mfcc or layer features)")
