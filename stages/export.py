"""`progre export` and `progre import-official`: encoder weights out of our checkpoints (our layout, the
release's, or a transformers folder), and the official release's weights into one (`progre.model.export`)."""

from __future__ import annotations

from pathlib import Path

from progre.errors import UserError
from progre.log import logger
from progre.outputs import output_folder
from progre.model.export import OFFICIAL_FILE, export_encoder, import_official as import_release


def export(checkpoint: Path, out: Path, official: bool = False, overwrite: bool = False,
           layout: str | None = None) -> Path:
    """`layout`: ours, official or transformers (`official=True` is the older spelling of "official")."""
    if official and layout not in (None, "official"):
        raise UserError(f"--official and --format {layout} ask for two formats: give one")
    layout = layout or ("official" if official else "ours")
    with output_folder(out, "export", overwrite=overwrite, inputs=[checkpoint]) as tmp:
        encoder = export_encoder(checkpoint, layout, tmp)
    logger.info("exported the encoder of %s (%s, %d parameters) to %s%s", checkpoint, encoder.config.kind,
                encoder.num_parameters(), out / OFFICIAL_FILE if layout == "official" else out,
                "" if layout == "ours" else f" in the {layout} layout")
    return out


def import_official(state_dict: Path, out: Path, size: str = "base", overwrite: bool = False):
    with output_folder(out, "import-official", overwrite=overwrite, inputs=[state_dict]) as tmp:
        encoder = import_release(state_dict, size, tmp)
    logger.info("imported %s as a %s %s encoder (%d parameters) into %s", state_dict, size, encoder.config.kind,
                encoder.num_parameters(), out)
    return encoder
