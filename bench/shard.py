"""Throughput of `progre shard` on the demo corpus, in audio-seconds per wall-second.

    .venv/bin/python -m bench.shard [--workers 2] [--repeats 2]

Target: at least 200x real time on 2 cores. Decoding, checking, FLAC encoding and tar writing
are all included; the corpus is synthesised once into bench/.work/ first (not timed).
Writes bench/results/shard.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from progre.config import ShardParams
from progre.log import setup_logging
from stages import shard as shard_stage

from .common import demo_corpus, write_result

WORK = Path(__file__).parent / ".work"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    setup_logging(quiet=True)
    corpus = demo_corpus(WORK)
    out = WORK / "shards"
    times, summary = [], {}
    for _ in range(args.repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        summary = shard_stage.run(ShardParams(workers=args.workers), corpus, out)
        times.append(time.perf_counter() - start)
    seconds = summary["hours"] * 3600
    best = min(times)
    result = {"audio_seconds": seconds, "utterances": summary["utterances"], "workers": args.workers,
              "wall_seconds": times, "x_real_time": seconds / best, "x_real_time_median": seconds / statistics.median(times),
              "target_x_real_time": 200}
    path = write_result("shard", result)
    print(f"| shard (demo corpus, {args.workers} workers) | {seconds / best:.0f}x real time | target >= 200x |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
