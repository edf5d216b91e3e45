"""ProgRE / HuBERT model: sizes, torchaudio parity, padding invariance, branches, masking, heads,
checkpoints. Tiny configs wherever the size does not matter."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchaudio

from progre.frames import num_frames
from progre.errors import UserError
from progre.dsp.pitch import compute_pitch
from progre.model import (IGNORE_LABEL, ModelConfig, ProgREEncoder, ProgREPretrainModel, build_encoder,
                          compute_span_mask, load_encoder, load_pretrain_model, model_config, pretraining_losses,
                          sample_span_starts, save_checkpoint, torchaudio_hubert_to_ours)
from progre.model.norms import MaskedBatchNorm1d, MaskedGroupNorm

from .conftest import tone, with_names_before_fairseq


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorm running statistics away from (0, 1), so eval-mode tests see them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _batch(lengths: list[int], seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor,
                                                       torch.Tensor]:
    """Utterances with their pitch contours, and the batch padded with garbage (not zeros)."""
    g = torch.Generator().manual_seed(seed)
    wavs = [0.1 * torch.randn(n, generator=g) for n in lengths]
    pitches = [torch.randn(num_frames(n), generator=g) for n in lengths]
    wav = 5.0 * torch.randn(len(lengths), max(lengths), generator=g)
    pitch = 5.0 * torch.randn(len(lengths), num_frames(max(lengths)), generator=g)
    for i, (w, p) in enumerate(zip(wavs, pitches)):
        wav[i, : len(w)] = w
        pitch[i, : len(p)] = p
    return wavs, pitches, wav, pitch


@pytest.fixture(scope="module")
def base_hubert() -> ProgREEncoder:
    torch.manual_seed(0)
    return build_encoder(model_config("base", "hubert")).eval()


@pytest.fixture(scope="module")
def base_progre() -> ProgREEncoder:
    torch.manual_seed(0)
    return build_encoder(model_config("base", "progre")).eval()


# ---------------------------------------------------------------- sizes and parity


def test_parameter_counts(base_progre, base_hubert):
    assert base_progre.num_parameters() == 96_712_960
    assert base_hubert.num_parameters() == 94_371_712
    torchaudio_count = sum(p.numel() for p in torchaudio.models.hubert_base().parameters())
    assert base_hubert.num_parameters() == torchaudio_count + 768  # + the mask embedding
    # BatchNorm buffers are not parameters, and ProgRE's extras are exactly the branches + sub_norm
    extras = sum(p.numel() for n, p in base_progre.named_parameters()
                 if n.startswith(("pitch_branch.", "sub_norm.", "speaker_branch.")))
    assert base_progre.num_parameters() - extras == base_hubert.num_parameters()
    tiny = build_encoder(model_config("tiny", "progre"))
    assert 2_000_000 < tiny.num_parameters() < 6_000_000


def test_torchaudio_hubert_parity(base_hubert):
    torch.manual_seed(1)
    reference = torchaudio.models.hubert_base().eval()
    ours = copy.deepcopy(base_hubert)
    missing, unexpected = ours.load_state_dict(torchaudio_hubert_to_ours(reference.state_dict()), strict=False)
    assert missing == ["mask_embedding"] and unexpected == []
    wav = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        ref_layers = reference.extract_features(wav)[0]
        ref_final = reference(wav)[0]
        states, frame_lengths = ours.extract(wav)
        final = ours(wav).x
    assert frame_lengths.tolist() == [49] and len(states) == 13 and len(ref_layers) == 12
    assert ours.hidden_state_names() == ["input"] + [f"layer{i}" for i in range(1, 13)]
    torch.testing.assert_close(final, ref_final, atol=1e-5, rtol=0)
    for ours_layer, ref_layer in zip(states[1:], ref_layers):
        torch.testing.assert_close(ours_layer, ref_layer, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- padding invariance


@pytest.mark.parametrize("overrides", [
    {},  # tiny ProgRE: post-LN, GroupNorm CNN, both branches
    dict(layer_norm_first=True, extractor_mode="layer_norm", normalize=True),  # the Large recipe, tiny
], ids=["post-ln", "pre-ln-large-style"])
def test_batch_equals_each_utterance_alone(overrides):
    torch.manual_seed(0)
    encoder = build_encoder(model_config("tiny", "progre", **overrides)).eval()
    _randomise_batchnorm(encoder)
    # 15990 samples give as many frames as 16000: only the CNN sees that padding
    for lengths in ([16000, 15990, 11000, 7321], [16000, 15990]):
        wavs, pitches, wav, pitch = _batch(lengths)
        with torch.no_grad():
            batch_states, batch_frames = encoder.extract(wav, pitch, torch.tensor(lengths))
            for i, (w, p) in enumerate(zip(wavs, pitches)):
                states, frames = encoder.extract(w[None], p[None])
                t = int(frames[0])
                assert t == int(batch_frames[i]) == num_frames(lengths[i])
                for name, alone, batched in zip(encoder.hidden_state_names(), states, batch_states):
                    torch.testing.assert_close(batched[i, :t], alone[0], atol=1e-4, rtol=0, msg=name)


def test_masked_group_norm_alone_is_exactly_group_norm():
    torch.manual_seed(0)
    norm = MaskedGroupNorm(8, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    plain = torch.nn.GroupNorm(8, 8)
    plain.load_state_dict(norm.state_dict())
    x = torch.randn(2, 8, 50)
    assert torch.equal(norm(x), plain(x)) and torch.equal(norm(x, torch.tensor([50, 50])), plain(x))
    # with padding: each utterance's statistics over its valid frames only; padded frames become 0
    lengths = torch.tensor([50, 31])
    garbage = torch.where(torch.arange(50) < lengths[:, None, None], x, 100.0)
    y = norm(garbage, lengths)
    assert torch.equal(y[1, :, :31], plain(x[1:, :, :31])[0]) and torch.equal(y[0], plain(x[:1])[0])
    assert not y[1, :, 31:].any()


def test_masked_batch_norm_training_statistics_ignore_padding():
    torch.manual_seed(0)
    masked, plain = MaskedBatchNorm1d(4, momentum=0.1), torch.nn.BatchNorm1d(4, momentum=0.1)
    assert list(masked.state_dict()) == list(plain.state_dict())
    lengths = torch.tensor([30, 12])
    valid = torch.arange(30) < lengths[:, None]
    x = torch.where(valid[:, None], torch.randn(2, 4, 30), 1e3)  # huge padding would dominate the stats
    y = masked(x, valid)
    concatenated = torch.cat([x[0, :, :30], x[1, :, :12]], dim=1)[None]  # (1, 4, 42): only real frames
    y_ref = plain(concatenated)[0]
    torch.testing.assert_close(torch.cat([y[0, :, :30], y[1, :, :12]], dim=1), y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert int(masked.num_batches_tracked) == 1


# ---------------------------------------------------------------- branches


def _capture(module: torch.nn.Module, store: dict, key: str, what: str = "output"):
    def hook(_, args, output):
        store[key] = args[0] if what == "input" else output
    return module.register_forward_hook(hook)


def test_pitch_branch_is_subtracted_before_the_transformer():
    torch.manual_seed(0)
    progre = build_encoder(model_config("tiny", "progre", speaker_branch=False)).eval()
    no_pitch = build_encoder(model_config("tiny", "hubert")).eval()
    no_pitch.load_state_dict({k: v for k, v in progre.state_dict().items()
                              if not k.startswith(("pitch_branch.", "sub_norm."))})
    wav, pitch = 0.1 * torch.randn(1, 8000), torch.randn(1, num_frames(8000))
    seen: dict = {}
    hooks = [_capture(progre.feature_projection, seen, "proj"), _capture(progre.pitch_branch, seen, "pitch"),
             _capture(progre.sub_norm, seen, "sub_in", "input"), _capture(progre.sub_norm, seen, "sub_out"),
             _capture(progre.transformer.pos_conv, seen, "transformer_in", "input"),
             _capture(no_pitch.feature_projection, seen, "proj_off"),
             _capture(no_pitch.transformer.pos_conv, seen, "transformer_in_off", "input")]
    with torch.no_grad():
        states, _ = progre.extract(wav, pitch)
        no_pitch.extract(wav)
    for h in hooks:
        h.remove()
    assert torch.equal(seen["sub_in"], seen["proj"] - seen["pitch"])
    assert torch.equal(seen["transformer_in"], seen["sub_out"])
    assert torch.equal(states[0], seen["pitch"])  # the first hidden state is the branch output
    # off: the same CNN and projection, and the projection goes to the transformer unchanged
    assert torch.equal(seen["proj_off"], seen["proj"])
    assert torch.equal(seen["transformer_in_off"], seen["proj_off"])


@pytest.mark.parametrize("speaker_layer", [2, 3])
def test_speaker_branch_is_subtracted_after_its_layer(speaker_layer):
    torch.manual_seed(0)
    encoder = build_encoder(model_config("tiny", "progre", speaker_layer=speaker_layer)).eval()
    k = speaker_layer
    seen: dict = {}
    hooks = [_capture(encoder.transformer.layers[k - 1], seen, "layer_out"),
             _capture(encoder.speaker_branch, seen, "speaker"),
             _capture(encoder.speaker_branch, seen, "speaker_in", "input"),
             _capture(encoder.transformer.layers[k], seen, "next_in", "input")]
    wav, pitch = 0.1 * torch.randn(1, 8000), torch.randn(1, num_frames(8000))
    with torch.no_grad():
        states, _ = encoder.extract(wav, pitch)
    for h in hooks:
        h.remove()
    names = encoder.hidden_state_names()
    assert names[k:k + 2] == ["speaker", f"layer{k}-speaker"] and len(states) == len(names) == 6
    assert torch.equal(seen["speaker_in"], seen["layer_out"])
    assert torch.equal(seen["next_in"], seen["layer_out"] - seen["speaker"])
    assert torch.equal(states[names.index("speaker")], seen["speaker"])
    assert torch.equal(states[names.index(f"layer{k}-speaker")], seen["next_in"])


def _tiny_pretrain(seed: int = 0, **overrides) -> tuple[ProgREPretrainModel, dict]:
    torch.manual_seed(seed)
    encoder = build_encoder(model_config("tiny", "progre", dropout=0.0, attention_dropout=0.0,
                                         dropout_input=0.0, **overrides))
    model = ProgREPretrainModel(encoder, num_labels=20, num_speakers=3)
    lengths = torch.tensor([12000, 9000])
    _, _, wav, pitch = _batch(lengths.tolist(), seed)
    t = num_frames(12000)
    labels = torch.randint(0, 20, (2, t))
    labels[1, num_frames(9000):] = IGNORE_LABEL
    batch = dict(wav=wav, lengths=lengths, labels=labels, pitch=pitch)
    return model, batch


def _grad_norms(module: torch.nn.Module) -> dict[str, float]:
    return {n: (0.0 if p.grad is None else float(p.grad.abs().sum())) for n, p in module.named_parameters()}


def test_gradients_reach_both_branches():
    model, batch = _tiny_pretrain()
    out = model(**batch, generator=torch.Generator().manual_seed(0))
    losses = pretraining_losses(out, torch.tensor([0, 2]))
    assert float(losses["loss_speaker"].detach()) > 0
    losses["loss"].backward()
    for branch in (model.encoder.pitch_branch, model.encoder.speaker_branch):
        grads = _grad_norms(branch)
        assert all(g > 0 for g in grads.values()), grads


@pytest.mark.parametrize("grad_through", [False, True])
def test_speaker_subtraction_is_detached_unless_asked(grad_through):
    model, batch = _tiny_pretrain(speaker_grad_through=grad_through)
    out = model(**batch, generator=torch.Generator().manual_seed(0))
    pretraining_losses(out, feature_penalty_weight=0.0, speaker_weight=0.0)["loss"].backward()
    speaker_grads = _grad_norms(model.encoder.speaker_branch)
    if grad_through:
        assert all(g > 0 for g in speaker_grads.values())
    else:
        assert all(g == 0 for g in speaker_grads.values())
    assert all(g > 0 for g in _grad_norms(model.encoder.pitch_branch).values())  # no detach on the pitch side


def test_conv_gradient_is_scaled():
    grads = {}
    for scale in (1.0, 0.1):
        model, batch = _tiny_pretrain(feature_grad_mult=scale)
        out = model(**batch, generator=torch.Generator().manual_seed(0))
        pretraining_losses(out, feature_penalty_weight=0.0, speaker_weight=0.0)["loss"].backward()
        grads[scale] = model.encoder.feature_extractor.conv_layers[0].conv.weight.grad
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-8)


# ---------------------------------------------------------------- masking


def _expected_mask_fraction(frames: int, mask_prob: float, length: int, min_masks: int) -> float:
    """E[masked fraction] for fairseq's sampler: n = floor(p T / L + U) (>= min_masks) distinct starts
    uniform over M = max(T - L, n + 1) positions; a frame is masked unless no start covers it."""
    a = mask_prob * frames / length
    expected = 0.0
    for n, weight in ((math.floor(a), 1 - (a - math.floor(a))), (math.floor(a) + 1, a - math.floor(a))):
        n = max(min_masks, n)
        m = max(frames - length, n + 1)
        covered = 0.0
        for j in range(frames):
            c = max(0, min(j, m - 1) - max(0, j - length + 1) + 1)
            covered += 1 - math.comb(m - c, n) / math.comb(m, n)
        expected += weight * covered / frames
    return expected


@pytest.mark.parametrize("frames", [100, 333])
def test_mask_fraction_matches_the_sampler(frames):
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask([frames] * 3000, frames, 0.8, 10, 2, generator=g)
    expected = _expected_mask_fraction(frames, 0.8, 10, 2)
    assert 0.45 < expected < 0.6  # overlaps make it well below 0.8
    assert abs(mask.float().mean().item() - expected) < 0.005


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    runs, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_mask_is_the_union_of_spans_of_mask_length():
    frames, length = 200, 10
    isolated = 0
    for seed in range(200):
        mask = compute_span_mask([frames], frames, 0.3, length, 2, generator=torch.Generator().manual_seed(seed))
        starts = sorted(sample_span_starts(frames, 0.3, length, 2, generator=torch.Generator().manual_seed(seed))
                        .tolist())
        expected = torch.zeros(frames, dtype=torch.bool)
        for s in starts:
            expected[s:s + length] = True
        assert torch.equal(mask[0], expected)
        for run_start, run_length in _runs(mask[0]):
            assert run_length >= length
            inside = [s for s in starts if run_start <= s < run_start + run_length]
            if len(inside) == 1:  # a span that merged with no other has exactly mask_length frames
                assert run_length == length
                isolated += 1
    assert isolated > 500


def test_min_masks_and_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([50, 37, 12, 1])
    mask = compute_span_mask(lengths, 60, 0.01, 10, 2, generator=g)  # 0.01 * T / 10 rounds to 0 or 1 span
    valid = torch.arange(60) < lengths[:, None]
    assert not (mask & ~valid).any()
    assert (mask[:2].sum(1) >= 11).all()  # two distinct starts of 10-frame spans cover at least 11 frames
    for t in (50, 37, 12, 1):
        assert len(sample_span_starts(t, 0.01, 10, 2, generator=g)) == 2


# ---------------------------------------------------------------- pretraining heads


def test_pretrain_outputs():
    model, batch = _tiny_pretrain()
    model.eval()
    with torch.no_grad():
        out = model(**batch, generator=torch.Generator().manual_seed(3))
    valid = torch.arange(out.mask.shape[1]) < out.frame_lengths[:, None]
    labelled = valid & (batch["labels"] != IGNORE_LABEL)
    assert not (out.mask & ~valid).any()
    assert out.masked_logits.shape == (int((out.mask & labelled).sum()), 20)
    assert out.unmasked_logits.shape == (int((~out.mask & labelled).sum()), 20)
    assert torch.equal(out.masked_targets, batch["labels"][out.mask & labelled])
    assert out.masked_logits.abs().max() <= 1 / model.logit_temp + 1e-4  # cosine / temperature
    assert out.speaker_logits.shape == (2, 3)
    enc = model.encoder(batch["wav"], batch["lengths"], batch["pitch"], out.mask)
    manual = torch.cat([enc.cnn_features[0, :num_frames(12000)], enc.cnn_features[1, :num_frames(9000)]])
    torch.testing.assert_close(out.feature_penalty, manual.pow(2).mean())
    # the masked frames really hold the mask embedding at the transformer's input
    seen: dict = {}
    hook = _capture(model.encoder.transformer.pos_conv, seen, "in", "input")
    with torch.no_grad():
        model.encoder(batch["wav"], batch["lengths"], batch["pitch"], out.mask)
    hook.remove()
    assert torch.equal(seen["in"][out.mask], model.encoder.mask_embedding.expand(int(out.mask.sum()), -1))
    hubert = ProgREPretrainModel(build_encoder(model_config("tiny", "hubert")), num_labels=20, num_speakers=3)
    assert hubert.speaker_classifier is None


# ---------------------------------------------------------------- extraction and input checks


def test_extract_computes_pitch_and_ignores_layerdrop():
    torch.manual_seed(0)
    encoder = build_encoder(model_config("tiny", "progre")).eval()
    wav = torch.from_numpy(tone(0.6, 180.0) + tone(0.6, 95.0, amp=0.05))[None]
    contour = torch.from_numpy(compute_pitch(wav[0].numpy()))[None]
    assert (contour != 0).any()
    with torch.no_grad():
        given, _ = encoder.extract(wav, contour)
        computed, _ = encoder.extract(wav)
    for a, b in zip(given, computed):
        assert torch.equal(a, b)

    hubert = build_encoder(model_config("tiny", "hubert", encoder_layerdrop=0.9, dropout=0.0,
                                        attention_dropout=0.0, dropout_input=0.0)).train()
    reference, _ = copy.deepcopy(hubert).eval().extract(wav)
    with torch.no_grad():
        states, _ = hubert.extract(wav)
        dropped = [hubert(wav).x for _ in range(5)]
    assert len(states) == len(reference) == 5
    torch.testing.assert_close(states[-1], reference[-1])
    assert any(not torch.allclose(x, reference[-1]) for x in dropped)


def test_bad_inputs_are_one_line_errors():
    encoder = build_encoder(model_config("tiny", "progre")).eval()
    with pytest.raises(UserError, match="shorter than one frame"):
        encoder.extract(torch.zeros(1, 399), torch.zeros(1, 1))
    with pytest.raises(UserError, match="shorter than one frame"):
        encoder(torch.zeros(2, 8000), torch.tensor([8000, 300]), torch.zeros(2, 24))
    with pytest.raises(ValueError, match="pitch must be"):
        encoder.extract(torch.zeros(1, 8000), torch.zeros(1, 30))
    with pytest.raises(ValueError, match="lengths go up to"):
        encoder(torch.zeros(2, 8000), torch.tensor([8000, 9000]), torch.zeros(2, 24))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        encoder(torch.zeros(8000))
    with pytest.raises(ValueError, match="speaker_layer"):
        model_config("tiny", "progre", speaker_layer=5)
    with pytest.raises(ValueError, match="unknown model size"):
        model_config("huge", "progre")


# ---------------------------------------------------------------- config and checkpoints


def test_config_json_round_trip():
    import json

    for size in ("tiny", "base", "large"):
        config = model_config(size, "progre", speaker_layer=3)
        assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert model_config("base", "hubert").kind == "hubert"
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"bogus": 1})


def test_checkpoint_round_trip(tmp_path):
    model, batch = _tiny_pretrain()
    _randomise_batchnorm(model)
    model.eval()
    save_checkpoint(tmp_path / "pretrain", model, extra={"step": 7})
    save_checkpoint(tmp_path / "encoder", model.encoder)
    assert sorted(p.name for p in (tmp_path / "pretrain").iterdir()) == ["config.json", "model.safetensors"]
    with torch.no_grad():
        expected, _ = model.encoder.extract(batch["wav"], batch["pitch"], batch["lengths"])
        for folder in ("pretrain", "encoder"):
            loaded = load_encoder(tmp_path / folder)
            assert loaded.config == model.encoder.config and not loaded.training
            states, _ = loaded.extract(batch["wav"], batch["pitch"], batch["lengths"])
            for a, b in zip(states, expected):
                assert torch.equal(a, b)
        full = load_pretrain_model(tmp_path / "pretrain").eval()
        assert full.heads_config() == model.heads_config()
        mask = torch.zeros(2, num_frames(12000), dtype=torch.bool)
        mask[:, 5:15] = True
        torch.testing.assert_close(full(**batch, mask=mask).masked_logits, model(**batch, mask=mask).masked_logits,
                                   atol=0, rtol=0)


def test_checkpoint_errors(tmp_path):
    encoder = build_encoder(model_config("tiny", "progre"))
    save_checkpoint(tmp_path / "tiny", encoder)
    with pytest.raises(UserError, match="not found"):
        load_encoder(tmp_path / "missing")
    with pytest.raises(UserError, match="different model: .*encoder_embed_dim=256 \\(expected 768\\)"):
        load_encoder(tmp_path / "tiny", config=model_config("base", "progre"))
    with pytest.raises(UserError, match="holds an encoder only"):
        load_pretrain_model(tmp_path / "tiny")
    # a config.json edited to another size no longer fits the weights
    import json

    meta = json.loads((tmp_path / "tiny" / "config.json").read_text())
    meta["model"]["encoder_ffn_embed_dim"] = 512
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="wrong shapes .*fc1.weight"):
        load_encoder(tmp_path / "tiny")
    (tmp_path / "tiny" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="has no model.safetensors"):
        load_encoder(tmp_path / "tiny")


def test_checkpoints_written_before_the_fairseq_names_load_as_the_same_encoder(tmp_path):
    """config.json files of earlier versions name the fields ffn_dim, conv_norm="layer", ... : they load,
    to the same config, weights and hidden states."""
    import json

    config = model_config("tiny", "progre", extractor_mode="layer_norm", normalize=True, layer_norm_first=True,
                          speaker_norm=True, encoder_layerdrop=0.1, feature_grad_mult=0.5, conv_pos=64,
                          conv_pos_groups=8, encoder_attention_heads=2, encoder_ffn_embed_dim=512)
    torch.manual_seed(0)
    encoder = build_encoder(config).eval()
    save_checkpoint(tmp_path / "old", encoder)
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    meta["model"] = with_names_before_fairseq(meta["model"])
    assert meta["model"]["ffn_dim"] == 512 and meta["model"]["conv_norm"] == "layer"
    assert "encoder_ffn_embed_dim" not in meta["model"] and "extractor_mode" not in meta["model"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))

    assert ModelConfig.from_dict(meta["model"]) == config
    loaded = load_encoder(tmp_path / "old")
    assert loaded.config == config
    assert loaded.state_dict().keys() == encoder.state_dict().keys()
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    wav = torch.from_numpy(tone(0.6))[None]
    with torch.no_grad():
        for a, b in zip(loaded.extract(wav)[0], encoder.extract(wav)[0]):
            assert torch.equal(a, b)
    # the old names build the same fresh weights from the same seed; HuBERT Base's "group" is "default"
    torch.manual_seed(0)
    again = build_encoder(ModelConfig.from_dict(meta["model"]))
    for name, tensor in again.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name
    hubert = model_config("base", "hubert")
    assert ModelConfig.from_dict(with_names_before_fairseq(hubert.to_dict())) == hubert
    assert hubert.extractor_mode == "default"
    with pytest.raises(ValueError, match="both the old and the new name of: ffn_dim/encoder_ffn_embed_dim"):
        ModelConfig.from_dict({**meta["model"], "encoder_ffn_embed_dim": 512})


def test_layer_drop_follows_the_release_for_progre_and_fairseq_for_hubert():
    assert model_config("base", "progre").encoder_layerdrop == 0.0  # the release's encoder_layerdrop: 0.0
    assert model_config("base", "hubert").encoder_layerdrop == 0.05
    assert model_config("base", "progre", encoder_layerdrop=0.1).encoder_layerdrop == 0.1
