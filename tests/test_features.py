"""progre features: MFCC parity with torchaudio's Kaldi functions, pitch on known tones, storage, ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from progre.frames import num_frames
from progre.config import FeaturesParams
from progre.errors import UserError
from progre.dsp.mfcc import mfcc_batch, mfcc_reference
from progre.dsp.padding import pad_batch
from progre.dsp.pitch import dio_f0, compute_pitch, compute_pitch_and_voicing
from progre.features.store import FeatureStore
from progre.features.writing import rank_and_device
from stages import layer as layer_stage
from stages import mfcc as mfcc_stage
from stages import pitch as pitch_stage

from .conftest import noise


def test_batched_mfcc_equals_torchaudio_kaldi_per_utterance():
    g = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(n, generator=g) for n in (16000, 12345, 400, 401, 559, 560, 40000)]
    batch, lengths = pad_batch(wavs)
    feats, frames = mfcc_batch(batch, lengths)
    assert feats.shape[2] == 39
    for i, wav in enumerate(wavs):
        reference = mfcc_reference(wav)
        assert int(frames[i]) == reference.shape[0] == (len(wav) - 400) // 160 + 1
        torch.testing.assert_close(feats[i, : frames[i]], reference, atol=1e-3, rtol=0)
        assert feats[i, frames[i]:].abs().sum() == 0  # padding frames are zero


def chirp(seconds: float, f_start: float, f_end: float, rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """A linear chirp and its instantaneous frequency per sample."""
    t = np.arange(int(seconds * rate)) / rate
    freq = f_start + (f_end - f_start) * t / seconds
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return (0.4 * np.sin(phase)).astype(np.float32), freq


def test_pitch_tracks_a_known_frequency_and_is_normalised_on_voiced_frames():
    wav, freq = chirp(2.0, 120.0, 240.0)
    f0 = dio_f0(wav)
    frame_times = np.arange(len(f0)) * 320
    voiced = f0 > 0
    assert voiced.mean() > 0.9
    truth = freq[np.minimum(frame_times, len(freq) - 1)]
    inner = voiced & (frame_times > 1600) & (frame_times < len(wav) - 1600)  # away from the edges
    assert np.all(np.abs(np.log(f0[inner]) - np.log(truth[inner])) < 0.02 * np.log(truth[inner]))
    assert np.median(np.abs(f0[inner] / truth[inner] - 1)) < 0.02

    contour, voicing = compute_pitch_and_voicing(wav)
    assert len(contour) == num_frames(len(wav)) == len(voicing)
    on = contour[voicing]
    assert abs(on.mean()) < 1e-4 and abs(on.std() - 1.0) < 1e-3
    assert np.all(contour[~voicing] == 0)
    assert np.corrcoef(on, np.arange(len(on)))[0, 1] > 0.95  # rising pitch, rising contour


def test_all_unvoiced_pitch_is_zero():
    silence = np.zeros(16000, dtype=np.float32)
    assert np.all(compute_pitch(silence) == 0) and len(compute_pitch(silence)) == num_frames(16000)
    with pytest.raises(ValueError, match="16000 Hz"):
        compute_pitch(silence, 8000)


def test_mfcc_features_store_only_the_sample_deterministically(phone_shards, tmp_path):
    p = FeaturesParams(sample_fraction=0.5, batch_seconds=2.0)
    stats = mfcc_stage.run(p, phone_shards, tmp_path / "a")
    mfcc_stage.run(p, phone_shards, tmp_path / "b")
    a, b = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == stats["utterances"] == 4  # half of the 8 train utterances
    assert a.meta["kind"] == "mfcc" and a.meta["frame_rate"] == 100 and a.dim == 39
    for key in a.keys():
        np.testing.assert_array_equal(a[key], b[key])
    other = mfcc_stage.run(FeaturesParams(sample_fraction=0.5, seed=7), phone_shards, tmp_path / "c")
    assert set(FeatureStore(tmp_path / "c").keys()) != set(a.keys()) or other["utterances"] != 4


def test_pitch_for_every_utterance_and_ranks_merge(phone_shards, tmp_path):
    single = tmp_path / "single"
    pitch_stage.run(FeaturesParams(workers=1), phone_shards, single)
    split = tmp_path / "split"
    for rank in (1, 0):
        pitch_stage.run(FeaturesParams(workers=2), phone_shards, split, rank=rank, world_size=2)
    one, two = FeatureStore(single), FeatureStore(split)
    assert sorted(one.keys()) == sorted(two.keys()) and len(one) == 16
    for key in one.keys():
        np.testing.assert_array_equal(one[key], two[key])
    summary = json.loads((single / "summary-000.json").read_text())
    assert summary["utterances"] == 16 and summary["unvoiced_utterances"] == 0  # tones and noise: tones are voiced
    assert sum(json.loads((split / f"summary-{r:03d}.json").read_text())["utterances"] for r in (0, 1)) == 16


def test_incomplete_rank_output_is_refused(phone_shards, tmp_path):
    pitch_stage.run(FeaturesParams(workers=1), phone_shards, tmp_path / "f", rank=0, world_size=2)
    with pytest.raises(UserError, match="incomplete"):
        FeatureStore(tmp_path / "f")


def test_each_rank_computes_on_the_gpu_of_its_local_rank(monkeypatch):
    """The device `progre features` (mfcc, layer) hands its writer, on a node that shows two GPUs (only the
    device count is mocked; the conftest hides CUDA otherwise)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rank_and_device(None, None, "auto") == (0, 1, torch.device("cuda", 0))  # one process: the first GPU
    # under torchrun: global rank 3 of 4 is the second process of its node
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_and_device(None, None, "auto") == (3, 4, torch.device("cuda", 1))
    assert rank_and_device(None, None, "cuda") == (3, 4, torch.device("cuda", 1))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_and_device(None, None, "auto")[2] == torch.device("cuda", 0)
    assert rank_and_device(None, None, "cpu")[2] == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")  # more processes on the node than GPUs
    with pytest.raises(UserError, match="LOCAL_RANK 2 needs GPU 2, but this node shows 2"):
        rank_and_device(None, None, "auto")
    # ranks started by hand with --rank/--world-size (no torchrun): the rank modulo the node's GPUs
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert [rank_and_device(r, 4, "auto")[2].index for r in range(4)] == [0, 1, 0, 1]


def test_feature_errors(phone_shards, tmp_path):
    with pytest.raises(UserError, match="needs --checkpoint"):
        layer_stage.run(FeaturesParams(), phone_shards, tmp_path / "x")
    with pytest.raises(UserError, match="not valid for world size"):
        pitch_stage.run(FeaturesParams(), phone_shards, tmp_path / "x", rank=2, world_size=2)
    with pytest.raises(UserError, match="not a shard folder"):
        mfcc_stage.run(FeaturesParams(), tmp_path, tmp_path / "x")
    assert noise(0.1).dtype == np.float32
