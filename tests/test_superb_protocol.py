"""The `superb` protocol follows s3prl where it says it does: gradient clipping, SpecAugment on ASR's
features while training, ASR picked by dev WER, SE's NPSM loss, VC's warmup and linear decay, ER
cross-validated over IEMOCAP's sessions; and the corpus follow-ups: PR never mixes eSpeak phones into
a lexicon's, VC on VCC2020 converts the source speakers only. Each test fails without its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from progre.config import EvaluateParams, ReportParams, ShardParams, load_params
from progre.data.shards import Shards
from progre.downstream.enhancement import SpeechEnhancement, npsm_loss, npsm_target, stft
from progre.downstream.evaluation import EvaluationSettings
from progre.downstream.featurizer import Featurizer
from progre.downstream.head_data import Examples, PooledSplit
from progre.downstream.head_fit import DownstreamModel, FitSettings, fit, warmup_then_decay
from progre.downstream.heads import LinearHead
from progre.downstream.recipes import DEMO, S3PRL_TRAINING, SUPERB
from progre.downstream.registry import build_task
from progre.downstream.rows import CorpusAudio, fold_rows, split_rows
from progre.downstream.specaugment import SpecAugment, SpecAugmentSettings
from progre.downstream.tasks import NoisyAudio, PhoneRecognition, SpeechRecognition, UtteranceClassification
from stages import evaluate, report
from stages import shard as shard_stage

from .test_superb_corpora import _emo_line, _wav, librispeech, vcc2020

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- the recipe books


def test_every_superb_head_clips_and_the_demo_keeps_its_own_choices():
    for name, recipe in SUPERB.recipes.items():
        assert recipe.clip_norm == 1.0, name  # s3prl's gradient_clipping: 1 in every downstream config
    assert SUPERB.recipe("asr").specaugment == SpecAugmentSettings(5, 2, 40, 4, 50)
    assert SUPERB.recipe("asr").select_on_main_metric and SUPERB.recipe("se").mask_loss == "npsm"
    assert SUPERB.recipe("vc").warmup_steps == 4000 and SUPERB.recipe("er").folds == "fold"
    for recipe in DEMO.recipes.values():
        assert (recipe.clip_norm, recipe.warmup_steps, recipe.specaugment, recipe.folds) == (None, None, None, None)
        assert not recipe.select_on_main_metric and recipe.mask_loss == "clipped_mask"
        # metrics.json records the demo's recipes as before these fields existed
        assert not set(recipe.record()) & set(S3PRL_TRAINING)
    assert SUPERB.recipe("vc").record()["warmup_steps"] == 4000


def test_the_registry_builds_asr_and_se_with_the_books_choices(tmp_path):
    for protocol, select, loss in (("demo", "cer", "clipped_mask"), ("superb", "wer", "npsm")):
        options = EvaluationSettings(protocol=protocol).task_options(None, tmp_path, CPU)
        asr = build_task("asr", options)
        assert asr.selection_metric == select
        assert build_task("se", options).mask_loss == loss
    superb_asr = SpeechRecognition(select_on_main_metric=True)
    unspaced = {s: [{"key": f"{s}0", "text": "我们今天去公园"}] for s in ("train", "valid", "test")}
    superb_asr.prepare(unspaced)
    assert superb_asr.metric == superb_asr.selection_metric == "cer"  # no word spaces: CER is main and selects


# --------------------------------------------------------------------------- gradient clipping


def _classification_data(scale: float) -> tuple[UtteranceClassification, dict[str, PooledSplit]]:
    generator = torch.Generator().manual_seed(0)
    means = {f"u{i}": (scale * torch.randn(2, 3, generator=generator)).numpy().astype(np.float16) for i in range(12)}
    task = UtteranceClassification("sid", "SID", "speaker", "speaker")
    examples = Examples(list(means), [i % 3 for i in range(12)], [f"c{i % 3}" for i in range(12)])
    return task, {s: PooledSplit(means, examples) for s in ("train", "valid", "test")}


class _Recording(torch.optim.AdamW):
    """AdamW that records the gradient norm and the learning rate it steps with."""

    norms: list[float] = []
    lrs: list[float] = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        _Recording.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                                             for g in grads]))))
        _Recording.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def _recorded_fit(monkeypatch, **settings) -> tuple[list[float], list[float]]:
    _Recording.norms, _Recording.lrs = [], []
    monkeypatch.setattr(torch.optim, "AdamW", _Recording)
    task, data = _classification_data(scale=1000.0)  # huge inputs: huge gradients
    torch.manual_seed(0)
    model = DownstreamModel(Featurizer(2, 3), LinearHead(3, 3))
    fit(task, model, data["train"], data["valid"], data["test"], ["c0", "c1", "c2"],
        FitSettings(**{"lr": 1e-2, "batch_size": 4, "max_updates": 12, "eval_every": 3, "patience": None, "seed": 1,
                       **settings}), CPU)
    return _Recording.norms, _Recording.lrs


def test_clipping_bounds_the_gradient_norm_of_every_update(monkeypatch):
    unclipped, _ = _recorded_fit(monkeypatch)
    assert len(unclipped) == 12 and max(unclipped) > 10  # without clipping the norms are large
    clipped, _ = _recorded_fit(monkeypatch, clip_norm=1.0)
    assert len(clipped) == 12 and max(clipped) <= 1.0 + 1e-5


# --------------------------------------------------------------------------- the learning-rate schedule


def test_vc_learning_rate_warms_up_linearly_then_decays_to_zero(monkeypatch):
    # s3prl's a2o-vc-vcc2020: linear_schedule_with_warmup, 4000 warmup steps of 10000
    assert [warmup_then_decay(k, 4000, 10000) for k in (0, 1, 2000, 3999, 4000, 7000, 9999, 10000, 12000)] == \
           [0.0, 1 / 4000, 0.5, 3999 / 4000, 1.0, 0.5, 1 / 6000, 0.0, 0.0]
    _, lrs = _recorded_fit(monkeypatch, warmup_steps=4)  # 12 updates, 4 of warmup
    expected = [1e-2 * k / 4 for k in range(4)] + [1e-2 * (12 - k) / 8 for k in range(4, 12)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    _, constant = _recorded_fit(monkeypatch)
    assert constant == [1e-2] * 12  # no schedule: the demo's constant rate


# --------------------------------------------------------------------------- SpecAugment


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three utterances (120, 90 and 8 frames of 64 dims), no zeros of their own, zero-padded."""
    x = torch.rand(3, 120, 64, generator=torch.Generator().manual_seed(5)) + 1.0
    x[1, 90:] = 0.0
    x[2, 8:] = 0.0
    return x, torch.tensor([120, 90, 8])


def test_specaugment_masks_only_while_training_and_is_seeded_by_the_fits_generator():
    x, lengths = _batch()
    augment = SpecAugment(SpecAugmentSettings())  # s3prl's ASR settings
    augment.eval()
    assert augment(x, lengths, torch.Generator().manual_seed(0)) is x  # scoring valid and test: untouched
    augment.train()
    first = augment(x, lengths, torch.Generator().manual_seed(0))
    assert torch.equal(first, augment(x, lengths, torch.Generator().manual_seed(0))) and first.shape == x.shape
    assert not torch.equal(first, augment(x, lengths, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, x) and bool((first[0] == 0).any())
    assert not first[1, 90:].any() and not first[2, 8:].any()  # padding stays zero


def test_specaugment_masks_and_warps_within_s3prls_ranges():
    x, lengths = _batch()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        features = SpecAugment(SpecAugmentSettings(0, 0, 40, 1, 50)).train()(x, lengths, generator)
        for b, n in enumerate(lengths.tolist()):  # one feature mask: a run of whole columns, narrower than 50
            runs = _runs((features[b, :n] == 0).all(dim=0))
            assert len(runs) <= 1 and all(width < 50 for width in runs)
        frames = SpecAugment(SpecAugmentSettings(0, 1, 40, 0, 50)).train()(x, lengths, generator)
        runs = _runs((frames[0] == 0).all(dim=1))  # one time mask: a run of whole frames, shorter than 40
        assert len(runs) <= 1 and all(width < 40 for width in runs)
        warped = SpecAugment(SpecAugmentSettings(5, 0, 40, 0, 50)).train()(x, lengths, generator)
        assert torch.equal(warped[2], x[2])  # 8 frames: too short for a warp window of 5
        assert not warped[1, 90:].any() and bool((warped[1, :90] != 0).all())
    assert not torch.equal(warped[0], x[0])


def _runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True."""
    runs, current = [], 0
    for flag in flags.tolist() + [False]:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_the_downstream_model_augments_in_training_mode_only():
    class Frames(nn.Module):
        def forward(self, x, lengths):
            return x, lengths

    states = torch.rand(2, 60, 1, 64) + 1.0
    lengths = torch.tensor([60, 60])
    model = DownstreamModel(Featurizer(1, 64), Frames(), SpecAugment(SpecAugmentSettings()))
    plain = DownstreamModel(Featurizer(1, 64), Frames())
    model.eval()
    assert torch.equal(model(states, lengths, torch.Generator().manual_seed(3))[0], plain(states, lengths)[0])
    model.train()
    augmented = model(states, lengths, torch.Generator().manual_seed(3))[0]
    assert not torch.equal(augmented, plain(states, lengths)[0]) and bool((augmented == 0).any())
    assert list(model.state_dict()) == list(plain.state_dict())  # no parameters of its own


# --------------------------------------------------------------------------- SE's NPSM loss


def test_the_npsm_loss_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    clean = [rng.normal(size=(frames, 3)) + 1j * rng.normal(size=(frames, 3)) for frames in (5, 2)]
    noisy = [c + 0.8 * (rng.normal(size=c.shape) + 1j * rng.normal(size=c.shape)) for c in clean]
    noisy[0][0, 0] = 0.1 * clean[0][0, 0]  # the noise cancelled most of this bin: a mask of 10 restores it
    noisy[0][0, 1] = -clean[0][0, 1]  # out of phase: the reference is 0, not negative
    masks = [rng.uniform(0, 2, size=c.shape) for c in clean]
    hand = []
    for s, y, m in zip(clean, noisy, masks):
        reference = np.abs(s) * np.maximum(np.cos(np.angle(y) - np.angle(s)), 0.0)
        hand.append(((m * np.abs(y) - reference) ** 2).sum() / len(s))  # summed over bins and frames / frames
    targets = [npsm_target(torch.from_numpy(s).to(torch.complex64), torch.from_numpy(y).to(torch.complex64))
               for s, y in zip(clean, noisy)]
    loss = npsm_loss([torch.from_numpy(m).float() for m in masks], [t[0] for t in targets], [t[1] for t in targets])
    assert float(loss) == pytest.approx(np.mean(hand), rel=1e-5)
    # the reference is clipped at 0 (a bin out of phase counts as silence), not above (a bin the noise
    # cancelled asks for a mask over 1)
    magnitude, reference = targets[0]
    assert float(reference[0, 0] / magnitude[0, 0]) == pytest.approx(10.0) and float(reference[0, 1]) == 0.0


def test_se_trains_on_the_npsm_loss_of_its_own_stft():
    rng = np.random.default_rng(1)
    clean = (0.3 * np.sin(np.arange(3200) * 0.05) + 0.01 * rng.normal(size=3200)).astype(np.float32)
    noisy = (clean + 0.1 * rng.normal(size=3200)).astype(np.float32)
    rows = {s: [{"key": f"{s}0", "noise": None}] for s in ("train", "valid", "test")}
    audio = CorpusAudio(lambda row: clean, "fp")
    task = SpeechEnhancement(NoisyAudio(lambda key, wav: noisy, {}), mask_loss="npsm")
    index, magnitude, reference = task.prepare(rows, audio).splits["train"].targets[0]
    frames = len(index)
    logits = torch.from_numpy(rng.uniform(0, 1.5, size=(1, 12, 257))).float()
    s, y = stft(clean).numpy(), stft(noisy).numpy()
    mask = logits[0, index].numpy()
    hand = ((mask * np.abs(y) - np.abs(s) * np.maximum(np.cos(np.angle(y) - np.angle(s)), 0)) ** 2).sum() / frames
    assert float(task.loss(logits, None, [(index, magnitude, reference)])) == pytest.approx(hand, rel=1e-4)
    demo = SpeechEnhancement(NoisyAudio(lambda key, wav: noisy, {}))
    assert len(demo.prepare(rows, audio).splits["train"].targets[0]) == 2  # the demo's clipped mask, as before
    with pytest.raises(ValueError, match="mask_loss"):
        SpeechEnhancement(NoisyAudio(lambda key, wav: noisy, {}), mask_loss="psm")


# --------------------------------------------------------------------------- ER: k-fold over IEMOCAP's sessions

EMOTIONS = ("neu", "hap", "ang", "neu", "sad", "exc")  # the valid one (M003) is neutral


def _iemocap_sessions(root: Path, sessions: int = 3) -> Path:
    """`sessions` sessions of six labelled utterances, all four classes in each."""
    seed = 0
    for session in range(1, sessions + 1):
        folder = root / f"Session{session}"
        labels = folder / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True)
        dialog = f"Ses{session:02d}F_impro01"
        text = ""
        for i, emotion in enumerate(EMOTIONS):
            utterance = f"{dialog}_{'FM'[i % 2]}{i:03d}"
            _wav(folder / "sentences" / "wav" / dialog / f"{utterance}.wav", seed := seed + 1, seconds=0.5)
            text += _emo_line(utterance, emotion, start=float(i))
        (labels / f"{dialog}.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def iemocap_shards(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("iemocap")
    shard_stage.run(ShardParams(workers=1), _iemocap_sessions(base / "IEMOCAP_full_release"), base / "shards")
    return base / "shards"


def test_fold_rows_test_every_fold_once_and_fold_one_is_the_readers_split(iemocap_shards):
    shards = Shards(iemocap_shards)
    rows = split_rows(shards, ["style", "fold", "speaker"])
    folds, notes = fold_rows(rows, "fold")
    assert list(folds) == ["1", "2", "3"] and not notes
    every = {r["key"] for split in rows.values() for r in split}
    for fold, splits in folds.items():
        assert {r["fold"] for r in splits["test"]} == {int(fold)}
        keys = {s: {r["key"] for r in splits[s]} for s in splits}
        assert keys["train"] | keys["valid"] | keys["test"] == every and not keys["train"] & keys["valid"]
        assert len(keys["valid"]) == 2  # every fifth of each other session's six
    assert sorted(k for f in folds.values() for k in (r["key"] for r in f["test"])) == sorted(every)
    reader = {s: {r["key"] for r in rows[s]} for s in rows}  # the IEMOCAP reader's split is s3prl's fold1
    assert {s: {r["key"] for r in folds["1"][s]} for s in folds["1"]} == reader
    assert fold_rows(rows, "speaker")[0] and fold_rows(rows, "nothing") == ({}, [])
    one = {s: [{**r, "fold": 1 if r["key"] != "x" else None} for r in rows[s]] for s in rows}
    assert fold_rows(one, "fold") == ({}, [])  # a single fold: the corpus's own split stands
    ten = {"train": [{"key": f"k{i}", "f": str(i)} for i in (10, 2, 1)], "valid": [{"key": "z", "f": None}],
           "test": []}
    folds, notes = fold_rows(ten, "f")
    assert list(folds) == ["1", "2", "10"] and notes == ["1 utterances without a f value are in no fold and left out"]


def test_er_under_superb_is_cross_validated_and_scores_every_fold(iemocap_shards, tmp_path):
    params = EvaluateParams(protocol="superb", tasks=["er", "cls:style"], lr=[1e-2], max_epochs=2, head_seeds=2,
                            workers=1)
    summary = evaluate.run(params, upstream="mfcc", out=tmp_path / "eval", shards=iemocap_shards,
                           cache=tmp_path / "cache")
    er = json.loads((tmp_path / "eval" / "er" / "metrics.json").read_text())
    folds = er["cross_validation"]["folds"]
    assert er["cross_validation"]["column"] == "fold" and list(folds) == ["1", "2", "3"]
    per_fold = {}
    for fold in folds:
        record = json.loads((tmp_path / "eval" / "er" / f"fold-{fold}" / "metrics.json").read_text())
        assert record["fold"] == fold and record["utterances"] == {"train": 10, "valid": 2, "test": 6}
        assert folds[fold]["test"] == record["test"]
        per_fold[fold] = [r["test_metrics"]["acc"] for r in record["runs"]]
        assert (tmp_path / "eval" / "er" / f"fold-{fold}" / "layer_weights.json").is_file()
    seeds = np.mean(list(per_fold.values()), axis=0)  # each head seed's cross-validated accuracy
    assert er["test"] == pytest.approx(np.mean(seeds)) and er["test_std"] == pytest.approx(np.std(seeds))
    assert er["test"] == pytest.approx(np.mean([f["test"] for f in folds.values()]))
    assert er["utterances"] == {"test": 18} and summary["tasks"]["er"]["test"] == er["test"]
    assert er["protocol"] == "superb" and er["recipe"]["folds"] == "fold" and er["recipe"]["clip_norm"] == 1.0
    assert "3-fold cross-validation over fold" in er["notes"][0]
    weights = json.loads((tmp_path / "eval" / "er" / "layer_weights.json").read_text())["layer_weights"]
    assert len(weights) == 1 and weights[0]["weight"] == pytest.approx(1.0)
    style = json.loads((tmp_path / "eval" / "cls-style" / "metrics.json").read_text())
    assert "cross_validation" not in style and style["utterances"]["test"] == 6  # only ER's recipe has folds
    report.run(ReportParams(), results=[tmp_path / "eval"], out=tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    line = next(line for line in text.splitlines() if "cross-validation" in line)
    assert "ER: 3-fold cross-validation over `fold`; the cell is the mean over the folds" in line
    assert all(f"{fold} {100 * folds[fold]['test']:.1f}" in line for fold in folds)


def test_er_under_superb_without_a_fold_column_runs_on_the_corpus_split(phone_shards, tmp_path):
    params = EvaluateParams(protocol="superb", tasks=["er"], lr=[1e-2], max_epochs=2, head_seeds=1, workers=1)
    evaluate.run(params, upstream="mfcc", out=tmp_path / "eval", shards=phone_shards, cache=tmp_path / "cache")
    er = json.loads((tmp_path / "eval" / "er" / "metrics.json").read_text())
    assert er["status"] == "ok" and "cross_validation" not in er and er["utterances"]["test"] == 4
    assert not list((tmp_path / "eval" / "er").glob("fold-*"))


# --------------------------------------------------------------------------- PR on a lexicon's phones


def test_pr_skips_and_lists_utterances_a_lexicon_left_without_phones(tmp_path):
    calls = []

    def phonemize(text, voice):
        calls.append(text)
        return text.split()

    rows = {"train": [{"key": "a", "phones": ["HH", "AH0"], "text": "HA"}, {"key": "b", "phones": None, "text": "ZYZ"}],
            "valid": [{"key": "c", "phones": ["AH0"], "text": "A"}],
            "test": [{"key": "d", "phones": None, "text": "QQ"}, {"key": "e", "phones": ["HH"], "text": "H"}]}
    prep = PhoneRecognition(phonemize, lambda language: "en-us", lexicon="lex.txt").prepare(rows)
    assert calls == [] and prep.vocabulary == ["AH0", "HH"]  # no eSpeak phones among the lexicon's
    assert prep.splits["train"].keys == ["a"] and prep.splits["test"].keys == ["e"]
    assert any(n.startswith("PR: 1 train and 1 test utterances without lexicon phones (a word in no file of "
                            "lex.txt) skipped, not phonemised") and n.endswith(": b, d") for n in prep.notes)
    PhoneRecognition(phonemize, lambda language: "en-us").prepare(rows)
    assert calls == ["ZYZ", "QQ"]  # without a lexicon, text fills in as before


def test_the_registry_knows_when_a_corpus_took_its_phones_from_a_lexicon(tmp_path):
    corpus = librispeech(tmp_path / "LibriSpeech")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("HELLO HH AH0 L OW1\nWORLD W ER1 L D\nTHE DH AH0\n")
    shard_stage.run(load_params(ShardParams, None, overrides=[f"lexicon={lexicon}", "workers=1"]), corpus,
                    tmp_path / "with")
    shard_stage.run(ShardParams(workers=1), corpus, tmp_path / "without")
    for folder, expected in (("with", str(lexicon)), ("without", None)):
        options = EvaluationSettings().task_options(Shards(tmp_path / folder), tmp_path, CPU)
        assert build_task("pr", options).lexicon == expected


# --------------------------------------------------------------------------- VC on VCC2020


def test_vc_on_vcc2020_converts_the_source_speakers_only(tmp_path):
    shard_stage.run(ShardParams(workers=1), vcc2020(tmp_path / "vcc2020"), tmp_path / "shards")
    shards = Shards(tmp_path / "shards")
    options = EvaluationSettings().task_options(shards, tmp_path / "cache", CPU)
    task = build_task("vc", options)
    prep = task.prepare(split_rows(shards, task.columns), CorpusAudio.of(shards))
    assert task.target == "TEF1"  # the first target speaker (not SEF1, the first speaker)
    assert prep.splits["train"].keys == ["TEF1_E20001"] and prep.splits["valid"].keys == ["TEF1_E10061"]
    converted = {s.speaker for s in prep.splits["test"].references}
    assert converted == {"SEF1", "SEF2", "SEM1", "SEM2"} and len(prep.splits["test"]) == 8
    assert all(s.reference is not None for s in prep.splits["test"].references)  # TEF1's readings
    assert any("TEF2, TEM1, TEM2" in n and "not" in n for n in prep.notes)
    assert any("8 test utterances of 4 other speakers converted" in n for n in prep.notes)
