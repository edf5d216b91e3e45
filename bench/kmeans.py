"""FAISS k-means (ours) vs scikit-learn MiniBatchKMeans with fairseq's HuBERT settings.

    .venv/bin/python -m bench.kmeans [--skip-768] [--layer-fraction 0.5]

fairseq's learn_kmeans.py: MiniBatchKMeans(init="k-means++", batch_size=10000, max_iter=100,
n_init=20, max_no_improvement=100, reassignment_ratio=0.0, tol=0.0, compute_labels=False).
Ours: `progre.cluster.kmeans.fit_kmeans` with the cluster stage's defaults (k-means++, 100
iterations, every sampled point). Same features for both: (a) 39-d MFCC of the demo corpus's
k-means sample with k=100; (b) 768-d hidden features (layer 6 of a randomly initialised Base
model on half of the training utterances, `--layer-fraction`) with k=500. Reports the time
ratio (target: FAISS at least 10x faster) and the objective ratio, the mean squared distance
per frame of each model's assignment on the same data (target: FAISS no more than 1% worse),
for one FAISS run (the stage's default) and for FAISS with as many restarts as sklearn's
n_init. Writes bench/results/kmeans.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from progre.cluster.kmeans import KMeansModel, fit_kmeans
from progre.config import FeaturesParams
from progre.features.store import FeatureStore
from progre.log import setup_logging
from stages import layer as layer_stage

from .common import write_result
from .train import WORK, prepare


def sklearn_fit(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=k, init="k-means++", batch_size=10000, max_iter=100, n_init=20,
                            max_no_improvement=100, reassignment_ratio=0.0, tol=0.0, compute_labels=False,
                            random_state=seed)
    model.fit(x)
    return model.cluster_centers_.astype(np.float32)


def objective(centroids: np.ndarray, x: np.ndarray) -> float:
    _, distances = KMeansModel(centroids).assign(x)
    return float(distances.mean())


SKLEARN_N_INIT = 20


def faiss_fit(x: np.ndarray, k: int, nredo: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    centroids, _ = fit_kmeans(x, k, niter=100, nredo=nredo, init="kmeans++", seed=1234,
                              max_points_per_centroid=None)
    return centroids, time.perf_counter() - start


def compare(name: str, x: np.ndarray, k: int) -> dict:
    """The stage's default (one k-means run) and, for a like-for-like objective, as many restarts
    as fairseq's n_init, each against scikit-learn."""
    ours, ours_time = faiss_fit(x, k, nredo=1)
    restarts, restarts_time = faiss_fit(x, k, nredo=SKLEARN_N_INIT)
    start = time.perf_counter()
    theirs = sklearn_fit(x, k, 1234)
    sklearn_time = time.perf_counter() - start
    sklearn_objective = objective(theirs, x)
    row = {"features": name, "frames": len(x), "dim": x.shape[1], "k": k, "sklearn_seconds": sklearn_time,
           "sklearn_objective": sklearn_objective,
           "faiss_seconds": ours_time, "speedup": sklearn_time / ours_time,
           "faiss_objective": objective(ours, x), "objective_ratio": objective(ours, x) / sklearn_objective,
           "faiss_restarts": SKLEARN_N_INIT, "faiss_restarts_seconds": restarts_time,
           "speedup_restarts": sklearn_time / restarts_time,
           "objective_ratio_restarts": objective(restarts, x) / sklearn_objective}
    print(f"| k-means {name}, k={k}, {len(x)} frames | FAISS {ours_time:.1f} s, sklearn {sklearn_time:.1f} s | "
          f"{row['speedup']:.1f}x faster | objective ratio {row['objective_ratio']:.4f} |")
    print(f"| same, FAISS with {SKLEARN_N_INIT} restarts | FAISS {restarts_time:.1f} s | "
          f"{row['speedup_restarts']:.1f}x faster | objective ratio {row['objective_ratio_restarts']:.4f} |")
    return row


def hidden_features(shards: Path, fraction: float) -> np.ndarray:
    from progre.model import build_encoder, model_config, save_checkpoint

    checkpoint = WORK / "random-base"
    if not (checkpoint / "config.json").is_file():
        save_checkpoint(checkpoint, build_encoder(model_config("base", "hubert")))
    out = WORK / f"layer6-base-{fraction:g}"
    if not (out / "meta.json").is_file():
        layer_stage.run(FeaturesParams(sample_fraction=fraction, layer=6, batch_seconds=60.0), shards, out,
                        checkpoint=checkpoint)
    return FeatureStore(out).stacked()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-768", action="store_true", help="only the MFCC comparison")
    parser.add_argument("--layer-fraction", type=float, default=0.5,
                        help="fraction of the training utterances whose 768-d features are clustered "
                             "(0.5: about 25k frames, 50 per centroid; sklearn then takes minutes)")
    args = parser.parse_args()
    setup_logging(quiet=True)
    shards, _ = prepare()
    rows = [compare("MFCC 39-d", FeatureStore(WORK / "mfcc").stacked(), 100)]
    if not args.skip_768:
        rows.append(compare("Base layer 6, 768-d", hidden_features(shards, args.layer_fraction), 500))
    path = write_result("kmeans", {"rows": rows, "target_speedup": 10, "target_objective_ratio": 1.01})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
