"""Pseudo-speaker ids for corpora without speaker labels: k-means over utterance embeddings.

Embeddings: ``mfcc_stats`` (mean and standard deviation of the 13 static cepstra over the
utterance; the deltas mostly carry what is said, and adding them cut pseudo-speaker purity on
the demo corpus from 0.57 to 0.42)
or ``layer_mean`` (mean of one layer's hidden states of a checkpoint). Each dimension is
standardised over the corpus and each embedding scaled to unit length before k-means, so
the clustering follows direction (cosine) rather than loudness.
"""

from __future__ import annotations

import numpy as np

from .kmeans import fit_kmeans, KMeansModel


STATIC_CEPSTRA = 13


def mfcc_stats(features: np.ndarray) -> np.ndarray:
    """(frames, 39) MFCC with deltas -> (26,) mean and standard deviation of the static cepstra."""
    static = features[:, :STATIC_CEPSTRA]
    return np.concatenate([static.mean(axis=0), static.std(axis=0)])


def normalise_embeddings(embeddings: np.ndarray) -> np.ndarray:
    z = (embeddings - embeddings.mean(axis=0)) / (embeddings.std(axis=0) + 1e-8)
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-8)


def cluster_speakers(embeddings: np.ndarray, n_speakers: int, niter: int, seed: int) -> np.ndarray:
    """(utterances, dim) -> pseudo-speaker index per utterance."""
    x = normalise_embeddings(embeddings).astype(np.float32)
    centroids, _ = fit_kmeans(x, n_speakers, niter=niter, nredo=5, init="kmeans++", seed=seed,
                              max_points_per_centroid=None)
    labels, _ = KMeansModel(centroids).assign(x)
    return labels


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def speaker_purity(true: list[str], pseudo: np.ndarray) -> dict[str, float]:
    """Purity of pseudo speakers against true ones, both ways, and normalised mutual information
    2 I / (H(true) + H(pseudo)), which (unlike PNMI) also penalises splitting a speaker."""
    from .metrics import purity_and_pnmi

    names = sorted(set(true))
    row = {name: i for i, name in enumerate(names)}
    joint = np.zeros((len(names), int(pseudo.max()) + 1), dtype=np.int64)
    for name, label in zip(true, pseudo):
        joint[row[name], label] += 1
    scores = purity_and_pnmi(joint)
    p = joint / joint.sum()
    h_true, h_pseudo = _entropy(p.sum(axis=1)), _entropy(p.sum(axis=0))
    mutual = h_true + h_pseudo - _entropy(p.ravel())
    nmi = 2 * mutual / (h_true + h_pseudo) if h_true + h_pseudo > 0 else 1.0
    # in speaker terms: how pure each pseudo speaker is, and how whole each true speaker stays
    return {"pseudo_speaker_purity": scores["phone_purity"], "true_speaker_purity": scores["cluster_purity"],
            "normalised_mutual_information": nmi}
