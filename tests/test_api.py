"""The Python API (`progre.load(...).hidden_states`) and the s3prl upstream interface (`progre.s3prl`):
both give the pipeline's own states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import progre
from progre.audio import resample
from progre.data.shards import Shards
from progre.downstream.upstreams import cached_hidden_states, parse_upstream
from progre.errors import UserError
from progre.features.hidden import HiddenStateExtractor
from progre.features.store import open_pitch_store
from progre.frames import num_frames
from progre.model import build_encoder, model_config, save_checkpoint
from progre.s3prl import UpstreamExpert, progre_local
from stages.export import export, import_official

from .test_model_import import _as_converted_release, _randomized

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def progre_checkpoint(tmp_path_factory) -> Path:
    """A tiny ProgRE encoder with every weight and BatchNorm statistic off its init."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("api") / "progre"
    save_checkpoint(folder, _randomized(build_encoder(model_config("tiny", "progre"))))
    return folder


@pytest.fixture(scope="module")
def pipeline_states(progre_checkpoint, phone_shards, phone_labels, tmp_path_factory):
    """The states `progre evaluate` caches for the checkpoint (float32, with the pitch folder), and the audio."""
    _, pitch = phone_labels
    shards = Shards(phone_shards)
    hidden = cached_hidden_states(parse_upstream(str(progre_checkpoint)), shards,
                                  tmp_path_factory.mktemp("cache"), seed=0, device=torch.device("cpu"), pitch=pitch,
                                  dtype="float32")
    audio = {utt.key: utt.wav for utt in shards.stream()}
    return hidden, audio


def test_import_progre_stays_cheap():
    code = "import sys, progre; assert 'torch' not in sys.modules, 'import progre imported torch'; print(progre.load)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "function load" in result.stdout


def test_load_gives_the_states_of_the_evaluation_cache(progre_checkpoint, pipeline_states, phone_labels):
    hidden, audio = pipeline_states
    model = progre.load(progre_checkpoint)
    assert model.state_names == hidden.state_names == ["pitch", "layer1", "speaker", "layer2-speaker", "layer3",
                                                       "layer4"]
    assert (model.kind, model.dim, model.frame_rate, model.device) == ("progre", 256, 50, torch.device("cpu"))
    # the pipeline's extractor on the utterance alone, reading the pitch folder: the API computes the same contour
    alone = HiddenStateExtractor(model.encoder, torch.device("cpu"), open_pitch_store(phone_labels[1]))
    from progre.data.shards import Utterance

    for key in sorted(audio)[:6]:
        states = model.hidden_states(audio[key], sample_rate=16000)
        assert len(states) == 6 and all(s.shape == (num_frames(len(audio[key])), 256) for s in states)
        stacked = torch.stack(states, dim=1).numpy()
        assert np.array_equal(stacked, alone([Utterance(key, audio[key], {})])[0])
        np.testing.assert_allclose(stacked, hidden[key], rtol=0, atol=1e-5)  # the cache batched it with others


def test_a_batch_is_padded_and_each_utterance_equals_it_alone(progre_checkpoint, pipeline_states):
    _, audio = pipeline_states
    model = progre.load(progre_checkpoint)
    keys = sorted(audio)[:3]
    wavs = [torch.from_numpy(audio[k]) for k in keys]
    batch = model.hidden_states(wavs)
    frames = [num_frames(len(w)) for w in wavs]
    assert batch.lengths.tolist() == frames and batch.names == model.state_names
    assert batch.padding_mask.shape == (3, max(frames))
    assert batch.padding_mask.sum(1).tolist() == [max(frames) - n for n in frames]
    for state in batch.states:
        assert state.shape == (3, max(frames), 256)
    for i, wav in enumerate(wavs):
        alone = model.hidden_states(wav)
        for s, name in enumerate(model.state_names):
            torch.testing.assert_close(batch.states[s][i, :frames[i]], alone[s], rtol=0, atol=1e-5)
            assert batch[name] is batch.states[s]
            assert not batch.states[s][i, frames[i]:].any()  # zero padding


def test_any_sample_rate_is_resampled_and_bad_input_is_refused(progre_checkpoint, pipeline_states):
    _, audio = pipeline_states
    model = progre.load(progre_checkpoint)
    wav = audio[sorted(audio)[0]]
    at_8k = resample(wav, 16000, 8000)
    states = model.hidden_states(at_8k, sample_rate=8000)
    expected = model.hidden_states(resample(at_8k, 8000, 16000))
    for a, b in zip(states, expected):
        assert torch.equal(a, b)
    assert len(model.hidden_states(list(map(float, wav[:4000])))) == 6  # a list of samples is one waveform
    with pytest.raises(ValueError, match="1-D mono"):
        model.hidden_states(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="fewer than one frame"):
        model.hidden_states(np.zeros(300, np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        model.hidden_states(np.full(16000, np.nan, np.float32))


def test_load_reads_run_folders_exports_and_imported_release_checkpoints(progre_checkpoint, tmp_path):
    reference = progre.load(progre_checkpoint)
    wav = (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32)
    expected = reference.hidden_states(wav)
    run = tmp_path / "run"
    save_checkpoint(run / "model", reference.encoder)
    export(progre_checkpoint, tmp_path / "official", layout="official")
    torch.save(_as_converted_release(reference.encoder), tmp_path / "release.ckpt")
    import_official(tmp_path / "release.ckpt", tmp_path / "imported", size="tiny")
    for path in (run, tmp_path / "official", tmp_path / "imported"):
        model = progre.load(str(path))
        for a, b in zip(model.hidden_states(wav), expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=str(path))
    with pytest.raises(UserError, match="import-official"):
        progre.load(tmp_path / "release.ckpt")
    with pytest.raises(UserError, match="not found"):
        progre.load(tmp_path / "missing")


# --------------------------------------------------------------------------- s3prl's upstream interface


def test_s3prl_upstream_contract(progre_checkpoint, pipeline_states):
    """s3prl's runner calls `UpstreamExpert(ckpt=..., model_config=..., refresh=...)`, `.to(device)`, then the
    module on a list of 1-D 16 kHz tensors, and reads padded (B, T, D) hidden states."""
    hidden, audio = pipeline_states
    expert = progre_local(str(progre_checkpoint), model_config=None, refresh=False).to("cpu")
    assert isinstance(expert, UpstreamExpert) and isinstance(expert, torch.nn.Module) and not expert.training
    assert expert.get_downsample_rates("hidden_states") == 320
    keys = sorted(audio, key=lambda k: len(audio[k]))[:4]
    wavs = [torch.from_numpy(audio[k]) for k in keys]
    assert len({len(w) for w in wavs}) > 1
    with torch.no_grad():
        out = expert(wavs)
    states = out["hidden_states"]
    frames = [num_frames(len(w)) for w in wavs]
    assert len(states) == 6 and all(s.shape == (4, max(frames), 256) for s in states)
    for i, (key, wav) in enumerate(zip(keys, wavs)):
        alone = expert([wav])["hidden_states"]
        for s in range(6):
            torch.testing.assert_close(states[s][i, :frames[i]], alone[s][0], rtol=0, atol=1e-5)
            assert not states[s][i, frames[i]:].any()
        np.testing.assert_allclose(torch.stack([s[i, :frames[i]] for s in states], 1).numpy(), hidden[key],
                                   rtol=0, atol=1e-5)
    expert.train()
    with pytest.raises(RuntimeError, match="frozen"):
        expert(wavs)


@pytest.mark.slow
def test_s3prl_featurizer_builds_over_the_upstream(progre_checkpoint):
    """s3prl's own Featurizer (the learned weighted sum of SUPERB) over our upstream."""
    interfaces = pytest.importorskip("s3prl.upstream.interfaces", reason="s3prl is not installed (the s3prl extra)")
    expert = UpstreamExpert(str(progre_checkpoint))
    featurizer = interfaces.Featurizer(expert, upstream_device="cpu")
    assert (featurizer.layer_num, featurizer.output_dim, featurizer.downsample_rate) == (6, 256, 320)
    wavs = [torch.randn(16000) * 0.1, torch.randn(12345) * 0.1]
    with torch.no_grad():
        features = featurizer(wavs, expert(wavs))
    # s3prl cuts each to round(N / 320) frames of the padded batch: 49 (all there are) and 39 (our 38 and a
    # padded one), as it does with fairseq's HuBERT, whose frames are ours
    assert [tuple(f.shape) for f in features] == [(49, 256), (39, 256)]
    assert num_frames(12345) == 38


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: torch sees none (`make gpu-check` runs these on one)")
def test_the_api_runs_on_the_gpu(progre_checkpoint):
    wav = (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
    on_cpu = progre.load(progre_checkpoint).hidden_states(wav)
    model = progre.load(progre_checkpoint, device="cuda")
    on_gpu = model.hidden_states(wav)
    assert model.device.type == "cuda" and all(s.device.type == "cuda" for s in on_gpu)
    for a, b in zip(on_gpu, on_cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-3)
    batch = model.hidden_states([wav, wav[:9000]])
    assert batch.lengths.device.type == "cuda" and batch.states[0].device.type == "cuda"
    assert model.to("cpu").hidden_states(wav)[0].device.type == "cpu"
