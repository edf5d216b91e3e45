"""progre pseudo-speakers: utterance embeddings clustered into speaker ids, scored against true ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from progre.cluster.speakers import SpeakerSettings, layers_mean, speaker_purity
from progre.config import ShardParams, SpeakersParams, SynthParams
from progre.data.shards import Shards
from stages import synth as synth_stage
from progre.errors import UserError
from stages import shard as shard_stage
from progre.cluster.speakers import read_speakers
from stages import speakers as speakers_stage


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("speakers")
    synth_stage.run(SynthParams(preset="tiny"), base / "corpus")
    return base / "corpus"


@pytest.fixture(scope="module")
def tiny_shards(tiny_corpus) -> Path:
    shard_stage.run(ShardParams(workers=1), tiny_corpus, tiny_corpus.parent / "shards")
    return tiny_corpus.parent / "shards"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from progre.model import build_encoder, model_config, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "hubert", build_encoder(model_config("tiny", "hubert")))


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
    with pytest.raises(UserError, match="layers: give at least one layer"):
        SpeakersParams(layers=[]).to(SpeakerSettings)
    with pytest.raises(UserError, match="holds no speakers.parquet"):
        read_speakers(tmp_path)


def test_layer_mean_embeds_with_the_mean_of_several_layers(tiny_shards, tiny_checkpoint, tmp_path, caplog):
    import pyarrow.parquet as pq
    import torch

    from progre.features.hidden import HiddenStateExtractor
    from progre.model import load_encoder

    states = np.arange(24, dtype=np.float32).reshape(4, 3, 2)  # (frames, layers, dim)
    assert layers_mean(states).tolist() == [11.0, 12.0]  # each layer's frame mean, then their mean
    params = SpeakersParams(n_speakers=4, embedding="layer_mean", layers=[2, 3], seed=1)
    with caplog.at_level("INFO", logger="progre"):
        metrics = speakers_stage.run(params, tiny_shards, tmp_path / "a", checkpoint=tiny_checkpoint)
    table = pq.read_table(tmp_path / "a" / "speakers.parquet")
    assert set(table.column("key").to_pylist()) == set(Shards(tiny_shards).keys())
    assert table.schema.metadata[b"layers"] == b"2 3"
    assert table.schema.metadata[b"checkpoint"] == str(tiny_checkpoint).encode()
    assert "pseudo speakers against the corpus's 4 speakers: NMI" in caplog.text
    assert 0.0 <= metrics["normalised_mutual_information"] <= 1.0
    # the embeddings are what the settings name: the same clusters from embeddings computed here by hand
    from progre.cluster.speakers import cluster_speakers

    encoder = load_encoder(tiny_checkpoint)
    names = encoder.hidden_state_names()
    extractor = HiddenStateExtractor(encoder, torch.device("cpu"), states=[names.index("layer2"), names.index("layer3")])
    utts = list(Shards(tiny_shards).stream())
    by_hand = np.stack([np.mean([s[:, 0].mean(axis=0), s[:, 1].mean(axis=0)], axis=0) for s in extractor(utts)])
    labels = cluster_speakers(by_hand, 4, params.niter, params.seed)
    written = dict(zip(table.column("key").to_pylist(), table.column("speaker").to_pylist()))
    assert [written[u.key] for u in utts] == [f"pseudo{int(lab):04d}" for lab in labels]
    with pytest.raises(UserError, match="layer 5 is out of range"):
        speakers_stage.run(SpeakersParams(n_speakers=4, embedding="layer_mean", layers=[4, 5]), tiny_shards,
                           tmp_path / "b", checkpoint=tiny_checkpoint)


def test_a_corpus_without_speaker_ids_is_clustered_but_not_scored(tiny_corpus, tmp_path, caplog):
    import shutil

    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus / "audio", corpus / "audio")
    table = pq.read_table(tiny_corpus / "metadata.parquet")
    pq.write_table(table.drop_columns(["speaker"]), corpus / "metadata.parquet")
    shard_stage.run(ShardParams(workers=1), corpus, tmp_path / "shards")
    with caplog.at_level("INFO", logger="progre"):
        metrics = speakers_stage.run(SpeakersParams(n_speakers=4, seed=1), tmp_path / "shards", tmp_path / "out")
    assert metrics["utterances_without_speaker_id"] == metrics["utterances"] == 16
    assert "normalised_mutual_information" not in metrics and "pseudo_speaker_purity" not in metrics
    assert "pseudo speakers not scored: 16 of 16 utterances have no speaker id in the corpus" in caplog.text
    assert len(read_speakers(tmp_path / "out")) == 16
