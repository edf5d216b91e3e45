"""Noise for on-the-fly mixing: the demo's coloured noise (moved from synth.py unchanged), mixing at
an SNR, noise folders and the seeded mixer."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from progre.data import synth
from progre.data.noise import (ColouredNoiseSource, NoiseFolder, NoisyMixer, add_noise, coloured_noise, key_seed,
                               mix_at_snr)
from progre.errors import UserError

from .conftest import tone, write_audio

REPO = Path(__file__).resolve().parents[1]


def sha(x: np.ndarray) -> str:
    return hashlib.sha256(x.tobytes()).hexdigest()


def snr_of(clean: np.ndarray, noisy: np.ndarray) -> float:
    """The SNR that `noisy` has relative to `clean`, in dB (noise = noisy - clean)."""
    c, n = clean.astype(np.float64), noisy.astype(np.float64) - clean.astype(np.float64)
    return 10 * math.log10(np.mean(c**2) / np.mean(n**2))


# --------------------------------------------------------------------------- the demo's noise


def test_coloured_noise_and_add_noise_give_the_arrays_they_gave_in_synth():
    """SHA-256 of the float32 outputs, recorded with synth.py's own functions before they moved
    (the demo corpus's bytes depend on them); a tiny corpus also came out byte-identical."""
    before = {
        "white": "7836e0e428bf11dae3fa72de5482a2cdb801fa514baa917cd630794c72cdc2ce",
        "pink": "ae3f31adddfc7c3ee805022e4a892650f4bc5c0ba5e4d8d844413ba24666924e",
        "brown": "917aaf9fdd5364eca4af17b4fe4d1a0810b10cc74ffe997e49a6040b2bf9324b",
    }
    for colour, digest in before.items():
        noise = coloured_noise(4801, colour, np.random.default_rng([7, 4801]))
        assert noise.dtype == np.float32 and sha(noise) == digest, colour
        assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, abs=1e-6)
    added = {
        "white": "ebb633bfb49e5ad5273e0a5b42fbbbe25cd65ea85050644acb0ce8493a9c3035",
        "pink": "5572d19cecd08bdf9a0f2eed1b32ec4a48c3378192bdeeaf29ae882211f268b8",
        "brown": "cac483457ab3e23c1cd5752762e50c5556424f80d130f4b706afcb4b5e4e0c5c",
    }
    wav = (0.1 * np.sin(np.arange(3000) / 7)).astype(np.float32)
    for colour, digest in added.items():
        assert sha(add_noise(wav, colour, 12.5, np.random.default_rng([3, 4]))) == digest, colour
    assert synth.add_noise is add_noise  # synth mixes with this very function


# --------------------------------------------------------------------------- mixing


def test_mix_at_snr_scales_any_noise_to_the_snr():
    clean = tone(1.0, 300.0, amp=0.2)
    noise = 3.0 * np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    for snr in (-5.0, 0.0, 2.5, 10.0, 17.5):
        noisy = mix_at_snr(clean, noise, snr)
        assert noisy.dtype == np.float32
        assert snr_of(clean, noisy) == pytest.approx(snr, abs=1e-3)
    assert np.array_equal(mix_at_snr(np.zeros(100, np.float32), noise[:100], 5.0), np.zeros(100))
    assert np.array_equal(mix_at_snr(clean, np.zeros_like(clean), 5.0), clean)
    with pytest.raises(ValueError, match="same length"):
        mix_at_snr(clean, noise[:-1], 5.0)


def test_coloured_source_draws_each_colour_from_the_generator():
    source = ColouredNoiseSource()
    names = set()
    for i in range(30):
        noise, name = source.noise(1600, np.random.default_rng(i))
        again, _ = source.noise(1600, np.random.default_rng(i))
        assert np.array_equal(noise, again) and len(noise) == 1600
        names.add(name)
    assert names == {"white", "pink", "brown"}
    assert {ColouredNoiseSource(("pink",)).noise(10, np.random.default_rng(i))[1] for i in range(5)} == {"pink"}
    with pytest.raises(UserError, match="noise colours"):
        ColouredNoiseSource(("blue",))


# --------------------------------------------------------------------------- noise folders


def test_noise_folder_reads_mono_16k_and_gives_excerpts(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)  # distinct values: an excerpt shows where it starts
    write_audio(tmp_path / "b" / "ramp.wav", ramp, subtype="FLOAT")
    stereo = np.stack([tone(1.0, 200.0, rate=48000), tone(1.0, 200.0, rate=48000, amp=0.1)], axis=1)
    write_audio(tmp_path / "a_stereo48k.flac", stereo, 48000, subtype="PCM_24")
    sf.write(tmp_path / "c.ogg", tone(0.5, 500.0, rate=8000), 8000, format="OGG", subtype="VORBIS")
    (tmp_path / "notes.txt").write_text("not audio, ignored")

    folder = NoiseFolder(tmp_path)
    assert folder.names == ["a_stereo48k.flac", "b/ramp.wav", "c.ogg"]
    lengths = [len(r) for r in folder.recordings]
    assert lengths[1] == 8000 and abs(lengths[0] - 16000) <= 1 and abs(lengths[2] - 8000) <= 1
    assert np.array_equal(folder.recordings[1], ramp)
    mono = folder.recordings[0][2000:-2000]  # mean of 0.3 and 0.1 amplitude channels: 0.2
    assert np.max(np.abs(mono)) == pytest.approx(0.2, abs=0.005)

    ramp_only = NoiseFolder(tmp_path / "b")
    for seed in range(5):
        rng = np.random.default_rng(seed)
        excerpt, name = ramp_only.noise(3000, rng)
        start = int(np.argmin(np.abs(ramp - excerpt[0])))
        assert name == "ramp.wav" and np.array_equal(excerpt, ramp[start:start + 3000])
        looped, _ = ramp_only.noise(20000, rng)  # longer than the file: looped
        start = int(np.argmin(np.abs(ramp - looped[0])))
        assert np.array_equal(looped, ramp[(start + np.arange(20000)) % 8000])


def test_noise_folder_problems_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        NoiseFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    with pytest.raises(UserError, match="holds no .wav/.flac/.ogg files"):
        NoiseFolder(tmp_path / "empty")
    write_audio(tmp_path / "bad" / "good.wav", tone(0.5))
    (tmp_path / "bad" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(UserError, match=r"broken\.wav: unreadable") as caught:
        NoiseFolder(tmp_path / "bad")
    assert "\n" not in str(caught.value)
    write_audio(tmp_path / "silent" / "zeros.flac", np.zeros(8000, np.float32))
    with pytest.raises(UserError, match=r"zeros\.flac: silent"):
        NoiseFolder(tmp_path / "silent")


# --------------------------------------------------------------------------- the mixer


def test_key_seed_is_sha256_of_the_key():
    assert key_seed("spk00_test_0001") == int.from_bytes(hashlib.sha256(b"spk00_test_0001").digest()[:8], "little")
    assert key_seed("spk00_test_0001") == 16608016446048747725
    assert key_seed("spk00_test_0002") != key_seed("spk00_test_0001")


def test_mixer_is_a_pure_function_of_seed_key_and_length():
    clean = tone(1.0, 250.0, amp=0.2)
    mixer = NoisyMixer(ColouredNoiseSource(), seed=5)
    noisy, snr, name = mixer.mix("spk01_test_0003", clean)
    assert 2.5 <= snr <= 17.5 and name in ("white", "pink", "brown")
    assert snr_of(clean, noisy) == pytest.approx(snr, abs=1e-3)
    again = NoisyMixer(ColouredNoiseSource(), seed=5).mix("spk01_test_0003", clean.copy())
    assert np.array_equal(again[0], noisy) and again[1:] == (snr, name)
    assert not np.array_equal(mixer.mix("spk01_test_0004", clean)[0], noisy)
    assert not np.array_equal(NoisyMixer(ColouredNoiseSource(), seed=6).mix("spk01_test_0003", clean)[0], noisy)
    snrs = [mixer.mix(f"k{i}", clean)[1] for i in range(200)]
    assert 2.5 <= min(snrs) < 4.0 and 16.0 < max(snrs) <= 17.5
    # another process, with another hash seed, mixes the same
    code = ("import hashlib, numpy as np; from progre.data.noise import ColouredNoiseSource, NoisyMixer; "
            "from tests.conftest import tone; "
            "n, s, c = NoisyMixer(ColouredNoiseSource(), seed=5).mix('spk01_test_0003', tone(1.0, 250.0, amp=0.2)); "
            "print(hashlib.sha256(n.tobytes()).hexdigest(), repr(s), c)")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [sha(noisy), repr(snr), name]


def test_mixer_leaves_silence_alone_and_rejects_bad_ranges(tmp_path):
    silent = np.zeros(4000, np.float32)
    noisy, snr, _ = NoisyMixer(ColouredNoiseSource(), seed=0).mix("quiet", silent)
    assert np.array_equal(noisy, silent) and math.isnan(snr)
    write_audio(tmp_path / "n.wav", tone(0.3, 900.0))
    noisy, snr, name = NoisyMixer(NoiseFolder(tmp_path), seed=0, snr_db_min=5.0, snr_db_max=5.0).mix(
        "k", tone(1.0, 200.0))
    assert name == "n.wav" and snr == 5.0 and snr_of(tone(1.0, 200.0), noisy) == pytest.approx(5.0, abs=1e-3)
    with pytest.raises(UserError, match="min <= max"):
        NoisyMixer(ColouredNoiseSource(), seed=0, snr_db_min=10.0, snr_db_max=5.0)
    with pytest.raises(UserError, match="finite"):
        NoisyMixer(ColouredNoiseSource(), seed=0, snr_db_max=math.inf)
