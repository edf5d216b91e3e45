"""FAISS k-means: fit on sampled features, assign labels, save the model with its provenance.

FAISS is installed as one of two builds, faiss-cpu (``pip install -e '.[cpu]'``, `make venv`) or
faiss-gpu (``.[gpu]``, `make venv-gpu`); both provide the module ``faiss``, so a venv holds one.
`faiss_installation` says which one this process uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io import atomic_path, read_json, write_json
from ..log import logger

try:
    import faiss
except ImportError:  # neither build installed: every use says how to install one
    faiss = None

FAISS_PACKAGES = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11")
INSTALL_HINT = "pip install -e '.[cpu]' (or '.[gpu]' for FAISS on GPU; `make venv` / `make venv-gpu`)"


def _faiss():
    if faiss is None:
        raise UserError(f"FAISS is not installed: {INSTALL_HINT}")
    return faiss


def faiss_gpus() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu, or with faiss-gpu on a machine without a GPU)."""
    module = _faiss()
    return module.get_num_gpus() if hasattr(module, "get_num_gpus") else 0


def faiss_installation() -> dict[str, Any]:
    """Which FAISS this process uses: its version, its build ("gpu" when it has the GPU classes, as
    faiss-gpu does, else "cpu"), the GPUs it sees and the pip packages that provide a ``faiss`` module.
    Warns when more than one such package is installed (they overwrite each other's files)."""
    module = _faiss()
    packages = []
    for name in FAISS_PACKAGES:
        try:
            packages.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    if len(packages) > 1:
        logger.warning("%s are all installed and share one `faiss` module, so which build runs depends on the "
                       "install order: keep one (`make venv-gpu`, or pip uninstall them all and %s)",
                       " and ".join(packages), INSTALL_HINT)
    return {"version": getattr(module, "__version__", "unknown"),
            "build": "gpu" if hasattr(module, "StandardGpuResources") else "cpu",
            "gpus": faiss_gpus(), "packages": packages}


@dataclass
class KMeansModel:
    """Centroids plus what they were fitted on (kind, layer, frame rate, corpus, ...)."""

    centroids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    gpu: bool = False

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        faiss = _faiss()
        index = faiss.IndexFlatL2(self.centroids.shape[1])
        if self.gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(self.centroids)
        self._index = index

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frames, dim) -> nearest centroid per frame (int64) and its squared distance."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.centroids.shape[1]:
            raise UserError(f"features of shape {x.shape} do not match k-means of dimension {self.centroids.shape[1]}")
        distances, labels = self._index.search(x, 1)
        return labels[:, 0], distances[:, 0]

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        with atomic_path(folder / "kmeans.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.centroids)
        write_json(folder / "kmeans.json", self.meta | {"n_clusters": self.n_clusters, "dim": self.centroids.shape[1]})

    @classmethod
    def load(cls, folder: Path, gpu: bool = False) -> KMeansModel:
        folder = Path(folder)
        if not (folder / "kmeans.npy").is_file():
            raise UserError(f"{folder} holds no k-means model (kmeans.npy)")
        return cls(np.load(folder / "kmeans.npy"), read_json(folder / "kmeans.json"), gpu)


def fit_kmeans(x: np.ndarray, n_clusters: int, *, niter: int, nredo: int, init: str, seed: int,
               max_points_per_centroid: int | None, gpu: bool = False) -> tuple[np.ndarray, float]:
    """Fit on (frames, dim) features; returns centroids and the mean squared distance per frame.

    FAISS subsamples to `max_points_per_centroid` x k points (its default 256); with None every
    point is used, so no silent subsampling happens.
    """
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise UserError("the k-means features contain NaN or inf")
    if len(x) < n_clusters:
        raise UserError(f"k-means with {n_clusters} clusters needs at least as many frames, "
                        f"but the sample has {len(x)} (raise features.sample_fraction or lower n_clusters)")
    init_method = {"kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
                   "random": faiss.ClusteringInitMethod_RANDOM}[init]
    mppc = max_points_per_centroid if max_points_per_centroid is not None else -(-len(x) // n_clusters)
    kmeans = faiss.Kmeans(x.shape[1], n_clusters, niter=niter, nredo=nredo, seed=seed, verbose=False,
                          max_points_per_centroid=mppc, min_points_per_centroid=1, init_method=init_method,
                          gpu=gpu)
    kmeans.train(x)
    model = KMeansModel(kmeans.centroids, gpu=gpu)  # the objective on the device that fitted
    _, distances = model.assign(x)
    return model.centroids, float(distances.mean())
