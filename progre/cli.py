"""`progre`: one subcommand per pipeline stage.

Each command reads its section of params.yaml (``--params``), applies ``--set KEY=VALUE``
overrides, and hands the typed parameters and paths to its module in `stages/`. The commands
stay thin: parsing and dispatch only.
"""

from __future__ import annotations

import importlib.util
import sys
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Optional

import typer
from rich.markup import escape

from . import config
from .errors import UserError, hand_to_launcher
from .io import describe_error
from .log import console, logger, setup_logging

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Pretrain ProgRE and HuBERT speech models end to end: demo corpus, shards, features, "
         "k-means labels, pretraining, downstream evaluation and a report. Each command is one "
         "DVC stage; `dvc repro` runs them all.",
)

DEFAULT_PARAMS = Path("params.yaml")
STAGES = Path(__file__).resolve().parents[1] / "stages"
"""The DVC-stage adapters (one module per stage) live in the repository beside this package, not inside it:
they are the pipeline's glue, not library code, so they are read from there rather than installed."""


def load_stage(name: str) -> ModuleType:
    """The stage adapter `stages/<name>.py` of the repository this package belongs to."""
    module_name = f"stages.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = STAGES / f"{name}.py"
    if not path.is_file():
        raise UserError(f"the stage module {path} is missing: progre runs from a source checkout "
                        f"(pip install -e .), whose stages/ folder sits beside the progre package")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[module_name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class FeatureKind(str, Enum):
    mfcc = "mfcc"
    pitch = "pitch"
    layer = "layer"


class ModelKind(str, Enum):
    progre = "progre"
    hubert = "hubert"


class ReleaseSize(str, Enum):
    base = "base"
    large = "large"


class ExportFormat(str, Enum):  # progre.model.export.EXPORT_LAYOUTS
    ours = "ours"
    official = "official"
    transformers = "transformers"

ParamsOpt = typer.Option(None, "--params", help="params.yaml to read (default: ./params.yaml if present)")
SetOpt = typer.Option(None, "--set", "-s", help="override a parameter of this stage: KEY=VALUE (repeatable); "
                                                "`progre params SECTION` lists them")
OverwriteOpt = typer.Option(False, "--overwrite", help="replace the output folder if it exists (only a folder that "
                                                      "this command wrote; never one holding an input or a file "
                                                      "you put there)")


def _params_file(path: Optional[Path]) -> Optional[Path]:
    if path is not None:
        return path
    return DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None


def _load(cls, params: Optional[Path], overrides: Optional[list[str]], iteration: Optional[int] = None):
    return config.load_params(cls, _params_file(params), iteration=iteration, overrides=overrides or [])


def _epilog(section: str) -> str:
    return f"Parameters (params.yaml section `{section}`, override with --set KEY=VALUE): " \
           f"run `progre params {section}`."


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only warnings and errors; no progress bars"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug messages"),
) -> None:
    setup_logging(quiet=quiet, verbose=verbose)


@app.command("params", help="List a stage's parameters with their types, defaults and meaning.")
def params_cmd(
    section: Optional[str] = typer.Argument(None, help="section name; all sections when omitted"),
) -> None:
    sections = config.all_sections()
    if section is not None and section not in sections:
        raise UserError(f"unknown section {section!r}; sections: {', '.join(sorted(sections))}")
    for name, cls in sections.items():
        if section in (None, name):
            typer.echo(f"[{name}]")
            typer.echo(cls.describe())
            typer.echo("")


@app.command(epilog=_epilog("synth"))
def synth(
    out: Path = typer.Option(Path("data/corpus"), "--out", "-o", help="output folder: audio/*.flac + metadata.parquet"),
    preset: Optional[str] = typer.Option(None, help="tiny (tests, under a minute of audio) or demo (tens of minutes)"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Synthesise the built-in labelled multi-speaker corpus with eSpeak NG (no downloads)."""
    overrides = list(set_ or []) + ([f"preset={preset}"] if preset else [])
    p = _load(config.SynthParams, params, overrides)
    stage = load_stage("synth")

    stage.run(p, out=out, overwrite=overwrite)


@app.command(epilog=_epilog("shard"))
def shard(
    corpus: Path = typer.Argument(..., help="LibriSpeech or AISHELL-1 folder, a SUPERB corpus as published "
                                            "(VoxCeleb1, IEMOCAP, VoiceBank-DEMAND, VCC2020; shard.input_format), "
                                            "a folder of audio, or a fairseq .tsv manifest"),
    out: Path = typer.Option(Path("data/shards"), "--out", "-o", help="output folder of tar shards and tables"),
    metadata: Optional[Path] = typer.Option(None, help="metadata table (csv/tsv/parquet) for a folder of audio "
                                                       "(default: <corpus>/metadata.parquet if present), or "
                                                       "VoxCeleb1's iden_split.txt kept outside the corpus"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Convert a corpus to WebDataset tar shards, a parquet index and a rejects table."""
    p = _load(config.ShardParams, params, set_)
    stage = load_stage("shard")

    stage.run(p, corpus=corpus, out=out, metadata=metadata, overwrite=overwrite)


@app.command(epilog=_epilog("features"))
def features(
    kind: FeatureKind = typer.Option(..., help="mfcc (iteration 1), pitch (pitch-branch input) or layer "
                                               "(iteration 2)"),
    shards: Path = typer.Option(Path("data/shards"), help="shard folder written by `progre shard`"),
    out: Path = typer.Option(..., "--out", "-o", help="output feature folder"),
    checkpoint: Optional[Path] = typer.Option(None, help="model checkpoint folder (kind=layer)"),
    layer: Optional[int] = typer.Option(None, help="transformer layer, 1-based (kind=layer)"),
    pitch: Optional[Path] = typer.Option(None, help="pitch feature folder for a ProgRE checkpoint (kind=layer; "
                                                    "computed on the fly if omitted)"),
    rank: Optional[int] = typer.Option(None, help="this worker's index when splitting the work (default: "
                                                  "RANK from torchrun, else 0)"),
    world_size: Optional[int] = typer.Option(None, help="number of workers splitting the work (default: "
                                                        "WORLD_SIZE from torchrun, else 1)"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Extract MFCC, pitch contours or hidden features of a layer, for k-means and training."""
    overrides = list(set_ or []) + ([f"layer={layer}"] if layer is not None else [])
    p = _load(config.FeaturesParams, params, overrides)
    stage = load_stage(kind.value)  # one stage module per feature kind: pitch, mfcc, layer
    if kind is FeatureKind.layer:
        stage.run(p, shards=shards, out=out, checkpoint=checkpoint, pitch=pitch, rank=rank, world_size=world_size,
                  overwrite=overwrite)
    else:
        stage.run(p, shards=shards, out=out, rank=rank, world_size=world_size, overwrite=overwrite)


@app.command(epilog=_epilog("cluster"))
def cluster(
    features_dir: Path = typer.Option(..., "--features", help="feature folder written by `progre features`"),
    shards: Path = typer.Option(Path("data/shards"), help="shard folder (features of unsampled utterances are "
                                                          "computed on the fly)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: k-means model, labels, metrics, plot"),
    iteration: Optional[int] = typer.Option(None, help="also read params section cluster_iter<N>"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Fit FAISS k-means on the sampled features and label every frame of every utterance."""
    p = _load(config.ClusterParams, params, set_, iteration)
    stage = load_stage("cluster")

    stage.run(p, features=features_dir, shards=shards, out=out, overwrite=overwrite)


@app.command("pseudo-speakers", epilog=_epilog("speakers"))
def pseudo_speakers(
    shards: Path = typer.Option(Path("data/shards"), help="shard folder"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: speakers.parquet (key -> speaker), metrics"),
    checkpoint: Optional[Path] = typer.Option(None, help="model checkpoint (embedding=layer_mean)"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Cluster utterance embeddings into pseudo-speaker ids for corpora without speaker labels."""
    p = _load(config.SpeakersParams, params, set_)
    stage = load_stage("speakers")

    stage.run(p, shards=shards, out=out, checkpoint=checkpoint, overwrite=overwrite)


@app.command(epilog=_epilog("pretrain"))
def pretrain(
    out: Path = typer.Option(..., "--out", "-o", help="run folder: checkpoints, metrics, plots; rerun the "
                                                      "same command to resume"),
    labels: Path = typer.Option(..., help="label folder written by `progre cluster`"),
    shards: Path = typer.Option(Path("data/shards"), help="shard folder"),
    pitch: Optional[Path] = typer.Option(None, help="pitch feature folder (needed by the ProgRE model)"),
    speakers: Optional[Path] = typer.Option(None, help="pseudo-speaker folder (speaker_labels=pseudo)"),
    model: Optional[ModelKind] = typer.Option(None, help="progre or hubert (overrides the params)"),
    init: Optional[Path] = typer.Option(None, help="continued pretraining: start from this model's encoder (a "
                                                   "checkpoint or run folder, an export, an imported release "
                                                   "checkpoint; params: pretrain.init)"),
    iteration: Optional[int] = typer.Option(None, help="also read params section pretrain_iter<N>"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Pretrain ProgRE or the HuBERT baseline by masked prediction of k-means labels (resumable; on every GPU
    of the node with pretrain.nproc_per_node, or under torchrun)."""
    overrides = list(set_ or []) + ([f"model={model.value}"] if model else []) + ([f"init={init}"] if init else [])
    p = _load(config.PretrainParams, params, overrides, iteration)
    stage = load_stage("pretrain")

    # with nproc_per_node above 1 the stage runs this command line again, once per GPU
    stage.run(p, out=out, shards=shards, labels=labels, pitch=pitch, speakers=speakers, command=sys.argv[1:])


@app.command(epilog=_epilog("evaluate"))
def evaluate(
    upstream: str = typer.Option(..., help="a checkpoint folder, `mfcc`, `random:<checkpoint folder>` (a randomly "
                                           "initialised model of that checkpoint's size), or `hf:<folder>` (a "
                                           "transformers HuBERT, wav2vec 2.0, WavLM or data2vec-audio model folder; "
                                           "needs the hf extra)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: metrics, layer weights, plots per task"),
    shards: Path = typer.Option(Path("data/shards"), help="shard folder with labelled train/valid/test splits"),
    pitch: Optional[Path] = typer.Option(None, help="pitch feature folder (computed on the fly if omitted)"),
    task: Optional[list[str]] = typer.Option(None, "--task", help="run only these tasks (repeatable)"),
    name: Optional[str] = typer.Option(None, help="upstream name shown in the report"),
    cache: Path = typer.Option(Path(".cache/hidden"), help="hidden-state cache folder (new, empty or an earlier "
                                                           "cache; never inside an input)"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Fit layer weights and task heads on a frozen upstream and score the downstream tasks."""
    overrides = list(set_ or []) + ([f"tasks={','.join(task)}"] if task else [])
    p = _load(config.EvaluateParams, params, overrides)
    stage = load_stage("evaluate")

    stage.run(p, upstream=upstream, out=out, shards=shards, pitch=pitch, name=name, cache=cache, overwrite=overwrite)


@app.command(epilog=_epilog("report"))
def report(
    results: list[Path] = typer.Argument(..., help="evaluation output folders (one per upstream, or per "
                                                   "upstream and task)"),
    out: Path = typer.Option(Path("reports"), "--out", "-o", help="output folder: report.md and its figures"),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Write one markdown table across upstreams and tasks, with the layer-weight plots."""
    p = _load(config.ReportParams, params, set_)
    stage = load_stage("report")

    stage.run(p, results=results, out=out, overwrite=overwrite)


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="a run folder or checkpoint folder of ours"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: model.safetensors + config.json"),
    format_: Optional[ExportFormat] = typer.Option(
        None, "--format", help="ours (default: a checkpoint folder), official (the release's PyTorch state-dict "
                               "layout, model.pt) or transformers (a HubertModel folder that transformers loads "
                               "without custom code; HuBERT models only, needs the hf extra)"),
    official: bool = typer.Option(False, help="the same as --format official"),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Export the encoder weights (no training heads) of a checkpoint."""
    stage = load_stage("export")

    stage.export(checkpoint=checkpoint, out=out, official=official, overwrite=overwrite,
                 layout=format_.value if format_ else None)


@app.command("import-official")
def import_official(
    state_dict: Path = typer.Argument(..., help="the official release's weights: the .ckpt its "
                                                "migrating/chkp_conversion.py writes from the MindSpore "
                                                "checkpoint, or a state dict of its PyTorch model (bare or "
                                                "under a 'model' entry)"),
    out: Path = typer.Option(..., "--out", "-o", help="output checkpoint folder of ours"),
    size: ReleaseSize = typer.Option(ReleaseSize.base, help="model size of the release"),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Import released ProgRE weights into a checkpoint folder usable by every stage.

    Training heads (final_proj, label_embs_concat, spk_linear) are dropped, MindSpore's unit axes
    removed. Every config value the tensors reveal is read from them (branches, CNN normalisation,
    channels and kernels, width, layers, FFN, position conv, branch sizes, the LayerNorm after the
    speaker subtraction: spk_norm_layer or sub_spk_norm, Large); the rest (heads, LayerNorm placement,
    waveform normalisation, conv strides, speaker layer, dropouts) is the size's preset, logged and
    written to config.json as "assumed".
    """
    stage = load_stage("export")

    stage.import_official(state_dict=state_dict, out=out, size=size.value, overwrite=overwrite)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2. So do the errors
    of the file system and of reading files that no reader turned into a UserError (`environment_error`)."""
    try:
        app()  # standalone mode: usage errors are printed by Typer and exit with status 2
    except UserError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: rerun the same command to resume")
        sys.exit(130)
    except Exception as exc:
        message = environment_error(exc)
        if message is None:
            raise
        logger.debug("the error above came from here", exc_info=exc)  # --verbose shows where
        _fail(message)


def _fail(message: str) -> None:
    if not hand_to_launcher(message):  # a rank that `progre pretrain` started: its launcher says it
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def environment_error(exc: BaseException) -> str | None:
    """One line for an error of the file system (an OSError: it names its file) or of reading a file
    (pyarrow's ArrowInvalid, a UnicodeDecodeError); None for anything else, which is a bug."""
    if isinstance(exc, OSError):
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{files}: {exc.strerror or exc}" if files else f"{exc.strerror or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({describe_error(exc)}); rerun with --verbose to see which"
    if type(exc).__name__ == "ArrowInvalid":
        return f"a table cannot be read ({describe_error(exc)}); rerun with --verbose to see which"
    return None


if __name__ == "__main__":
    main()
