"""Frozen upstreams and the on-disk cache of their hidden states.

An upstream is one of

- ``mfcc``: one 39-d state (Kaldi MFCC + deltas, 100 Hz), named "mfcc";
- a checkpoint folder (ours, exported or imported): every hidden state of `ProgREEncoder.extract`,
  50 Hz, named by `hidden_state_names` (the release's order);
- ``random:<checkpoint folder>``: a randomly initialised model of that checkpoint's architecture,
  seeded by the evaluation seed;
- ``hf:<folder>``: a transformers speech SSL model folder (HuBERT, wav2vec 2.0, WavLM, data2vec-audio),
  its own `hidden_states` at 50 Hz, named "input", "layer1", ... (`hf_upstream`).

Hidden states of every utterance of the corpus are computed once (`HiddenStateExtractor`: frozen,
long audio in chunks) and stored in ``cache/<kind>-<hash>/`` as a feature folder
(`progre.features.store`) whose rows are the S states of a frame side by side, (T, S * D), float16 by
default. The hash covers what determines the states: a fingerprint of the code that computes them,
the checkpoint's bytes (or the architecture and seed of a random model; an hf folder's configs, weights
and transformers version), the pitch folder's contents, the storage type and the corpus fingerprint. The folder
appears atomically, and a lock file serialises concurrent evaluations of the same upstream, so the
second waits and reads what the first wrote instead of recomputing it. Every entry of a cache folder
(these, and the judges' and voice conversion's ``.pt`` files) is named ``<kind>-<16 hex digits>``
(`is_cache_entry`): `progre evaluate` writes only into a folder that holds nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..data.shards import Shards, Utterance
from ..errors import UserError
from ..features.computing import StateExtractor, compute_in_batches
from ..features.hidden import HiddenStateExtractor, load_frozen_encoder
from ..features.mfcc_features import MfccComputer
from ..features.store import FeatureStore, FeatureWriter, open_pitch_store, write_meta
from ..frames import SAMPLE_RATE
from ..fingerprint import code_fingerprint, package_modules
from ..io import atomic_dir, exclusive_lock, file_sha256, recover_work_folders
from ..log import logger

CACHE_VERSION = 2
"""Bump when the cache layout or the meaning of its contents changes (old entries are then ignored)."""

CACHE_ENTRY = re.compile(r"[a-z][a-z0-9_-]*-[0-9a-f]{16}(\.pt)?")
"""The name of every entry of a cache folder: hidden states (`cache_key`), the VC judges and analyses."""


def is_cache_entry(name: str) -> bool:
    return CACHE_ENTRY.fullmatch(name) is not None


MFCC_NAME = "mfcc"
RANDOM_PREFIX = "random:"
HF_PREFIX = "hf:"


# --------------------------------------------------------------------------- upstream specs


@dataclass(frozen=True)
class Upstream:
    """What `progre evaluate --upstream` named: kind "mfcc", "checkpoint", "random" or "hf"."""

    kind: str
    name: str
    """Shown in metrics and the report."""
    checkpoint: Optional[Path] = None
    """The checkpoint folder (its weights for "checkpoint", its architecture for "random"; the transformers
    model folder for "hf")."""
    spec: str = ""
    """As given on the command line."""
    speaker_labels: Optional[str] = None
    """What a trained speaker branch learned from: "corpus" or "pseudo" (None: no trained speaker branch)."""


def parse_upstream(spec: str, name: Optional[str] = None) -> Upstream:
    """`mfcc`, a checkpoint folder, `random:<checkpoint folder>` or `hf:<transformers folder>` -> Upstream.

    The default name is "mfcc", the checkpoint folder's name (its parent's for a training run's
    `model/` folder), "random-" + that name, or the transformers folder's name. A missing or
    unreadable folder is a one-line UserError (cheap: reads its json files only).
    """
    given = spec
    spec = spec.strip()
    if spec.lower() == MFCC_NAME:
        return Upstream("mfcc", name or MFCC_NAME, spec=given)
    if spec.startswith(HF_PREFIX):
        from .hf_upstream import read_hf_folder

        folder = Path(spec[len(HF_PREFIX):])
        if not spec[len(HF_PREFIX):]:
            raise UserError("--upstream hf: needs a transformers model folder, e.g. hf:/models/wavlm-base-plus")
        read_hf_folder(folder)
        return Upstream("hf", name or folder.resolve().name, folder, given)
    kind = "checkpoint"
    if spec.startswith(RANDOM_PREFIX):
        kind, spec = "random", spec[len(RANDOM_PREFIX):]
        if not spec:
            raise UserError("--upstream random: needs a checkpoint folder, e.g. random:runs/progre/model")
    folder = Path(spec)
    from ..model.checkpoint import read_checkpoint_config

    config = read_checkpoint_config(folder)
    default = folder.resolve().parent.name if folder.name == "model" else folder.name
    if kind == "random":
        default = f"random-{default}"
    labels = config.get("speaker_labels") if kind == "checkpoint" and config["model"].get("speaker_branch") else None
    return Upstream(kind, name or default, folder, given, labels)


MFCC_CODE = ("progre.frames", "progre.audio", "progre.data.shards", "progre.dsp.mfcc", "progre.dsp.padding",
             "progre.features.computing", "progre.features.mfcc_features", "progre.downstream.upstreams")
"""The modules whose code computes an MFCC upstream's states (their fingerprint is part of the cache key)."""

ENCODER_CODE = MFCC_CODE + ("progre.features.hidden", "progre.dsp.pitch", "progre.features.store")
"""The same for encoders, besides every module of progre.model."""


def upstream_identity(upstream: Upstream, seed: int, pitch: Optional[Path] = None) -> dict[str, Any]:
    """What determines the upstream's hidden states (hashed into the cache key): the code that computes
    them, and the weights (a hash of the file), or the architecture and seed of a random model, and the
    contents of the pitch folder a ProgRE model reads."""
    if upstream.kind == "mfcc":
        return {"kind": "mfcc", "code": code_fingerprint(MFCC_CODE)}
    if upstream.kind == "hf":
        from .hf_upstream import hf_identity

        assert upstream.checkpoint is not None
        return hf_identity(upstream.checkpoint)
    from ..model.checkpoint import WEIGHTS, read_checkpoint_config

    assert upstream.checkpoint is not None
    config = read_checkpoint_config(upstream.checkpoint)
    identity: dict[str, Any] = {"kind": upstream.kind, "model": config["model"],
                                "code": code_fingerprint(ENCODER_CODE + tuple(package_modules("progre.model")))}
    if upstream.kind == "random":
        identity["seed"] = seed
    else:
        identity["weights_sha256"] = file_sha256(upstream.checkpoint / WEIGHTS)
    if pitch is not None and config["model"].get("pitch_branch"):
        identity["pitch"] = folder_sha256(pitch)
    return identity


def folder_sha256(folder: Path) -> str:
    """A hash of every file's name and bytes in a folder (a pitch feature folder: small)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- extractors


class MfccExtractor(StateExtractor):
    """MFCC as an upstream with a single state: (T, 1, 39) at 100 Hz."""

    state_names = [MFCC_NAME]
    dim = MfccComputer.dim
    frame_rate = MfccComputer.frame_rate

    def __init__(self, device: torch.device):
        self.computer = MfccComputer(device)

    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        return [feats[:, None, :] for feats in self.computer(utts)]


def build_extractor(upstream: Upstream, seed: int, device: torch.device, pitch: Optional[Path] = None,
                    shards: Optional[Shards] = None, chunk_seconds: float = 30.0) -> StateExtractor:
    """The extractor of an upstream; a checkpoint that does not load is a one-line UserError."""
    if upstream.kind == "mfcc":
        return MfccExtractor(device)
    assert upstream.checkpoint is not None
    if upstream.kind == "hf":
        from .hf_upstream import HFExtractor

        return HFExtractor(upstream.checkpoint, device, chunk_seconds)
    from ..model import ModelConfig, build_encoder, read_checkpoint_config

    if upstream.kind == "random":
        config = ModelConfig.from_dict(read_checkpoint_config(upstream.checkpoint)["model"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_encoder(config)
    else:
        encoder = load_frozen_encoder(upstream.checkpoint, torch.device("cpu"))
    store = open_pitch_store(pitch, shards) if pitch is not None and encoder.config.pitch_branch else None
    if encoder.config.pitch_branch and store is None:
        logger.info("no --pitch folder: the pitch contours are computed on the fly (WORLD DIO, slower)")
    return HiddenStateExtractor(encoder, device, store, chunk_seconds)


# --------------------------------------------------------------------------- the cache


class HiddenStates:
    """A cache entry: `hidden[key]` -> (T, S, D) array (memory-mapped, the stored dtype)."""

    def __init__(self, folder: Path):
        self.store = FeatureStore(folder, remedy=f"it is a damaged hidden-state cache entry: remove {folder}, and "
                                                 f"the next run computes it again")
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


@dataclass(frozen=True)
class AudioView:
    """Some utterances of a corpus, and what is done to their audio before the upstream hears it (for
    speech enhancement: noise mixed in). `identity` says what the transform is, for the cache key."""

    name: str
    keys: frozenset[str]
    transform: Optional[Callable[[str, np.ndarray], np.ndarray]] = None
    identity: dict[str, Any] = field(default_factory=dict)

    def cache_identity(self) -> dict[str, Any]:
        keys = hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()[:16]
        return {"view": self.name, "keys": keys, **self.identity}


def cached_hidden_states(upstream: Upstream, shards: Shards, cache: Path, *, seed: int, device: torch.device,
                         pitch: Optional[Path] = None, batch_seconds: float = 60.0,
                         dtype: str = "float16", view: Optional[AudioView] = None) -> HiddenStates:
    """The hidden states of every utterance in `shards` (or of `view`'s utterances and audio), from the
    cache or computed into it. Pitch contours from `pitch` are of the clean audio: a view that changes
    the audio computes them on the fly from what the upstream hears."""
    if view is not None and view.transform is not None:
        pitch = None
    identity = upstream_identity(upstream, seed, pitch) | ({} if view is None else view.cache_identity())
    fingerprint = shards.fingerprint
    prefix = identity["kind"] if view is None else f"{identity['kind']}-{view.name}"
    folder = Path(cache) / f"{prefix}-{cache_key(identity, fingerprint, dtype)}"
    def wait() -> None:
        logger.info("waiting for another process that computes the same hidden states (%s)", folder.name)

    with exclusive_lock(folder.with_name(f".{folder.name}.lock"), busy=wait):
        for line in recover_work_folders(folder.parent, folder.name):
            logger.info("%s", line)
        if (folder / "meta.json").is_file():
            logger.info("hidden states of %s: cached in %s", upstream.name, folder)
            return HiddenStates(folder)
        extractor = build_extractor(upstream, seed, device, pitch, shards)
        start = time.perf_counter()
        with atomic_dir(folder) as tmp:
            seconds = _extract_all(extractor, shards, tmp, batch_seconds, dtype, upstream.name, view)
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


def _extract_all(extractor: StateExtractor, shards: Shards, folder: Path, batch_seconds: float, dtype: str,
                 name: str, view: Optional[AudioView] = None) -> float:
    """Write (T, S*D) rows of every utterance (of the view) to a feature folder; memory stays at one
    batch. Returns the seconds of audio processed."""
    width = extractor.dim * len(extractor.state_names)
    writer = FeatureWriter(folder, width, dtype)
    limit = float(np.finfo(dtype).max)
    audio = 0.0
    utterances = shards.stream(keys=None if view is None else set(view.keys))
    if view is not None and view.transform is not None:
        utterances = (Utterance(u.key, view.transform(u.key, u.wav), u.meta) for u in utterances)
    total = len(shards) if view is None else len(view.keys)
    try:
        for utt, states in compute_in_batches(extractor, utterances, batch_seconds, pool=4, total=total,
                                              description=f"hidden states ({name})"):
            if len(states) != extractor.expected_frames(len(utt.wav)):
                raise RuntimeError(f"{utt.key}: {len(states)} frames for {len(utt.wav)} samples")
            if not np.isfinite(states).all():
                raise UserError(f"{utt.key}: {name} gives non-finite hidden states (NaN or inf)")
            if np.abs(states).max(initial=0.0) > limit:
                raise UserError(f"{utt.key}: hidden states of {name} exceed the {dtype} range "
                                f"(set evaluate.hidden_dtype=float32)")
            writer.add(utt.key, states.reshape(len(states), width))
            audio += len(utt.wav) / SAMPLE_RATE
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return audio
