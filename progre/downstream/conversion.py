"""VC: any-to-one voice conversion through WORLD (SUPERB's VC decodes mel spectrograms with a pretrained
neural vocoder, which this project cannot download).

The head maps the weighted hidden states of an utterance to the target speaker's WORLD spectral
features (coded spectral envelope and band aperiodicity, `progre.dsp.world`, 10 ms frames: two
per model frame), standardised per dimension over the target's training frames, with an L1 loss; it
is trained on the target speaker's own training utterances and chosen on their valid utterances.
Conversion runs another speaker's test utterance through it, moves the source's log F0 to the
target's mean and variance, and synthesises with WORLD. The speakers converted are every other
speaker, or, when the corpus has a ``vc_role`` column (VCC2020: "source" and "target"), the source
speakers alone, as s3prl's any-to-one recipe converts VCC2020's four source speakers (the target
speaker's own utterances are used as without the column).

Scores on test (the converted speakers' test utterances): mel-cepstral distortion (DTW-aligned, c1-c24,
alpha 0.42) against the target speaker's rendering of the same text, the fraction of conversions that
the speaker judge assigns to the target, and the character error rate of the ASR judge
(`progre.downstream.judges`: MFCC heads trained once on the real recordings, independent of the
upstream). The source speech resynthesised by WORLD without conversion is the reference row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn

from ..data.corpus import SPLITS
from ..dsp.world import (ENVELOPE_DIM, WorldFeatures, analyse, convert_f0, log_f0_stats, synthesise,
                              world_num_frames)
from ..fingerprint import code_fingerprint
from ..frames import SAMPLE_RATE
from ..io import cached_object
from ..log import logger
from .error_rates import char_error_rate
from .head_data import Examples
from .heads import BiLSTMHead
from .judges import JUDGE_CODE
from .recipes import Recipe
from .rows import AUDIO_COLUMNS, CorpusAudio
from .speech_quality import mcd_of_cepstra, mel_cepstrum
from .tasks import Prepared, Task, TaskSkipped
from .transcripts import normalize_transcript

APERIODICITY_DIM = 1
"""WORLD's coded band aperiodicity has one band at 16 kHz."""
FEATURES = ENVELOPE_DIM + APERIODICITY_DIM
EXAMPLES = 2


@dataclass
class Source:
    """A test utterance to convert, and the target speaker's rendering of its text (if the corpus has one)."""

    key: str
    speaker: str
    text: str
    wav: np.ndarray
    f0: np.ndarray
    reference: Optional[np.ndarray]


class FeatureHead(nn.Module):
    """Weighted features (B, T, D) -> BiLSTM -> linear: WORLD features (B, 2 T, 41), two 10 ms frames per
    20 ms model frame."""

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = BiLSTMHead(dim, hidden, layers, 2 * FEATURES, dropout=dropout)

    def forward(self, x: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        out, lengths = self.lstm(x, lengths)
        batch, frames, _ = out.shape
        return out.reshape(batch, 2 * frames, FEATURES), None if lengths is None else 2 * lengths


def world_frame_index(num_samples: int, num_predicted: int) -> Tensor:
    """For each 10 ms WORLD frame t of the audio, the predicted frame that stands for it: t - 1, clipped.
    (Predicted frames 2i and 2i + 1 come from model frame i, whose window is centred 12.5 ms after
    its start: WORLD frames 2i + 1 and 2i + 2 are nearest to it.)"""
    return (torch.arange(world_num_frames(num_samples)) - 1).clamp(0, num_predicted - 1)


class VoiceConversion(Task):
    name, title = "vc", "VC"
    metric = "mcd"
    selection_metric = "l1"
    higher_is_better = False
    columns = ("speaker", "text", "noise", "vc_role", *AUDIO_COLUMNS)
    pooled = False
    recipe_name = "vc"
    writes_examples = True

    def __init__(self, target: Optional[str], judges: Callable[[], Any], seed: int = 0):
        """target: the target speaker (None: the first speaker, sorted, with clean training and valid utterances,
        of the "target" speakers when the corpus has a ``vc_role`` column); judges: gives the `Judges`
        (trained on first use), those of `seed`."""
        self.target, self.judges_of, self.seed = target, judges, seed
        self.audio: Optional[CorpusAudio] = None
        """The corpus's audio, given to `prepare`; its cache folder keeps the WORLD analyses and the
        reference row, the same for every upstream (no folder: computed every time)."""
        self.stats: Optional[tuple[Tensor, Tensor]] = None

    def before_fitting(self) -> None:
        self.judges_of()  # trained (or read from the cache) once, not in every worker that scores a fit

    def _wav(self, row: dict[str, Any]) -> np.ndarray:
        assert self.audio is not None, "VC reads audio only after prepare"
        return self.audio.read(row)

    def prepare(self, rows: dict[str, list[dict[str, Any]]], audio: Optional[CorpusAudio] = None) -> Prepared:
        if audio is None:
            raise ValueError("VC reads the utterances' audio: prepare needs a CorpusAudio")
        self.audio = audio
        notes = []
        clean = {s: [r for r in rows[s] if r.get("speaker") and not r.get("noise")] for s in SPLITS}
        speakers = sorted({r["speaker"] for s in SPLITS for r in clean[s]})
        roles = {r["speaker"]: r["vc_role"] for s in SPLITS for r in rows[s] if r.get("speaker") and r.get("vc_role")}
        usable = sorted({r["speaker"] for r in clean["train"]} & {r["speaker"] for r in clean["valid"]})
        if not usable:
            raise TaskSkipped("no speaker has clean training and valid utterances to learn a target voice from")
        targets = [s for s in usable if roles.get(s) == "target"] if roles else usable
        target = self.target or (targets or usable)[0]
        if target not in usable:
            raise TaskSkipped(f"the target speaker {target} has no clean training or no clean valid utterances "
                              f"(speakers with both: {', '.join(usable[:10])})")
        if len(speakers) < 2:
            raise TaskSkipped(f"voice conversion needs speakers besides the target: the corpus has one ({target})")
        self.target = target
        others = sorted({r["speaker"] for r in clean["test"]} - {target})
        if roles:  # s3prl converts the source speakers only
            left_out = [s for s in others if roles.get(s) != "source"]
            others = [s for s in others if roles.get(s) == "source"]
            if left_out:
                notes.append(f"VC: only the speakers with vc_role source are converted; the test utterances of "
                             f"{', '.join(left_out)} are not")
            if not others:
                raise TaskSkipped("the corpus names no speaker with vc_role source and clean test utterances "
                                  "to convert")
        world = self._analyses([r for s in ("train", "valid") for r in clean[s] if r["speaker"] == target] +
                               [r for r in rows["train"] if r.get("speaker") in others] +
                               [r for r in clean["test"] if r["speaker"] in others])
        analysed = {s: [(r, world[r["key"]]) for r in clean[s] if r["speaker"] == target] for s in ("train", "valid")}
        frames = np.concatenate([_vector(f) for _, f in analysed["train"]])
        self.stats = (torch.from_numpy(frames.mean(0)).float(), torch.from_numpy(frames.std(0) + 1e-5).float())
        self.target_f0 = log_f0_stats([f.f0 for _, f in analysed["train"]])
        splits = {s: Examples([r["key"] for r, _ in analysed[s]], [self._target(f) for _, f in analysed[s]],
                              [self._target(f) for _, f in analysed[s]]) for s in ("train", "valid")}
        splits["test"], test_notes = self._sources(rows, clean, target, others, world)
        notes += test_notes
        converted = len({s.speaker for s in splits["test"].references}) if roles else len(speakers) - 1
        notes.append(f"VC: target speaker {target}, {len(splits['train'])} training and {len(splits['valid'])} "
                     f"valid utterances; {len(splits['test'])} test utterances of {converted} other speakers "
                     f"converted")
        return Prepared(splits, [target], notes)

    def _target(self, features: WorldFeatures) -> Tensor:
        mean, std = self.stats  # type: ignore[misc]
        return (torch.from_numpy(_vector(features)).float() - mean) / std

    def _analyses(self, rows: list[dict[str, Any]]) -> dict[str, WorldFeatures]:
        """key -> WORLD analysis of the utterances of `rows` (cached per corpus and WORLD code: every
        upstream's VC reads the same ones)."""
        def compute() -> dict[str, WorldFeatures]:
            return {r["key"]: analyse(self._wav(r)) for r in rows}

        path = self._cache_path("world", ["progre.dsp.world"], sorted(r["key"] for r in rows))
        return compute() if path is None else cached_object(path, compute)[0]

    def _cache_path(self, kind: str, code: list[str], extra: Any) -> Optional[Path]:
        if self.audio is None or self.audio.cache is None:
            return None
        key = hashlib.sha256(json.dumps({"corpus": self.audio.fingerprint, "code": code_fingerprint(code),
                                         "extra": extra}, sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.audio.cache) / f"vc-{kind}-{key}.pt"

    def _sources(self, rows, clean, target: str, others: list[str],
                 world: dict[str, WorldFeatures]) -> tuple[Examples, list[str]]:
        # the target's rendering of each test text (with its synthesis noise, if it has some: the one there is)
        references = {normalize_transcript(r.get("text") or ""): r for r in rows["test"] if r.get("speaker") == target}
        f0_stats = {}
        for speaker in others:
            f0s = [world[r["key"]].f0 for r in rows["train"] if r.get("speaker") == speaker]
            if f0s:
                f0_stats[speaker] = log_f0_stats(f0s)
        sources = []
        for r in clean["test"]:
            if r["speaker"] == target or r["speaker"] not in f0_stats:
                continue
            wav = self._wav(r)
            text = normalize_transcript(r.get("text") or "")
            match = references.get(text) if text else None
            f0 = convert_f0(world[r["key"]].f0, f0_stats[r["speaker"]], self.target_f0)
            sources.append(Source(r["key"], r["speaker"], text, wav, f0, None if match is None else self._wav(match)))
        notes = []
        unmatched = sum(s.reference is None for s in sources)
        if unmatched:
            notes.append(f"VC: {unmatched} of {len(sources)} test utterances have no rendering of their text by "
                         f"{target}: no MCD for them")
        if not sources:
            raise TaskSkipped("no test utterance of another speaker with training utterances to convert")
        return Examples([s.key for s in sources], [None] * len(sources), sources), notes

    def num_outputs(self, vocabulary: list[str]) -> int:
        return FEATURES

    def head(self, dim: int, outputs: int, frame_rate: int, recipe: Recipe) -> nn.Module:
        return FeatureHead(dim, recipe.hidden, recipe.layers, recipe.dropout)

    def loss(self, logits: Tensor, lengths: Optional[Tensor], targets: list[Any]) -> Tensor:
        pieces = [(logits[b, world_frame_index(_samples(t), int(lengths[b]))], t) for b, t in enumerate(targets)]
        predicted = torch.cat([p for p, _ in pieces])
        return torch.nn.functional.l1_loss(predicted, torch.cat([t for _, t in pieces]).to(logits.device))

    def predict(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[Any]:
        return [logits[b, :int(lengths[b])].detach().float().cpu() for b in range(len(logits))]

    def score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        """Valid: the L1 distance of the target's own features (standardised) to their prediction."""
        errors = [float((p[world_frame_index(_samples(r), len(p))] - r).abs().mean())
                  for r, p in zip(references, predictions)]
        return {"l1": float(np.mean(errors))}

    def convert(self, source: Source, predicted: Tensor) -> np.ndarray:
        mean, std = self.stats  # type: ignore[misc]
        frames = predicted[world_frame_index(len(source.wav), len(predicted))] * std + mean
        features = WorldFeatures(source.f0, frames[:, :ENVELOPE_DIM].numpy().astype(np.float64),
                                 frames[:, ENVELOPE_DIM:].numpy().astype(np.float64))
        return synthesise(features, len(source.wav))

    def final_score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        return self._judge(references, [self.convert(s, p) for s, p in zip(references, predictions)])

    def reference_scores(self, examples: Examples) -> dict[str, float]:
        """The source speech through WORLD analysis and synthesis, not converted (the same for every
        upstream: cached with the judges' seed)."""
        def compute() -> dict[str, float]:
            return self._judge(examples.references,
                               [synthesise(analyse(s.wav), len(s.wav)) for s in examples.references])
        path = self._cache_path("reference", [*JUDGE_CODE, "progre.dsp.world", "progre.downstream.conversion",
                                              "progre.downstream.speech_quality"],
                                {"target": self.target, "seed": self.seed, "sources": examples.keys})
        if path is None:
            return compute()
        scores, cached = cached_object(path, compute)
        if cached:
            logger.info("VC reference row (WORLD resynthesis of the sources): cached in %s", path)
        return scores

    def _judge(self, sources: list[Source], wavs: list[np.ndarray]) -> dict[str, float]:
        judges = self.judges_of()
        reference_cepstra = {}
        distortions = []
        for source, wav in zip(sources, wavs):
            if source.reference is None:
                continue
            if source.text not in reference_cepstra:
                reference_cepstra[source.text] = mel_cepstrum(source.reference)
            distortions.append(mcd_of_cepstra(reference_cepstra[source.text], mel_cepstrum(wav)))
        heard = judges.speaker_of(wavs)
        scores = {"mcd": float(np.nanmean(distortions)) if distortions else float("nan"),
                  "sim": float(np.mean([h == self.target for h in heard]))}
        texts = [(s.text, w) for s, w in zip(sources, wavs) if s.text]
        if texts:
            scores["cer"] = char_error_rate([t for t, _ in texts], judges.transcribe([w for _, w in texts]))
        return scores

    def write_examples(self, predict: Callable[[list[str]], list[Any]], examples: Examples, folder: Path) -> list[dict]:
        """The first test utterances: source, conversion, and the target's rendering of the text (FLAC)."""
        folder.mkdir(parents=True, exist_ok=True)
        chosen = [s for s in examples.references if s.reference is not None][:EXAMPLES]
        written = []
        for source, predicted in zip(chosen, predict([s.key for s in chosen])):
            files = {"input": source.wav, "output": self.convert(source, predicted), "reference": source.reference}
            for role, wav in files.items():
                sf.write(folder / f"{source.key}-{role}.flac", np.clip(wav, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            written.append({"key": source.key, **{role: f"{source.key}-{role}.flac" for role in files}})
        return written


def _vector(features: WorldFeatures) -> np.ndarray:
    """(T, 41): coded envelope and band aperiodicity side by side."""
    return np.concatenate([features.envelope, features.aperiodicity], axis=1)


def _samples(target: Tensor) -> int:
    """The audio length that gives a target of this many WORLD frames (frames = samples // 160 + 1)."""
    return (len(target) - 1) * 160
