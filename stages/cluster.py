"""DVC stage `cluster`: FAISS k-means on sampled features, labels for every frame, label quality."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from progre.audio import num_frames, num_mfcc_frames
from progre.cluster.kmeans import KMeansModel, fit_kmeans, use_gpu
from progre.cluster.labels import LabelWriter
from progre.cluster.metrics import JointCounts, cluster_usage, frame_phones, plot_cooccurrence, purity_and_pnmi
from progre.config import ClusterParams
from progre.data.reader import corpus_fingerprint, iter_utterances, read_index
from progre.device import resolve_device
from progre.errors import UserError
from progre.features.compute import batches_by_seconds, computer_from_meta
from progre.features.store import FeatureStore
from progre.io import atomic_dir, write_json
from progre.log import logger, progress_bar


def run(p: ClusterParams, features: Path, shards: Path, out: Path) -> dict:
    store = FeatureStore(features)
    if store.kind not in ("mfcc", "layer"):
        raise UserError(f"{features} holds {store.kind} features; k-means labels come from mfcc or layer features")
    fingerprint = corpus_fingerprint(shards)
    if store.meta.get("corpus") != fingerprint:
        raise UserError(f"the features in {features} were computed on another corpus than {shards} "
                        f"(fingerprint {store.meta.get('corpus')} vs {fingerprint}); recompute them")
    gpu = use_gpu(p.device)
    start = time.perf_counter()
    logger.info("fitting k-means: k=%d on %d frames of %d-d %s features", p.n_clusters, store.total_frames(),
                store.dim, store.kind)
    centroids, fit_objective = fit_kmeans(store.stacked(), p.n_clusters, niter=p.niter, nredo=p.nredo, init=p.init,
                                          seed=p.seed, max_points_per_centroid=p.max_points_per_centroid, gpu=gpu)
    fit_seconds = time.perf_counter() - start
    provenance = {key: store.meta.get(key) for key in ("kind", "layer", "state", "checkpoint", "frame_rate")}
    model = KMeansModel(centroids, provenance | {"corpus": fingerprint, "fit_frames": store.total_frames(),
                                                 "fit_objective_per_frame": fit_objective, "niter": p.niter,
                                                 "nredo": p.nredo, "init": p.init, "seed": p.seed}, gpu)
    label_meta = {"label_rate": int(store.meta["frame_rate"]), "n_clusters": p.n_clusters, "corpus": fingerprint,
                  "kind": store.kind, "layer": store.meta.get("layer"), "checkpoint": store.meta.get("checkpoint")}
    computer = computer_from_meta(store.meta, resolve_device("cuda" if gpu else "cpu"))
    with atomic_dir(out, overwrite=True) as tmp:
        model.save(tmp)
        metrics = _label_corpus(p, model, store, computer, shards, tmp, label_meta)
        metrics |= {"fit_objective_per_frame": fit_objective, "fit_frames": store.total_frames(),
                    "fit_seconds": fit_seconds, "n_clusters": p.n_clusters, "label_rate": label_meta["label_rate"]}
        write_json(tmp / "metrics.json", metrics)
    quality = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("pnmi", "phone_purity", "cluster_purity") if k in metrics)
    logger.info("labels written to %s: %d of %d clusters used%s", out, metrics["clusters_used"], p.n_clusters,
                f"; {quality}" if quality else "")
    return metrics


def _label_corpus(p: ClusterParams, model: KMeansModel, store: FeatureStore, computer, shards: Path, folder: Path,
                  label_meta: dict) -> dict:
    rate = label_meta["label_rate"]
    expected_frames = num_mfcc_frames if rate == 100 else num_frames
    counts = np.zeros(p.n_clusters, dtype=np.int64)
    joint = JointCounts(p.n_clusters)
    objective = {"frames": 0, "sum": 0.0}
    writer = LabelWriter(folder, label_meta)
    try:
        with progress_bar() as progress:
            task = progress.add_task("labelling", total=len(read_index(shards)))
            for batch in batches_by_seconds(iter_utterances(shards), p.batch_seconds):
                missing = [u for u in batch if u.key not in store]
                computed = dict(zip((u.key for u in missing), computer(missing))) if missing else {}
                for utt in batch:
                    feats = store[utt.key] if utt.key in store else computed[utt.key]
                    if len(feats) != expected_frames(len(utt.wav)):
                        raise UserError(f"{utt.key}: {len(feats)} feature frames for {len(utt.wav)} samples, expected "
                                        f"{expected_frames(len(utt.wav))} at {rate} Hz (features of other audio?)")
                    labels, distances = model.assign(feats)
                    writer.add(utt.key, utt.meta["split"], labels)
                    counts += np.bincount(labels, minlength=p.n_clusters)
                    objective["frames"] += len(labels)
                    objective["sum"] += float(distances.sum())
                    if utt.meta["split"] in p.phone_splits and utt.meta.get("phone_start"):
                        phones = frame_phones(utt.meta["phones"], utt.meta["phone_start"], utt.meta["phone_end"],
                                              len(labels), rate)
                        joint.add(phones, labels)
                progress.advance(task, len(batch))
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
                f", k={p.n_clusters}: PNMI {metrics['pnmi']:.3f}"
        plot_cooccurrence(names, matrix, folder / "cooccurrence.png", title)
    else:
        logger.info("no frame phone alignments in splits %s: phone purity and PNMI are not reported",
                    ", ".join(p.phone_splits))
    return metrics
