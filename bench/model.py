"""Training-step speed and memory of our HuBERT-Base-sized model against torchaudio's HuBERTPretrainModel.

    .venv/bin/python -m bench.model [--batch 2 --seconds 4 --warmup 2 --iters 5 --threads N]

One forward + backward of the masked-prediction loss (+ 10 x feature penalty; + the speaker loss for
ProgRE), train mode, on the same padded batch in the same process; the models take turns so that
machine load hits them alike. Reports the median step times, the ratio ours / torchaudio (target
<= 1, aim 0.7), the extra cost of ProgRE's branches over our HuBERT (target < 10%), both as medians
of the per-round ratios, and memory. CUDA when present (bf16 autocast), else CPU. Peak memory of a
step: on CUDA the allocator's peak; on CPU the growth of the resident set over a step, in a fresh
process per model (approximate). The activations saved for backward are counted exactly anywhere.
Writes bench/results/model.json and prints a markdown table row."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchaudio

from progre.frames import num_frames
from progre.model import ProgREPretrainModel, build_encoder, model_config, pretraining_losses

RESULTS = Path(__file__).parent / "results" / "model.json"
MODELS = ("torchaudio", "ours_hubert", "ours_progre")
NUM_LABELS = 500  # HuBERT iteration 2
NUM_SPEAKERS = 100


def make_batch(batch: int, seconds: float, device: torch.device, seed: int = 0) -> dict:
    """Utterances of `seconds` down to 0.85 x `seconds`, zero-padded; labels, pitch and speakers."""
    g = torch.Generator().manual_seed(seed)
    samples = int(seconds * 16000)
    lengths = torch.linspace(samples, int(0.85 * samples), batch).long()
    wav = 0.1 * torch.randn(batch, samples, generator=g)
    wav[torch.arange(samples) >= lengths[:, None]] = 0
    frames = num_frames(samples)
    labels = torch.randint(0, NUM_LABELS, (batch, frames), generator=g)
    return dict(wav=wav.to(device), lengths=lengths.to(device), labels=labels.to(device),
                pitch=torch.randn(batch, frames, generator=g).to(device),
                speakers=torch.randint(0, NUM_SPEAKERS, (batch,), generator=g).to(device))


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, Callable[[dict], torch.Tensor]]:
    """Model `name` and a step function returning its loss (dropouts as in HuBERT Base, no layer drop,
    so that every step does the same work)."""
    torch.manual_seed(0)
    if name == "torchaudio":
        model = torchaudio.models.hubert_pretrain_base(encoder_layer_drop=0.0, num_classes=NUM_LABELS)
        model.to(device).train()

        def step(b: dict) -> torch.Tensor:
            logit_m, _, feature_pen = model(b["wav"], b["labels"], b["lengths"])
            # torchaudio puts the target in column 0 of its logits
            target = torch.zeros(logit_m.shape[0], dtype=torch.long, device=logit_m.device)
            return F.cross_entropy(logit_m.float(), target) + 10 * feature_pen
        return model, step

    kind = "hubert" if name == "ours_hubert" else "progre"
    encoder = build_encoder(model_config("base", kind, encoder_layerdrop=0.0))
    ours = ProgREPretrainModel(encoder, NUM_LABELS, NUM_SPEAKERS).to(device).train()
    generator = torch.Generator().manual_seed(0)

    def step(b: dict) -> torch.Tensor:
        out = ours(b["wav"], b["lengths"], b["labels"], b["pitch"], generator=generator)
        return pretraining_losses(out, b["speakers"])["loss"]
    return ours, step


def train_step(step: Callable, batch: dict, device: torch.device) -> float:
    """Seconds for one forward + backward."""
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with autocast:
        loss = step(batch)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_models(args, device: torch.device) -> dict[str, list[float]]:
    batch = make_batch(args.batch, args.seconds, device)
    steps = {name: build(name, device)[1] for name in MODELS}
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    for i in range(args.warmup + args.iters):
        for name in MODELS:  # interleaved: load changes hit every model alike
            seconds = train_step(steps[name], batch, device)
            if i >= args.warmup:
                times[name].append(seconds)
    return times


def peak_memory(name: str, args, device: torch.device) -> float:
    """MiB of peak memory of one training step beyond the model and batch."""
    if device.type == "cuda":
        _, step = build(name, device)
        batch = make_batch(args.batch, args.seconds, device)
        train_step(step, batch, device)  # allocate the gradients first
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(step, batch, device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    # CPU: a fresh process per model, so that one model's peak does not hide the next one's
    cmd = [sys.executable, "-m", "bench.model", "--probe-memory", name, "--batch", str(args.batch),
           "--seconds", str(args.seconds)] + (["--threads", str(args.threads)] if args.threads else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def saved_activations(name: str, args, device: torch.device) -> float:
    """MiB of the distinct activation storages autograd keeps for the backward pass (parameters
    excluded): a deterministic memory measure, the same on every machine."""
    model, step = build(name, device)
    params = {p.data_ptr() for p in model.parameters()}
    batch = make_batch(args.batch, args.seconds, device)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = step(batch)
    del loss
    return sum(storages.values()) / 2**20


def probe_memory(name: str, args) -> None:
    """(child process) resident-set growth over the second training step, in MiB."""
    _, step = build(name, torch.device("cpu"))
    batch = make_batch(args.batch, args.seconds, torch.device("cpu"))
    train_step(step, batch, torch.device("cpu"))  # gradients and allocator pools exist after this
    before = _rss_mib()
    train_step(step, batch, torch.device("cpu"))
    print(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before, 0.0))


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def machine(device: torch.device) -> dict:
    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                torchaudio=torchaudio.__version__, device=str(device), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), load_average=os.getloadavg())
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--batch", type=int, default=8 if cuda else 2)
    parser.add_argument("--seconds", type=float, default=10.0 if cuda else 4.0)
    parser.add_argument("--warmup", type=int, default=3 if cuda else 2)
    parser.add_argument("--iters", type=int, default=10 if cuda else 5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--probe-memory", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe_memory:
        probe_memory(args.probe_memory, args)
        return
    device = torch.device("cuda" if cuda else "cpu")

    load_before = os.getloadavg()
    times = time_models(args, device)
    median = {name: statistics.median(t) for name, t in times.items()}
    # ratios per round (the models ran back to back), then the median: robust to load drifting
    ratio = statistics.median(o / t for o, t in zip(times["ours_hubert"], times["torchaudio"]))
    extra = statistics.median(p / o for p, o in zip(times["ours_progre"], times["ours_hubert"])) - 1.0
    memory = {name: peak_memory(name, args, device) for name in MODELS}
    saved = {name: saved_activations(name, args, device) for name in MODELS}
    result = dict(
        bench="model", machine={**machine(device), "load_average_before": load_before},
        setup=dict(batch=args.batch, seconds=args.seconds, warmup=args.warmup, iters=args.iters,
                   precision="bf16 autocast" if cuda else "fp32", num_labels=NUM_LABELS,
                   padded="utterances from 1.0 down to 0.85 x seconds", layerdrop=0.0),
        step_seconds=times, median_seconds=median,
        min_seconds={name: min(t) for name, t in times.items()},
        ratio_ours_over_torchaudio=ratio, progre_extra_cost=extra,
        peak_memory_mib=memory, saved_activations_mib=saved,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(RESULTS)

    print("| bench | device | batch | torchaudio s/step | ours HuBERT s/step | ours / torchaudio | "
          "ProgRE s/step | ProgRE extra | peak MiB (torchaudio / HuBERT / ProgRE) | "
          "saved activations MiB (torchaudio / HuBERT / ProgRE) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    device_name = result["machine"].get("gpu", f"CPU x{torch.get_num_threads()}")
    print(f"| model | {device_name} | {args.batch} x {args.seconds:g} s | {median['torchaudio']:.3f} | "
          f"{median['ours_hubert']:.3f} | {result['ratio_ours_over_torchaudio']:.2f} | "
          f"{median['ours_progre']:.3f} | {100 * result['progre_extra_cost']:+.1f}% | "
          f"{memory['torchaudio']:.0f} / {memory['ours_hubert']:.0f} / {memory['ours_progre']:.0f} | "
          f"{saved['torchaudio']:.0f} / {saved['ours_hubert']:.0f} / {saved['ours_progre']:.0f} |")


if __name__ == "__main__":
    main()
