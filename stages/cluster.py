"""DVC stage `cluster`: FAISS k-means on sampled features, labels for every frame, label quality
(`progre.cluster.labelling`)."""

from __future__ import annotations

from pathlib import Path

from progre.cluster.labelling import ClusterSettings, fit_and_label, resolve_cluster_device
from progre.config import ClusterParams
from progre.data.shards import Shards
from progre.features.store import FeatureStore
from progre.io import write_json
from progre.log import logger
from progre.outputs import output_folder


def run(p: ClusterParams, features: Path, shards: Path, out: Path, overwrite: bool = False) -> dict:
    device = resolve_cluster_device(p.device)
    with output_folder(out, "cluster", overwrite=overwrite, inputs=[features, shards]) as tmp:
        metrics = fit_and_label(FeatureStore(features), Shards(shards),
                                p.to(ClusterSettings), device, tmp)
        write_json(tmp / "metrics.json", metrics)
    quality = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("pnmi", "phone_purity", "cluster_purity") if k in metrics)
    logger.info("labels written to %s: %d of %d clusters used%s", out, metrics["clusters_used"], p.n_clusters,
                f"; {quality}" if quality else "")
    return metrics
