"""`progre export` and `progre import-official`: encoder weights out of our checkpoints, and the
official release's weights into one."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from progre.errors import UserError
from progre.io import atomic_dir, write_json
from progre.log import logger
from progre.model.checkpoint import CONFIG, WEIGHTS, load_encoder, load_state_dict_checked, save_checkpoint
from progre.model.config import model_config
from progre.model.encoder import ProgREEncoder
from progre.model.official import infer_official_overrides, official_to_ours, ours_to_official, unwrap_checkpoint

OFFICIAL_FILE = "model.pt"


def export(checkpoint: Path, out: Path, official: bool = False) -> Path:
    """Write the encoder of `checkpoint` (a checkpoint folder, or a run folder holding some) to `out`:
    model.safetensors + config.json, or with `official` the release's layout as model.pt (+ config.json)."""
    folder = find_checkpoint(checkpoint)
    encoder = load_encoder(folder)
    if official:
        state = ours_to_official(encoder.state_dict())
        with atomic_dir(out) as tmp:
            torch.save(state, tmp / OFFICIAL_FILE)
            write_json(tmp / CONFIG, {"model": encoder.config.to_dict(), "kind": encoder.config.kind,
                                      "layout": "official", "exported_from": str(folder)})
        logger.info("exported %s (%s, %d parameters) to %s in the official layout", folder,
                    encoder.config.kind, encoder.num_parameters(), out / OFFICIAL_FILE)
    else:
        save_checkpoint(out, encoder, extra={"exported_from": str(folder)})
        logger.info("exported the encoder of %s (%s, %d parameters) to %s", folder, encoder.config.kind,
                    encoder.num_parameters(), out)
    return out


def import_official(state_dict: Path, out: Path, size: str = "base") -> ProgREEncoder:
    """Load a state dict in the official release's layout (a .pt: the state dict itself or a fairseq
    checkpoint with a "model" entry) into our encoder of `size` and save it as a checkpoint folder.

    Which branches exist and the CNN's normalisation are read from the tensor names.
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
    names = set(unwrap_checkpoint(obj))
    has_pitch = any(n.startswith("pitch_encoder.") for n in names)
    has_speaker = any(n.startswith("encoder.astp.") for n in names)
    config = model_config(size, "progre", pitch_branch=has_pitch, speaker_branch=has_speaker,
                          **infer_official_overrides(obj))
    encoder = ProgREEncoder(config)
    load_state_dict_checked(encoder, official_to_ours(obj), f"{state_dict} (read as a {size} model)")
    save_checkpoint(out, encoder, extra={"imported_from": str(state_dict), "size": size})
    logger.info("imported %s as a %s %s encoder (%d parameters) into %s", state_dict, size, config.kind,
                encoder.num_parameters(), out)
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
