"""Feature extraction throughput, in audio-seconds per wall-second.

    .venv/bin/python -m bench.features [--base-utterances 40]

1. The MFCC stage (decode + batched Kaldi MFCC/deltas + write) on every utterance of the demo
   corpus, against fairseq's dump_mfcc_feature loop (decode, torchaudio.compliance.kaldi.mfcc
   and two compute_deltas per utterance, write) on the same inputs in the same process: the
   ratio of throughputs (CPU target: not slower; on CUDA the batched path runs on the GPU).
2. Hidden features of one layer (`progre features --kind layer`'s computer) for a tiny and a
   Base model (random init), batched by length vs one utterance at a time.

The demo corpus is made once under bench/.work/ (not timed). Writes bench/results/features.json.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from progre.config import FeaturesParams
from progre.data.shards import Shards
from progre.device import resolve_device
from progre.dsp.mfcc import DIM, mfcc_reference
from progre.features.computing import batches_by_seconds
from progre.features.layer_features import LayerComputer
from progre.features.store import FeatureWriter
from progre.log import setup_logging
from progre.model import build_encoder, model_config, save_checkpoint
from stages import mfcc as mfcc_features_stage

from .common import write_result
from .train import WORK, prepare


def mfcc_stage(shards: Path) -> float:
    out = WORK / "bench-mfcc"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    mfcc_features_stage.run(FeaturesParams(sample_fraction=1.0, sample_split="train"), shards, out)
    return time.perf_counter() - start


def fairseq_loop(shards: Path) -> float:
    """Per utterance: decode, Kaldi MFCC, deltas, delta-deltas, append; like dump_mfcc_feature.py."""
    out = WORK / "bench-mfcc-loop"
    shutil.rmtree(out, ignore_errors=True)
    keys = set(Shards(shards).keys("train"))
    start = time.perf_counter()
    writer = FeatureWriter(out, DIM, "float32")
    with torch.no_grad():
        for utt in Shards(shards).stream(keys=keys):
            writer.add(utt.key, mfcc_reference(torch.from_numpy(utt.wav)).numpy())
    writer.close()
    return time.perf_counter() - start


def layer_throughput(size: str, shards: Path, utterances: int) -> dict:
    """Layer features of a HuBERT-shaped model, as iteration 2 extracts them from the iteration-1 model."""
    checkpoint = WORK / f"random-{size}-hubert"
    if not (checkpoint / "config.json").is_file():
        save_checkpoint(checkpoint, build_encoder(model_config(size, "hubert")))
    keys = set(sorted(Shards(shards).keys("train"))[:utterances])
    utts = list(Shards(shards).stream(keys=keys))
    computer = LayerComputer(checkpoint, 3 if size == "tiny" else 6, resolve_device("auto"))
    audio = sum(len(u.wav) for u in utts) / 16000
    computer([utts[0]])  # warm-up
    start = time.perf_counter()
    for batch in batches_by_seconds(utts, 60.0, pool=len(utts)):
        computer(batch)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for utt in utts:
        computer([utt])
    single = time.perf_counter() - start
    return {"size": size, "utterances": len(utts), "audio_seconds": audio, "batched_x_real_time": audio / batched,
            "one_at_a_time_x_real_time": audio / single, "batching_speedup": single / batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-utterances", type=int, default=40)
    parser.add_argument("--tiny-utterances", type=int, default=120)
    args = parser.parse_args()
    setup_logging(quiet=True)
    shards, _ = prepare()
    audio = float(np.sum(Shards(shards).table("train").column("duration").to_numpy()))
    fairseq_loop(shards)  # warm the page cache and torch's kernels for both
    ours, loop = mfcc_stage(shards), fairseq_loop(shards)
    mfcc = {"audio_seconds": audio, "ours_x_real_time": audio / ours, "fairseq_loop_x_real_time": audio / loop,
            "ratio": loop / ours, "device": str(resolve_device("auto"))}
    print(f"| MFCC stage ({mfcc['device']}) | ours {mfcc['ours_x_real_time']:.0f}x real time, fairseq loop "
          f"{mfcc['fairseq_loop_x_real_time']:.0f}x | ratio {mfcc['ratio']:.2f} |")
    layers = []
    for size, n in (("tiny", args.tiny_utterances), ("base", args.base_utterances)):
        row = layer_throughput(size, shards, n)
        layers.append(row)
        print(f"| layer features {size} | batched {row['batched_x_real_time']:.1f}x real time, one at a time "
              f"{row['one_at_a_time_x_real_time']:.1f}x | {row['batching_speedup']:.2f}x from batching |")
    path = write_result("features", {"mfcc": mfcc, "layer": layers})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
