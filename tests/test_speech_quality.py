"""Speech enhancement metrics (PESQ, STOI, SI-SDR, SI-SDRi) and voice conversion's MCD with DTW."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from progre.data import espeak
from progre.data.synth import resample_to_16k
from progre.downstream.speech_quality import (dtw_path, envelope_to_mel_cepstrum, mcd, mcd_of_cepstra, mel_cepstrum,
                                              pesq_wb, si_sdr, si_sdr_improvement, stoi)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """2.5 s of eSpeak speech at 16 kHz (float64)."""
    samples, _ = espeak.speak("The quick brown fox jumps over the lazy dog.", "en-us+m3")
    return resample_to_16k(samples).astype(np.float64)


def white(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return noise * np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))


def reference_si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Le Roux et al. 2019, eq. (1)-(3), with the means removed."""
    ref, est = ref - ref.mean(), est - est.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * math.log10((target @ target) / ((est - target) @ (est - target)))


# --------------------------------------------------------------------------- speech enhancement


def test_identical_signals_score_perfectly(speech):
    assert pesq_wb(speech, speech) == pytest.approx(4.644, abs=0.001)  # the top of P.862.2's mapping
    assert stoi(speech, speech) == pytest.approx(1.0, abs=1e-9)
    assert si_sdr(speech, speech) > 150.0
    assert si_sdr(speech, 0.1 * speech) > 150.0  # scale-invariant


def test_si_sdr_of_noise_at_exactly_10_db(speech):
    s = speech - speech.mean()
    n = white(len(s))
    n -= n.mean()
    n -= (n @ s) / (s @ s) * s  # orthogonal to the speech: SI-SDR is then exactly the SNR
    n = at_snr(s, n, 10.0)
    assert si_sdr(s, s + n) == pytest.approx(10.0, abs=0.01)
    assert si_sdr(s, 0.3 * (s + n) + 0.05) == pytest.approx(10.0, abs=0.01)  # gain and DC offset do not count
    assert si_sdr(s, s + n) == pytest.approx(reference_si_sdr(s, s + n), abs=1e-9)
    noisy = s + n
    assert si_sdr_improvement(s, noisy, noisy) == 0.0
    assert si_sdr_improvement(s, s + 0.5 * n, noisy) == pytest.approx(20 * math.log10(2), abs=0.01)  # noise halved


def test_metrics_equal_the_packages_own_calls(speech):
    from pesq import pesq
    from pystoi import stoi as pystoi_stoi

    noisy = speech + at_snr(speech, white(len(speech), 1), 5.0)
    assert pesq_wb(speech, noisy) == pesq(16000, speech, noisy, "wb")
    assert stoi(speech, noisy) == pystoi_stoi(speech, noisy, 16000, extended=False)
    assert si_sdr(speech, noisy) == pytest.approx(reference_si_sdr(speech, noisy), abs=1e-9)
    assert 1.0 < pesq_wb(speech, noisy) < 2.0 and 0.7 < stoi(speech, noisy) < 0.95  # 5 dB of white noise
    assert pesq_wb(speech, noisy.astype(np.float32)) == pytest.approx(pesq_wb(speech, noisy), abs=1e-3)


def test_inputs_the_packages_reject_give_nan(speech):
    silent = np.zeros_like(speech)
    broken = speech.copy()
    broken[100] = np.nan
    for metric in (pesq_wb, stoi, si_sdr):
        for ref, deg in ((silent, speech), (speech, silent), (speech, broken), (silent, silent)):
            assert math.isnan(metric(ref, deg)), metric.__name__
        with pytest.raises(ValueError, match="same length"):
            metric(speech, speech[:-1])
    assert math.isnan(si_sdr_improvement(speech, silent, speech))
    assert math.isnan(pesq_wb(speech[:3999], speech[:3999]))  # under 0.25 s
    assert not math.isnan(pesq_wb(speech[8000:12000], speech[8000:12000]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pystoi's own warning does not escape
        assert math.isnan(stoi(speech[8000:12000], speech[8000:12000]))  # too few STOI frames


# --------------------------------------------------------------------------- mel-cepstrum


def test_mel_cepstrum_equals_sptk_on_known_envelopes():
    """Envelopes with known cepstra; the reference values are pysptk 1.0.1's sp2mc(sp, 24, 0.42)."""
    w = np.pi * np.arange(1025) / 1024

    def envelope(cepstrum):  # |H|^2 with log |H| = sum c_m cos(m w)
        return np.exp(2 * sum(c * np.cos(m * w) for m, c in enumerate(cepstrum)))

    first, second = [0.3, 0.5, 0.2, -0.1], [-1.0, 1.2, -0.4, 0.3, 0.1, -0.05]
    sp = np.stack([envelope(first), envelope(second)])
    mc = envelope_to_mel_cepstrum(sp)
    assert mc.shape == (2, 25)
    pysptk = [[0.5378712, 0.506579888, -0.16256809792, -0.008669674815999992, -0.05824106739972863,
               0.004867978146864602, 1.7802906612048693e-07],
              [-0.5418753601600002, 0.8603457046559998, -0.3296026754953598, 0.33728103508241275,
               0.22685291840451055, 0.012457326104064824, 1.087933570062465e-05]]
    np.testing.assert_allclose(mc[:, [0, 1, 2, 3, 5, 10, 24]], pysptk, rtol=0, atol=1e-12)
    unwarped = envelope_to_mel_cepstrum(sp, alpha=0.0)  # alpha 0: the cepstrum itself
    np.testing.assert_allclose(unwarped[0, :6], first + [0, 0], atol=1e-12)
    np.testing.assert_allclose(unwarped[1, :8], second + [0, 0], atol=1e-12)


def test_mel_cepstrum_keeps_frames_within_40_db_of_the_loudest(speech):
    padded = np.concatenate([speech, np.zeros(16000)])  # one second of digital silence
    every = mel_cepstrum(padded, floor_db=None)
    assert every.shape == (len(padded) // 80 + 1, 25)  # 5 ms frames
    kept = mel_cepstrum(padded)
    assert len(every) - len(kept) >= 200  # the silence (200 frames) is dropped
    assert abs(len(kept) - len(mel_cepstrum(speech))) <= 2  # the rest as in the speech alone


# --------------------------------------------------------------------------- DTW and MCD


def plain_dtw_cost(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook dynamic program, one cell at a time."""
    n, m = len(a), len(b)
    cost = np.full((n + 1, m + 1), np.inf)
    cost[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = np.linalg.norm(a[i - 1] - b[j - 1]) + min(cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1])
    return float(cost[n, m])


def test_dtw_path_is_the_minimum_cost_alignment():
    rng = np.random.default_rng(0)
    for n, m in ((1, 1), (1, 5), (6, 1), (7, 9), (12, 8)):
        a, b = rng.standard_normal((n, 3)), rng.standard_normal((m, 3))
        ia, ib = dtw_path(a, b)
        assert (ia[0], ib[0], ia[-1], ib[-1]) == (0, 0, n - 1, m - 1)
        steps = set(zip(np.diff(ia).tolist(), np.diff(ib).tolist()))
        assert steps <= {(0, 1), (1, 0), (1, 1)}
        cost = np.linalg.norm(a[ia] - b[ib], axis=1).sum()
        assert cost == pytest.approx(plain_dtw_cost(a, b), abs=1e-9)
    with pytest.raises(ValueError, match="at least one frame"):
        dtw_path(np.zeros((0, 3)), np.zeros((4, 3)))


def test_dtw_follows_a_time_stretch():
    t = np.linspace(0, 1, 60)
    a = np.stack([np.sin(2 * np.pi * 3 * t), np.cos(2 * np.pi * 5 * t), t], axis=1)
    slow = np.linspace(0, 1, 120)  # the same trajectory, twice as slow
    b = np.stack([np.sin(2 * np.pi * 3 * slow), np.cos(2 * np.pi * 5 * slow), slow], axis=1)
    ia, ib = dtw_path(a, b)
    assert len(ia) == 120 and np.max(np.abs(ib - 119 / 59 * ia)) <= 2.0


def test_mcd_of_cepstra_is_the_kubichek_formula_without_c0():
    ref = np.zeros((5, 25))
    conv = ref.copy()
    conv[:, 0] = 3.0  # energy: left out
    conv[:, 1] = 0.1
    conv[:, 24] = -0.2
    expected = 10 / math.log(10) * math.sqrt(2 * (0.1**2 + 0.2**2))  # 1.3732 dB
    assert mcd_of_cepstra(ref, conv) == pytest.approx(expected, abs=1e-12)
    assert mcd_of_cepstra(ref, np.concatenate([conv, conv])) == pytest.approx(expected, abs=1e-12)  # any path


def test_mcd_is_zero_for_itself_grows_with_noise_and_is_symmetric(speech):
    assert mcd(speech, speech) == 0.0
    assert mcd(speech, 0.5 * speech) < 1e-3  # gain is c0 only, which MCD leaves out
    values = [mcd(speech, speech + at_snr(speech, white(len(speech), 2), snr)) for snr in (40, 30, 20, 10)]
    assert 0.5 < values[0] < values[1] < values[2] < values[3]
    noisy = speech + at_snr(speech, white(len(speech), 3), 20)
    assert mcd(noisy, speech) == pytest.approx(mcd(speech, noisy), abs=0.01)
    assert mcd(speech, noisy) == mcd_of_cepstra(mel_cepstrum(speech), mel_cepstrum(noisy))
    other, _ = espeak.speak("The quick brown fox jumps over the lazy dog.", "en-us+f3")
    assert mcd(speech, resample_to_16k(other)) > values[1]  # another voice, same words, other timing
    assert math.isnan(mcd(speech, np.zeros(8000)))
