"""Style voice quality: envelope warp, spectral tilt, breathiness, by WORLD resynthesis."""

import numpy as np
import pytest

from progre.data.synth import STYLES, UtterancePlan, make_speakers, render
from progre.data.voice_quality import VoiceQuality, apply_voice_quality, tilt_gain, warp_envelope

from .conftest import vowel

SR = 16000


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Long-term power spectrum (Hann-windowed 1024-point frames, averaged) and its frequencies."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 1024)[::256] * np.hanning(1024)
    return np.fft.rfftfreq(1024, 1 / SR), np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)


def band_db(x: np.ndarray, low: float, high: float) -> float:
    freqs, power = spectrum(x)
    return 10 * np.log10(power[(freqs >= low) & (freqs < high)].sum())


def centroid(x: np.ndarray) -> float:
    freqs, power = spectrum(x)
    return float((freqs * power).sum() / power.sum())


def periodicity(x: np.ndarray, f0: float = 120.0) -> float:
    """Normalised autocorrelation at one pitch period (1 for a perfectly periodic signal)."""
    lag = int(SR / f0)
    a, b = x[1000:-1000].astype(np.float64), x[1000 + lag: len(x) - 1000 + lag].astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_warp_envelope_moves_a_peak_by_the_scale():
    env = np.ones((3, 513))
    env[:, 100] = 50.0
    for scale, bin_ in ((1.1, 110), (0.9, 90)):
        assert np.argmax(warp_envelope(env, scale)[1]) == bin_
    np.testing.assert_array_equal(warp_envelope(env, 1.0), env)


def test_tilt_gain_is_flat_below_the_corner_and_linear_in_octaves_above():
    gain_db = 10 * np.log10(tilt_gain(513, SR, 4.0))
    freqs = np.arange(513) * 8000 / 512
    assert np.all(gain_db[freqs <= 500] == 0)
    assert gain_db[64] == pytest.approx(4.0)  # 1000 Hz: one octave above the corner
    assert gain_db[128] == pytest.approx(8.0)  # 2000 Hz


def test_neutral_resynthesis_keeps_length_level_and_spectrum():
    x = vowel()[:15999]  # an odd length
    y = apply_voice_quality(x, VoiceQuality(), SR)
    assert y.dtype == np.float32 and len(y) == len(x)
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(np.sqrt(np.mean(x.astype(np.float64) ** 2)),
                                                                          rel=1e-5)
    for low, high in ((100, 1000), (1000, 2000), (2000, 4000)):
        assert abs(band_db(y, low, high) - band_db(x, low, high) - (band_db(y, 0, 8000) - band_db(x, 0, 8000))) < 2.0
    assert centroid(y) == pytest.approx(centroid(x), rel=0.05)


def second_formant(x: np.ndarray) -> float:
    """The strongest frequency between 950 and 1500 Hz (harmonics of 120 Hz are 15 Hz-resolved here)."""
    freqs, power = spectrum(x)
    band = (freqs >= 950) & (freqs <= 1500)
    return float(freqs[band][np.argmax(power[band])])


def test_formant_scale_moves_the_formants():
    x = vowel()  # F2 at 1200 Hz = 10 x f0, so +-10% lands on harmonics 11 and 9
    assert second_formant(apply_voice_quality(x, VoiceQuality(), SR)) == pytest.approx(1200, abs=30)
    assert second_formant(apply_voice_quality(x, VoiceQuality(formant_scale=1.1), SR)) == pytest.approx(1320, abs=30)
    assert second_formant(apply_voice_quality(x, VoiceQuality(formant_scale=0.9), SR)) == pytest.approx(1080, abs=30)


def test_tilt_raises_the_high_band_by_about_the_requested_slope():
    x = vowel()
    flat = apply_voice_quality(x, VoiceQuality(), SR)
    pressed = apply_voice_quality(x, VoiceQuality(tilt_db_per_octave=6.0), SR)
    # 2-4 kHz is 2-3 octaves above the corner (+12..+18 dB), 100-500 Hz gets nothing
    change = (band_db(pressed, 2000, 4000) - band_db(pressed, 100, 500)) - (band_db(flat, 2000, 4000) - band_db(flat, 100, 500))
    assert 11.0 < change < 19.0


def test_breathiness_makes_the_voice_less_periodic():
    x = vowel()
    clear = apply_voice_quality(x, VoiceQuality(), SR)
    breathy = apply_voice_quality(x, VoiceQuality(breathiness=0.5), SR)
    assert periodicity(clear) > 0.9
    assert periodicity(breathy) < periodicity(clear) - 0.1


def test_resynthesis_is_deterministic_and_silence_passes_through():
    x = vowel(seconds=0.5)
    quality = VoiceQuality(formant_scale=0.96, tilt_db_per_octave=-3.0, breathiness=0.25)
    np.testing.assert_array_equal(apply_voice_quality(x, quality, SR), apply_voice_quality(x, quality, SR))
    np.testing.assert_array_equal(apply_voice_quality(np.zeros(800, np.float32), quality, SR), np.zeros(800))


@pytest.mark.parametrize("kwargs", [{"formant_scale": 0.2}, {"breathiness": 1.5}])
def test_out_of_range_voice_quality_is_refused(kwargs):
    with pytest.raises(ValueError):
        VoiceQuality(**kwargs)


def test_styles_voice_quality_keeps_timing_and_moves_the_spectral_balance():
    speaker = make_speakers(2, seed=5)[1]
    text = "Please carry the yellow umbrella across the old bridge."
    balance = {}
    for style in ("angry", "sad"):
        utt = UtterancePlan("k", speaker, "train", style, text, None, None, seed=1)
        plain, plain_phones = render(utt, voice_quality=False)
        coloured, phones = render(utt, voice_quality=True)
        assert len(coloured) == len(plain) and phones == plain_phones
        balance[style] = (band_db(coloured, 2000, 6000) - band_db(coloured, 100, 1000)) - \
                         (band_db(plain, 2000, 6000) - band_db(plain, 100, 1000))
    assert STYLES["angry"].voice.tilt_db_per_octave > 0 > STYLES["sad"].voice.tilt_db_per_octave
    assert balance["angry"] > 3.0 and balance["sad"] < -3.0
