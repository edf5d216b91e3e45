"""WORLD analysis and synthesis for voice conversion, the frame mapping, and F0 conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from progre.data import espeak
from progre.data.synth import resample_to_16k
from progre.downstream.speech_quality import mcd
from progre.errors import UserError
from progre.dsp.world import (ENVELOPE_DIM, F0Stats, analyse, convert_f0, log_f0_stats, model_frame_index,
                                   synthesise, world_num_frames)
from progre.frames import num_frames

from .conftest import noise, vowel


def test_a_vowel_survives_analysis_and_synthesis():
    x = vowel(150.0, seconds=1.0)  # pulses every 106 samples: 150.94 Hz
    features = analyse(x)
    frames = world_num_frames(len(x))
    assert frames == 101
    assert features.f0.shape == (frames,) and features.num_frames == frames
    assert features.envelope.shape == (frames, ENVELOPE_DIM) and features.aperiodicity.shape == (frames, 1)
    voiced = features.f0 > 0
    assert voiced.mean() > 0.95
    assert np.median(features.f0[voiced]) == pytest.approx(16000 / 106, rel=0.005)
    y = synthesise(features, num_samples=len(x))
    assert y.dtype == np.float32 and len(y) == len(x)
    assert len(synthesise(features)) == frames * 160  # WORLD's own length, 160 samples a frame
    assert mcd(x, y) < 3.0  # 2.1 dB measured


def test_espeak_speech_survives_analysis_and_synthesis():
    samples, _ = espeak.speak("She sells sea shells by the sea shore.", "en-us+f3")
    x = resample_to_16k(samples)
    y = synthesise(analyse(x), num_samples=len(x))
    assert len(y) == len(x)
    distortion = mcd(x, y)
    assert distortion < 5.0  # 3.5-4.1 dB on eSpeak speech: its noise-excited sounds resynthesise with other noise
    other_voice = resample_to_16k(espeak.speak("She sells sea shells by the sea shore.", "en-us+m3")[0])
    assert distortion < mcd(x, other_voice) - 5.0


def test_world_frames_count_and_map_onto_model_frames():
    for n in (400, 16000, 48000, 48159, 48160):
        assert len(analyse(noise(n / 16000)).f0) == world_num_frames(n) == n // 160 + 1
    n = 48000
    t_world, t_model = world_num_frames(n), num_frames(n)
    assert (t_world, t_model) == (301, 149)
    index = model_frame_index(t_world, t_model)
    assert index[:5].tolist() == [0, 0, 0, 1, 1] and index[-5:].tolist() == [147, 148, 148, 148, 148]
    # the nearest model frame: WORLD frame t is centred on 160 t, model frame i on 320 i + 200
    centres = 320 * np.arange(t_model) + 200
    for t in range(t_world):
        distances = np.abs(160 * t - centres)
        assert distances[index[t]] == distances.min()
    with pytest.raises(ValueError, match="no model frames"):
        model_frame_index(3, 0)


def test_log_f0_stats_and_convert_f0_move_the_statistics_exactly():
    stats = log_f0_stats([np.array([100.0, 0.0, 200.0]), np.array([0.0, 0.0])])
    assert stats.mean == pytest.approx(math.log(100 * 200) / 2, abs=1e-12)
    assert stats.std == pytest.approx(math.log(2) / 2, abs=1e-12)

    rng = np.random.default_rng(0)
    source = [np.where(rng.random(200) < 0.7, np.exp(rng.normal(math.log(110), 0.15, 200)), 0.0) for _ in range(3)]
    source_stats = log_f0_stats(source)
    target_stats = F0Stats(mean=math.log(220.0), std=0.25)
    converted = [convert_f0(f0, source_stats, target_stats) for f0 in source]
    got = log_f0_stats(converted)
    assert got.mean == pytest.approx(target_stats.mean, abs=1e-12)
    assert got.std == pytest.approx(target_stats.std, abs=1e-12)
    for before, after in zip(source, converted):
        assert np.array_equal(after == 0, before == 0)
    same_std = convert_f0(np.array([0.0, 100.0, 150.0]), F0Stats(math.log(100), 0.0), F0Stats(math.log(200), 0.3))
    assert same_std == pytest.approx([0.0, 200.0, 300.0])  # a zero source deviation only shifts
    with pytest.raises(UserError, match="no voiced frame"):
        log_f0_stats([np.zeros(10)])


def test_silence_and_noise_analyse_and_synthesise_without_errors():
    for x in (np.zeros(16000, np.float32), noise(1.0), np.zeros(100, np.float32)):
        features = analyse(x)
        assert np.isfinite(features.envelope).all() and np.isfinite(features.aperiodicity).all()
        y = synthesise(features, num_samples=len(x))
        assert len(y) == len(x) and np.isfinite(y).all()
    assert not analyse(np.zeros(16000)).f0.any()
    assert np.abs(synthesise(analyse(np.zeros(16000)))).max() < 1e-6
    assert np.array_equal(convert_f0(np.zeros(5), F0Stats(5.0, 0.2), F0Stats(4.0, 0.1)), np.zeros(5))
