"""Typed stage parameters, loaded from params.yaml with command-line overrides.

Each stage has a dataclass whose fields are its parameters (type, default and help text in
one place). `params.yaml` holds one section per stage; a stage that runs in several
iterations reads its section and then an overlay section `<section>_iter<N>` with what differs,
so DVC can track each iteration's parameters separately.

Unknown keys, wrong types and out-of-range values end with a one-line `UserError` that names
the key, e.g. ``params.yaml: pretrain.lr: expected a number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from .errors import UserError

P = TypeVar("P", bound="Params")
S = TypeVar("S")


def param(default: Any, help: str, *, choices: tuple | None = None,
          min: float | None = None, max: float | None = None, above: float | None = None) -> Any:
    """A dataclass field with its help text and its allowed values (`min`/`max` inclusive, `above`
    exclusive). Numbers must be finite."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "above": above}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class Params:
    """Base of every stage's parameter dataclass."""

    SECTION: ClassVar[str] = ""

    def check(self) -> None:
        """Cross-field validation; raise UserError. Field-level checks happen on load."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to(self, settings: type[S], **extra: Any) -> S:
        """The library's own settings dataclass, filled from this section's parameters of the same names
        (plus `extra`); its fields that this section lacks keep their defaults."""
        names = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
        values = {k: v for k, v in self.to_dict().items() if k in names}
        return settings(**(values | extra))

    @classmethod
    def describe(cls) -> str:
        """One line per parameter: name, type, default and help (for --help texts)."""
        lines = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            choices = f.metadata.get("choices")
            extra = f" (one of {', '.join(map(str, choices))})" if choices else ""
            lines.append(f"{f.name}: {_type_name(hints[f.name])} = {default!r}. "
                         f"{f.metadata.get('help', '')}{extra}")
        return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if tp in (int, float, str, bool):
        return tp.__name__
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` to the annotated type `tp` or raise a UserError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UserError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported parameter type {tp} at {where}")


def _check_field(f: dataclasses.Field, value: Any, where: str) -> None:
    if value is None:
        return
    choices = f.metadata.get("choices")
    values = value if isinstance(value, list) else [value]
    for v in values:
        if choices and v not in choices:
            raise UserError(f"{where}: {v!r} is not one of {', '.join(map(str, choices))}")
        lo, hi, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
        if lo is not None and v < lo:
            raise UserError(f"{where}: {v!r} is below the minimum {lo}")
        if above is not None and v <= above:
            raise UserError(f"{where}: {v!r} must be above {above}")
        if hi is not None and v > hi:
            raise UserError(f"{where}: {v!r} is above the maximum {hi}")


def build(cls: type[P], values: dict[str, Any], where: str) -> P:
    """Make `cls` from a plain dict, validating every key, type and range.

    `where` prefixes error messages, e.g. "params.yaml: pretrain." or "--set ".
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{where}{key}: unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}{key}")
        _check_field(fields[key], kwargs[key], f"{where}{key}")
    params = cls(**kwargs)
    params.check()
    return params


def read_params_file(path: str | Path | None) -> dict[str, Any]:
    """The whole params.yaml as a dict ({} when path is None)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["lr=1e-3", "tasks=[sid,pr]"]` -> {"lr": "1e-3", "tasks": [...]} (typed later)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        value = yaml.safe_load(raw) if raw.strip() else ""
        out[key.strip()] = value
    return out


def load_params(cls: type[P], params_file: str | Path | None = None, iteration: int | None = None,
                overrides: list[str] | None = None) -> P:
    """Defaults <- params.yaml[SECTION] <- params.yaml[SECTION_iterN] <- --set overrides."""
    data = read_params_file(params_file)
    name = Path(params_file).name if params_file else "defaults"
    merged: dict[str, Any] = {}
    sections = [cls.SECTION] + ([f"{cls.SECTION}_iter{iteration}"] if iteration is not None else [])
    for section in sections:
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise UserError(f"{name}: section {section} must be a mapping")
        build(cls, values, f"{name}: {section}.")  # validates the section on its own
        merged.update(values)
    cli_values = parse_overrides(overrides or [])
    build(cls, cli_values, "--set ")
    merged.update(cli_values)
    return build(cls, merged, f"{name}: {cls.SECTION}.")


# --------------------------------------------------------------------------- stage sections


@dataclass
class SynthParams(Params):
    SECTION: ClassVar[str] = "synth"
    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        # speakers x (train + valid + test) utterances; tiny stays under a minute of audio
        "tiny": {"n_speakers": 4, "train_per_speaker": 2, "valid_per_speaker": 1, "test_per_speaker": 1},
        "demo": {"n_speakers": 24, "train_per_speaker": 16, "valid_per_speaker": 6, "test_per_speaker": 6},
    }

    preset: str = param("demo", "corpus size preset; explicit counts below override it",
                        choices=("tiny", "demo"))
    n_speakers: int | None = param(None, "number of synthetic speakers (null: from preset)", min=1, max=200)
    train_per_speaker: int | None = param(None, "training utterances per speaker (null: from preset)", min=1)
    valid_per_speaker: int | None = param(None, "validation utterances per speaker (null: from preset)", min=1)
    test_per_speaker: int | None = param(None, "test utterances per speaker (null: from preset)", min=1)
    styles: list[str] = param(["neutral", "happy", "sad", "angry"], "speaking styles (emotion stand-in)",
                              choices=("neutral", "happy", "sad", "angry", "calm", "fearful"))
    snr_db_min: float = param(15.0, "lowest SNR of the added noise in dB")
    snr_db_max: float = param(30.0, "highest SNR of the added noise in dB")
    noise_fraction: float = param(0.5, "fraction of utterances that get additive noise", min=0.0, max=1.0)
    voice_quality: bool = param(True, "resynthesise every utterance with WORLD, applying its style's voice "
                                "quality (formant shift, spectral tilt, breathiness); false: eSpeak prosody only")
    parallel_test: bool = param(True, "every speaker reads the same test sentences (voice conversion is scored "
                                      "against the target speaker's rendering); false: one sentence per utterance")
    workers: int = param(2, "worker processes (the output does not depend on it)", min=1)
    seed: int = param(1234, "random seed: same seed, same corpus")

    def resolved(self) -> dict[str, int]:
        """The corpus counts after applying the preset."""
        counts = dict(self.PRESETS[self.preset])
        for key in counts:
            if getattr(self, key) is not None:
                counts[key] = getattr(self, key)
        return counts

    def check(self) -> None:
        if self.snr_db_min > self.snr_db_max:
            raise UserError(f"synth.snr_db_min ({self.snr_db_min}) is above synth.snr_db_max ({self.snr_db_max})")
        if not self.styles:
            raise UserError("synth.styles: give at least one style")


@dataclass
class ShardParams(Params):
    SECTION: ClassVar[str] = "shard"

    input_format: str = param("auto", "corpus layout; auto detects it (aishell: AISHELL-1's wav/ and transcript/)",
                              choices=("auto", "librispeech", "aishell", "folder", "manifest"))
    default_split: str = param("train", "split for items whose corpus gives none",
                               choices=("train", "valid", "test"))
    max_shard_mb: float = param(64.0, "upper bound of one tar shard in MB", min=0.01)
    max_shard_items: int = param(2000, "upper bound of utterances in one tar shard", min=1)
    flac_subtype: str = param("PCM_16", "sample format in the shards (FLAC is lossless at that depth)",
                              choices=("PCM_16", "PCM_24"))
    min_seconds: float = param(0.025, "shorter audio is rejected (one model frame is 400 samples = 25 ms)",
                               min=0.025)
    max_seconds: float | None = param(None, "longer audio is rejected (null: no limit)", min=0.025)
    silence_peak: float = param(1e-4, "audio whose absolute peak is below this is rejected as silent", min=0.0)
    workers: int = param(2, "decode/encode worker processes", min=1)


@dataclass
class FeaturesParams(Params):
    SECTION: ClassVar[str] = "features"

    sample_fraction: float = param(0.1, "fraction of the sample_split utterances whose features are "
                                        "stored for k-means fitting (HuBERT: 0.1)", min=0.0, max=1.0)
    sample_split: str = param("train", "split the k-means sample is drawn from", choices=("train", "valid", "test"))
    seed: int = param(1234, "random seed of the utterance sample")
    batch_seconds: float = param(120.0, "audio seconds per batch for MFCC and hidden features (and per batch handed to "
                                          "the pitch workers)", min=1.0)
    chunk_seconds: float = param(30.0, "longer utterances are processed in chunks of this length (hidden "
                                       "features)", min=1.0)
    layer: int = param(6, "transformer layer (1-based) for hidden features", min=1)
    hidden_dtype: str = param("float16", "storage type of hidden features", choices=("float16", "float32"))
    precision: str = param("auto", "hidden features: auto is bf16 autocast on CUDA, fp32 on CPU",
                           choices=("auto", "bf16", "fp32"))
    workers: int = param(2, "CPU worker processes for pitch", min=1)
    device: str = param("auto", "auto picks CUDA when present", choices=("auto", "cpu", "cuda"))


@dataclass
class ClusterParams(Params):
    SECTION: ClassVar[str] = "cluster"

    n_clusters: int = param(100, "k of k-means (HuBERT: 100 on MFCC, 500 on layer features)", min=2, max=65535)
    niter: int = param(100, "k-means iterations", min=1)
    nredo: int = param(1, "k-means restarts; the best objective wins", min=1)
    init: str = param("kmeans++", "centroid initialisation", choices=("kmeans++", "random"))
    max_points_per_centroid: int | None = param(None, "FAISS subsamples to this many points per centroid "
                                                      "(null: use every sampled point)", min=1)
    seed: int = param(1234, "random seed of the initialisation")
    batch_seconds: float = param(120.0, "audio seconds per batch when labelling (features of unsampled "
                                        "utterances are computed on the fly)", min=1.0)
    phone_splits: list[str] = param(["valid", "test"], "splits whose frame phone alignments score the labels "
                                                        "(phone purity, cluster purity, PNMI)",
                                    choices=("train", "valid", "test"))
    device: str = param("auto", "auto: CUDA when torch sees it, for the features of unsampled utterances, and "
                                "k-means on the GPU when FAISS sees one too (faiss-gpu); cpu: both on the CPU; "
                                "cuda: both on the GPU", choices=("auto", "cpu", "cuda"))


@dataclass
class SpeakersParams(Params):
    SECTION: ClassVar[str] = "speakers"

    n_speakers: int = param(24, "number of pseudo speakers", min=2)
    embedding: str = param("mfcc_stats", "utterance embedding: mean and std of the static MFCC "
                                         "cepstra, or mean of a layer's hidden states",
                           choices=("mfcc_stats", "layer_mean"))
    layer: int = param(4, "layer for layer_mean embeddings", min=1)
    niter: int = param(50, "k-means iterations", min=1)
    seed: int = param(1234, "random seed")
    device: str = param("auto", "where the utterance embeddings are computed (k-means runs on the CPU); auto "
                                "picks CUDA when present", choices=("auto", "cpu", "cuda"))


@dataclass
class PretrainParams(Params):
    SECTION: ClassVar[str] = "pretrain"

    # model
    model: str = param("progre", "progre, or the HuBERT baseline (both branches off)", choices=("progre", "hubert"))
    size: str = param("tiny", "model size preset", choices=("tiny", "base", "large"))
    pitch_branch: bool | None = param(None, "ablation switch for the pitch branch (null: on for progre)")
    speaker_branch: bool | None = param(None, "ablation switch for the speaker branch (null: on for progre)")
    speaker_layer: int | None = param(None, "the speaker branch reads the output of this transformer layer "
                                            "(null: the size preset's, 4 for base, 2 for tiny)", min=1)
    speaker_loss_weight: float = param(1.0, "weight of the speaker-classification loss", min=0.0)
    speaker_grad_through: bool = param(False, "let gradient flow through the speaker subtraction "
                                              "(the release detaches it)")
    speaker_labels: str = param("corpus", "corpus speaker ids, or a pseudo-speaker table (--speakers)",
                                choices=("corpus", "pseudo"))
    # masked prediction
    mask_prob: float = param(0.8, "fraction of frames that start a masked span (HuBERT: 0.8)", min=0.0, max=1.0)
    mask_length: int = param(10, "masked span length in frames", min=1)
    min_masks: int = param(2, "at least this many spans per utterance", min=0)
    logit_temp: float = param(0.1, "cosine-similarity logits are divided by this", min=1e-4)
    final_dim: int = param(256, "dimension of the prediction projection and label embeddings", min=1)
    feature_pen_weight: float = param(10.0, "weight of the mean square of the CNN features", min=0.0)
    unmasked_loss_weight: float = param(0.0, "weight of the prediction loss on unmasked frames (fairseq's "
                                             "pred_nomask_weight; HuBERT: 0)", min=0.0)
    conv_grad_scale: float = param(0.1, "gradient scale of the CNN feature encoder", min=0.0)
    # optimisation
    lr: float = param(5e-4, "peak learning rate", above=0.0)
    betas: list[float] = param([0.9, 0.98], "Adam betas")
    eps: float = param(1e-6, "Adam epsilon", above=0.0)
    weight_decay: float = param(0.01, "weight decay (AdamW-style, decoupled)", min=0.0)
    warmup_steps: int = param(32000, "linear warm-up steps", min=0)
    max_steps: int = param(400000, "optimizer updates", min=1)
    lr_end: float = param(0.0, "learning rate at the last step of the polynomial decay", min=0.0)
    decay_power: float = param(1.0, "power of the polynomial decay (1: linear)", min=0.0)
    clip_norm: float = param(10.0, "gradient-norm clip (0: off)", min=0.0)
    grad_accum: int = param(1, "gradient-accumulation steps per update", min=1)
    precision: str = param("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=("auto", "bf16", "fp32"))
    max_bad_steps: int = param(20, "stop after this many non-finite steps in a row", min=1)
    # data
    batch_seconds: float = param(87.5, "audio seconds per batch per process (HuBERT base: ~87.5)", min=0.1)
    crop_min_seconds: float = param(2.0, "shortest crop; shorter utterances are skipped (and counted)",
                                    min=0.03)
    crop_max_seconds: float = param(15.6, "longest crop", min=0.03)
    bucket_size: int = param(64, "utterances pooled for length bucketing", min=1)
    num_workers: int = param(1, "data-loader worker processes", min=0)
    seed: int = param(1234, "random seed of init, masking, crops and order")
    # speed (free to change between a kill and the resume)
    fused_optimizer: bool | None = param(None, "AdamW's fused kernel (null: on CUDA only; on the CPU it "
                                               "rounds differently from the for-loop AdamW the demo uses)")
    compile: bool = param(False, "torch.compile the Transformer layers and CNN blocks (GPU; measured by "
                                 "make gpu-check)")
    # bookkeeping
    log_every: int = param(10, "log metrics every N updates", min=1)
    checkpoint_every: int = param(500, "save a resumable checkpoint every N updates", min=1)
    keep_last: int = param(2, "resumable checkpoints kept", min=1)
    valid_every: int = param(500, "validate every N updates", min=1)
    valid_batches: int = param(20, "batches per validation", min=1)

    def check(self) -> None:
        if self.crop_min_seconds > self.crop_max_seconds:
            raise UserError(f"pretrain.crop_min_seconds ({self.crop_min_seconds}) is above "
                            f"pretrain.crop_max_seconds ({self.crop_max_seconds})")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise UserError(f"pretrain.betas: expected two numbers in [0, 1), got {self.betas}")


@dataclass
class EvaluateParams(Params):
    SECTION: ClassVar[str] = "evaluate"

    TASK_NAMES: ClassVar[tuple[str, ...]] = ("sid", "pr", "asr", "er", "se", "vc", "lid")

    tasks: list[str] = param(["sid", "pr", "asr", "er", "se", "vc"], "downstream tasks: sid (speaker), pr "
                             "(phones), asr (transcripts, any script), er (style), se (speech enhancement), vc "
                             "(voice conversion to one target speaker), lid (language), or cls:COLUMN to classify "
                             "utterances by any categorical metadata column (e.g. [sid,lid,cls:accent]; outputs "
                             "in cls-COLUMN/)")
    protocol: str = param("demo", "heads, schedules and featurizer normalisation: demo (small heads for the built-in "
                                  "corpus on a CPU) or superb (s3prl's downstream settings, for Base-scale upstreams; "
                                  "see docs/DESIGN.md)", choices=("demo", "superb"))
    head_seeds: int = param(3, "every head is fitted with this many seeds (seed, seed+1, ...); the report gives "
                               "the mean and standard deviation of the test scores; the first seed also searches "
                               "the learning rate", min=1)
    lr: list[float] | None = param(None, "learning rates of heads and layer weights; each is tried and the "
                                         "one with the best valid score kept (null: the protocol's per task; demo: "
                                         "SID and ER [1e-2, 1e-3], PR [1e-1, 3e-2], ASR [1e-2]; superb: 1e-1 to "
                                         "1e-5)", above=0.0)
    batch_size: int | None = param(None, "utterances per batch (null: the protocol's; demo 16)", min=1)
    max_epochs: int | None = param(None, "train for this many epochs, validating after each (null: the protocol's; "
                                         "demo: SID and ER 100, PR 80, ASR 20; superb counts updates)", min=1)
    patience: int | None = param(None, "stop after this many validations without a better score (null: the "
                                       "protocol's; demo: SID and ER 10, PR 15, ASR 5; superb: none)", min=1)
    layer_norm: bool | None = param(None, "layer-normalise each hidden state before the weighted sum (null: the "
                                          "protocol's; off in both)")
    standardize: bool | None = param(None, "standardise each hidden state per dimension with the mean and std of "
                                           "its training frames, a fixed affine map so that the layer weights "
                                           "compare states, not their scales (null: the protocol's; demo on, "
                                           "superb off)")
    asr_hidden: int | None = param(None, "hidden units per direction of the ASR BiLSTM (null: the protocol's; demo "
                                         "96, superb 1024)", min=1)
    asr_layers: int | None = param(None, "BiLSTM layers of the ASR head (null: the protocol's; 2)", min=1)
    phonemize_voice: str = param("en-us", "eSpeak NG voice that phonemises transcripts for PR when the corpus "
                                          "has text but no phones, for utterances without a language; an "
                                          "utterance's language (ISO 639 code) picks its own voice")
    batch_seconds: float = param(60.0, "audio seconds per batch when computing hidden states", min=1.0)
    hidden_dtype: str = param("float16", "storage type of cached hidden states", choices=("float16", "float32"))
    max_ram_gb: float = param(8.0, "hidden states of the evaluated utterances are held in memory as float32 up to "
                                   "this size (read once for every task, epoch and seed), else read from the "
                                   "cache per batch", above=0.0)
    se_noise: str = param("demo", "SE mixes noise into clean utterances: demo (white, pink or brown noise) or a "
                                  "folder of noise recordings (wav/flac/ogg)")
    se_snr_db: list[float] = param([2.5, 17.5], "SE: the SNR of each mixture is drawn from this range in dB "
                                                "(VoiceBank-DEMAND's test SNRs: 2.5 to 17.5)")
    se_noisy: str | None = param(None, "SE: a shard folder of noisy recordings with the same keys as --shards "
                                       "(VoiceBank-DEMAND's noisy and clean folders sharded alike) instead of mixing")
    vc_target: str | None = param(None, "VC: the target speaker (null: the first speaker, sorted, with clean "
                                        "training and valid utterances); every other speaker's test utterances are "
                                        "converted")
    seed: int = param(1234, "random seed of head initialisation, batch order, noise mixtures and random-init "
                            "upstreams")
    workers: int = param(2, "head fits run side by side in this many processes, one thread each (1: one after "
                            "another in this process; on CUDA always 1); results do not depend on it", min=1)
    device: str = param("auto", "auto picks CUDA when present", choices=("auto", "cpu", "cuda"))

    def check(self) -> None:
        if len(self.se_snr_db) != 2 or self.se_snr_db[0] > self.se_snr_db[1]:
            raise UserError(f"evaluate.se_snr_db: expected [low, high] in dB, got {self.se_snr_db}")
        if not self.tasks:
            raise UserError("evaluate.tasks: give at least one task (sid, pr, asr, er, se, vc, lid, cls:COLUMN)")
        for task in self.tasks:
            if task not in self.TASK_NAMES and not re.fullmatch(r"cls:[A-Za-z0-9_][A-Za-z0-9_-]*", task):
                raise UserError(f"evaluate.tasks: {task!r} is not a task (sid, pr, asr, er, se, vc, lid, or cls:COLUMN "
                                f"with COLUMN a metadata column of letters, digits, _ and -)")


@dataclass
class ReportParams(Params):
    SECTION: ClassVar[str] = "report"

    title: str = param("ProgRE demo report", "heading of the report")
