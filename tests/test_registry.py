"""The task registry (every task built by name, SE and VC included), what a task prepares from (index
rows and, for SE and VC, the corpus's audio), and the `Task` defaults that scheduling and records
rely on."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from progre.data.shards import Shards
from progre.downstream import TASKS
from progre.downstream.conversion import VoiceConversion
from progre.downstream.enhancement import SpeechEnhancement
from progre.downstream.evaluation import EvaluationSettings
from progre.downstream.fits import TaskFits
from progre.downstream.head_data import Examples
from progre.downstream.head_fit import FitResult
from progre.downstream.recipes import DEMO, Recipe
from progre.downstream.records import task_record
from progre.downstream.registry import BUILDERS, build_task
from progre.downstream.rows import AUDIO_COLUMNS, CorpusAudio, split_rows
from progre.downstream.tasks import NoisyAudio, Prepared, Task, UtteranceClassification
from progre.downstream.upstreams import Upstream
from progre.errors import UserError

from .conftest import noise, write_audio

CPU = torch.device("cpu")


def _options(shards, cache, **settings):
    return EvaluationSettings(**settings).task_options(shards, cache, CPU)


# --------------------------------------------------------------------------- the registry


def test_every_task_name_builds_its_task_without_reading_or_training_anything(phone_shards, tmp_path):
    assert tuple(BUILDERS) == TASKS  # one builder per task name, in report order
    options = _options(Shards(phone_shards), tmp_path / "cache")
    for name in (*TASKS, "cls:accent"):
        task = build_task(name, options)
        assert isinstance(task, Task) and task.name == name.replace(":", "-")
        assert set(task.columns) >= ({"noise", *AUDIO_COLUMNS} if name in ("se", "vc") else set())
        assert task.writes_examples == (name in ("se", "vc"))
        assert task.states == ("noisy" if name == "se" else "clean") and (task.noisy is None) == (name != "se")
    assert isinstance(build_task("se", options), SpeechEnhancement)
    assert isinstance(build_task("vc", options), VoiceConversion)
    assert not (tmp_path / "cache").exists()  # the VC judges are trained when VC first needs them, not here


def test_an_unknown_task_name_is_a_clear_error():
    options = _options(None, None)
    for name in ("xid", "se2", "cls:", "cls:a/b", "SID"):
        with pytest.raises(ValueError, match=f"unknown task '{name}': the tasks are sid, pr, asr, er, se, vc, lid "
                                             f"and cls:COLUMN"):
            build_task(name, options)


def test_se_hears_the_noise_the_options_choose(phone_shards, tmp_path):
    shards = Shards(phone_shards)
    write_audio(tmp_path / "noise" / "hum.wav", noise(2.0, seed=3), subtype="PCM_16")
    demo = build_task("se", _options(shards, tmp_path)).noisy
    folder = build_task("se", _options(shards, tmp_path, se_noise=str(tmp_path / "noise"))).noisy
    louder = build_task("se", _options(shards, tmp_path, se_snr_db=(0.0, 1.0))).noisy
    paired = build_task("se", _options(shards, tmp_path, se_noisy=str(phone_shards))).noisy
    assert demo is not None and folder is not None and louder is not None and paired is not None
    identities = [json.dumps(n.identity, sort_keys=True) for n in (demo, folder, louder, paired)]
    assert len(set(identities)) == 4  # each is its own entry of the hidden-state cache
    assert paired.identity == {"noisy_corpus": shards.fingerprint}
    clean = np.zeros(16000, np.float32)
    assert not np.array_equal(demo.mix("utt00", clean + 0.1), clean + 0.1)  # noise was mixed in
    # another corpus (here: one utterance fewer) cannot be paired by key
    other = tmp_path / "other"
    shutil.copytree(phone_shards, other)
    index = pq.read_table(other / "index.parquet")
    pq.write_table(index.slice(0, len(index) - 1), other / "index.parquet")
    with pytest.raises(UserError, match="does not hold the same keys and lengths"):
        build_task("se", _options(shards, tmp_path, se_noisy=str(other)))


# --------------------------------------------------------------------------- what tasks prepare from


def test_se_prepares_from_index_rows_and_the_audio_it_is_given(phone_shards):
    shards = Shards(phone_shards)
    rows = split_rows(shards, SpeechEnhancement.columns)
    for split in ("train", "valid", "test"):
        assert [r["key"] for r in rows[split]] == shards.keys(split)
        assert all(r["split"] == split and set(r) == {"key", "split", *SpeechEnhancement.columns} for r in rows[split])
    read: list[str] = []
    audio = CorpusAudio.of(shards)

    def reader(row):
        read.append(row["key"])
        return audio.read(row)

    task = SpeechEnhancement(NoisyAudio(lambda key, clean: clean * 0.5, {"halved": True}))
    prep = task.prepare(rows, CorpusAudio(reader, shards.fingerprint))
    assert sorted(read) == sorted(shards.keys())  # every clean utterance read once, through the reader given
    streamed = {u.key: u.wav for u in shards.stream()}
    for split, examples in prep.splits.items():
        assert examples.keys == [r["key"] for r in rows[split]]
        for pair in examples.references:
            np.testing.assert_array_equal(pair.clean, streamed[pair.key])
            np.testing.assert_array_equal(pair.noisy, streamed[pair.key] * 0.5)
    with pytest.raises(ValueError, match="needs a CorpusAudio"):
        task.prepare(rows)


# --------------------------------------------------------------------------- Task defaults


class _Minimal(Task):
    """A task that declares only what every task must: it relies on every default of `Task`."""

    name = title = "minimal"
    metric = selection_metric = "err"
    higher_is_better = False
    columns = ("speaker",)
    pooled = True
    recipe_name = "cls"

    def prepare(self, rows, audio=None):
        raise NotImplementedError

    def head(self, dim, outputs, frame_rate, recipe):
        raise NotImplementedError

    def loss(self, logits, lengths, targets):
        raise NotImplementedError

    def predict(self, logits, lengths, vocabulary):
        raise NotImplementedError

    def score(self, references, predictions):
        raise NotImplementedError


def _result(err: float, weights: list[float], metric: str = "err") -> FitResult:
    return FitResult(best_update=2, updates=4, updates_per_epoch=2, valid={metric: err}, test={metric: err + 0.1},
                     layer_weights=weights, history=[{"update": 2, f"valid_{metric}": err}])


def _fits(task: Task, lrs: tuple[float, ...], seeds: list[int]) -> TaskFits:
    examples = Examples(["a", "b"], [0, 1], ["x", "y"])
    prep = Prepared({"train": examples, "valid": examples, "test": examples}, ["x", "y"])
    return TaskFits(task, prep, dict(prep.splits), {}, None, Recipe(lrs=lrs, batch_size=2, max_epochs=2), seeds,
                    [], 4, 2)


def test_the_scheduler_searches_with_the_first_seed_and_picks_by_the_tasks_own_order():
    task = _Minimal()
    assert task.states == "clean" and task.noisy is None and not task.writes_examples
    assert task.trainable(Examples(["a"], [0], ["x"]), len, 50)[1] == 0 and task.num_outputs(["x", "y"]) == 2
    fits = _fits(task, (1e-2, 1e-3), [7, 8, 9])
    assert fits.first_jobs() == [("minimal", 1e-2, 7), ("minimal", 1e-3, 7)]
    assert fits.add(1e-2, 7, _result(0.3, [0.5, 0.5])) == []
    # lower is better for this task (`Task.better` follows `higher_is_better`): 1e-3 wins the search
    assert fits.add(1e-3, 7, _result(0.2, [0.5, 0.5])) == [("minimal", 1e-3, 8), ("minimal", 1e-3, 9)]
    assert fits.best_lr == 1e-3 and not fits.done
    fits.add(1e-3, 9, _result(0.4, [0.5, 0.5]))
    fits.add(1e-3, 8, _result(0.1, [0.5, 0.5]))
    assert fits.done and [r.valid["err"] for r in fits.runs] == [0.2, 0.1, 0.4]
    one_rate = _fits(task, (1e-2,), [7, 8])
    assert one_rate.first_jobs() == [("minimal", 1e-2, 7), ("minimal", 1e-2, 8)]  # no search: every seed at once


def test_records_hold_examples_and_a_reference_row_only_for_tasks_that_write_examples(tmp_path):
    hidden = SimpleNamespace(num_states=2, state_names=["s0", "s1"], frame_rate=50)
    upstream = Upstream("mfcc", "up")

    class _Audio(_Minimal):
        writes_examples = True

        def write_examples(self, predict, examples, folder):
            return [{"key": examples.keys[0]}]

        def reference_scores(self, examples):
            return {"err": 0.5}

    records = {}
    for task in (_Minimal(), _Audio(), UtteranceClassification("sid", "SID", "speaker", "speaker")):
        fits = _fits(task, (1e-2,), [7, 8])
        fits.first_jobs()
        fits.add(1e-2, 7, _result(0.2, [0.25, 0.75], task.metric))
        fits.add(1e-2, 8, _result(0.4, [0.75, 0.25], task.metric))
        records[task] = task_record(fits, upstream, hidden, DEMO, CPU, tmp_path / task.title)
        assert records[task]["test"] == pytest.approx(0.4) and records[task]["test_std"] == pytest.approx(0.1)
        weights = json.loads((tmp_path / task.title / "layer_weights.json").read_text())["layer_weights"]
        assert [w["weight"] for w in weights] == [0.5, 0.5] and weights[0]["by_seed"] == [0.25, 0.75]
        history = json.loads((tmp_path / task.title / "history.json").read_text())
        assert list(history) == ["seeds", "task", "upstream"] and list(history["seeds"]) == ["7", "8"]
    plain, audio, sid = records.values()
    assert "examples" not in plain and "reference" not in plain and "examples" not in sid and "reference" not in sid
    assert audio["examples"] == [{"key": "a"}] and audio["reference"] == {"err": 0.5}
    assert set(audio) - set(plain) == {"examples", "reference"}
