"""`progre synth`: eSpeak wrapper, sentence generator and the tiny built-in corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from progre.config import SynthParams
from progre.data import espeak
from progre.data.synth import SynthSettings, UtterancePlan, make_speakers, render
from progre.data.demo_sentences import MAX_WORDS, MIN_WORDS, sentence_pools
from progre.errors import UserError
from progre.dsp.pitch import dio_f0
from stages import synth as stage


def _check_segments(phones, starts, ends, duration):
    """Contiguous, non-decreasing segments from 0 to `duration`."""
    assert len(phones) == len(starts) == len(ends) > 0
    assert starts[0] == 0.0
    assert ends[-1] == pytest.approx(duration, abs=1e-6)
    assert all(s <= e for s, e in zip(starts, ends))
    assert all(e == pytest.approx(s, abs=1e-9) for e, s in zip(ends[:-1], starts[1:]))
    assert all(0.0 <= s <= duration + 1e-9 for s in starts)
    assert all(p and "'" not in p and "," not in p for p in phones)


# --------------------------------------------------------------------------- eSpeak wrapper


def test_speak_gives_samples_and_phone_timings():
    samples, phones = espeak.speak("hello", "en-us+f3")
    assert samples.dtype == np.float32 and samples.ndim == 1
    duration = len(samples) / espeak.SAMPLE_RATE
    assert 0.2 < duration < 2.0
    assert 0.01 < np.abs(samples).max() <= 1.0
    names = [p for p, _, _ in phones]
    assert [p for p in names if p != espeak.PAUSE] == ["h", "@", "l", "oU"]
    _check_segments(names, [s for _, s, _ in phones], [e for _, _, e in phones], duration)


def test_speak_depends_only_on_its_arguments():
    first, phones1 = espeak.speak("The quick brown fox.", "en+croak", seed=3)
    espeak.speak("Something else entirely, spoken in between.", "en-us+f3")
    again, phones2 = espeak.speak("The quick brown fox.", "en+croak", seed=3)
    assert np.array_equal(first, again) and phones1 == phones2


def test_speak_rejects_unknown_voices_and_empty_text():
    with pytest.raises(UserError, match="variant 'nobody'"):
        espeak.speak("hello", "en-us+nobody")
    with pytest.raises(UserError, match="no voice"):
        espeak.speak("hello", "xx-nowhere")
    with pytest.raises(UserError, match="empty"):
        espeak.speak("  ", "en-us")


def test_phone_segments_from_events():
    samples = np.zeros(22050, np.float32)
    samples[2205:15000] = 0.5  # sound from 0.1 s to ~0.68 s
    events = [(100, "h"), (150, "'oU"), (300, "_:"), (350, "_"), (400, "b"), (500, "i:")]
    segments = espeak.phone_segments(events, samples, 22050)
    assert [p for p, _, _ in segments] == ["sil", "h", "oU", "sil", "b", "i:", "sil"]
    assert segments[3][1:] == (0.3, 0.4)  # pauses merged
    assert segments[5][2] == pytest.approx(15000 / 22050)  # last phone ends with the sound
    assert segments[6][2] == 1.0


# --------------------------------------------------------------------------- sentences


def test_sentence_pools_are_disjoint_distinct_and_deterministic():
    pools = sentence_pools(7, {"train": 300, "valid": 50, "test": 50})
    everything = [s for pool in pools.values() for s in pool]
    assert len(set(everything)) == 400
    assert all(MIN_WORDS <= len(s.split()) <= MAX_WORDS and s[-1] in ".?!" for s in everything)
    assert pools == sentence_pools(7, {"train": 300, "valid": 50, "test": 50})
    assert pools["train"] != sentence_pools(8, {"train": 300, "valid": 50, "test": 50})["train"]


# --------------------------------------------------------------------------- styles and noise


def test_styles_change_pitch_and_duration():
    speaker = make_speakers(2, seed=5)[0]
    text = "Please carry the yellow umbrella across the old bridge."
    results = {}
    for style in ("neutral", "happy", "sad", "angry"):
        wav, _ = render(UtterancePlan("k", speaker, "train", style, text, None, None, seed=1))
        f0 = dio_f0(wav)
        results[style] = (f0[f0 > 0].mean(), len(wav), np.sqrt(np.mean(wav**2)))
    assert results["happy"][0] > 1.1 * results["neutral"][0] > 1.2 * results["sad"][0]
    assert results["sad"][1] > 1.15 * results["neutral"][1] > 1.15 * results["angry"][1]
    assert results["angry"][2] > 1.2 * results["neutral"][2] > 1.2 * results["sad"][2]


def test_noise_is_added_at_the_requested_snr():
    speaker = make_speakers(1, seed=5)[0]
    text = "Twelve quiet zebras seized those frozen boxes."
    clean, _ = render(UtterancePlan("k", speaker, "train", "neutral", text, None, None, seed=2))
    for colour in ("white", "pink", "brown"):
        noisy, _ = render(UtterancePlan("k", speaker, "train", "neutral", text, colour, 12.0, seed=2))
        noise = noisy.astype(np.float64) - clean
        assert 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2)) == pytest.approx(12.0, abs=0.1)


# --------------------------------------------------------------------------- the tiny corpus


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """The tiny corpus twice with the default seed and once with another seed."""
    root = tmp_path_factory.mktemp("synth")
    out = {"a": root / "a", "b": root / "b", "other": root / "other"}
    stage.run(SynthParams(preset="tiny"), out["a"])
    stage.run(SynthParams(preset="tiny"), out["b"])
    stage.run(SynthParams(preset="tiny", seed=99), out["other"])
    return out


def test_tiny_corpus_counts_and_splits(corpora):
    params = SynthParams(preset="tiny")
    counts = params.to(SynthSettings).counts()
    rows = pq.read_table(corpora["a"] / "metadata.parquet").to_pylist()
    speakers = {f"spk{i:02d}" for i in range(counts["n_speakers"])}
    for split in ("train", "valid", "test"):
        in_split = [r for r in rows if r["split"] == split]
        assert len(in_split) == counts["n_speakers"] * counts[f"{split}_per_speaker"]
        assert {r["speaker"] for r in in_split} == speakers
    train_texts = {r["text"] for r in rows if r["split"] == "train"}
    assert not train_texts & {r["text"] for r in rows if r["split"] in ("valid", "test")}
    for speaker in speakers:  # parallel test sentences: every speaker reads the same ones, in the same order
        test = [r["text"] for r in rows if r["split"] == "test" and r["speaker"] == speaker]
        assert test == [r["text"] for r in rows if r["split"] == "test" and r["speaker"] == "spk00"]
    valid_texts = [r["text"] for r in rows if r["split"] == "valid"]
    assert len(set(valid_texts)) == len(valid_texts)
    assert {r["style"] for r in rows} == set(params.styles)
    assert sum(r["snr_db"] is not None for r in rows) == round(params.noise_fraction * len(rows))
    assert all(params.snr_db_min <= r["snr_db"] <= params.snr_db_max for r in rows if r["snr_db"] is not None)
    assert all("." not in r["key"] for r in rows)
    total = sum(r["duration"] for r in rows)
    assert 20.0 < total < 60.0  # tiny: under a minute of audio

    summary = json.loads((corpora["a"] / "summary.json").read_text())
    assert summary["utterances"] == len(rows)
    assert summary["total_seconds"] == pytest.approx(total, abs=0.01)
    assert {s["id"] for s in summary["speakers"]} == speakers
    assert summary["phone_inventory_size"] == len({p for r in rows for p in r["phones"]}) > 30


def test_tiny_corpus_schema_audio_and_phones(corpora):
    table = pq.read_table(corpora["a"] / "metadata.parquet")
    assert table.schema.field("phones").type == pa.list_(pa.string())
    assert table.schema.field("phone_start").type == pa.list_(pa.float64())
    assert table.schema.field("phone_end").type == pa.list_(pa.float64())
    for name in ("path", "key", "speaker", "split", "style", "text", "voice"):
        assert table.schema.field(name).type == pa.string()
    for row in table.to_pylist():
        info = sf.info(corpora["a"] / row["path"])
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
        assert info.frames / 16000 == pytest.approx(row["duration"], abs=1e-9)
        assert row["path"] == f"audio/{row['key']}.flac"
        _check_segments(row["phones"], row["phone_start"], row["phone_end"], row["duration"])
        assert sum(p != "sil" for p in row["phones"]) >= 10


def test_tiny_corpus_is_deterministic(corpora):
    a, b, other = (pq.read_table(corpora[k] / "metadata.parquet") for k in ("a", "b", "other"))
    assert a.equals(b)
    for key in a.column("key").to_pylist():
        assert (corpora["a"] / "audio" / f"{key}.flac").read_bytes() == (corpora["b"] / "audio" / f"{key}.flac").read_bytes()
    assert (corpora["a"] / "summary.json").read_bytes() == (corpora["b"] / "summary.json").read_bytes()
    assert a.column("text").to_pylist() != other.column("text").to_pylist()
    assert a.column("voice").to_pylist() != other.column("voice").to_pylist()


def test_existing_output_needs_overwrite(corpora, tmp_path):
    with pytest.raises(UserError, match="already exists"):
        stage.run(SynthParams(preset="tiny"), out=corpora["a"], overwrite=False)
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(UserError, match="progre did not write"):  # not ours: kept, even with --overwrite
        stage.run(SynthParams(preset="tiny", n_speakers=1), out=out, overwrite=True)
    assert (out / "stale.txt").read_text() == "old"
    ours = tmp_path / "ours"
    stage.run(SynthParams(preset="tiny", n_speakers=1), out=ours)
    (ours / "stale.txt").write_text("old")
    stage.run(SynthParams(preset="tiny", n_speakers=1), out=ours, overwrite=True)
    assert not (ours / "stale.txt").exists() and (ours / "metadata.parquet").is_file()
