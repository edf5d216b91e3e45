"""progre pseudo-speakers: utterance embeddings clustered into speaker ids, scored against true ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from progre.cluster.speakers import speaker_purity
from progre.config import ShardParams, SpeakersParams, SynthParams
from progre.data.shards import Shards
from stages import synth as synth_stage
from progre.errors import UserError
from stages import shard as shard_stage
from progre.cluster.speakers import read_speakers
from stages import speakers as speakers_stage


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("speakers")
    synth_stage.run(SynthParams(preset="tiny"), base / "corpus")
    shard_stage.run(ShardParams(workers=1), base / "corpus", base / "shards")
    return base / "shards"


def test_purity_of_perfect_and_merged_speakers():
    perfect = speaker_purity(["a", "a", "b", "b"], np.array([1, 1, 0, 0]))
    assert perfect == pytest.approx({"pseudo_speaker_purity": 1.0, "true_speaker_purity": 1.0,
                                     "normalised_mutual_information": 1.0})
    merged = speaker_purity(["a", "a", "b", "b"], np.array([0, 0, 0, 0]))
    assert merged["pseudo_speaker_purity"] == 0.5 and merged["true_speaker_purity"] == 1.0
    assert merged["normalised_mutual_information"] == pytest.approx(0.0)
    # splitting each speaker in two keeps every pseudo speaker pure but is not a perfect match:
    # I = ln 2, H(true) = ln 2, H(pseudo) = ln 4, so NMI = 2 ln 2 / (3 ln 2) = 2/3
    split = speaker_purity(["a", "a", "b", "b"], np.array([0, 1, 2, 3]))
    assert split["pseudo_speaker_purity"] == 1.0
    assert split["normalised_mutual_information"] == pytest.approx(2 / 3)


def test_pseudo_speaker_table_covers_the_corpus_and_finds_the_voices(tiny_shards, tmp_path):
    metrics = speakers_stage.run(SpeakersParams(n_speakers=4, seed=1), tiny_shards, tmp_path / "a")
    table = read_speakers(tmp_path / "a")
    assert set(table) == set(Shards(tiny_shards).keys())
    assert len(set(table.values())) == metrics["speakers_used"] <= 4
    # 16 utterances of 4 speakers: a random split into 4 groups scores 0.49 on average and
    # 0.625 at its 95th percentile; MFCC statistics score 0.75 here
    assert metrics["pseudo_speaker_purity"] > 0.7
    speakers_stage.run(SpeakersParams(n_speakers=4, seed=1), tiny_shards, tmp_path / "b")
    assert read_speakers(tmp_path / "b") == table


def test_bad_requests(tiny_shards, tmp_path):
    with pytest.raises(UserError, match="cannot form 100 pseudo speakers"):
        speakers_stage.run(SpeakersParams(n_speakers=100), tiny_shards, tmp_path / "x")
    with pytest.raises(UserError, match="needs --checkpoint"):
        speakers_stage.run(SpeakersParams(embedding="layer_mean"), tiny_shards, tmp_path / "x")
    with pytest.raises(UserError, match="holds no speakers.parquet"):
        read_speakers(tmp_path)
