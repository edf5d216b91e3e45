"""Shared fixtures: tiny audio written on the fly (tests never download anything)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from progre.log import setup_logging

setup_logging(quiet=True)

BF16_LAYER_RTOL = 0.05
"""Layer features under bf16 autocast vs float32 (CPU and CUDA tests): the relative L2 error of each
utterance's (frames, dim) features is at most this. bf16 keeps 8 bits of mantissa (0.4% per rounding);
a tiny random-init ProgRE's layer 3 measured 1.2-1.3% on the CPU."""


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """Tests not marked `cuda` run on the CPU on a GPU machine too (`device: auto` would pick CUDA,
    and a 2-rank DDP test would look for a second GPU), so their exact expectations (bit-equal
    resumes, gloo DDP) hold everywhere; the `cuda` tests (tests/test_cuda.py) use the GPU."""
    if request.node.get_closest_marker("cuda") is None:
        import torch

        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # for the subprocesses
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def tone(seconds: float, freq: float = 220.0, rate: int = 16000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, rate: int = 16000, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def vowel(f0: float = 120.0, formants=(700.0, 1200.0, 2600.0), seconds: float = 1.0,
          rate: int = 16000) -> np.ndarray:
    """A glottal pulse train at f0 through two-pole resonators at `formants` (a steady vowel)."""
    import torch
    import torchaudio.functional as AF

    n = int(seconds * rate)
    x = np.zeros(n, dtype=np.float64)
    x[:: int(rate / f0)] = 1.0
    y = torch.from_numpy(x)
    for freq in formants:
        r = np.exp(-np.pi * 80.0 / rate)  # 80 Hz bandwidth
        a = [1.0, -2 * r * np.cos(2 * np.pi * freq / rate), r * r]
        y = AF.lfilter(y, torch.tensor(a, dtype=torch.float64), torch.tensor([1.0 - r, 0.0, 0.0], dtype=torch.float64),
                       clamp=False)
    y = y.numpy()
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def write_audio(path: Path, data: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return path


@pytest.fixture
def messy_corpus(tmp_path: Path) -> Path:
    """A folder of audio with every kind of bad input next to good ones, and a metadata table."""
    root = tmp_path / "corpus"
    write_audio(root / "good" / "a1.wav", noise(1.0, seed=1), subtype="PCM_16")
    write_audio(root / "good" / "a2.flac", tone(0.7), subtype="PCM_16")
    write_audio(root / "stereo48k.wav", np.stack([tone(0.5, rate=48000), noise(0.5, 48000, seed=2)], 1), 48000,
                subtype="FLOAT")
    write_audio(root / "narrow8k.wav", noise(0.6, 8000, seed=3), 8000, subtype="PCM_16")
    write_audio(root / "silent.wav", np.zeros(8000, np.float32), subtype="PCM_16")
    nan = noise(0.5, seed=4)
    nan[100] = np.nan
    write_audio(root / "nan.wav", nan, subtype="FLOAT")
    inf = noise(0.5, seed=5)
    inf[7] = np.inf
    write_audio(root / "inf.wav", inf, subtype="FLOAT")
    write_audio(root / "short.wav", noise(0.02, seed=6), subtype="PCM_16")  # 320 samples < 400
    (root / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(200)))
    (root / "empty.wav").write_bytes(b"")
    (root / "text.ogg").write_text("this is not audio")
    return root


def phone_corpus(root: Path, n_utts: int = 12, seed: int = 0) -> Path:
    """A folder corpus of 'phones' made of tones and noise bursts, with frame-exact phone times.

    Each utterance is a random sequence of segments: phone 'a' = 300 Hz tone, 'b' = 700 Hz tone,
    'c' = 1500 Hz tone, 's' = white noise; splits and speakers are assigned round-robin.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    kinds = {"a": 300.0, "b": 700.0, "c": 1500.0, "s": None}
    rows = []
    for u in range(n_utts):
        pieces, phones, starts, ends, t = [], [], [], [], 0.0
        for _ in range(int(rng.integers(4, 8))):
            phone = str(rng.choice(list(kinds)))
            dur = float(rng.uniform(0.08, 0.2))
            freq = kinds[phone]
            piece = tone(dur, freq, amp=0.3) if freq else noise(dur, amp=0.1, seed=int(rng.integers(1 << 30)))
            pieces.append(piece)
            phones.append(phone)
            starts.append(t)
            t += len(piece) / 16000
            ends.append(t)
        path = f"u{u:02d}.wav"
        write_audio(root / path, np.concatenate(pieces), subtype="PCM_16")
        rows.append({"path": path, "key": f"utt{u:02d}", "speaker": f"spk{u % 3}", "text": " ".join(phones),
                     "style": ["neutral", "happy"][u % 2], "split": ["train", "train", "valid", "test"][u % 4],
                     "phones": phones, "phone_start": starts, "phone_end": ends})
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    return root


@pytest.fixture(scope="session")
def phone_shards(tmp_path_factory) -> Path:
    """Shards of `phone_corpus` (session-wide: several test files read them)."""
    from progre.config import ShardParams
    from stages import shard as shard_stage

    base = tmp_path_factory.mktemp("phone")
    corpus = phone_corpus(base / "corpus", n_utts=16)
    shard_stage.run(ShardParams(workers=1), corpus, base / "shards")
    return base / "shards"


@pytest.fixture(scope="session")
def phone_labels(phone_shards, tmp_path_factory) -> tuple[Path, Path]:
    """(label folder of MFCC k-means with k=8, pitch folder) for `phone_shards`."""
    from progre.config import ClusterParams, FeaturesParams
    from stages import cluster as cluster_stage
    from stages import mfcc as mfcc_stage
    from stages import pitch as pitch_stage

    base = tmp_path_factory.mktemp("labels")
    mfcc_stage.run(FeaturesParams(sample_fraction=1.0), phone_shards, base / "mfcc")
    cluster_stage.run(ClusterParams(n_clusters=8, niter=20), base / "mfcc", phone_shards, base / "km")
    pitch_stage.run(FeaturesParams(workers=1), phone_shards, base / "pitch")
    return base / "km", base / "pitch"


MODEL_NAMES_BEFORE_FAIRSEQ = {
    "conv_feature_layers": "conv_layers", "extractor_mode": "conv_norm", "feature_grad_mult": "conv_grad_scale",
    "normalize": "normalize_waveform", "encoder_attention_heads": "attention_heads",
    "encoder_ffn_embed_dim": "ffn_dim", "encoder_layerdrop": "layerdrop", "conv_pos": "pos_conv_kernel",
    "conv_pos_groups": "pos_conv_groups",
}
"""Model-config fields that took fairseq's option names: today's name -> the one earlier checkpoints hold."""


def with_names_before_fairseq(model: dict) -> dict:
    """A `ModelConfig.to_dict()` as versions before the fairseq names wrote it (`conv_norm` "group"/"layer")."""
    old = {MODEL_NAMES_BEFORE_FAIRSEQ.get(k, k): v for k, v in model.items()}
    old["conv_norm"] = {"default": "group", "layer_norm": "layer"}[model["extractor_mode"]]
    return old
