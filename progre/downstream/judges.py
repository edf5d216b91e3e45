"""Judges of converted speech that do not depend on the upstream under test.

Voice conversion is scored for speaker similarity and intelligibility by two heads trained once on
MFCC of the corpus's real training recordings (the MFCC upstream's SID and ASR heads of the demo
protocol): a speaker classifier on utterance means, and a BiLSTM character CTC head. Every upstream's
conversions meet the same judges. They are cached beside the hidden states (keyed by the corpus, the
code and the seed), so the evaluations of several upstreams train them once; their own scores on the
real test recordings are recorded as their calibration.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.shards import Shards, Utterance
from ..fingerprint import code_fingerprint
from ..io import cached_object
from ..log import logger
from .featurizer import Featurizer
from .head_data import FrameSplit, PooledSplit, StateTable, state_statistics, utterance_means
from .head_fit import DownstreamModel, FitSettings, fit
from .recipes import DEMO
from .rows import split_rows
from .tasks import SpeechRecognition, UtteranceClassification
from .upstreams import MFCC_CODE, MfccExtractor, cached_hidden_states, parse_upstream

JUDGE_CODE = MFCC_CODE + ("progre.downstream.judges", "progre.downstream.tasks", "progre.downstream.transcripts",
                          "progre.downstream.head_fit", "progre.downstream.heads", "progre.downstream.recipes",
                          "progre.downstream.head_data", "progre.downstream.featurizer", "progre.downstream.ctc",
                          "progre.downstream.rows", "progre.downstream.error_rates")
"""The modules whose code trains the judges (their fingerprint is part of the judges' cache key)."""


@dataclass
class Judges:
    speakers: list[str]
    vocabulary: list[str]
    mean: Tensor
    std: Tensor
    speaker_model: DownstreamModel
    asr_model: DownstreamModel
    asr_task: SpeechRecognition
    scores: dict[str, Any] = field(default_factory=dict)
    """The judges' own test scores on the corpus's real recordings."""

    def _features(self, wavs: list[np.ndarray]) -> list[Tensor]:
        mfcc = MfccExtractor(torch.device("cpu"))
        utts = [Utterance(str(i), np.asarray(w, dtype=np.float32)) for i, w in enumerate(wavs)]
        return [(torch.from_numpy(np.ascontiguousarray(f)) - self.mean) / self.std for f in mfcc(utts)]

    @torch.no_grad()
    def speaker_of(self, wavs: list[np.ndarray]) -> list[str]:
        """The speaker the classifier hears in each waveform."""
        self.speaker_model.eval()
        means = torch.stack([f.mean(0) for f in self._features(wavs)])
        logits, _ = self.speaker_model(means, None)
        return [self.speakers[i] for i in logits.argmax(-1).tolist()]

    @torch.no_grad()
    def transcribe(self, wavs: list[np.ndarray]) -> list[str]:
        """The ASR judge's greedy transcript of each waveform (normalised text)."""
        self.asr_model.eval()
        frames = self._features(wavs)
        lengths = torch.tensor([len(f) for f in frames])
        batch = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
        logits, out_lengths = self.asr_model(batch, lengths)
        return self.asr_task.predict(logits, out_lengths, self.vocabulary)


def cached_judges(shards: Shards, cache: Path, seed: int, device: torch.device) -> Judges:
    """The judges of `shards`, trained once per corpus, code and seed (and then read from the cache)."""
    key = hashlib.sha256(json.dumps({"corpus": shards.fingerprint, "code": code_fingerprint(JUDGE_CODE),
                                     "seed": seed}, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) / f"judges-{key}.pt"
    judges, cached = cached_object(path, lambda: train_judges(shards, cache, seed, device), _state, _load)
    if cached:
        logger.info("voice-conversion judges: cached in %s", path)
    return judges


def train_judges(shards: Shards, cache: Path, seed: int, device: torch.device) -> Judges:
    logger.info("training the voice-conversion judges on MFCC of the real recordings")
    hidden = cached_hidden_states(parse_upstream("mfcc"), shards, cache, seed=seed, device=device)
    mean, std = state_statistics(hidden, shards.keys("train"), False)
    normalizer = Featurizer(hidden.num_states, hidden.dim, False, mean, std)
    table = StateTable(hidden, shards.keys(), normalizer.normalize)
    rows = split_rows(shards, ("speaker", "text"))  # as the evaluation builds its tasks' rows
    speaker_task = UtteranceClassification("sid", "speaker judge", "speaker", "speaker", "sid")
    speakers = speaker_task.prepare(rows)
    means = utterance_means(table, [k for ex in speakers.splits.values() for k in ex.keys])
    speaker_data = {s: PooledSplit(means, ex) for s, ex in speakers.splits.items()}
    speaker_model, speaker_scores = _fit(speaker_task, speakers.vocabulary, speaker_data, 39, seed, device)
    asr_task = SpeechRecognition()
    transcripts = asr_task.prepare(rows)
    asr_data = {s: FrameSplit(table, ex) for s, ex in transcripts.splits.items()}
    asr_model, asr_scores = _fit(asr_task, transcripts.vocabulary, asr_data, 39, seed, device)
    scores = {"speaker_accuracy": speaker_scores["acc"], "asr_cer": asr_scores["cer"]}
    logger.info("judges on the real test recordings: speaker accuracy %.3f, CER %.3f", scores["speaker_accuracy"],
                scores["asr_cer"])
    return Judges(speakers.vocabulary, transcripts.vocabulary, mean[0], std[0].clamp_min(1e-5), speaker_model,
                  asr_model, asr_task, scores)


def _fit(task, vocabulary: list[str], data: dict, dim: int, seed: int, device: torch.device):
    recipe = DEMO.recipe(task.recipe_name)
    per_epoch = -(-len(data["train"]) // recipe.batch_size)
    max_updates, eval_every = recipe.updates(per_epoch)
    torch.manual_seed(seed)
    model = DownstreamModel(Featurizer(1, dim), task.head(dim, task.num_outputs(vocabulary), 100, recipe))
    settings = FitSettings(recipe.lrs[0], recipe.batch_size, max_updates, eval_every, recipe.patience, seed)
    result = fit(task, model, data["train"], data["valid"], data["test"], vocabulary, settings, device,
                 label=f"{task.title} judge")
    return model.cpu().eval(), result.test


def _state(judges: Judges) -> dict[str, Any]:
    return {"speakers": judges.speakers, "vocabulary": judges.vocabulary, "mean": judges.mean, "std": judges.std,
            "speaker_model": judges.speaker_model.state_dict(), "asr_model": judges.asr_model.state_dict(),
            "words": judges.asr_task.words, "scores": judges.scores}


def _load(state: dict[str, Any]) -> Judges:
    speaker_task = UtteranceClassification("sid", "speaker judge", "speaker", "speaker", "sid")
    asr_task = SpeechRecognition()
    asr_task.words = state["words"]
    speaker_model = DownstreamModel(Featurizer(1, 39), speaker_task.head(39, len(state["speakers"]), 100,
                                                                         DEMO.recipe("sid")))
    asr_model = DownstreamModel(Featurizer(1, 39), asr_task.head(39, len(state["vocabulary"]) + 1, 100,
                                                                 DEMO.recipe("asr")))
    speaker_model.load_state_dict(state["speaker_model"])
    asr_model.load_state_dict(state["asr_model"])
    return Judges(state["speakers"], state["vocabulary"], state["mean"], state["std"], speaker_model.eval(),
                  asr_model.eval(), asr_task, state["scores"])
