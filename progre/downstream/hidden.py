"""Frozen upstreams and the on-disk cache of their hidden states.

An upstream is one of

- ``mfcc``: one 39-d state (Kaldi MFCC + deltas, 100 Hz), named "mfcc";
- a checkpoint folder (ours, exported or imported): every hidden state of `ProgREEncoder.extract`,
  50 Hz, named by `hidden_state_names` (the release's order);
- ``random:<checkpoint folder>``: a randomly initialised model of that checkpoint's architecture,
  seeded by the evaluation seed.

Hidden states of every utterance of the corpus are computed once (frozen, eval mode, no grad,
batched with lengths: the encoder is padding-invariant) and stored in ``cache/<kind>-<hash>/`` as a
feature folder (`progre.features.store`) whose rows are the S states of a frame side by side,
(T, S * D), float16 by default. The hash covers what determines the states: the checkpoint's bytes
(or "mfcc", or the architecture and seed of a random model), the storage type and the corpus
fingerprint. The folder appears atomically, and a lock file serialises concurrent evaluations
of the same upstream (a DVC matrix runs one process per task), so the second waits and reads
what the first wrote instead of recomputing it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
import torch

from ..audio import SAMPLE_RATE, num_frames, num_mfcc_frames
from ..data.reader import Utterance, corpus_fingerprint, iter_utterances, read_index
from ..errors import UserError
from ..features.compute import MfccComputer, batches_by_seconds
from ..features.mfcc import pad_batch
from ..features.store import FeatureStore, FeatureWriter, open_pitch_store, pitch_contour, write_meta
from ..io import atomic_dir, file_sha256
from ..log import logger, progress_bar

CACHE_VERSION = 1
"""Bump when the cache layout or the meaning of its contents changes (old entries are then ignored)."""

MFCC_NAME = "mfcc"
RANDOM_PREFIX = "random:"


# --------------------------------------------------------------------------- upstream specs


@dataclass(frozen=True)
class Upstream:
    """What `progre evaluate --upstream` named: kind "mfcc", "checkpoint" or "random"."""

    kind: str
    name: str
    """Shown in metrics and the report."""
    checkpoint: Optional[Path] = None
    """The checkpoint folder (its weights for "checkpoint", its architecture for "random")."""


def parse_upstream(spec: str, name: Optional[str] = None) -> Upstream:
    """`mfcc`, a checkpoint folder, or `random:<checkpoint folder>` -> Upstream.

    The default name is "mfcc", the checkpoint folder's name (its parent's for a training run's
    `model/` folder), or "random-" + that name.
    """
    spec = spec.strip()
    if spec.lower() == MFCC_NAME:
        return Upstream("mfcc", name or MFCC_NAME)
    kind = "checkpoint"
    if spec.startswith(RANDOM_PREFIX):
        kind, spec = "random", spec[len(RANDOM_PREFIX):]
        if not spec:
            raise UserError("--upstream random: needs a checkpoint folder, e.g. random:runs/progre/model")
    folder = Path(spec)
    default = folder.resolve().parent.name if folder.name == "model" else folder.name
    if kind == "random":
        default = f"random-{default}"
    return Upstream(kind, name or default, folder)


def check_upstream(upstream: Upstream) -> None:
    """A missing or unreadable checkpoint folder is a one-line UserError (cheap: reads config.json only)."""
    if upstream.checkpoint is not None:
        from ..model.checkpoint import read_checkpoint_config

        read_checkpoint_config(upstream.checkpoint)


def upstream_identity(upstream: Upstream, seed: int) -> dict[str, Any]:
    """What determines the upstream's hidden states (hashed into the cache key).

    Reading a checkpoint's config here also turns a missing or broken checkpoint into a UserError
    before any work starts.
    """
    if upstream.kind == "mfcc":
        return {"kind": "mfcc"}
    from ..model.checkpoint import WEIGHTS, read_checkpoint_config

    assert upstream.checkpoint is not None
    config = read_checkpoint_config(upstream.checkpoint)
    if upstream.kind == "random":
        return {"kind": "random", "model": config["model"], "seed": seed}
    return {"kind": "checkpoint", "model": config["model"],
            "weights_sha256": file_sha256(upstream.checkpoint / WEIGHTS)}


# --------------------------------------------------------------------------- extractors


class Extractor(Protocol):
    """Utterances -> per-utterance (T, S, D) float32 hidden states."""

    state_names: list[str]
    dim: int
    frame_rate: int

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]: ...

    def expected_frames(self, num_samples: int) -> int: ...


class MfccExtractor:
    """MFCC as an upstream with a single state: (T, 1, 39) at 100 Hz."""

    state_names = [MFCC_NAME]
    dim = MfccComputer.dim
    frame_rate = MfccComputer.frame_rate

    def __init__(self, device: torch.device):
        self.computer = MfccComputer(device)

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        return [feats[:, None, :] for feats in self.computer(utts)]

    def expected_frames(self, num_samples: int) -> int:
        return num_mfcc_frames(num_samples)


class EncoderExtractor:
    """Every hidden state of a frozen `ProgREEncoder`: (T, S, D) at 50 Hz.

    `pitch`: a pitch feature folder (key -> (T, 1) contour); without it the encoder computes the
    contour itself when it has a pitch branch (WORLD DIO, slower).
    """

    frame_rate = 50

    def __init__(self, encoder, device: torch.device, pitch: Optional[FeatureStore] = None):
        self.encoder = encoder.to(device).eval()
        self.device = device
        self.pitch = pitch if encoder.config.pitch_branch else None
        self.state_names = encoder.hidden_state_names()
        self.dim = encoder.config.encoder_embed_dim

    def expected_frames(self, num_samples: int) -> int:
        return num_frames(num_samples)

    @torch.inference_mode()
    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        wavs, lengths = pad_batch([u.wav for u in utts], self.device)
        states, frame_lengths = self.encoder.extract(wavs, pitch=self._pitch(utts, wavs.shape[1]), lengths=lengths)
        stacked = torch.stack(states, dim=2).float().cpu().numpy()  # (B, T, S, D)
        return [stacked[i, :n] for i, n in enumerate(frame_lengths.tolist())]

    def _pitch(self, utts: list[Utterance], samples: int) -> Optional[torch.Tensor]:
        """(B, T) padded contours from the pitch folder, or None (the encoder computes them)."""
        if self.pitch is None:
            return None
        contours = torch.zeros(len(utts), num_frames(samples))
        for i, utt in enumerate(utts):
            contour = pitch_contour(self.pitch, utt.key, len(utt.wav))
            contours[i, :len(contour)] = torch.from_numpy(contour)
        return contours.to(self.device)


def build_extractor(upstream: Upstream, seed: int, device: torch.device,
                    pitch: Optional[Path] = None, shards: Optional[Path] = None) -> Extractor:
    """The extractor of an upstream; a checkpoint that does not load is a one-line UserError."""
    if upstream.kind == "mfcc":
        return MfccExtractor(device)
    from ..model import ModelConfig, ProgREEncoder, load_encoder, read_checkpoint_config

    assert upstream.checkpoint is not None
    if upstream.kind == "random":
        config = ModelConfig.from_dict(read_checkpoint_config(upstream.checkpoint)["model"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = ProgREEncoder(config)
    else:
        try:
            encoder = load_encoder(upstream.checkpoint, device="cpu")
        except UserError:
            raise
        except Exception as exc:  # anything else a broken folder raises: one line, not a traceback
            raise UserError(f"checkpoint {upstream.checkpoint} does not load: {type(exc).__name__}: {exc}") from None
    store = open_pitch_store(pitch, shards) if pitch is not None and encoder.config.pitch_branch else None
    if encoder.config.pitch_branch and store is None:
        logger.info("no --pitch folder: the pitch contours are computed on the fly (WORLD DIO, slower)")
    return EncoderExtractor(encoder, device, store)


# --------------------------------------------------------------------------- the cache


class HiddenStates:
    """A cache entry: `hidden[key]` -> (T, S, D) array (memory-mapped, the stored dtype)."""

    def __init__(self, folder: Path):
        self.store = FeatureStore(folder)
        meta = self.store.meta
        self.folder = Path(folder)
        self.state_names: list[str] = list(meta["state_names"])
        self.num_states = len(self.state_names)
        self.dim = int(meta["state_dim"])
        self.frame_rate = int(meta["frame_rate"])
        self.upstream: dict[str, Any] = meta["upstream"]

    def __contains__(self, key: str) -> bool:
        return key in self.store

    def __getitem__(self, key: str) -> np.ndarray:
        frames = self.store[key]
        return frames.reshape(len(frames), self.num_states, self.dim)

    def num_frames(self, key: str) -> int:
        return len(self.store[key])


def cache_key(identity: dict[str, Any], fingerprint: str, dtype: str) -> str:
    """16 hex digits of the hash of everything the cached states depend on."""
    blob = json.dumps({"version": CACHE_VERSION, "upstream": identity, "corpus": fingerprint, "dtype": dtype},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_hidden_states(upstream: Upstream, shards: Path, cache: Path, *, seed: int, device: torch.device,
                         pitch: Optional[Path] = None, batch_seconds: float = 60.0,
                         dtype: str = "float16") -> HiddenStates:
    """The hidden states of every utterance in `shards`, from the cache or computed into it."""
    identity = upstream_identity(upstream, seed)
    fingerprint = corpus_fingerprint(shards)
    folder = Path(cache) / f"{identity['kind']}-{cache_key(identity, fingerprint, dtype)}"
    with _locked(folder.with_name(f".{folder.name}.lock")):
        if (folder / "meta.json").is_file():
            logger.info("hidden states of %s: cached in %s", upstream.name, folder)
            return HiddenStates(folder)
        extractor = build_extractor(upstream, seed, device, pitch, shards)
        start = time.perf_counter()
        with atomic_dir(folder) as tmp:
            seconds = _extract_all(extractor, shards, tmp, batch_seconds, dtype, upstream.name)
            states = len(extractor.state_names)
            write_meta(tmp, {"kind": "hidden", "upstream": identity, "name": upstream.name,
                             "state_names": extractor.state_names, "num_states": states, "state_dim": extractor.dim,
                             "dim": extractor.dim * states, "frame_rate": extractor.frame_rate, "dtype": dtype,
                             "corpus": fingerprint, "world_size": 1})
        elapsed = time.perf_counter() - start
        logger.info("hidden states of %s: %d states of %d dims for %.1f min of audio in %.0f s (%.0fx real time), "
                    "cached in %s", upstream.name, states, extractor.dim, seconds / 60, elapsed,
                    seconds / max(elapsed, 1e-9), folder)
    return HiddenStates(folder)


def _extract_all(extractor: Extractor, shards: Path, folder: Path, batch_seconds: float, dtype: str,
                 name: str) -> float:
    """Write (T, S*D) rows of every utterance to a feature folder; memory stays at one batch.
    Returns the seconds of audio processed."""
    width = extractor.dim * len(extractor.state_names)
    writer = FeatureWriter(folder, width, dtype)
    limit = float(np.finfo(dtype).max)
    audio = 0.0
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"hidden states ({name})", total=len(read_index(shards)))
            for batch in batches_by_seconds(iter_utterances(shards), batch_seconds, pool=4):
                for utt, states in zip(batch, extractor(batch)):
                    if len(states) != extractor.expected_frames(len(utt.wav)):
                        raise RuntimeError(f"{utt.key}: {len(states)} frames for {len(utt.wav)} samples")
                    if not np.isfinite(states).all():
                        raise UserError(f"{utt.key}: {name} gives non-finite hidden states (NaN or inf)")
                    if np.abs(states).max(initial=0.0) > limit:
                        raise UserError(f"{utt.key}: hidden states of {name} exceed the {dtype} range "
                                        f"(set evaluate.hidden_dtype=float32)")
                    writer.add(utt.key, states.reshape(len(states), width))
                    audio += len(utt.wav) / SAMPLE_RATE
                progress.advance(task, len(batch))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return audio


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that computes the same hidden states (%s)", path.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
