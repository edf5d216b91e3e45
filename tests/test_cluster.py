"""progre cluster: k-means labels for every frame, label-quality metrics, provenance checks."""

from __future__ import annotations

import numpy as np
import pytest

from progre.frames import MFCC_RATE, num_frames
from progre.cluster.labels import read_labels
from progre.cluster.quality import cluster_usage, frame_phones, purity_and_pnmi
from progre.config import ClusterParams, FeaturesParams, ShardParams
from progre.data.shards import Shards
from progre.errors import UserError
from stages import cluster as cluster_stage
from stages import layer as layer_stage
from stages import mfcc as mfcc_stage
from stages import shard as shard_stage

from .conftest import phone_corpus


@pytest.fixture(scope="module")
def mfcc_features(phone_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "mfcc"
    mfcc_stage.run(FeaturesParams(sample_fraction=1.0), phone_shards, out)
    return out


def test_pnmi_and_purity_of_perfect_and_constant_clusterings():
    perfect = np.diag([30, 50, 20])
    assert purity_and_pnmi(perfect) == pytest.approx({"phone_purity": 1.0, "cluster_purity": 1.0, "pnmi": 1.0})
    constant = np.array([[30, 0], [50, 0], [20, 0]])
    scores = purity_and_pnmi(constant)
    assert scores["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert scores["phone_purity"] == pytest.approx(0.5) and scores["cluster_purity"] == pytest.approx(1.0)
    # by hand: p = [[.4,.1],[.1,.4]]: phone purity .8, cluster purity .8, I = .4 ln 1.6 * 2 + .1 ln .4 * 2
    mixed = np.array([[40, 10], [10, 40]])
    expected_pnmi = (2 * 0.4 * np.log(1.6) + 2 * 0.1 * np.log(0.4)) / np.log(2)
    assert purity_and_pnmi(mixed) == pytest.approx({"phone_purity": 0.8, "cluster_purity": 0.8,
                                                    "pnmi": expected_pnmi})


def test_cluster_usage():
    usage = cluster_usage(np.array([5, 5, 0, 0]))
    assert usage["clusters_used"] == 2 and usage["usage_entropy_bits"] == pytest.approx(1.0)
    assert usage["usage_entropy_ratio"] == pytest.approx(0.5)


def test_frame_phones_uses_frame_centres():
    # frames at 100 Hz have centres 12.5, 22.5, 32.5 ... ms
    phones = frame_phones(["a", "b"], [0.0, 0.03], [0.03, 0.05], n_frames=5, frame_rate=100)
    assert phones == ["a", "a", "b", "b", "sil"]


def test_labels_cover_every_frame_of_every_utterance(phone_shards, mfcc_features, tmp_path):
    metrics = cluster_stage.run(ClusterParams(n_clusters=8, niter=20), mfcc_features, phone_shards, tmp_path / "k")
    labels = read_labels(tmp_path / "k")
    index = Shards(phone_shards).rows()
    assert set(labels.labels) == {row["key"] for row in index}
    for row in index:
        assert len(labels.labels[row["key"]]) == num_frames(row["num_samples"], MFCC_RATE)
        assert labels.splits[row["key"]] == row["split"]
    assert labels.label_rate == 100 and labels.n_clusters == 8 and labels.meta["kind"] == "mfcc"
    assert 0 < metrics["pnmi"] <= 1 and metrics["clusters_used"] <= 8
    assert metrics["pnmi"] > 0.3  # tones and noise bursts are easy to tell apart
    assert (tmp_path / "k" / "cooccurrence.png").stat().st_size > 1000
    assert (tmp_path / "k" / "kmeans.json").is_file()
    # which FAISS ran is recorded (here: whatever build the venv holds; device auto resolves to the CPU
    # in these tests, and k-means runs on the GPU only on a CUDA device whose GPU FAISS sees)
    import faiss
    import torch

    assert metrics["faiss_version"] == faiss.__version__ and metrics["faiss_build"] in ("cpu", "gpu")
    assert metrics["kmeans_device"] == ("cuda" if torch.cuda.is_available() and faiss.get_num_gpus() else "cpu")


def test_a_bounded_fit_reads_a_seeded_sample_not_the_whole_folder(phone_shards, mfcc_features, tmp_path, monkeypatch):
    from progre.features.store import FeatureStore

    store = FeatureStore(mfcc_features)
    everything = store.stacked()
    sample = store.sample_frames(300, seed=5)
    assert sample.shape == (300, 39) and sample.dtype == np.float32
    np.testing.assert_array_equal(sample, store.sample_frames(300, seed=5))
    chosen = np.sort(np.random.default_rng(5).choice(len(everything), size=300, replace=False))
    np.testing.assert_array_equal(sample, everything[chosen])  # distinct stored frames, in storage order
    assert not np.array_equal(sample, store.sample_frames(300, seed=6))

    def no_full_load(self, dtype="float32"):
        raise AssertionError("the whole folder was loaded")

    monkeypatch.setattr(FeatureStore, "stacked", no_full_load)
    metrics = cluster_stage.run(ClusterParams(n_clusters=4, niter=5, max_points_per_centroid=50), mfcc_features,
                                phone_shards, tmp_path / "k")
    assert metrics["fit_frames"] == 200 < store.total_frames()
    assert len(read_labels(tmp_path / "k").labels) == len(Shards(phone_shards))


def test_faiss_installation_names_the_build_and_warns_about_two_builds(monkeypatch):
    from progre.cluster import kmeans

    info = kmeans.faiss_installation()
    assert info["build"] == ("gpu" if hasattr(kmeans.faiss, "StandardGpuResources") else "cpu")
    assert info["packages"] and info["gpus"] >= 0
    monkeypatch.setattr(kmeans.metadata, "version", lambda name: "1.15.1")  # every build "installed"
    warnings = []
    monkeypatch.setattr(kmeans.logger, "warning", lambda message, *args: warnings.append(message % args))
    assert len(kmeans.faiss_installation()["packages"]) == len(kmeans.FAISS_PACKAGES)
    assert len(warnings) == 1 and "share one `faiss` module" in warnings[0]
    monkeypatch.setattr(kmeans, "faiss", None)
    with pytest.raises(UserError, match="FAISS is not installed: pip install -e '.\\[cpu\\]'"):
        kmeans.faiss_gpus()


def test_same_seed_same_labels_other_seed_may_differ(phone_shards, mfcc_features, tmp_path):
    p = ClusterParams(n_clusters=6, niter=10, seed=3)
    cluster_stage.run(p, mfcc_features, phone_shards, tmp_path / "a")
    cluster_stage.run(p, mfcc_features, phone_shards, tmp_path / "b")
    a, b = read_labels(tmp_path / "a"), read_labels(tmp_path / "b")
    for key in a.labels:
        np.testing.assert_array_equal(a.labels[key], b.labels[key])
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "kmeans.npy"), np.load(tmp_path / "b" / "kmeans.npy"))


def test_unsampled_utterances_are_labelled_from_features_computed_on_the_fly(phone_shards, tmp_path):
    sampled = tmp_path / "sampled"
    mfcc_stage.run(FeaturesParams(sample_fraction=0.25), phone_shards, sampled)
    cluster_stage.run(ClusterParams(n_clusters=4, niter=10), sampled, phone_shards, tmp_path / "k")
    assert len(read_labels(tmp_path / "k").labels) == 16


def test_k_larger_than_frames_and_foreign_features_are_refused(phone_shards, mfcc_features, tmp_path):
    with pytest.raises(UserError, match="needs at least as many frames"):
        cluster_stage.run(ClusterParams(n_clusters=60000), mfcc_features, phone_shards, tmp_path / "k")
    other = phone_corpus(tmp_path / "other", n_utts=4, seed=5)
    shard_stage.run(ShardParams(workers=1), other, tmp_path / "other_shards")
    with pytest.raises(UserError, match="another corpus"):
        cluster_stage.run(ClusterParams(n_clusters=4), mfcc_features, tmp_path / "other_shards", tmp_path / "k2")
    assert not (tmp_path / "k").exists() and not (tmp_path / "k2").exists()


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    import torch

    from progre.model import build_encoder, model_config, save_checkpoint

    base = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_checkpoint(base / "hubert", build_encoder(model_config("tiny", "hubert")))
    save_checkpoint(base / "progre", build_encoder(model_config("tiny", "progre")))
    return base


def test_iteration_two_labels_from_layer_features_are_50_hz(phone_shards, phone_labels, tiny_checkpoints, tmp_path):
    from progre.features.store import FeatureStore

    _, pitch = phone_labels
    out = tmp_path / "layer"
    layer_stage.run(FeaturesParams(sample_fraction=0.5, layer=3), phone_shards, out,
                    checkpoint=tiny_checkpoints / "progre", pitch=pitch)
    store = FeatureStore(out)
    assert store.meta["kind"] == "layer" and store.meta["layer"] == 3 and store.dim == 256
    assert store.meta["frame_rate"] == 50 and store.meta["pitch"] == str(pitch)
    lengths = Shards(phone_shards).column("num_samples")
    for key in store.keys():
        assert store[key].dtype == np.float16 and len(store[key]) == num_frames(lengths[key])

    cluster_stage.run(ClusterParams(n_clusters=5, niter=10), out, phone_shards, tmp_path / "k2")
    labels = read_labels(tmp_path / "k2")
    assert labels.label_rate == 50 and labels.meta["layer"] == 3
    for key, n in lengths.items():
        assert len(labels.labels[key]) == num_frames(n)  # unsampled ones too, computed with the same pitch


def test_bf16_layer_features_are_close_to_fp32_and_the_folder_records_the_precision(phone_shards, tiny_checkpoints):
    import torch

    from progre.cluster.labelling import computer_from_meta
    from progre.features.layer_features import LayerComputer

    from .conftest import BF16_LAYER_RTOL

    utts = sorted(Shards(phone_shards).stream("train"), key=lambda u: u.key)[:4]
    cpu = torch.device("cpu")
    fp32 = LayerComputer(tiny_checkpoints / "progre", 3, cpu)
    bf16 = LayerComputer(tiny_checkpoints / "progre", 3, cpu, precision="bf16")
    assert fp32.describe()["precision"] == "fp32" and bf16.describe()["precision"] == "bf16"
    assert LayerComputer(tiny_checkpoints / "hubert", 3, cpu, precision="auto").describe()["precision"] == "fp32"
    for a, b in zip(fp32(utts), bf16(utts)):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        assert 0 < np.linalg.norm(b - a) / np.linalg.norm(a) <= BF16_LAYER_RTOL
    # unsampled utterances are labelled in the folder's precision
    assert computer_from_meta(bf16.describe(), cpu).extractor.precision == "bf16"
    assert computer_from_meta({k: v for k, v in fp32.describe().items() if k != "precision"},
                              cpu).extractor.precision == "fp32"  # folders written before precision existed


def test_long_audio_in_chunks_keeps_the_frame_grid(phone_shards, tiny_checkpoints):
    import torch

    from progre.features.layer_features import LayerComputer

    utt = max(Shards(phone_shards).stream("train"), key=lambda u: len(u.wav))
    computer = LayerComputer(tiny_checkpoints / "hubert", 2, torch.device("cpu"), chunk_seconds=0.3)
    (chunked,) = computer([utt])
    assert len(chunked) == num_frames(len(utt.wav))
    hop = 15 * 320  # 0.3 s -> 15 frames of 320 samples
    encoder = computer.extractor.encoder
    for c, start in enumerate(range(0, len(utt.wav) - 400 + 1, hop)):
        chunk = utt.wav[start:start + hop + 80]  # each chunk is encoded on its own, frames line up
        states, _ = encoder.extract(torch.from_numpy(chunk)[None])
        alone = states[encoder.hidden_state_names().index("layer2")][0].detach().numpy()
        np.testing.assert_allclose(chunked[c * 15:c * 15 + len(alone)], alone, atol=1e-5)


def test_layer_out_of_range_is_a_user_error(phone_shards, tiny_checkpoints, tmp_path):
    with pytest.raises(UserError, match="out of range"):
        layer_stage.run(FeaturesParams(layer=9), phone_shards, tmp_path / "x",
                        checkpoint=tiny_checkpoints / "hubert")
    with pytest.raises(UserError, match="not found"):
        layer_stage.run(FeaturesParams(layer=2), phone_shards, tmp_path / "x",
                        checkpoint=tmp_path / "missing")


def test_layer_features_refuse_a_pitch_folder_that_is_not_pitch(phone_shards, tiny_checkpoints, tmp_path):
    mfcc_stage.run(FeaturesParams(sample_fraction=1.0), phone_shards, tmp_path / "mfcc")
    with pytest.raises(UserError, match="holds mfcc features, not pitch contours"):
        layer_stage.run(FeaturesParams(layer=2), phone_shards, tmp_path / "x",
                        checkpoint=tiny_checkpoints / "progre", pitch=tmp_path / "mfcc")
