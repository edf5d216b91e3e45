"""Reading shards: `Shards` against webdataset's own indexed reader (`wids`), on the demo corpus.

    .venv/bin/python -m bench.reader [--reads 600] [--repeats 3]

1. Random access, as the pretraining loader reads (utterances in a seeded random order across all
   training shards, FLAC decoded): `Shards.read_audio` at the index's byte offsets vs
   `wids.ShardListDataset` over the same tars, in audio-seconds per wall-second. Also recorded:
   whether wids wrote into the shard folder (it creates and deletes ``<shard>.tar.lock`` there, which
   changes the folder, an input of every later stage) and how long it takes to open the dataset.
2. Streaming (`Shards.stream`, a webdataset `WebDataset` pipeline) vs a plain `tarfile` loop over the
   same shards, both decoding every FLAC.

The demo corpus and its shards are made once under bench/.work/ (not timed). Writes
bench/results/reader.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from progre.data.shards import Shards
from progre.log import setup_logging

from .common import write_result
from .train import prepare


def _folder_state(folder: Path) -> tuple[int, list[str]]:
    return os.stat(folder).st_mtime_ns, sorted(p.name for p in folder.iterdir())


def random_access(shards: Shards, reads: int, repeats: int) -> dict:
    import wids

    rows = shards.rows("train")
    order = np.random.default_rng(0).integers(0, len(rows), reads)
    audio = sum(rows[i]["num_samples"] for i in order) / 16000
    names = sorted({r["shard"] for r in rows})
    counts = {name: sum(r["shard"] == name for r in rows) for name in names}
    first = dict(zip(names, np.cumsum([0] + [counts[n] for n in names[:-1]]).tolist()))
    position, seen = {}, dict.fromkeys(names, 0)
    for row in rows:  # within a shard, members are stored in index order
        position[row["key"]] = first[row["shard"]] + seen[row["shard"]]
        seen[row["shard"]] += 1
    before = _folder_state(shards.folder)
    start = time.perf_counter()
    dataset = wids.ShardListDataset([{"url": str(shards.folder / n), "nsamples": counts[n]} for n in names],
                                    localname=lambda url: url, transformations=[])
    open_seconds = time.perf_counter() - start
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in order:
            r = rows[i]
            shards.read_audio(r["shard"], r["flac_offset"], r["flac_bytes"])
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in order:
            sample = dataset[position[rows[i]["key"]]]
            assert sample["__key__"] == rows[i]["key"]
            sf.read(io.BytesIO(sample[".flac"].getvalue()), dtype="float32")
        theirs.append(time.perf_counter() - start)
    changed = _folder_state(shards.folder) != before
    return {"reads": reads, "audio_seconds": audio, "train_shards": len(names),
            "ours_audio_per_second": audio / statistics.median(ours),
            "wids_audio_per_second": audio / statistics.median(theirs),
            "ratio_ours_over_wids": statistics.median(theirs) / statistics.median(ours),
            "wids_open_seconds": open_seconds, "wids_changed_the_shard_folder": changed}


def streaming(shards: Shards, repeats: int) -> dict:
    audio = float(np.sum(shards.index.column("duration").to_numpy()))
    ours, plain = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(1 for _ in shards.stream())
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        for path in shards.tar_paths():
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.endswith(".flac"):
                        sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32")
        plain.append(time.perf_counter() - start)
    assert count == len(shards)
    return {"utterances": count, "audio_seconds": audio, "ours_audio_per_second": audio / statistics.median(ours),
            "tarfile_audio_per_second": audio / statistics.median(plain),
            "ratio_ours_over_tarfile": statistics.median(plain) / statistics.median(ours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup_logging(quiet=True)
    shards_dir, _ = prepare()
    shards = Shards(shards_dir)
    rand = random_access(shards, args.reads, args.repeats)
    stream = streaming(shards, args.repeats)
    path = write_result("reader", {"random_access": rand, "streaming": stream})
    print(f"| reader: random access, {rand['reads']} reads over {rand['train_shards']} shards | ours "
          f"{rand['ours_audio_per_second']:.0f} vs wids {rand['wids_audio_per_second']:.0f} audio-s/s | "
          f"{rand['ratio_ours_over_wids']:.2f}x; wids wrote into the shard folder: "
          f"{rand['wids_changed_the_shard_folder']} |")
    print(f"| reader: streaming | Shards.stream {stream['ours_audio_per_second']:.0f} vs tarfile "
          f"{stream['tarfile_audio_per_second']:.0f} audio-s/s | {stream['ratio_ours_over_tarfile']:.2f}x |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
