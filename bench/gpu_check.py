"""`make gpu-check`: every stage's GPU path on one CUDA GPU, in at most 8 minutes.

    .venv/bin/python -m bench.gpu_check [--budget 400] [--out bench/results/gpu.json]
    .venv/bin/python -m bench.gpu_check --dry-run     # the same code at tiny sizes on the CPU (seconds)

`make gpu-check` runs it in the venv, with faiss-gpu; `make gpu-check OFFLINE=1 PYTHON=python3` on a GPU
node without network, with the interpreter there and the wheels of `make wheels-gpu` (bench/gpu-wheels.txt,
which bring faiss-cpu: no faiss-gpu build runs on CUDA 13). It never installs anything itself.

Sections, in this order (each is skipped, with the reason, when the time budget runs out):

1. machine: GPU name, memory, compute capability, driver, torch / CUDA / cuDNN versions, the FAISS
   build and the packages that provide it;
2. tests: the test suite's CUDA-marked tests (`pytest -m cuda`, tests/test_cuda.py): MFCC on GPU vs
   CPU, FAISS GPU k-means vs CPU (skipped, with the reason, where FAISS has no GPU build), layer
   features bf16 vs fp32, 20 bf16 pretraining updates of tiny ProgRE killed and resumed, a downstream
   task on GPU;
3. pretraining throughput: Trainer.train_step of HuBERT Base and ProgRE Base in bf16 on batches of
   about 87.5 s of audio (crops of 8.7-15.6 s, the shapes varying as in training), fed from pinned
   memory: audio-seconds per GPU-second and model FLOPs utilisation (FLOPs counted analytically,
   `bench.flops`; peak from the GPU's datasheet), for each speed setting: eager with fused AdamW
   (the CUDA default), foreach AdamW, batches in pageable memory, fp32 (these three on HuBERT
   only), and `torch.compile`d blocks (`pretrain.compile`; last, as it compiles for a minute or two);
4. k-means: FAISS k=500 on 1M 768-d points on the GPU (seconds, objective), and GPU vs CPU FAISS on
   a 100k subsample (seconds and objectives); the GPU rows are skipped, with the reason, where FAISS
   has no GPU build or sees no GPU;
5. features: MFCC (batches of 120 s) and Base layer-6 features (bf16 and fp32, batches of 600 s)
   in x real time, the MFCC also on the CPU;
6. loader: our DataLoader (FLAC by offset, crops, labels, pinned memory) with 0 to 8 workers on a
   synthetic sharded corpus, in audio-seconds per second, against what training consumes.

Goal (issue 16): HuBERT Base at >= 4,000 audio-seconds per GPU-second on an H100/H200 class GPU
(twice minimal_hubert's ~1,940), ProgRE within 10% of HuBERT. Writes bench/results/gpu.json and
bench/results/gpu.log (the dry run: bench/.work/gpu-dryrun.json and .log).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from progre.frames import SAMPLE_RATE, num_frames

from .flops import peak_tflops, train_step_flops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
GOAL_AUDIO_PER_GPU_SECOND = 4000.0
PROGRE_WITHIN = 0.10


@dataclass(frozen=True)
class Sizes:
    """What each section runs; `FULL` on a GPU, `DRY` on the CPU in seconds."""

    model: str
    batch_shapes: tuple[tuple[int, float], ...]  # (utterances, crop seconds) of the training batches
    warmup: int
    steps: int
    compile_warmup: int
    variants: tuple[str, ...]
    kmeans_points: int
    kmeans_dim: int
    kmeans_k: int
    kmeans_niter: int
    kmeans_subsample: int
    utterances: int
    utterance_seconds: float
    mfcc_batch_seconds: float
    layer_batch_seconds: float
    loader_workers: tuple[int, ...]
    loader_batches: int
    tests_timeout: int
    repeats: int


FULL = Sizes(model="base", batch_shapes=((5, 15.6), (7, 12.5), (6, 14.5), (10, 8.7)), warmup=4, steps=16,
             compile_warmup=8, variants=("eager", "foreach", "pageable", "fp32", "compile"),
             kmeans_points=1_000_000, kmeans_dim=768, kmeans_k=500, kmeans_niter=100, kmeans_subsample=100_000,
             utterances=96, utterance_seconds=12.5, mfcc_batch_seconds=120.0, layer_batch_seconds=600.0,
             loader_workers=(0, 2, 4, 8), loader_batches=24, tests_timeout=180, repeats=2)
DRY = Sizes(model="tiny", batch_shapes=((2, 1.0), (1, 1.6)), warmup=1, steps=2, compile_warmup=0,
            variants=("eager", "foreach"), kmeans_points=4000, kmeans_dim=16, kmeans_k=8, kmeans_niter=10,
            kmeans_subsample=2000, utterances=4, utterance_seconds=2.0, mfcc_batch_seconds=4.0,
            layer_batch_seconds=4.0, loader_workers=(0, 1), loader_batches=3, tests_timeout=120, repeats=1)

VARIANTS = {
    # name: (TrainRecipe / RunControl overrides, what it measures)
    "eager": ({"precision": "bf16"}, "bf16 autocast, fused AdamW (the CUDA defaults)"),
    "compile": ({"precision": "bf16", "compile": True}, "as eager, with torch.compile'd Transformer layers and CNN blocks"),
    "foreach": ({"precision": "bf16", "fused_optimizer": False}, "as eager, with foreach AdamW instead of fused"),
    "pageable": ({"precision": "bf16"}, "as eager, the batches in pageable (not pinned) host memory"),
    "fp32": ({"precision": "fp32"}, "float32, no autocast (matmuls in float32; cuDNN convolutions in TF32, its default)"),
}


class Log:
    """Prints and keeps a log file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


# --------------------------------------------------------------------------- 1. machine


def machine(device: torch.device) -> dict[str, Any]:
    from progre.cluster.kmeans import faiss_installation

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "device": str(device)}
    try:
        info["faiss"] = faiss_installation()
    except Exception as exc:  # FAISS not installed: the k-means section says so too
        info["faiss"] = {"error": str(exc)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": torch.cuda.get_device_name(device), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
                 "peak_bf16_dense_tflops": peak_tflops(torch.cuda.get_device_name(device))}
        if shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True)
            info["nvidia_smi"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    else:
        info["gpu"] = None
    return info


# --------------------------------------------------------------------------- 2. tests


def run_tests(sizes: Sizes, log: Log, budget: float, work: Path) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    work.mkdir(parents=True, exist_ok=True)
    report = work / "cuda-tests.xml"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-rs", "-p", "no:cacheprovider", f"--junitxml={report}",
           "tests/test_cuda.py"]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=min(sizes.tests_timeout, budget))
        text, code = out.stdout + out.stderr, out.returncode
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code = None
    for line in text.splitlines():
        log(f"  pytest: {line}")
    counts: dict[str, int] = {}
    cases: dict[str, str] = {}
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            cases[case.get("name", "?")] = outcome
            counts[outcome] = counts.get(outcome, 0) + 1
    skipped = re.findall(r"SKIPPED \[\d+\] ([^\n]+)", text)
    return {"command": " ".join(cmd[2:]), "returncode": code, "timed_out": code is None,
            "seconds": time.perf_counter() - start, "counts": counts, "tests": cases,
            "skip_reasons": sorted(set(skipped))}


# --------------------------------------------------------------------------- shared inputs


def synthetic_corpus(folder: Path, sizes: Sizes) -> Path:
    """Shards of `utterances` noisy harmonic tones of `utterance_seconds` (FLAC, as training reads them)."""
    import soundfile as sf

    from progre.config import ShardParams
    from stages import shard as shard_stage

    shards = folder / "shards"
    if (shards / "index.parquet").is_file():
        return shards
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = int(sizes.utterance_seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    for i in range(sizes.utterances):
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        wav = sum(0.2 / h * np.sin(h * phase) for h in range(1, 6)) + 0.02 * rng.standard_normal(n)
        sf.write(audio / f"u{i:04d}.flac", wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    shard_stage.run(ShardParams(workers=max(1, min(8, (os.cpu_count() or 2) - 1)), max_shard_mb=64.0), audio, shards)
    shutil.rmtree(audio)
    return shards


def synthetic_data(shards: Path, num_labels: int, batch_seconds: float, crop_max: float):
    """`PretrainData` over the synthetic shards with random 50 Hz labels (the loader's real work)."""
    from progre.cluster.labels import LabelSet
    from progre.data.shards import Shards
    from progre.train.batches import PlanSettings, PretrainData

    corpus = Shards(shards)
    rng = np.random.default_rng(1)
    rows = corpus.rows("train")
    labels = LabelSet({r["key"]: rng.integers(0, num_labels, num_frames(r["num_samples"])).astype(np.uint16)
                       for r in rows}, {r["key"]: "train" for r in rows},
                      {"label_rate": 50, "n_clusters": num_labels, "corpus": corpus.fingerprint})
    plan = PlanSettings(batch_seconds=batch_seconds, crop_min_seconds=min(1.0, crop_max), crop_max_seconds=crop_max,
                        bucket_size=64)
    return PretrainData(corpus, "train", labels, None, None, plan, seed=1234)


def training_batches(shapes, num_labels: int, num_speakers: int, device: torch.device, seed: int = 0) -> list[dict]:
    """One batch per (utterances, crop seconds), as the loader delivers them (pinned on CUDA)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for size, seconds in shapes:
        samples = (int(seconds * SAMPLE_RATE) - 400) // 320 * 320 + 400
        frames = num_frames(samples)
        batch = {"wav": 0.1 * torch.randn(size, samples, generator=g),
                 "lengths": torch.full((size,), samples, dtype=torch.long),
                 "labels": torch.randint(0, num_labels, (size, frames), generator=g),
                 "pitch": torch.randn(size, frames, generator=g),
                 "speakers": torch.randint(0, num_speakers, (size,), generator=g), "keys": [""] * size}
        if device.type == "cuda":
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out.append(batch)
    return out


# --------------------------------------------------------------------------- 3. pretraining throughput


def pretraining(sizes: Sizes, device: torch.device, data, log: Log, deadline: float) -> dict[str, Any]:
    from progre.model import model_config
    from progre.train.distributed import DistInfo
    from progre.train.loop import RunControl, RunSpec, Trainer, TrainRecipe

    num_labels, num_speakers = 500, 1000
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    pinned = training_batches(sizes.batch_shapes, num_labels, num_speakers, device)
    pageable = training_batches(sizes.batch_shapes, num_labels, num_speakers, torch.device("cpu"))
    dist = DistInfo(0, 1, device)
    rows: list[dict[str, Any]] = []
    order = [(v, k) for v in sizes.variants for k in ("hubert", "progre")]
    for variant, kind in order:
        if variant in ("foreach", "pageable", "fp32") and kind == "progre":
            continue  # the optimizer and precision compare on HuBERT alone (time)
        if time.perf_counter() > deadline - (150 if variant == "compile" else 30):
            rows.append({"kind": kind, "variant": variant, "skipped": "time budget"})
            log(f"  {kind} {variant}: skipped (time budget)")
            continue
        overrides, what = VARIANTS[variant]
        batches = pageable if variant == "pageable" else pinned
        config = model_config(sizes.model, kind, encoder_layerdrop=0.0)
        spec = RunSpec(config, num_labels, num_speakers if config.speaker_branch else 0, 50, "gpu-check", [])
        recipe = TrainRecipe(precision=overrides["precision"], warmup_steps=10)
        control = RunControl(**{k: v for k, v in overrides.items() if k != "precision"}, max_steps=10**6,
                             log_every=10**6, checkpoint_every=10**6, valid_every=10**6)
        try:
            trainer = Trainer(recipe, control, spec, data, None, WORK / "gpu-check-run", dist)
            warmup = sizes.warmup + (sizes.compile_warmup if variant == "compile" else 0)
            stream = (batches[i % len(batches)] for i in range(10**9))
            start = time.perf_counter()
            for _ in range(warmup):
                trainer.train_step(stream)
            compile_seconds = time.perf_counter() - start
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times, audio, flops = [], 0.0, 0.0
            for i in range(sizes.steps):
                batch = batches[(warmup + i) % len(batches)]
                t0 = time.perf_counter()
                trainer.train_step(iter([batch]))
                times.append(time.perf_counter() - t0)
                audio += float(batch["lengths"].sum()) / SAMPLE_RATE
                flops += train_step_flops(config, batch["wav"].shape[0], batch["wav"].shape[1], num_labels=num_labels)
            total = sum(times)
            row = {"kind": kind, "variant": variant, "what": what, "steps": sizes.steps,
                   "audio_seconds_per_step": audio / sizes.steps, "median_step_seconds": statistics.median(times),
                   "audio_per_gpu_second": audio / total, "model_tflops_per_second": flops / total / 1e12,
                   "mfu": flops / total / (peak * 1e12) if peak else None, "warmup_seconds": compile_seconds,
                   "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
            rows.append(row)
            log(f"  {kind} {variant}: {row['audio_per_gpu_second']:.0f} audio-s per GPU-s, "
                f"{row['model_tflops_per_second']:.1f} model TFLOP/s"
                + (f", MFU {100 * row['mfu']:.1f}%" if row["mfu"] else "") + f" (warm-up {compile_seconds:.0f} s)")
        except Exception as exc:  # one setting failing (e.g. compile) must not hide the others
            rows.append({"kind": kind, "variant": variant, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            log(f"  {kind} {variant}: FAILED {type(exc).__name__}: {exc}")
            log(traceback.format_exc())
        finally:
            trainer = None  # noqa: F841
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    best = {}
    for kind in ("hubert", "progre"):
        done = [r for r in rows if r["kind"] == kind and "audio_per_gpu_second" in r]
        if done:
            best[kind] = max(done, key=lambda r: r["audio_per_gpu_second"])
    goal: dict[str, Any] = {"audio_per_gpu_second_goal": GOAL_AUDIO_PER_GPU_SECOND, "progre_within": PROGRE_WITHIN}
    if "hubert" in best:
        goal |= {"hubert_best": best["hubert"]["audio_per_gpu_second"], "hubert_best_variant": best["hubert"]["variant"],
                 "hubert_goal_met": best["hubert"]["audio_per_gpu_second"] >= GOAL_AUDIO_PER_GPU_SECOND}
    if "hubert" in best and "progre" in best:
        same = {r["variant"]: r for r in rows if r["kind"] == "progre" and "audio_per_gpu_second" in r}
        ref = same.get(best["hubert"]["variant"], best["progre"])
        goal["progre_over_hubert"] = ref["audio_per_gpu_second"] / best["hubert"]["audio_per_gpu_second"]
        goal["progre_goal_met"] = goal["progre_over_hubert"] >= 1 - PROGRE_WITHIN
    return {"batch_shapes": [list(s) for s in sizes.batch_shapes], "num_labels": num_labels, "layerdrop": 0.0,
            "fed_from": "pinned memory (the loader is measured apart)", "rows": rows, "goal": goal}


# --------------------------------------------------------------------------- 4. k-means


def kmeans(sizes: Sizes, log: Log, deadline: float) -> dict[str, Any]:
    from progre.cluster.kmeans import faiss_gpus, faiss_installation, fit_kmeans

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2 * sizes.kmeans_k, sizes.kmeans_dim), dtype=np.float32)
    x = np.empty((sizes.kmeans_points, sizes.kmeans_dim), dtype=np.float32)
    for start in range(0, len(x), 100_000):  # a mixture of Gaussians, made in pieces
        stop = min(start + 100_000, len(x))
        x[start:stop] = centres[rng.integers(0, len(centres), stop - start)]
        x[start:stop] += 0.5 * rng.standard_normal((stop - start, sizes.kmeans_dim), dtype=np.float32)
    settings = dict(niter=sizes.kmeans_niter, nredo=1, init="kmeans++", seed=1234, max_points_per_centroid=None)
    gpus = faiss_gpus()
    out: dict[str, Any] = {"points": len(x), "dim": sizes.kmeans_dim, "k": sizes.kmeans_k, "niter": sizes.kmeans_niter,
                           "subsample": sizes.kmeans_subsample, "faiss_gpus": gpus}
    sub = x[rng.choice(len(x), sizes.kmeans_subsample, replace=False)]
    start = time.perf_counter()
    _, out["cpu_subsample_objective"] = fit_kmeans(sub, sizes.kmeans_k, gpu=False, **settings)
    out["cpu_subsample_seconds"] = time.perf_counter() - start
    log(f"  CPU FAISS, {len(sub)} points: {out['cpu_subsample_seconds']:.1f} s, objective "
        f"{out['cpu_subsample_objective']:.4f}")
    if gpus == 0:
        faiss = faiss_installation()
        if faiss["build"] != "gpu":
            out["gpu"] = (f"skipped: FAISS has no GPU build ({', '.join(faiss['packages']) or faiss['version']}; "
                          "faiss-gpu needs CUDA 12: `make venv-gpu`)")
        else:
            out["gpu"] = "skipped: FAISS for GPU sees no GPU"
        log(f"  GPU FAISS: {out['gpu']}")
        return out
    start = time.perf_counter()
    _, out["gpu_subsample_objective"] = fit_kmeans(sub, sizes.kmeans_k, gpu=True, **settings)
    out["gpu_subsample_seconds"] = time.perf_counter() - start
    out["gpu_over_cpu_objective"] = out["gpu_subsample_objective"] / out["cpu_subsample_objective"]
    log(f"  GPU FAISS, {len(sub)} points: {out['gpu_subsample_seconds']:.1f} s, objective ratio GPU/CPU "
        f"{out['gpu_over_cpu_objective']:.4f}")
    if time.perf_counter() > deadline - 60:
        out["gpu_full"] = "skipped: time budget"
        return out
    start = time.perf_counter()
    _, out["gpu_full_objective"] = fit_kmeans(x, sizes.kmeans_k, gpu=True, **settings)
    out["gpu_full_seconds"] = time.perf_counter() - start
    log(f"  GPU FAISS, {len(x)} points: {out['gpu_full_seconds']:.1f} s, objective {out['gpu_full_objective']:.4f}")
    return out


# --------------------------------------------------------------------------- 5. features


def features(sizes: Sizes, device: torch.device, shards: Path, log: Log, deadline: float) -> dict[str, Any]:
    from progre.data.shards import Shards
    from progre.features.computing import batches_by_seconds
    from progre.features.layer_features import LayerComputer
    from progre.features.mfcc_features import MfccComputer
    from progre.model import build_encoder, model_config, save_checkpoint

    utts = list(Shards(shards).stream())
    audio = sum(len(u.wav) for u in utts) / SAMPLE_RATE
    out: dict[str, Any] = {"utterances": len(utts), "audio_seconds": audio}

    def x_real_time(computer, batch_seconds: float, repeats: int = sizes.repeats) -> float:
        batches = list(batches_by_seconds(utts, batch_seconds, pool=4))
        computer(batches[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                computer(batch)  # features come back to the host, as the stages store them
        return repeats * audio / (time.perf_counter() - start)

    out["mfcc_x_real_time"] = {str(device): x_real_time(MfccComputer(device), sizes.mfcc_batch_seconds)}
    if device.type == "cuda":
        out["mfcc_x_real_time"]["cpu"] = x_real_time(MfccComputer(torch.device("cpu")), sizes.mfcc_batch_seconds, 1)
    log(f"  MFCC: {', '.join(f'{d} {v:.0f}x' for d, v in out['mfcc_x_real_time'].items())} real time")
    checkpoint = WORK / f"gpu-check-{sizes.model}-hubert"
    if not (checkpoint / "config.json").is_file():
        torch.manual_seed(0)
        save_checkpoint(checkpoint, build_encoder(model_config(sizes.model, "hubert")))
    layer = 6 if sizes.model == "base" else 3
    out["layer"] = layer
    out["layer_x_real_time"] = {}
    for precision in ("bf16", "fp32"):
        if time.perf_counter() > deadline - 20:
            out["layer_x_real_time"][precision] = "skipped: time budget"
            continue
        computer = LayerComputer(checkpoint, layer, device, precision=precision)
        out["layer_x_real_time"][precision] = x_real_time(computer, sizes.layer_batch_seconds)
        log(f"  layer {layer} features, {precision}: {out['layer_x_real_time'][precision]:.0f}x real time")
    return out


# --------------------------------------------------------------------------- 6. loader


def loader_throughput(sizes: Sizes, device: torch.device, data, log: Log, deadline: float) -> dict[str, Any]:
    from progre.train.batches import audio_seconds, loader

    rows = []
    for workers in sizes.loader_workers:
        if time.perf_counter() > deadline - 15:
            rows.append({"workers": workers, "skipped": "time budget"})
            continue
        stream = iter(loader(data, 0, 0, 1, workers, pin_memory=device.type == "cuda"))
        first = [next(stream), next(stream)]  # starts the workers
        del first
        start = time.perf_counter()
        audio = sum(audio_seconds(next(stream)) for _ in range(sizes.loader_batches))
        rate = audio / (time.perf_counter() - start)
        rows.append({"workers": workers, "audio_per_second": rate})
        log(f"  loader, {workers} workers: {rate:.0f} audio-s/s")
        del stream
    return {"batch_seconds": data.plan.batch_seconds, "pinned": device.type == "cuda", "rows": rows}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (CI): checks the script runs")
    parser.add_argument("--budget", type=float, default=400.0,
                        help="seconds for every section (default 400: with the venv's FAISS install or the offline "
                             "route's wheel install, within 8 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (the log goes beside it)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "pretraining", "kmeans", "features", "loader"])
    args = parser.parse_args(argv)
    from progre.log import setup_logging

    setup_logging(quiet=True)
    started = time.perf_counter()
    deadline = started + args.budget
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        # tiny tensors: one thread (on a shared 2-core machine two threads wait on each other at every op)
        torch.set_num_threads(1)
    sizes = FULL if cuda else DRY
    out = args.out or (RESULTS / "gpu.json" if cuda else WORK / "gpu-dryrun.json")
    log = Log(out.with_suffix(".log"))
    if not cuda and not args.dry_run:
        log("no CUDA GPU: running the CPU dry run (tiny sizes) instead; results go to " + str(out))
    result: dict[str, Any] = {"dry_run": not cuda, "date": time.strftime("%Y-%m-%d %H:%M"), "budget_seconds": args.budget}
    result["machine"] = machine(device)
    log(f"machine: {json.dumps(result['machine'])}")
    work = WORK / ("gpu-check" if cuda else "gpu-check-dry")
    sections: list[tuple[str, Callable[[], Any]]] = []
    shared: dict[str, Any] = {}

    def data():
        if "data" not in shared:
            shards = synthetic_corpus(work, sizes)
            crop = max(s for _, s in sizes.batch_shapes)
            shared["shards"] = shards
            shared["data"] = synthetic_data(shards, 500, 87.5 if cuda else 4.0, crop)
        return shared["data"]

    sections.append(("tests", lambda: run_tests(sizes, log, max(deadline - time.perf_counter() - 200, 30), work)))
    sections.append(("pretraining", lambda: pretraining(sizes, device, data(), log, deadline - 110)))
    sections.append(("kmeans", lambda: kmeans(sizes, log, deadline - 60)))
    sections.append(("features", lambda: (data(), features(sizes, device, shared["shards"], log, deadline - 20))[1]))
    sections.append(("loader", lambda: loader_throughput(sizes, device, data(), log, deadline)))
    for name, run in sections:
        if name in args.skip:
            result[name] = {"skipped": "--skip"}
            continue
        if time.perf_counter() > deadline - 5:
            result[name] = {"skipped": "time budget"}
            log(f"{name}: skipped (time budget)")
            continue
        log(f"{name} ...")
        start = time.perf_counter()
        try:
            result[name] = run()
        except Exception as exc:
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            log(f"{name}: FAILED {type(exc).__name__}: {exc}")
            log(traceback.format_exc())
        result.setdefault(name, {})["section_seconds"] = time.perf_counter() - start
    result["total_seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(out)
    log(f"written to {out} in {result['total_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
