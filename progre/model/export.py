"""Encoder weights out of our checkpoints (`progre export`: ours, the release's layout, or a transformers
`HubertModel` folder), the official release's weights into one (`progre import-official`), and an encoder
from any folder these write (`load_model_folder`: `progre.load`, `pretrain --init`)."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..io import write_json
from ..log import logger
from .checkpoint import CONFIG, WEIGHTS, load_encoder, load_state_dict_checked, write_checkpoint
from .model_config import ModelConfig
from .encoder import ProgREEncoder, build_encoder
from .official import READ_FROM_WEIGHTS, describe_official_config, official_config, official_to_ours, ours_to_official

OFFICIAL_FILE = "model.pt"
EXPORT_LAYOUTS = ("ours", "official", "transformers")
"""`progre export --format`: our checkpoint folder, the release's PyTorch layout (model.pt), or a transformers
`HubertModel` folder (HuBERT models only)."""


def export_encoder(checkpoint: Path, layout: str, out: Path) -> ProgREEncoder:
    """Write the encoder of `checkpoint` (a checkpoint folder, or a run folder holding some) into the
    folder `out` in `layout`: "ours" (model.safetensors + config.json), "official" (the release's layout
    as model.pt, + config.json) or "transformers" (`model.hf`; a ProgRE model is a one-line UserError)."""
    if layout not in EXPORT_LAYOUTS:
        raise UserError(f"unknown export format {layout!r}; choose one of {', '.join(EXPORT_LAYOUTS)}")
    folder = find_checkpoint(checkpoint)
    encoder = load_encoder(folder)
    if layout == "official":
        torch.save(ours_to_official(encoder.state_dict()), out / OFFICIAL_FILE)
        write_json(out / CONFIG, {"model": encoder.config.to_dict(), "kind": encoder.config.kind,
                                  "layout": "official", "exported_from": str(folder)})
    elif layout == "transformers":
        from .hf import write_transformers_hubert

        write_transformers_hubert(encoder, folder, out)
    else:
        write_checkpoint(out, encoder, extra={"exported_from": str(folder)})
    return encoder


def import_official(state_dict: Path, size: str, out: Path) -> ProgREEncoder:
    """Load a state dict in the official release's layout (a .pt: the state dict itself, a fairseq
    checkpoint with a "model" entry, or the file the release's MindSpore conversion script writes)
    into our encoder of `size` and write it into the folder `out`.

    Every config value the tensors reveal is read from them (`official.official_config`: the branches,
    the CNN's normalisation, channels and kernels, the width, layers, FFN, position conv, branch sizes and
    the LayerNorm after the speaker subtraction); the others are the `size` preset's. Both lists are
    logged, and config.json records the assumed values under "assumed".
    """
    state_dict = Path(state_dict)
    if not state_dict.is_file():
        raise UserError(f"state dict {state_dict} not found")
    try:
        obj = torch.load(state_dict, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise UserError(f"cannot read {state_dict} as a PyTorch file ({_first_line(exc)})") from None
        raise UserError(f"{state_dict} holds a {found.group(1)} object besides the weights (a fairseq "
                        f"checkpoint?) and is not unpickled for safety; if you trust it, re-save its weights: "
                        f"torch.save(torch.load(path, weights_only=False)['model'], 'weights.pt')") from None
    except Exception as exc:  # not a PyTorch file at all
        raise UserError(f"cannot read {state_dict} as a PyTorch file ({_first_line(exc)})") from None
    source = f"{state_dict} (read as a {size} model)"
    try:
        config, assumed = official_config(obj, size)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    logger.info("%s: %s", state_dict, describe_official_config(config, assumed, size))
    encoder = build_encoder(config)
    try:
        ours = official_to_ours(obj, encoder.state_dict())
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    load_state_dict_checked(encoder, ours, source)
    write_checkpoint(out, encoder, extra={"imported_from": str(state_dict), "size": size,
                                          "read_from_weights": list(READ_FROM_WEIGHTS), "assumed": assumed})
    return encoder.eval()


@dataclass
class FoundModel:
    """An encoder read from a folder, with where its weights came from."""

    encoder: ProgREEncoder
    folder: Path
    """The folder that holds the weights (a run folder's `model/`, ...)."""
    weights: Path
    """The weights file (its hash identifies the weights)."""
    layout: str
    """One of `EXPORT_LAYOUTS`."""


def load_model_folder(path: Path) -> FoundModel:
    """The encoder (eval mode, on the CPU) of any folder progre writes: a checkpoint folder (a run's
    `model/`, an export in our layout, an imported release checkpoint), a run folder (its `model/`, else
    its latest checkpoint), an export in the release's layout (model.pt) or a transformers export. A path
    that is none of these is a one-line UserError."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"{path} is a file: progre reads folders (a release .pt or .ckpt is imported first: "
                        f"progre import-official {path} --out FOLDER)")
    from .hf import is_transformers_export, read_transformers_hubert

    if is_transformers_export(path):
        return FoundModel(read_transformers_hubert(path), path, path / WEIGHTS, "transformers")
    if (path / OFFICIAL_FILE).is_file() and (path / CONFIG).is_file():
        return FoundModel(_read_official_export(path), path, path / OFFICIAL_FILE, "official")
    folder = path / "model" if (path / "model" / CONFIG).is_file() else find_checkpoint(path)
    try:
        encoder = load_encoder(folder)
    except UserError:
        raise
    except Exception as exc:  # anything else a broken folder raises: one line
        raise UserError(f"checkpoint {folder} does not load: {type(exc).__name__}: {exc}") from None
    return FoundModel(encoder, folder, folder / WEIGHTS, "ours")


def _read_official_export(folder: Path) -> ProgREEncoder:
    """The encoder of an export in the release's layout (model.pt + config.json with our model config)."""
    try:
        config = ModelConfig.from_dict(json.loads((folder / CONFIG).read_text())["model"])
        state = torch.load(folder / OFFICIAL_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{folder}: not a readable export in the official layout ({_first_line(exc)})") from None
    encoder = build_encoder(config)
    load_state_dict_checked(encoder, official_to_ours(state, encoder.state_dict()), f"export {folder}")
    return encoder.eval()


def find_checkpoint(path: Path) -> Path:
    """`path` if it is a checkpoint folder, else the most recently written checkpoint folder below it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} not found")
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    found = [p.parent for p in path.glob("**/" + WEIGHTS)
             if (p.parent / CONFIG).is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not found:
        raise UserError(f"{path} holds no checkpoint folder ({WEIGHTS} + {CONFIG})")
    latest = max(found, key=lambda p: (p / WEIGHTS).stat().st_mtime)
    if len(found) > 1:
        logger.info("%s holds %d checkpoints; using the latest, %s", path, len(found), latest)
    return latest


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
