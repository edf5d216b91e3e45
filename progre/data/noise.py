"""Noise for speech: the demo corpus's coloured noise, folders of noise recordings, and a seeded
mixer that adds either to clean speech at an SNR (the speech enhancement task's noisy inputs).

- `coloured_noise`, `add_noise`: white, pink or brown noise, as the demo corpus adds it
  (`progre synth` imports them from here; their output for a given generator is unchanged).
- `mix_at_snr(clean, noise, snr_db)`: `clean` plus `noise` scaled to `snr_db` relative to the
  clean utterance's mean power.
- Noise sources (`NoiseSource`): `ColouredNoiseSource` (a colour drawn per utterance) and
  `NoiseFolder` (excerpts of recordings: wav, flac or ogg files, mono, 16 kHz).
- `NoisyMixer(source, seed, snr_db_min, snr_db_max).mix(key, clean)`: the noisy utterance, its
  SNR and the noise's name, a pure function of (seed, key, length of clean), so every run and
  every worker process gives the same mixture for an utterance. The default SNR range,
  2.5-17.5 dB, spans the four test SNRs of VoiceBank-DEMAND (2.5, 7.5, 12.5, 17.5 dB), SUPERB's
  speech enhancement set.

Nothing here clips: a mixture may exceed +-1 and is float32; scale it before writing 16-bit audio.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from abc import ABC, abstractmethod

import numpy as np

from ..audio import BadAudio, read_audio_file, to_model_input
from ..errors import UserError

NOISE_COLOURS = ("white", "pink", "brown")
NOISE_SUFFIXES = (".wav", ".flac", ".ogg")
SNR_DB_RANGE = (2.5, 17.5)
"""VoiceBank-DEMAND's test SNRs are 2.5, 7.5, 12.5 and 17.5 dB; the mixer draws uniformly in between."""


# --------------------------------------------------------------------------- the demo corpus's noise


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of `n` samples with a 1/f^a power spectrum (white a=0, pink a=1, brown a=2)."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    white = rng.standard_normal(n)
    if exponent == 0.0:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        scale = np.zeros_like(freqs)
        scale[1:] = freqs[1:] ** (-exponent / 2)
        noise = np.fft.irfft(spectrum * scale, n)
    rms = np.sqrt(np.mean(noise**2))
    return (noise / rms if rms > 0 else noise).astype(np.float32)


def add_noise(wav: np.ndarray, colour: str, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`wav` plus `colour` noise at `snr_db` relative to the mean power of the whole utterance.

    The demo corpus's own mixing (its bytes depend on this exact arithmetic: the unit-RMS noise is
    scaled by the clean power alone); `mix_at_snr` is the general form for any noise.
    """
    power = float(np.mean(wav.astype(np.float64) ** 2))
    if power == 0.0:
        return wav
    noise = coloured_noise(len(wav), colour, rng) * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))
    return wav + noise


# --------------------------------------------------------------------------- mixing


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`clean + g * noise` (float32), with g such that mean(clean^2) / mean((g * noise)^2) = 10^(snr_db/10).

    Both are 1-D of the same length. Silent (all-zero) clean or noise: `clean` is returned
    unchanged (as float32), since no gain reaches the SNR.
    """
    if clean.shape != noise.shape or clean.ndim != 1:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} must be 1-D of the same length")
    x = clean.astype(np.float64)
    n = noise.astype(np.float64)
    clean_power, noise_power = float(np.mean(x**2)) if len(x) else 0.0, float(np.mean(n**2)) if len(n) else 0.0
    if clean_power == 0.0 or noise_power == 0.0:
        return clean.astype(np.float32)
    gain = math.sqrt(clean_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (x + gain * n).astype(np.float32)


def key_seed(key: str) -> int:
    """A stable 64-bit integer of an utterance key (SHA-256; Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


# --------------------------------------------------------------------------- noise sources


class NoiseSource(ABC):
    """Where noise comes from: `noise(n, rng)` gives n samples (16 kHz, float32) and their name,
    drawing every random choice from `rng` (so the mixer's seed fixes them)."""

    @abstractmethod
    def noise(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]: ...

    @abstractmethod
    def describe(self) -> dict: ...


class ColouredNoiseSource(NoiseSource):
    """The demo corpus's noise: white, pink or brown (one of `colours`, drawn per utterance)."""

    def __init__(self, colours: tuple[str, ...] = NOISE_COLOURS):
        unknown = [c for c in colours if c not in NOISE_COLOURS]
        if not colours or unknown:
            raise UserError(f"noise colours must be some of {', '.join(NOISE_COLOURS)}; got {list(colours)}")
        self.colours = tuple(colours)

    def describe(self) -> dict:
        return {"noise": "coloured", "colours": list(self.colours)}

    def noise(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """`n` samples of unit-RMS noise of a colour drawn from `rng`; the name is the colour."""
        colour = self.colours[int(rng.integers(len(self.colours)))]
        return coloured_noise(n, colour, rng), colour


class NoiseFolder(NoiseSource):
    """Noise recordings: every .wav, .flac and .ogg file under a folder (searched recursively).

    Each file is decoded with soundfile, averaged to mono and resampled to 16 kHz
    (progre.audio.resample) once, when the folder is opened, and kept in memory as float32
    (230 MB per hour of noise). A draw picks a file uniformly, then a random excerpt of the needed
    length; a file shorter than that is looped (from a random start, with no cross-fade at the
    seam). A folder without any such file, or with one that is unreadable, truncated, silent,
    non-finite or under 400 samples, is a UserError naming it. Names are the files' paths relative
    to the folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"noise folder {self.folder} does not exist or is not a folder")
        paths = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in NOISE_SUFFIXES)
        if not paths:
            raise UserError(f"noise folder {self.folder} holds no {'/'.join(NOISE_SUFFIXES)} files")
        self.names: list[str] = []
        self.recordings: list[np.ndarray] = []
        for path in paths:
            name = path.relative_to(self.folder).as_posix()
            try:
                data, rate = read_audio_file(path)
                wav, _ = to_model_input(data, rate, silence_peak=1e-30)  # reject only all-zero noise
            except BadAudio as exc:
                raise UserError(f"noise folder {self.folder}: {name}: {exc}") from None
            self.names.append(name)
            self.recordings.append(wav)

    def describe(self) -> dict:
        """The folder and a hash of its recordings (what the noise is, for cache keys)."""
        digest = hashlib.sha256()
        for name, wav in zip(self.names, self.recordings):
            digest.update(name.encode() + b"\0" + wav.tobytes())
        return {"noise": str(self.folder), "recordings": digest.hexdigest()[:16]}

    def noise(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """An excerpt of `n` samples from a file drawn from `rng` (looped when the file is shorter)."""
        index = int(rng.integers(len(self.recordings)))
        recording = self.recordings[index]
        length = len(recording)
        if length >= n:
            start = int(rng.integers(length - n + 1))
            return recording[start:start + n].copy(), self.names[index]
        start = int(rng.integers(length))
        return recording[(start + np.arange(n)) % length], self.names[index]


# --------------------------------------------------------------------------- the mixer


class NoisyMixer:
    """Adds a source's noise to clean utterances at SNRs drawn uniformly from [snr_db_min, snr_db_max].

    `mix(key, clean)` seeds a generator with (seed, key_seed(key)), draws the SNR and then the
    noise from it, so its result depends only on (seed, key, len(clean)) and the source.
    """

    def __init__(self, source: NoiseSource, seed: int, snr_db_min: float = SNR_DB_RANGE[0],
                 snr_db_max: float = SNR_DB_RANGE[1]):
        if not (math.isfinite(snr_db_min) and math.isfinite(snr_db_max)) or snr_db_min > snr_db_max:
            raise UserError(f"noise SNR range must be finite with min <= max; got {snr_db_min} to {snr_db_max} dB")
        if seed < 0:
            raise UserError(f"noise seed must be a non-negative integer; got {seed}")
        self.source = source
        self.seed = int(seed)
        self.snr_db_min = float(snr_db_min)
        self.snr_db_max = float(snr_db_max)

    def describe(self) -> dict:
        """Everything the mixtures depend on besides the keys and the clean audio."""
        return self.source.describe() | {"seed": self.seed, "snr_db": [self.snr_db_min, self.snr_db_max]}

    def mix(self, key: str, clean: np.ndarray) -> tuple[np.ndarray, float, str]:
        """(noisy float32, SNR in dB, noise name) for the utterance `key`.

        When `clean` or the drawn noise is silent the clean audio comes back unchanged and the
        SNR is NaN (no noise was added); callers count such utterances.
        """
        rng = np.random.default_rng([self.seed, key_seed(key)])
        snr_db = float(rng.uniform(self.snr_db_min, self.snr_db_max))
        noise, name = self.source.noise(len(clean), rng)
        silent = not np.any(clean) or not np.any(noise)
        return mix_at_snr(clean, noise, snr_db), (math.nan if silent else snr_db), name
