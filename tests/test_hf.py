"""transformers interop: `hf:` upstreams (tiny random HuBERT, wav2vec 2.0, WavLM and data2vec-audio folders
built here, nothing downloaded) and `progre export --format transformers` (a HubertModel folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers", reason="transformers is not installed (the hf extra)")

from progre.cli import app  # noqa: E402
from progre.config import EvaluateParams, ReportParams  # noqa: E402
from progre.data.shards import Shards, Utterance  # noqa: E402
from progre.downstream.hf_upstream import HFExtractor  # noqa: E402
from progre.downstream.upstreams import (cache_key, cached_hidden_states, parse_upstream,  # noqa: E402
                                         upstream_identity)
from progre.errors import UserError  # noqa: E402
from progre.features.hidden import HiddenStateExtractor  # noqa: E402
from progre.frames import num_frames  # noqa: E402
from progre.model import build_encoder, load_encoder, model_config, save_checkpoint  # noqa: E402
from stages import evaluate, report  # noqa: E402
from stages.export import export  # noqa: E402

from .test_model_import import _randomized  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=[16] * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
FAMILIES = {
    # name: (config class, its extra arguments, do_normalize, return_attention_mask)
    "hubert": ("HubertConfig", {}, False, False),
    "wav2vec2": ("Wav2Vec2Config", {"feat_extract_norm": "layer", "do_stable_layer_norm": True}, True, True),
    "wavlm": ("WavLMConfig", {"num_buckets": 16, "max_bucket_distance": 50}, False, True),
    "data2vec": ("Data2VecAudioConfig", {"num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 5}, True, True),
}
FAST = {"max_epochs": 2, "patience": 2, "batch_size": 4, "head_seeds": 1, "tasks": ["sid"]}


def tiny_hf_folder(folder: Path, family: str, seed: int = 0) -> Path:
    """A randomly initialised tiny model of `family`, saved as transformers saves a checkpoint folder."""
    config_class, extra, normalize, attention_mask = FAMILIES[family]
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(getattr(transformers, config_class)(**(TINY | extra)))
    with torch.no_grad():  # LayerNorms off their init, so a weight loaded into the wrong place shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                          do_normalize=normalize,
                                          return_attention_mask=attention_mask).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hf")
    return {family: tiny_hf_folder(base / family, family) for family in FAMILIES}


def _direct(folder: Path, wav: np.ndarray) -> np.ndarray:
    """(T, S, D) from calling the model directly, as its model card says: feature extractor, then the model."""
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    features = transformers.AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    inputs = features(wav, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        hidden = model(inputs["input_values"], output_hidden_states=True).hidden_states
    return torch.stack(hidden, dim=2)[0].numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_upstream_states_equal_calling_the_model_directly(hf_folders, family):
    rng = np.random.default_rng(1)
    wavs = [(0.1 * rng.standard_normal(n) + 0.05).astype(np.float32) for n in (16000, 11000, 7000)]
    extractor = HFExtractor(hf_folders[family], torch.device("cpu"))
    assert extractor.state_names == ["input", "layer1", "layer2"] and extractor.dim == 32
    states = extractor([Utterance(f"u{i}", w, {}) for i, w in enumerate(wavs)])
    for wav, got in zip(wavs, states):
        assert got.shape == (num_frames(len(wav)), 3, 32)
        np.testing.assert_allclose(got, _direct(hf_folders[family], wav), rtol=0, atol=1e-5)


def test_hf_upstream_cuts_long_audio_on_the_frame_grid(hf_folders):
    wav = (0.1 * np.random.default_rng(2).standard_normal(40000)).astype(np.float32)
    whole = HFExtractor(hf_folders["hubert"], torch.device("cpu"), chunk_seconds=60.0)([Utterance("u", wav, {})])[0]
    chunked = HFExtractor(hf_folders["hubert"], torch.device("cpu"), chunk_seconds=1.0)([Utterance("u", wav, {})])[0]
    assert chunked.shape == whole.shape == (num_frames(40000), 3, 32)
    np.testing.assert_allclose(chunked[:10], _direct(hf_folders["hubert"], wav[:16080])[:10], rtol=0, atol=1e-5)


def test_hf_folders_that_cannot_be_used_are_one_line_errors(hf_folders, tmp_path):
    with pytest.raises(UserError, match="not found.*nothing is downloaded"):
        parse_upstream(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(UserError, match="needs a transformers model folder"):
        parse_upstream("hf:")
    folder = tiny_hf_folder(tmp_path / "odd", "hubert")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(UserError, match="no preprocessor_config.json"):
        parse_upstream(f"hf:{folder}")
    folder = tiny_hf_folder(tmp_path / "odd", "hubert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"conv_stride": [5, 2, 2, 2, 2, 2, 1]}))
    with pytest.raises(UserError, match="does not give the 50 Hz frames"):
        parse_upstream(f"hf:{folder}")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no weights"):
        parse_upstream(f"hf:{folder}")
    with pytest.raises(UserError, match="not found"):
        parse_upstream(f"hf:{tmp_path / 'odd' / 'config.json'}")  # a file, not a folder


def test_the_cache_key_of_an_hf_upstream_covers_its_weights_and_configs(tmp_path):
    folder = tiny_hf_folder(tmp_path / "m", "hubert")
    upstream = parse_upstream(f"hf:{folder}")
    assert (upstream.kind, upstream.name) == ("hf", "m")

    def key():
        return cache_key(upstream_identity(upstream, seed=1), "corpus", "float16")

    first = key()
    assert key() == first
    tiny_hf_folder(folder, "hubert", seed=1)  # other weights
    second = key()
    assert second != first
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(pre | {"do_normalize": True}))
    assert key() not in (first, second)


def test_hf_upstreams_evaluate_and_appear_in_the_report(hf_folders, phone_shards, tmp_path, monkeypatch):
    outs = []
    for family in ("hubert", "wav2vec2", "wavlm"):
        out = tmp_path / f"eval-{family}"
        summary = evaluate.run(EvaluateParams(**FAST), upstream=f"hf:{hf_folders[family]}", out=out,
                               shards=phone_shards, cache=tmp_path / "cache")
        assert summary["upstream"] == family and summary["state_names"] == ["input", "layer1", "layer2"]
        metrics = json.loads((out / "sid" / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["upstream"] == family and metrics["frame_rate"] == 50
        outs.append(out)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")) == \
        ["hf"] * 3
    import progre.downstream.upstreams as upstreams

    def no_extraction(*args, **kwargs):
        raise AssertionError("hidden states were recomputed instead of read from the cache")

    monkeypatch.setattr(upstreams, "build_extractor", no_extraction)
    evaluate.run(EvaluateParams(**FAST), upstream=f"hf:{hf_folders['wavlm']}", out=tmp_path / "again",
                 shards=phone_shards, cache=tmp_path / "cache", name="WavLM tiny")
    result = report.run(ReportParams(title="hf"), results=outs + [tmp_path / "again"], out=tmp_path / "reports")
    assert result["upstreams"] == ["hubert", "wav2vec2", "wavlm", "WavLM tiny"]
    rows = {line.split("|")[1].strip() for line in (tmp_path / "reports" / "report.md").read_text().splitlines()
            if line.startswith("| ")}
    assert {"hubert", "wav2vec2", "wavlm", "WavLM tiny"} <= rows


# --------------------------------------------------------------------------- export --format transformers


@pytest.mark.parametrize("extractor_mode", ["default", "layer_norm"])
def test_a_hubert_export_loads_in_transformers_with_our_states(tmp_path, extractor_mode):
    torch.manual_seed(0)
    encoder = _randomized(build_encoder(model_config("tiny", "hubert", extractor_mode=extractor_mode)))
    save_checkpoint(tmp_path / "ours", encoder)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "ours"), "--out", str(tmp_path / "hf"),
                                      "--format", "transformers"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "hf").iterdir()} >= {"config.json", "model.safetensors",
                                                             "preprocessor_config.json"}
    model = transformers.HubertModel.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["HubertModel"]
    wav = 0.1 * torch.randn(2, 24000)
    lengths = torch.tensor([24000, 15000])
    with torch.no_grad():
        ours, frames = encoder.extract(wav, lengths=lengths)
        alone = model(wav[:1], output_hidden_states=True).hidden_states
    assert len(alone) == len(ours) == 5
    worst = max(float((a[0] - b[0]).abs().max()) for a, b in zip(ours, alone))
    assert worst <= 1e-4
    print(f"max |difference| of the exported HubertModel's states ({extractor_mode}): {worst:.2e}")
    if extractor_mode == "layer_norm":
        # a padded batch with transformers' attention mask: the CNN normalises per frame, so padding cannot leak
        mask = (torch.arange(24000) < lengths[:, None]).long()
        with torch.no_grad():
            batched = model(wav, attention_mask=mask, output_hidden_states=True).hidden_states
        n = int(frames[1])
        worst = max(float((a[1, :n] - b[1, :n]).abs().max()) for a, b in zip(ours, batched))
        assert worst <= 1e-4
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre["do_normalize"] is False and pre["return_attention_mask"] == (extractor_mode == "layer_norm")

    # the export is also an hf: upstream with our states, and progre.load reads it back
    hf_states = HFExtractor(tmp_path / "hf", torch.device("cpu"))([Utterance("u", wav[0].numpy(), {})])[0]
    our_states = HiddenStateExtractor(load_encoder(tmp_path / "ours"), torch.device("cpu"))(
        [Utterance("u", wav[0].numpy(), {})])[0]
    np.testing.assert_allclose(hf_states, our_states, rtol=0, atol=1e-4)
    import progre

    back = progre.load(tmp_path / "hf")
    assert back.state_names == encoder.hidden_state_names()
    for a, b in zip(back.hidden_states(wav[0]), our_states.transpose(1, 0, 2)):
        assert torch.equal(a, torch.from_numpy(b))  # the same weights in the same encoder


def test_a_progre_export_to_transformers_is_refused_in_one_line(tmp_path):
    save_checkpoint(tmp_path / "progre", build_encoder(model_config("tiny", "progre")))
    result = CliRunner().invoke(app, ["export", str(tmp_path / "progre"), "--out", str(tmp_path / "hf"),
                                      "--format", "transformers"])
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
    message = str(result.exception)
    assert "\n" not in message and "no pitch or speaker branch" in message
    assert "progre.load" in message and "s3prl" in message
    assert not (tmp_path / "hf").exists()
    with pytest.raises(UserError, match="two formats"):
        export(tmp_path / "progre", tmp_path / "x", official=True, layout="transformers")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "progre"), "--out", str(tmp_path / "off"),
                                      "--official"])  # the older spelling still works
    assert result.exit_code == 0, result.output
    assert (tmp_path / "off" / "model.pt").is_file()


def test_hf_upstream_of_a_pre_ln_export_equals_ours(tmp_path):
    """A pre-LN (Large-style) model: transformers' last hidden state is taken before the final LayerNorm,
    as ours and the release's."""
    torch.manual_seed(0)
    config = model_config("tiny", "hubert", layer_norm_first=True, extractor_mode="layer_norm", normalize=True)
    encoder = _randomized(build_encoder(config))
    save_checkpoint(tmp_path / "ours", encoder)
    export(tmp_path / "ours", tmp_path / "hf", layout="transformers")
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["do_normalize"] is True
    wav = (0.1 * np.random.default_rng(3).standard_normal(20000) + 0.02).astype(np.float32)
    hf_states = HFExtractor(tmp_path / "hf", torch.device("cpu"))([Utterance("u", wav, {})])[0]
    our_states = HiddenStateExtractor(encoder, torch.device("cpu"))([Utterance("u", wav, {})])[0]
    # transformers normalises with eps 1e-7 inside the square root, ours 1e-5: a relative 1e-3 of the input scale
    np.testing.assert_allclose(hf_states, our_states, rtol=0, atol=2e-3)


def test_cached_states_of_an_hf_upstream_are_its_extractor_s(hf_folders, phone_shards, tmp_path):
    shards = Shards(phone_shards)
    hidden = cached_hidden_states(parse_upstream(f"hf:{hf_folders['data2vec']}"), shards, tmp_path,
                                  seed=0, device=torch.device("cpu"), dtype="float32")
    extractor = HFExtractor(hf_folders["data2vec"], torch.device("cpu"))
    for utt in list(shards.stream())[:4]:
        np.testing.assert_allclose(hidden[utt.key], extractor([utt])[0], rtol=0, atol=1e-5)
