"""DVC stage `pseudo-speakers`: utterance embeddings -> k-means -> speakers.parquet (key -> speaker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progre.cluster.speakers import cluster_speakers, mfcc_stats, speaker_purity
from progre.config import SpeakersParams
from progre.data.reader import corpus_fingerprint, iter_utterances, read_index
from progre.device import resolve_device
from progre.errors import UserError
from progre.features.compute import LayerComputer, MfccComputer, batches_by_seconds
from progre.io import atomic_dir, atomic_path, write_json
from progre.log import logger, progress_bar

FILE = "speakers.parquet"


def run(p: SpeakersParams, shards: Path, out: Path, checkpoint: Path | None = None) -> dict:
    if p.embedding == "layer_mean" and checkpoint is None:
        raise UserError("speakers.embedding=layer_mean needs --checkpoint")
    device = resolve_device("auto")
    computer = MfccComputer(device) if p.embedding == "mfcc_stats" else LayerComputer(checkpoint, p.layer, device)
    total = len(read_index(shards))
    if total < p.n_speakers:
        raise UserError(f"{total} utterances cannot form {p.n_speakers} pseudo speakers")
    keys, splits, true, embeddings = [], [], [], []
    with progress_bar() as progress:
        task = progress.add_task("utterance embeddings", total=total)
        for batch in batches_by_seconds(iter_utterances(shards), 60.0):
            for utt, feats in zip(batch, computer(batch)):
                feats = np.asarray(feats, dtype=np.float32)
                embeddings.append(mfcc_stats(feats) if p.embedding == "mfcc_stats" else feats.mean(axis=0))
                keys.append(utt.key)
                splits.append(utt.meta["split"])
                true.append(utt.meta.get("speaker"))
            progress.advance(task, len(batch))
    labels = cluster_speakers(np.stack(embeddings), p.n_speakers, p.niter, p.seed)
    metrics: dict = {"utterances": len(keys), "n_speakers": p.n_speakers,
                     "speakers_used": int(len(np.unique(labels)))}
    if all(t for t in true):
        metrics |= speaker_purity(true, labels)
    rows = [{"key": k, "split": s, "speaker": f"pseudo{int(lab):04d}"} for k, s, lab in zip(keys, splits, labels)]
    with atomic_dir(out, overwrite=True) as tmp:
        table = pa.Table.from_pylist(rows).replace_schema_metadata({"corpus": corpus_fingerprint(shards),
                                                                    "embedding": p.embedding})
        with atomic_path(tmp / FILE) as path:
            pq.write_table(table, path)
        write_json(tmp / "metrics.json", metrics)
    logger.info("pseudo speakers: %s", ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in metrics.items()))
    return metrics


def read_speakers(folder: Path) -> dict[str, str]:
    path = Path(folder) / FILE
    if not path.is_file():
        raise UserError(f"{folder} holds no {FILE}; run `progre pseudo-speakers` first")
    table = pq.read_table(path)
    return dict(zip(table.column("key").to_pylist(), table.column("speaker").to_pylist()))
