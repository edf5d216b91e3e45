"""Training throughput: audio-seconds of training per wall-second, ours vs torchaudio, and the data loader.

    .venv/bin/python -m bench.train [--sizes tiny base] [--steps 12] [--batch-seconds 16]

For each size, in one process and on the same micro-batches of the demo corpus:

- ours: `Trainer.train_step` of the HuBERT baseline (masked prediction on MFCC k-means labels,
  AdamW, clipping, bf16 autocast on CUDA), fed by our DataLoader (1 worker);
- ours with fused AdamW (`pretrain.fused_optimizer: true`; the default on CUDA): on the CPU it
  rounds differently from the for-loop AdamW (about 1 float32 ulp on 7% of the weights per update),
  so the CPU default keeps the for-loop one and this row measures what the fused one would give;
- torchaudio: a plain loop around `HuBERTPretrainModel` of the same shape (forward, the same
  losses, backward, AdamW step) on the same batches, already in memory;
- the data loader alone, iterated without training: it must deliver at least 10x the audio
  the training step consumes.

The demo corpus and its MFCC labels are made once under bench/.work/ (not timed). The models
alternate step by step so that machine load hits them alike. Writes bench/results/train.json.

Where the time of a CPU Base step goes (8 s batches, measured on this 2-core machine while other
jobs kept its load average at 6-9; torch.profiler and per-phase process CPU time):

- on one thread the two models cost the same: forward 0.89 vs 0.90 s, backward 1.77 vs 1.74 s,
  AdamW 0.16 vs 0.16 s of CPU time per step (ours vs torchaudio, 6.3 s of audio per step). The
  GEMMs are identical (aten::mm 0.70 s each); `bench.model`'s 0.56x comes from its padded
  batches, which torchaudio handles with extra work; these batches are cropped, unpadded;
- on two threads under load the optimizer becomes the largest overhead: AdamW's ~1,500
  element-wise kernels per step (for-loop, one tensor at a time) each fork and join the thread
  pool, and a join waits for a descheduled thread: 0.32 s per step on two threads vs 0.23 s on
  one (medians of 6 at load 7.5; in another run at load 6, 6.1 s vs 0.17 s; fused AdamW 0.08 s;
  foreach 0.94 s, its CPU path loops per tensor and allocates). Ours now steps the optimizer on
  one thread (the same numbers: element-wise results do not depend on the thread count, checked
  on every tensor of a Base model); on an idle machine two threads may be the faster;
- clipping multiplied every gradient by 1.0 when nothing was clipped (one more pass over the
  377 MB of gradients): skipped, the same numbers;
- about 100k minor page faults per step in both loops (the gradients and activations are
  freed and re-allocated every step, 0.4 GB of fresh pages), and no denormals (flushing them
  changed nothing);
- the loader worker, the per-step statistics and the buffer snapshot cost under 1%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio

from progre.cluster.labels import read_labels
from progre.config import ClusterParams, FeaturesParams, PretrainParams, ShardParams
from progre.log import setup_logging
from progre.model import model_config
from progre.data.shards import Shards
from progre.train.batches import PlanSettings, PretrainData, audio_seconds, loader
from progre.train.distributed import init_distributed
from progre.train.loop import RunControl, RunSpec, Trainer, TrainRecipe
from stages import cluster as cluster_stage
from stages import mfcc as mfcc_stage
from stages import shard as shard_stage

from .common import demo_corpus, write_result

WORK = Path(__file__).parent / ".work"


def prepare() -> tuple[Path, Path]:
    shards, labels = WORK / "shards", WORK / "labels_mfcc100"
    if not (shards / "index.parquet").is_file():
        shard_stage.run(ShardParams(max_shard_mb=4.0), demo_corpus(WORK), shards, overwrite=True)
    if not (labels / "labels.parquet").is_file():
        mfcc_stage.run(FeaturesParams(sample_fraction=0.5), shards, WORK / "mfcc")
        cluster_stage.run(ClusterParams(n_clusters=100, niter=50), WORK / "mfcc", shards, labels)
    return shards, labels


def torchaudio_model(size: str, num_classes: int) -> torchaudio.models.HuBERTPretrainModel:
    cfg = model_config(size, "hubert")
    return torchaudio.models.hubert_pretrain_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[tuple(c) for c in cfg.conv_feature_layers],
        extractor_conv_bias=False, encoder_embed_dim=cfg.encoder_embed_dim, encoder_projection_dropout=cfg.dropout_input,
        encoder_pos_conv_kernel=cfg.conv_pos, encoder_pos_conv_groups=cfg.conv_pos_groups,
        encoder_num_layers=cfg.encoder_layers, encoder_num_heads=cfg.encoder_attention_heads,
        encoder_attention_dropout=cfg.attention_dropout, encoder_ff_interm_features=cfg.encoder_ffn_embed_dim,
        encoder_ff_interm_dropout=cfg.activation_dropout, encoder_dropout=cfg.dropout,
        encoder_layer_norm_first=cfg.layer_norm_first, encoder_layer_drop=0.0, mask_prob=0.8, mask_selection="static",
        mask_other=0.0, mask_length=10, no_mask_overlap=False, mask_min_space=1, mask_channel_prob=0.0,
        mask_channel_selection="static", mask_channel_other=0.0, mask_channel_length=10, no_mask_channel_overlap=False,
        mask_channel_min_space=1, skip_masked=False, skip_nomask=False, num_classes=num_classes, final_dim=256,
        feature_grad_mult=cfg.feature_grad_mult)


def bench_size(size: str, steps: int, batch_seconds: float, shards: Path, labels_dir: Path) -> dict:
    dist = init_distributed()
    labels = read_labels(labels_dir)
    p = PretrainParams(model="hubert", size=size, max_steps=10**6, warmup_steps=10, batch_seconds=batch_seconds,
                       crop_min_seconds=1.0, crop_max_seconds=6.0, num_workers=1, lr=5e-4)
    data = PretrainData(Shards(shards), "train", labels, None, None, p.to(PlanSettings), p.seed)
    spec = RunSpec(model_config(size, "hubert", encoder_layerdrop=0.0), labels.n_clusters, 0, labels.label_rate,
                   "bench", [])
    recipe = p.to(TrainRecipe)
    trainer = Trainer(recipe, p.to(RunControl), spec, data, None, WORK / f"run-{size}", dist)
    fused = Trainer(recipe, p.to(RunControl, fused_optimizer=True), spec, data, None, WORK / f"run-{size}-fused", dist)
    reference = torchaudio_model(size, labels.n_clusters).to(dist.device)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)

    # the data loader alone
    stream = iter(loader(data, 0, 0, 1, p.num_workers))
    loaded = [next(stream), next(stream)]  # also starts the worker
    start = time.perf_counter()
    loaded += [next(stream) for _ in range(steps)]
    loader_rate = sum(audio_seconds(b) for b in loaded[2:]) / (time.perf_counter() - start)

    # every model sees micro-batches 0, 1, 2, ...: two warm-up steps each, then `steps` timed ones
    ours_times, fused_times, reference_times, seconds = [], [], [], []
    batches = iter(loader(data, 0, 0, 1, p.num_workers))
    fused_batches = iter(loader(data, 0, 0, 1, p.num_workers))
    load_before = os.getloadavg()
    for i, batch in enumerate(loaded):
        t0 = time.perf_counter()
        stats = trainer.train_step(batches)
        t1 = time.perf_counter()
        fused.train_step(fused_batches)
        t2 = time.perf_counter()
        reference_step(reference, optimizer, batch, dist.device)
        t3 = time.perf_counter()
        if i >= 2:
            ours_times.append(t1 - t0)
            fused_times.append(t2 - t1)
            reference_times.append(t3 - t2)
            seconds.append(stats["audio_seconds"])
    audio = statistics.mean(seconds)
    ours_rate = audio / statistics.median(ours_times)
    fused_rate = audio / statistics.median(fused_times)
    reference_rate = audio / statistics.median(reference_times)
    # per-step ratios (the models ran back to back), then the median: robust to load drifting
    per_step = statistics.median(r / o for o, r in zip(ours_times, reference_times))
    per_step_fused = statistics.median(r / f for f, r in zip(fused_times, reference_times))
    return {"size": size, "audio_seconds_per_step": audio, "ours_audio_per_second": ours_rate,
            "ours_fused_adamw_audio_per_second": fused_rate,
            "torchaudio_audio_per_second": reference_rate, "ratio_ours_over_torchaudio": ours_rate / reference_rate,
            "ratio_ours_over_torchaudio_per_step": per_step,
            "ratio_ours_fused_adamw_over_torchaudio": fused_rate / reference_rate,
            "ratio_ours_fused_adamw_over_torchaudio_per_step": per_step_fused,
            "loader_audio_per_second": loader_rate, "loader_over_training": loader_rate / ours_rate,
            "parameters": trainer.model.encoder.num_parameters(), "load_average_before": load_before,
            "load_average_after": os.getloadavg()}


def reference_step(model, optimizer, batch: dict, device: torch.device) -> None:
    wav = batch["wav"].to(device)
    labels = batch["labels"].clamp(min=0).to(device)
    model.train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logit_m, logit_u, feature_penalty = model(wav, labels, batch["lengths"].to(device))
    target = torch.zeros(logit_m.shape[0], dtype=torch.long, device=device)  # torchaudio puts the target first
    loss = F.cross_entropy(logit_m.float(), target) + 10.0 * feature_penalty
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-seconds", type=float, default=16.0)
    args = parser.parse_args()
    setup_logging(quiet=True)
    shards, labels = prepare()
    rows = []
    for size in args.sizes:
        seconds = args.batch_seconds if size == "tiny" or torch.cuda.is_available() else min(args.batch_seconds, 8.0)
        row = bench_size(size, args.steps, seconds, shards, labels)
        rows.append(row)
        print(f"| train {size} | ours {row['ours_audio_per_second']:.2f} audio-s/s (fused AdamW "
              f"{row['ours_fused_adamw_audio_per_second']:.2f}), torchaudio {row['torchaudio_audio_per_second']:.2f} | "
              f"ratio {row['ratio_ours_over_torchaudio']:.2f} (fused {row['ratio_ours_fused_adamw_over_torchaudio']:.2f}; "
              f"per-step medians {row['ratio_ours_over_torchaudio_per_step']:.2f} / "
              f"{row['ratio_ours_fused_adamw_over_torchaudio_per_step']:.2f}) | "
              f"loader {row['loader_over_training']:.0f}x what training consumes |")
    path = write_result("train", {"rows": rows, "steps": args.steps})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
