"""Speech enhancement and voice conversion: the signal paths on known signals, the data routes (mixing,
a noise folder, a paired noisy corpus) and the cases where a task cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from progre.config import EvaluateParams, ShardParams
from progre.data.noise import ColouredNoiseSource, NoisyMixer
from progre.downstream.conversion import FEATURES, FeatureHead, world_frame_index
from progre.downstream.enhancement import (BINS, Pair, SpeechEnhancement, istft, model_frames_of_stft,
                                           phase_sensitive_mask, stft)
from progre.downstream.speech_quality import pesq_wb, si_sdr
from progre.downstream.tasks import NoisyAudio
from progre.dsp.world import world_num_frames
from progre.frames import num_frames
from stages import evaluate, shard as shard_stage

from .conftest import noise, tone, vowel, write_audio

FAST = {"max_epochs": 1, "patience": 1, "batch_size": 4, "head_seeds": 1, "lr": [1e-3]}


def test_stft_frames_read_the_nearest_model_frame():
    for n in (400, 16000, 16123, 48000):
        index = model_frames_of_stft(n)
        assert len(index) == -(-n // 320) + 1 == stft(np.zeros(n, np.float32)).shape[0]
        assert index[0] == 0 and index[1] == 0 and int(index.max()) == num_frames(n) - 1
        assert all(int(index[j]) == min(j - 1, num_frames(n) - 1) for j in range(1, len(index)))


def test_the_oracle_mask_restores_the_clean_speech_near_the_ceiling():
    clean = vowel(seconds=2.0)
    noisy = NoisyMixer(ColouredNoiseSource(("white",)), seed=1, snr_db_min=5, snr_db_max=5).mix("k", clean)[0]
    mask = phase_sensitive_mask(stft(clean), stft(noisy))
    assert mask.shape == (-(-len(clean) // 320) + 1, BINS) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    restored = istft(stft(noisy) * mask, len(clean))
    assert si_sdr(clean, restored) > si_sdr(clean, noisy) + 10
    # PESQ of a synthetic vowel is not monotonic in the SNR (2.97 restored at 5 dB, 4.01 at 0 dB); the gain
    # over the noisy input (~1.05 at either SNR) is what holds
    assert pesq_wb(clean, restored) > pesq_wb(clean, noisy) + 1.5
    np.testing.assert_allclose(istft(stft(clean), len(clean)), clean, atol=1e-5)  # the STFT itself is lossless
    odd = vowel(seconds=1.0)[:16123]  # not a whole number of hops: the tail comes back too
    np.testing.assert_allclose(istft(stft(odd), len(odd)), odd, atol=1e-5)


def test_enhancing_with_an_all_ones_mask_gives_back_the_noisy_input():
    clean = vowel(seconds=1.0)
    noisy = clean + noise(1.0, amp=0.05)
    task = SpeechEnhancement(NoisyAudio(lambda key, wav: wav, {}))
    enhanced = task.enhance(Pair("k", clean, noisy), torch.ones(num_frames(len(clean)), BINS))
    np.testing.assert_allclose(enhanced, noisy, atol=1e-5)


def test_vc_predicts_two_world_frames_per_model_frame():
    head = FeatureHead(dim=8, hidden=4, layers=1, dropout=0.0)
    out, lengths = head(torch.randn(2, 5, 8), torch.tensor([5, 3]))
    assert out.shape == (2, 10, FEATURES) and lengths.tolist() == [10, 6]
    for n in (16000, 16399):
        index = world_frame_index(n, 2 * num_frames(n))
        assert len(index) == world_num_frames(n) and int(index.max()) <= 2 * num_frames(n) - 1
        assert index[1] == 0 and index[2] == 1  # WORLD frame t reads predicted frame t - 1


# --------------------------------------------------------------------------- through `progre evaluate`


def _corpus(root: Path, speakers: int = 3, noisy_keys: tuple[str, ...] = ()) -> Path:
    """A folder corpus of vowels: each speaker a pitch, 2 train, 1 valid and 2 test utterances, the test
    sentences shared by every speaker (as the demo corpus's)."""
    rows = []
    for s in range(speakers):
        for split, count in (("train", 2), ("valid", 1), ("test", 2)):
            for i in range(count):
                key = f"s{s}_{split}{i}"
                wav = vowel(f0=110.0 + 40 * s, seconds=1.0 + 0.1 * i)
                if key in noisy_keys:
                    wav = wav + noise(1.0 + 0.1 * i, amp=0.05)
                write_audio(root / f"{key}.wav", wav, subtype="PCM_16")
                text = f"test sentence {i}" if split == "test" else f"{split} sentence {s} {i}"
                rows.append({"path": f"{key}.wav", "key": key, "speaker": f"s{s}", "split": split, "text": text,
                             "noise": "white" if key in noisy_keys else None})
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    return root


@pytest.fixture(scope="module")
def vowels(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("vowels")
    shard_stage.run(ShardParams(workers=1), _corpus(base / "corpus"), base / "shards")
    return base


def test_se_with_a_folder_of_noise_recordings_and_vc_run(vowels, tmp_path):
    folder = tmp_path / "noise"
    write_audio(folder / "hum.wav", tone(0.7, 60.0, amp=0.2) + noise(0.7, amp=0.02), subtype="PCM_16")
    write_audio(folder / "hiss.flac", noise(2.0, rate=48000, amp=0.1), rate=48000, subtype="PCM_16")
    out = tmp_path / "eval"
    summary = evaluate.run(EvaluateParams(**FAST, tasks=["se", "vc"], se_noise=str(folder), vc_target="s1"),
                           upstream="mfcc", out=out, shards=vowels / "shards", cache=tmp_path / "cache")
    assert summary["tasks"]["se"]["status"] == "ok" and summary["tasks"]["vc"]["status"] == "ok"
    se = json.loads((out / "se" / "metrics.json").read_text())
    assert se["utterances"] == {"train": 6, "valid": 3, "test": 6} and se["reference"]["si_sdri"] == 0.0
    vc = json.loads((out / "vc" / "metrics.json").read_text())
    assert vc["utterances"]["test"] == 4 and "target speaker s1" in " ".join(vc["notes"])  # s0 and s2, 2 each
    assert vc["reference"]["mcd"] > 0 and 0 <= vc["test_metrics"]["sim"] <= 1


def test_se_pairs_a_noisy_corpus_with_the_same_keys(vowels, tmp_path):
    """VoiceBank-DEMAND's route: the noisy recordings sharded alike, paired by key."""
    clean_corpus = vowels / "corpus"
    noisy_corpus = tmp_path / "noisy"
    mixer = NoisyMixer(ColouredNoiseSource(), seed=7)
    for path in sorted(clean_corpus.glob("*.wav")):
        import soundfile as sf

        wav, _ = sf.read(path, dtype="float32")
        write_audio(noisy_corpus / path.name, np.clip(mixer.mix(path.stem, wav)[0], -1, 1), subtype="PCM_16")
    (noisy_corpus / "metadata.parquet").write_bytes((clean_corpus / "metadata.parquet").read_bytes())
    shard_stage.run(ShardParams(workers=1), noisy_corpus, tmp_path / "noisy-shards")
    out = tmp_path / "eval"
    evaluate.run(EvaluateParams(**FAST, tasks=["se"], se_noisy=str(tmp_path / "noisy-shards")), upstream="mfcc",
                 out=out, shards=vowels / "shards", cache=tmp_path / "cache")
    se = json.loads((out / "se" / "metrics.json").read_text())
    assert se["status"] == "ok" and 1.0 <= se["reference"]["pesq"] < 4.5  # the noisy recordings are the floor


def test_tasks_that_cannot_run_say_why_in_one_line(tmp_path):
    one_speaker = tmp_path / "one"
    shard_stage.run(ShardParams(workers=1), _corpus(tmp_path / "c1", speakers=1), one_speaker)
    all_noisy = tmp_path / "noisy"
    keys = tuple(f"s{s}_{split}{i}" for s in range(2) for split, n in (("train", 2), ("valid", 1), ("test", 2))
                 for i in range(n))
    shard_stage.run(ShardParams(workers=1), _corpus(tmp_path / "c2", speakers=2, noisy_keys=keys), all_noisy)
    cases = [
        (one_speaker, {"tasks": ["vc", "pr"]}, "vc", "needs speakers besides the target: the corpus has one (s0)"),
        (all_noisy, {"tasks": ["se", "pr"]}, "se", "no clean training utterance"),
        (one_speaker, {"tasks": ["vc", "pr"], "vc_target": "nobody"}, "vc", "the target speaker nobody has no clean"),
    ]
    for i, (shards, params, task, reason) in enumerate(cases):
        out = tmp_path / f"eval{i}"
        summary = evaluate.run(EvaluateParams(**FAST | params), upstream="mfcc", out=out, shards=shards,
                               cache=tmp_path / "cache")
        record = summary["tasks"][task]
        assert record["status"] == "skipped" and reason in record["reason"] and "\n" not in record["reason"]
