"""A transformers speech SSL checkpoint folder as an upstream: `progre evaluate --upstream hf:FOLDER`.

HuBERT, wav2vec 2.0, WavLM, data2vec-audio: any folder whose `AutoModel` returns `hidden_states` (the
input of the first Transformer layer, then every layer's output: states "input", "layer1", ...). What the
folder says is what runs:

- a folder on disk only (`local_files_only`: never a hub download); a missing folder, config, feature
  extractor config or weights file is a one-line UserError, checked before anything loads;
- its frame grid must be the toolkit's (50 Hz: the wav2vec 2.0 CNN, kernels 10,3,3,3,3,2,2 and strides
  5,2,2,2,2,2,2, a 400-sample window every 320 samples, read from config.json); any other CNN is refused
  in one line rather than resampled, as every family named above has this one;
- the waveform goes through its own feature extractor (preprocessor_config.json: `do_normalize`,
  16 kHz only), per utterance over its own samples;
- each utterance runs alone, unpadded, so its states are what the model gives it and never depend on
  its batch-mates: padding changes them in several of these families, even with an attention mask
  (the Base models' GroupNorm takes its statistics over the padded samples too; data2vec-audio's stacked
  position convolutions read the padded frames). That costs speed on a GPU, not on the CPU. Utterances
  longer than `chunk_seconds` are cut on the 50 Hz grid, as `features.hidden` cuts them.

The cache key (`hf_identity`) covers config.json, preprocessor_config.json, the hash of the weights
files transformers reads, the transformers version and this code. This module is only imported for an
`hf:` upstream; transformers (the `hf` extra) is imported only when states are computed.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.shards import Utterance
from ..errors import UserError
from ..features.computing import StateExtractor
from ..fingerprint import code_fingerprint
from ..frames import MODEL_RATE, SAMPLE_RATE, chunk_samples, chunk_starts, num_frames
from ..io import file_sha256
from ..model.model_config import BASE_CONV_LAYERS

CONFIG = "config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The single-file weights transformers reads, in its order of preference; sharded ones have an index."""
CONV_KERNELS = [k for _, k, _ in BASE_CONV_LAYERS]
CONV_STRIDES = [s for _, _, s in BASE_CONV_LAYERS]

HF_CODE = ("progre.frames", "progre.features.computing", "progre.downstream.hf_upstream")
"""The modules whose code computes an hf upstream's states (their fingerprint is part of the cache key)."""


def read_hf_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """config.json and preprocessor_config.json of a transformers folder, checked to be a 16 kHz model on
    the 50 Hz grid; one-line UserErrors otherwise. Reads two small files, loads nothing."""
    folder = Path(folder)
    where = f"hf upstream {folder}"
    if not folder.is_dir():
        raise UserError(f"{where} not found (expected a transformers model folder on disk with {CONFIG}, "
                        f"{PREPROCESSOR_CONFIG} and its weights; nothing is downloaded)")
    found = {}
    for name in (CONFIG, PREPROCESSOR_CONFIG):
        path = folder / name
        if not path.is_file():
            what = "the feature extractor's settings (do_normalize, sampling_rate)" if name == PREPROCESSOR_CONFIG \
                else "the model's config"
            raise UserError(f"{where} has no {name} ({what})")
        try:
            found[name] = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{where}: unreadable {name} ({exc})") from None
    config, pre = found[CONFIG], found[PREPROCESSOR_CONFIG]
    kernels, strides = config.get("conv_kernel"), config.get("conv_stride")
    if kernels is None or strides is None or "num_hidden_layers" not in config or "hidden_size" not in config:
        raise UserError(f"{where}: {CONFIG} is not a wav2vec 2.0-style speech model's (no conv_kernel, conv_stride, "
                        f"num_hidden_layers or hidden_size)")
    if list(kernels) != CONV_KERNELS or list(strides) != CONV_STRIDES:
        raise UserError(f"{where}: its CNN (kernels {list(kernels)}, strides {list(strides)}) does not give the "
                        f"{MODEL_RATE} Hz frames every upstream here shares (kernels {CONV_KERNELS}, strides "
                        f"{CONV_STRIDES}: 400 samples every 320); such models are not supported")
    if pre.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise UserError(f"{where}: its feature extractor expects {pre.get('sampling_rate')} Hz audio; the shards "
                        f"hold {SAMPLE_RATE} Hz")
    weight_files(folder)
    return config, pre


def weight_files(folder: Path) -> list[Path]:
    """The weights files transformers reads from `folder` (one file, or an index and its shards)."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"hf upstream {folder}: unreadable {index.name} ({exc})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise UserError(f"hf upstream {folder}: {index.name} names missing files: {', '.join(missing)}")
            return [index] + [folder / s for s in shards]
    raise UserError(f"hf upstream {folder} has no weights ({' or '.join(WEIGHT_FILES)}, or a sharded index)")


def hf_identity(folder: Path) -> dict[str, Any]:
    """What determines an hf upstream's states, for the cache key: its configs, its weights' hashes, the
    transformers version and the code that runs it."""
    config, pre = read_hf_folder(folder)
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        version = None
    return {"kind": "hf", "config": config, "preprocessor": pre, "transformers": version,
            "weights_sha256": {p.name: file_sha256(p) for p in weight_files(folder)},
            "code": code_fingerprint(HF_CODE)}


def state_names(num_layers: int) -> list[str]:
    """"input" (the first Transformer layer's input), then "layer1" ... "layer<num_layers>"."""
    return ["input"] + [f"layer{i}" for i in range(1, num_layers + 1)]


class HFExtractor(StateExtractor):
    """Utterances -> per-utterance (T, S, D) float32 `hidden_states` of a transformers model folder."""

    frame_rate = MODEL_RATE

    def __init__(self, folder: Path, device: torch.device, chunk_seconds: float = 30.0):
        from ..model.hf import require_transformers

        config, _ = read_hf_folder(folder)
        transformers = require_transformers(f"the upstream hf:{folder}")
        transformers.utils.logging.set_verbosity_error()  # no "weights not used" notes for pretraining heads
        try:
            self.model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
            self.features = transformers.AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds for a broken folder: one line
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"hf upstream {folder} does not load: {type(exc).__name__}: {message}") from None
        self.model = self.model.to(device).eval()
        self.device = device
        self.state_names = state_names(int(config["num_hidden_layers"]))
        self.dim = int(config["hidden_size"])
        self.chunk_seconds = chunk_seconds

    @torch.inference_mode()
    def __call__(self, utts: list[Utterance]) -> list[np.ndarray]:
        length = chunk_samples(self.chunk_seconds)
        out = []
        for utt in utts:
            parts = [self._states(np.asarray(utt.wav[start:start + length], dtype=np.float32))
                     for start, _ in chunk_starts(len(utt.wav), self.chunk_seconds)]
            out.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        return out

    def _states(self, wav: np.ndarray) -> np.ndarray:
        """(T, S, D) of one waveform: its feature extractor, then the model."""
        inputs = self.features(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        hidden = self.model(inputs["input_values"].to(self.device), output_hidden_states=True).hidden_states
        if len(hidden) != len(self.state_names):
            raise UserError(f"the model gives {len(hidden)} hidden states, its config {len(self.state_names)}")
        states = torch.stack(hidden, dim=2)[0].float().cpu().numpy()  # (T, S, D)
        if len(states) != num_frames(len(wav)):
            raise RuntimeError(f"{len(states)} frames for {len(wav)} samples (expected {num_frames(len(wav))})")
        return states
