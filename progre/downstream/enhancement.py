"""SE: speech enhancement by a magnitude mask on the noisy STFT (SUPERB's `enhancement_stft`).

The upstream hears noisy speech: clean utterances of the corpus with noise mixed in on the fly
(`progre.data.noise.NoisyMixer`: the demo's coloured noise or a folder of recordings, at an SNR drawn
per utterance, the same mixture in every run), or the utterances of a second, noisy shard folder
with the same keys (VoiceBank-DEMAND as published: a noisy and a clean folder of the same files).
Only utterances without noise of their own are enhanced (the demo corpus has noise mixed into half of
its utterances at synthesis: those have no clean reference).

The head (BiLSTM layers over the weighted hidden states, then a linear map with ReLU) predicts a mask
on the noisy magnitude at each of the STFT's frames (512-point Hann window, hop 320 samples = the
upstream's frame hop: STFT frame j, centred on sample 320 j, reads model frame j - 1, whose window is
centred on sample 320 j - 120). The enhanced speech is the masked noisy STFT, inverted with the noisy
phase. Two training losses (`recipes.Recipe.mask_loss`), of clean S and noisy Y:

- ``npsm`` (the `superb` protocol; s3prl's ``enhancement_stft`` with ``mask_type: NPSM``): per
  utterance, the sum over its STFT frames and bins of (M |Y| - |S| max(0, cos(angle Y - angle S)))^2
  divided by its number of frames, averaged over the batch's utterances. The target magnitude is not
  clipped above, and a bin's error is in magnitude units: quiet bins weigh less than loud ones.
- ``clipped_mask`` (the `demo` protocol's, kept so that its results stay what they were): the mean
  square error between M and the phase-sensitive mask clip(|S| cos(angle S - angle Y) / |Y|, 0, 1),
  every bin of every frame alike.

Valid selects by SI-SDR improvement (cheap; s3prl selects by PESQ); test is scored by wide-band PESQ,
STOI and SI-SDR improvement over the noisy input, whose own PESQ and STOI are the floor row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn

from ..data.corpus import SPLITS
from ..data.noise import NoisyMixer
from ..data.shards import Shards
from ..frames import MODEL_HOP, SAMPLE_RATE, num_frames
from .head_data import Examples
from .heads import BiLSTMHead
from .recipes import MASK_LOSSES, Recipe
from .rows import AUDIO_COLUMNS, CorpusAudio
from .speech_quality import pesq_wb, si_sdr, si_sdr_improvement, stoi
from .tasks import NoisyAudio, Prepared, Task, TaskSkipped

N_FFT = 512
BINS = N_FFT // 2 + 1
HOP = MODEL_HOP
EXAMPLES = 2
"""Test utterances whose noisy input, enhancement and clean reference are written as FLAC."""


def stft(wav: np.ndarray) -> Tensor:
    """(F, 257) complex STFT, F = ceil(N / 320) + 1 frames (centred, Hann window of 512). The signal is
    zero-padded to a whole number of hops first, so that the last frame's centre lies at or beyond its
    end and `istft` restores every sample (without it the last N mod 320 came back as zeros)."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    x = torch.nn.functional.pad(x, (0, -len(x) % HOP))
    return torch.stft(x, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT), center=True, return_complex=True).T


def istft(spectrum: Tensor, num_samples: int) -> np.ndarray:
    """The `num_samples` samples of the signal whose `stft` is `spectrum` (F, 257)."""
    padded = (spectrum.shape[0] - 1) * HOP
    return torch.istft(spectrum.T, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT), center=True,
                       length=padded).numpy()[:num_samples]


def model_frames_of_stft(num_samples: int) -> Tensor:
    """For each STFT frame j, the model frame whose window is nearest its centre: j - 1, clipped."""
    frames = -(-num_samples // HOP) + 1
    return (torch.arange(frames) - 1).clamp(0, max(num_frames(num_samples) - 1, 0))


def phase_sensitive_mask(clean: Tensor, noisy: Tensor) -> Tensor:
    """clip(|S| cos(angle S - angle Y) / |Y|, 0, 1), 0 where the noisy bin is silent."""
    ratio = (clean * noisy.conj()).real / noisy.abs().square().clamp_min(1e-12)
    return ratio.clamp(0.0, 1.0).float()


def npsm_target(clean: Tensor, noisy: Tensor) -> tuple[Tensor, Tensor]:
    """(|Y|, |S| max(0, cos(angle Y - angle S))): the noisy magnitude a mask scales and the magnitude it
    should give (s3prl's NPSM reference), both (F, 257) float32."""
    reference = clean.abs() * torch.relu(torch.cos(noisy.angle() - clean.angle()))
    return noisy.abs().float(), reference.float()


def npsm_loss(masks: list[Tensor], noisy_magnitudes: list[Tensor], references: list[Tensor]) -> Tensor:
    """Mean over utterances of sum((M |Y| - reference)^2) / frames, each utterance's (F, 257) tensors."""
    per_utterance = [((m * y - r) ** 2).sum() / len(m) for m, y, r in zip(masks, noisy_magnitudes, references)]
    return torch.stack(per_utterance).mean()


@dataclass
class Pair:
    """A clean utterance and what the upstream hears of it."""

    key: str
    clean: np.ndarray
    noisy: np.ndarray

    def noisy_spectrum(self) -> Tensor:
        return stft(self.noisy)


class MaskHead(nn.Module):
    """Weighted features (B, T, D) -> BiLSTM -> linear -> ReLU: a mask (B, T, 257) per model frame."""

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = BiLSTMHead(dim, hidden, layers, BINS, dropout=dropout)

    def forward(self, x: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        mask, lengths = self.lstm(x, lengths)
        return torch.relu(mask), lengths


class SpeechEnhancement(Task):
    name, title = "se", "SE"
    metric = "pesq"
    selection_metric = "si_sdri"
    higher_is_better = True
    columns = ("noise", *AUDIO_COLUMNS)
    pooled = False
    recipe_name = "se"
    writes_examples = True

    def __init__(self, noisy: NoisyAudio, mask_loss: str = "clipped_mask"):
        """noisy: what the upstream hears of each clean utterance (`mixer_view`, `paired_view`); mask_loss:
        the training loss, one of `recipes.MASK_LOSSES` (see the module's description)."""
        if mask_loss not in MASK_LOSSES:
            raise ValueError(f"mask_loss: expected one of {', '.join(MASK_LOSSES)}, got {mask_loss!r}")
        self.noisy: NoisyAudio = noisy
        self.mask_loss = mask_loss

    def prepare(self, rows: dict[str, list[dict[str, Any]]], audio: Optional[CorpusAudio] = None) -> Prepared:
        """Pairs of each clean utterance (read by `audio`) and what the upstream hears of it."""
        if audio is None:
            raise ValueError("SE reads the utterances' audio: prepare needs a CorpusAudio")
        notes = []
        mixed = {s: [r for r in rows[s] if r.get("noise")] for s in SPLITS}
        if sum(len(v) for v in mixed.values()):
            notes.append(f"SE: {sum(len(v) for v in mixed.values())} utterances that hold noise of their own (no "
                         f"clean reference) left out")
        splits = {}
        for split in SPLITS:
            pairs = []
            for row in rows[split]:
                if row.get("noise"):
                    continue
                clean = audio.read(row)
                pairs.append(Pair(row["key"], clean, self.noisy.mix(row["key"], clean)))
            splits[split] = Examples([p.key for p in pairs], [self._target(p) for p in pairs], pairs)
        if not len(splits["train"]):
            raise TaskSkipped("no clean training utterance to mix noise into")
        return Prepared(splits, [f"bin{i}" for i in range(BINS)], notes)

    def num_outputs(self, vocabulary: list[str]) -> int:
        return BINS

    def head(self, dim: int, outputs: int, frame_rate: int, recipe: Recipe) -> nn.Module:
        return MaskHead(dim, recipe.hidden, recipe.layers, recipe.dropout)

    def _target(self, pair: Pair) -> tuple[Tensor, ...]:
        """(model frame of each STFT frame, then for "clipped_mask" the phase-sensitive mask (F, 257), for
        "npsm" the noisy magnitude and the reference magnitude (F, 257) each)."""
        clean, noisy = stft(pair.clean), pair.noisy_spectrum()
        if self.mask_loss == "npsm":
            return (model_frames_of_stft(len(pair.clean)), *npsm_target(clean, noisy))
        return model_frames_of_stft(len(pair.clean)), phase_sensitive_mask(clean, noisy)

    def loss(self, logits: Tensor, lengths: Optional[Tensor], targets: list[Any]) -> Tensor:
        if self.mask_loss == "npsm":
            masks = [logits[b, target[0]].float() for b, target in enumerate(targets)]
            return npsm_loss(masks, [t[1].to(logits.device) for t in targets],
                             [t[2].to(logits.device) for t in targets])
        predicted = torch.cat([logits[b, index] for b, (index, _) in enumerate(targets)])
        wanted = torch.cat([mask for _, mask in targets]).to(logits.device)
        return torch.nn.functional.mse_loss(predicted.float(), wanted)

    def predict(self, logits: Tensor, lengths: Optional[Tensor], vocabulary: list[str]) -> list[Any]:
        return [logits[b].detach().float().cpu() for b in range(len(logits))]

    def enhance(self, pair: Pair, mask_by_model_frame: Tensor) -> np.ndarray:
        spectrum = pair.noisy_spectrum()
        mask = mask_by_model_frame[model_frames_of_stft(len(pair.noisy))]
        return istft(spectrum * mask, len(pair.noisy))

    def score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        gains = [si_sdr_improvement(p.clean, self.enhance(p, m), p.noisy) for p, m in zip(references, predictions)]
        return {"si_sdri": _mean(gains)}

    def final_score(self, references: list[Any], predictions: list[Any]) -> dict[str, float]:
        scores: dict[str, list[float]] = {"pesq": [], "stoi": [], "si_sdri": []}
        for pair, mask in zip(references, predictions):
            enhanced = self.enhance(pair, mask)
            scores["pesq"].append(pesq_wb(pair.clean, enhanced))
            scores["stoi"].append(stoi(pair.clean, enhanced))
            scores["si_sdri"].append(si_sdr_improvement(pair.clean, enhanced, pair.noisy))
        return {name: _mean(values) for name, values in scores.items()} | _unscored(scores)

    def reference_scores(self, examples: Examples) -> dict[str, float]:
        """The noisy input's own test scores: the floor every enhancement must clear."""
        pairs = examples.references
        scores = {"pesq": [pesq_wb(p.clean, p.noisy) for p in pairs], "stoi": [stoi(p.clean, p.noisy) for p in pairs],
                  "si_sdri": [0.0 for _ in pairs], "si_sdr": [si_sdr(p.clean, p.noisy) for p in pairs]}
        return {name: _mean(values) for name, values in scores.items()}

    def write_examples(self, predict: Callable[[list[str]], list[Any]], examples: Examples, folder: Path) -> list[dict]:
        """The first test utterances: noisy input, enhanced output, clean reference (FLAC)."""
        folder.mkdir(parents=True, exist_ok=True)
        keys = examples.keys[:EXAMPLES]
        written = []
        for key, pair, mask in zip(keys, examples.references[:EXAMPLES], predict(keys)):
            files = {"input": pair.noisy, "output": self.enhance(pair, mask), "reference": pair.clean}
            for role, wav in files.items():
                sf.write(folder / f"{key}-{role}.flac", np.clip(wav, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            written.append({"key": key, **{role: f"{key}-{role}.flac" for role in files}})
        return written


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _unscored(scores: dict[str, list[float]]) -> dict[str, float]:
    """How many utterances a metric could not score (too short or silent for PESQ, say), when any."""
    return {f"{name}_unscored": float(sum(not np.isfinite(v) for v in values))
            for name, values in scores.items() if not all(np.isfinite(v) for v in values)}


def mixer_view(mixer: NoisyMixer) -> NoisyAudio:
    """What the upstream hears with noise mixed in on the fly."""
    return NoisyAudio(partial(_mixed, mixer), mixer.describe())


def _mixed(mixer: NoisyMixer, key: str, clean: np.ndarray) -> np.ndarray:
    return mixer.mix(key, clean)[0]


def paired_view(noisy_shards: Shards) -> NoisyAudio:
    """What the upstream hears from a noisy corpus sharded with the same keys (VoiceBank-DEMAND)."""
    audio = CorpusAudio.of(noisy_shards)
    rows = {r["key"]: r for r in noisy_shards.rows(columns=("key", *AUDIO_COLUMNS))}
    return NoisyAudio(partial(_paired, noisy_shards.folder, audio, rows), {"noisy_corpus": noisy_shards.fingerprint})


def _paired(folder: Path, audio: CorpusAudio, rows: dict[str, dict[str, Any]], key: str,
            clean: np.ndarray) -> np.ndarray:
    """The noisy twin of `key` (of the corpus in `folder`, whose index `rows` are by key)."""
    if key not in rows:
        raise TaskSkipped(f"the noisy corpus {folder} has no utterance {key}")
    wav = audio.read(rows[key])
    if len(wav) != len(clean):
        raise TaskSkipped(f"{key}: {len(wav)} noisy samples but {len(clean)} clean ones")
    return wav
