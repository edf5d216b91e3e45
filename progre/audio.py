"""Audio decoding, checks and conversion to 16 kHz mono that every stage shares (frame arithmetic: frames.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .frames import SAMPLE_RATE, WINDOW

# --------------------------------------------------------------------------- decoding


class BadAudio(Exception):
    """An audio file that cannot be used; the message is the reason recorded in the rejects table."""


@dataclass
class AudioInfo:
    """What was done to a file on its way to 16 kHz mono."""

    sample_rate_in: int
    channels_in: int
    gain: float = 1.0


def resample(wav: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited (windowed-sinc) resampling with torchaudio; float32 in, float32 out."""
    if rate_in == rate_out:
        return wav
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), rate_in, rate_out).numpy()


def to_model_input(data: np.ndarray, rate: int, *, silence_peak: float = 1e-4,
                   min_samples: int = WINDOW, max_samples: int | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Check and convert decoded audio (frames x channels) to 16 kHz mono float32.

    Raises BadAudio with the reason for empty, non-finite, silent, too short or too long audio.
    Stereo is averaged to mono; other rates are resampled; audio whose peak exceeds 1 after
    resampling is scaled down (the gain is recorded) so 16-bit storage does not clip it.
    """
    if data.ndim == 1:
        data = data[:, None]
    info = AudioInfo(sample_rate_in=int(rate), channels_in=int(data.shape[1]))
    if data.shape[0] == 0:
        raise BadAudio("empty (zero samples)")
    if not np.isfinite(data).all():
        raise BadAudio("non-finite samples (NaN or inf)")
    wav = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    wav = resample(wav, int(rate))
    peak = float(np.abs(wav).max()) if len(wav) else 0.0
    if peak < silence_peak:
        raise BadAudio(f"silent (peak {peak:.2g} < {silence_peak:g})")
    if len(wav) < min_samples:
        raise BadAudio(f"too short ({len(wav)} samples at 16 kHz < {min_samples})")
    if max_samples is not None and len(wav) > max_samples:
        raise BadAudio(f"too long ({len(wav) / SAMPLE_RATE:.1f} s > {max_samples / SAMPLE_RATE:.1f} s)")
    if peak > 1.0:
        info.gain = 0.999 / peak
        wav = wav * info.gain
    return wav, info


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode any soundfile-readable file to (frames x channels float32, rate); BadAudio if it is
    unreadable, or truncated (fewer frames decode than its header declares)."""
    if Path(path).stat().st_size == 0:
        raise BadAudio("empty file (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            declared, rate = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise BadAudio(f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    declared = max(declared, wav_declared_frames(path) or 0)  # libsndfile trims a WAV's count to the file
    if len(data) < declared:
        raise BadAudio(f"truncated ({len(data)} of the {declared} frames its header declares)")
    return data, rate


def wav_declared_frames(path: str | Path) -> int | None:
    """Frames that a RIFF/WAVE file's data chunk declares (None for other files, or an unknown size)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while chunk := f.read(8):
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"fmt ":
                fmt = f.read(size + size % 2)
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
            elif name == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):  # streamed WAVs leave the size open
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, 1)
    return None


def encode_flac(wav: np.ndarray, subtype: str = "PCM_16") -> bytes:
    """Lossless FLAC bytes of 16 kHz mono float audio at the given bit depth."""
    buf = io.BytesIO()
    sf.write(buf, wav, SAMPLE_RATE, format="FLAC", subtype=subtype)
    return buf.getvalue()


def decode_audio_bytes(data: bytes) -> np.ndarray:
    """16 kHz mono float32 samples from encoded bytes (as stored in the shards)."""
    wav, rate = sf.read(io.BytesIO(data), dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"stored audio is {rate} Hz, expected {SAMPLE_RATE}")
    return wav
