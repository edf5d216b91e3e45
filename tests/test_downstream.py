"""Downstream building blocks: featurizer, metrics, CTC decoding, heads, task labels, phonemisation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from progre.data import espeak
from progre.errors import UserError
from progre.downstream.featurizer import Featurizer
from progre.downstream.upstreams import parse_upstream
from progre.downstream.error_rates import (accuracy, char_error_rate, edit_distance, error_rate, phone_error_rate,
                                          word_error_rate)
from progre.downstream.ctc import ctc_greedy_decode, ctc_loss, ctc_min_frames
from progre.downstream.heads import BiLSTMHead, reverse_within
from progre.downstream.tasks import (PhoneRecognition, SpeechRecognition, TaskSkipped, UtteranceClassification,
                                     normalize_transcript)

# --------------------------------------------------------------------------- featurizer


def test_featurizer_starts_uniform_and_sums_states():
    featurizer = Featurizer(num_states=4, dim=3)
    assert torch.equal(featurizer.weights.detach(), torch.zeros(4))
    assert torch.allclose(featurizer.normalized_weights(), torch.full((4,), 0.25))
    states = torch.randn(2, 5, 4, 3)  # (B, T, S, D)
    assert torch.allclose(featurizer(states), states.mean(dim=2), atol=1e-6)
    with torch.no_grad():
        featurizer.weights.copy_(torch.tensor([0.0, math.log(3.0), -1e4, 0.0]))  # softmax -> 0.2, 0.6, 0, 0.2
    expected = 0.2 * states[:, :, 0] + 0.6 * states[:, :, 1] + 0.2 * states[:, :, 3]
    assert torch.allclose(featurizer(states), expected, atol=1e-5)
    with pytest.raises(ValueError, match="hidden states"):
        featurizer(torch.randn(2, 5, 3, 3))


def test_featurizer_normalisations():
    states = 10 + 5 * torch.randn(7, 3, 4)  # (T, S, D)
    normed = Featurizer(3, 4, layer_norm=True).normalize(states)
    assert torch.allclose(normed.mean(-1), torch.zeros(7, 3), atol=1e-5)
    assert torch.allclose(normed.var(-1, unbiased=False), torch.ones(7, 3), atol=1e-3)
    mean, std = states.mean(0), states.std(0, unbiased=False)
    standardised = Featurizer(3, 4, mean=mean, std=std).normalize(states)
    assert torch.allclose(standardised.mean(0), torch.zeros(3, 4), atol=1e-5)
    assert torch.allclose(standardised.std(0, unbiased=False), torch.ones(3, 4), atol=1e-4)
    # the weighted sum is linear: pooling the normalised states first gives the same utterance vector
    featurizer = Featurizer(3, 4, mean=mean, std=std)
    with torch.no_grad():
        featurizer.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    assert torch.allclose(featurizer(states).mean(0), featurizer.combine(featurizer.normalize(states).mean(0)),
                          atol=1e-5)
    with pytest.raises(ValueError, match="both"):
        Featurizer(3, 4, mean=mean)


def test_featurizer_learns_to_pick_the_planted_informative_state():
    """State 2 of 5 carries the class (plus noise); the others are noise of the same scale."""
    generator = torch.Generator().manual_seed(0)
    num, states, dim, classes = 512, 5, 8, 4
    labels = torch.randint(0, classes, (num,), generator=generator)
    centres = torch.randn(classes, dim, generator=generator) * 2.0
    x = torch.randn(num, states, dim, generator=generator)
    x[:, 2] = centres[labels] + 0.5 * torch.randn(num, dim, generator=generator)
    torch.manual_seed(0)
    featurizer = Featurizer(states, dim)
    head = nn.Linear(dim, classes)
    optimizer = torch.optim.Adam([*featurizer.parameters(), *head.parameters()], lr=5e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(head(featurizer(x)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = featurizer.normalized_weights().detach()
    assert int(weights.argmax()) == 2
    assert weights[2] > 0.6
    assert float((head(featurizer(x)).argmax(-1) == labels).float().mean()) > 0.95


# --------------------------------------------------------------------------- metrics


def _levenshtein(reference: list, hypothesis: list) -> int:
    """The textbook dynamic programme, as the oracle for the package."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_token in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_token != hyp_token))
        previous = current
    return previous[-1]


def test_edit_distance_equals_the_dynamic_programme_on_phone_sequences():
    rng = np.random.default_rng(0)
    phones = ["a", "aI", "tS", "@", "n", "s", "sil"]
    for _ in range(200):
        ref = [phones[i] for i in rng.integers(0, len(phones), rng.integers(0, 30))]
        hyp = [phones[i] for i in rng.integers(0, len(phones), rng.integers(0, 30))]
        assert edit_distance(ref, hyp) == _levenshtein(ref, hyp)


def test_edit_distance_by_hand():
    assert edit_distance(list("kitten"), list("sitting")) == 3  # k->s, e->i, +g
    assert edit_distance([], ["a", "b"]) == 2
    assert edit_distance(["a", "b"], []) == 2
    assert edit_distance(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert edit_distance(["a", "b", "c", "d"], ["b", "c", "d", "a"]) == 2  # delete a, insert a


def test_error_rates_by_hand():
    # (1 deletion) + (1 insertion) over 3 + 1 reference phones
    assert phone_error_rate([["a", "b", "c"], ["d"]], [["a", "c"], ["d", "e"]]) == pytest.approx(0.5)
    # "the cat sat" -> "the bat sat down": 1 substitution + 1 insertion over 3 words
    assert word_error_rate(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)
    assert word_error_rate(["a b", "c d e"], ["a b", ""]) == pytest.approx(3 / 5)
    # "ab cd" -> "ab  ce": whitespace collapses, then 1 substitution over 5 characters
    assert char_error_rate(["ab cd"], ["ab  ce"]) == pytest.approx(1 / 5)
    assert error_rate([["x"]], [["y", "z", "w"]]) == pytest.approx(3.0)  # insertions push it above 1
    with pytest.raises(ValueError, match="no tokens"):
        error_rate([[]], [["a"]])
    with pytest.raises(ValueError, match="hypotheses"):
        error_rate([["a"]], [])


def test_accuracy_by_hand():
    assert accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == pytest.approx(0.75)
    assert accuracy([1, 2], [2, 1]) == 0.0
    with pytest.raises(ValueError):
        accuracy([], [])


# --------------------------------------------------------------------------- CTC


def _one_hot_logits(paths: list[list[int]], vocab: int = 4) -> torch.Tensor:
    frames = max(len(p) for p in paths)
    logits = torch.full((len(paths), frames, vocab), -5.0)
    for b, path in enumerate(paths):
        for t, token in enumerate(path):
            logits[b, t, token] = 5.0
    return logits


def test_ctc_greedy_decoding_collapses_repeats_and_drops_blanks():
    logits = _one_hot_logits([[1, 1, 0, 1, 2, 2, 0], [0, 0, 0, 0, 0, 0, 0], [3, 0, 3, 3, 1, 1, 1]])
    lengths = torch.tensor([7, 7, 4])  # the third stops after [3, blank, 3, 3]
    assert ctc_greedy_decode(logits, lengths) == [[1, 1, 2], [], [3, 3]]


def test_ctc_min_frames_and_loss():
    assert ctc_min_frames([1, 1, 2]) == 4  # a blank must separate the repeated 1s
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([]) == 0
    logits = _one_hot_logits([[1, 0, 1, 2], [3, 3, 0, 0]])
    lengths = torch.tensor([4, 4])
    good = ctc_loss(logits, lengths, [[1, 1, 2], [3]])
    bad = ctc_loss(logits, lengths, [[2, 2, 2], [1]])
    assert float(good) < 0.1 < float(bad)


def test_reverse_within_lengths_keeps_padding_in_place():
    x = torch.arange(10.0).reshape(2, 5, 1)
    y = reverse_within(x, torch.tensor([5, 3]))
    assert y[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert y[1, :, 0].tolist() == [7, 6, 5, 8, 9]
    assert torch.equal(reverse_within(y, torch.tensor([5, 3])), x)


def test_bilstm_head_is_padding_invariant_and_matches_a_packed_bilstm():
    torch.manual_seed(0)
    head = BiLSTMHead(dim=6, hidden=5, layers=2, outputs=4).eval()
    a, b = torch.randn(9, 6), torch.randn(4, 6)
    batch = torch.zeros(2, 9, 6)
    batch[0], batch[1, :4] = a, b
    batch[1, 4:] = 100.0  # garbage in the padding must not leak
    with torch.no_grad():
        out, lengths = head(batch, torch.tensor([9, 4]))
        alone, _ = head(b[None], torch.tensor([4]))
    assert lengths.tolist() == [9, 4]
    assert torch.allclose(out[1, :4], alone[0], atol=1e-5)
    # the same weights in nn.LSTM(bidirectional=True) on the valid frames give the same output
    reference = nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for layer in range(2):
            for suffix, lstms in (("", head.forward_lstms), ("_reverse", head.backward_lstms)):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{name}_l{layer}{suffix}").copy_(getattr(lstms[layer], f"{name}_l0"))
        expected = head.out(reference(a[None])[0])
    assert torch.allclose(out[0], expected[0], atol=1e-5)


def test_bilstm_head_stacks_faster_frames():
    head = BiLSTMHead(dim=3, hidden=4, layers=1, outputs=5, stride=2)
    out, lengths = head(torch.randn(2, 11, 3), torch.tensor([11, 6]))
    assert out.shape == (2, 5, 5) and lengths.tolist() == [5, 3]


# --------------------------------------------------------------------------- task labels


def _rows(split: str, *items) -> list[dict]:
    return [{"key": f"{split}{i}", "split": split, **item} for i, item in enumerate(items)]


def test_sid_skips_speakers_absent_from_train():
    task = UtteranceClassification("sid", "SID", "speaker", "speaker")
    rows = {"train": _rows("train", {"speaker": "a"}, {"speaker": "b"}, {"speaker": "a"}, {"speaker": None}),
            "valid": _rows("valid", {"speaker": "a"}, {"speaker": "c"}),
            "test": _rows("test", {"speaker": "b"}, {"speaker": "c"}, {"speaker": "d"})}
    prep = task.prepare(rows)
    assert prep.vocabulary == ["a", "b"]
    assert prep.splits["train"].targets == [0, 1, 0]
    assert prep.splits["valid"].keys == ["valid0"] and prep.splits["valid"].references == ["a"]
    assert prep.splits["test"].keys == ["test0"] and prep.splits["test"].targets == [1]
    notes = " | ".join(prep.notes)
    assert "1 valid and 2 test utterances of speakers absent from train skipped" in notes
    assert "c, d" in notes
    assert "1 train utterance without a speaker label" in notes


def test_classification_without_labels_is_skipped():
    task = UtteranceClassification("er", "ER", "style", "style")
    none = {s: _rows(s, {"style": None}, {}) for s in ("train", "valid", "test")}
    with pytest.raises(TaskSkipped, match="no style labels"):
        task.prepare(none)
    single = {s: _rows(s, {"style": "calm"}) for s in ("train", "valid", "test")}
    with pytest.raises(TaskSkipped, match="single style"):
        task.prepare(single)


def test_phone_targets_from_phones_or_phonemised_text():
    calls = []

    def phonemize(text: str, voice: str) -> list[str]:
        calls.append(text)
        assert voice == "en-us"
        return text.split()

    task = PhoneRecognition(phonemize, lambda language: "en-us")
    rows = {"train": _rows("train", {"phones": ["sil", "a", "b", "sil"], "text": "ignored"}, {"text": "b c"}),
            "valid": _rows("valid", {"phones": ["a", "z"]}, {"text": None}),
            "test": _rows("test", {"phones": ["sil"], "text": "a"})}
    prep = task.prepare(rows)
    assert calls == ["b c", "a"]  # phones win over text; text fills in where phones are missing or silence
    assert prep.vocabulary == ["a", "b", "c"]
    assert prep.splits["train"].targets == [[1, 2], [2, 3]]
    assert prep.splits["valid"].references == [["a", "z"]]  # z is unknown to train: scored, not trained on
    assert prep.splits["valid"].targets == [[1]]
    assert any("absent from train (z)" in n for n in prep.notes)
    assert any("1 valid utterance without phones or text" in n for n in prep.notes)
    with pytest.raises(TaskSkipped, match="neither phones nor transcripts"):
        task.prepare({s: _rows(s, {"text": " "}) for s in ("train", "valid", "test")})


def test_asr_targets_and_transcript_normalisation():
    assert normalize_transcript("Don't stop, Bob-by!  42") == "don't stop bob by 42"
    assert normalize_transcript("'Tis the dogs' ' bone") == "'tis the dogs' bone"  # a lone quote is no apostrophe
    task = SpeechRecognition()
    rows = {"train": _rows("train", {"text": "Hi, yo!"}), "valid": _rows("valid", {"text": "..."}, {"text": "a"}),
            "test": _rows("test", {"text": "b"})}
    prep = task.prepare(rows)
    assert prep.vocabulary == [" ", "h", "i", "o", "y"]  # the characters of the training transcripts
    assert prep.splits["train"].targets == [[2, 3, 1, 5, 4]]  # h i _ y o (blank 0)
    assert prep.splits["valid"].keys == ["valid1"]
    assert prep.splits["valid"].references == ["a"] and prep.splits["valid"].targets == [[]]
    assert any("2 valid/test characters of 2 kinds absent from train (a b) count as errors" in n for n in prep.notes)
    assert task.metric == "wer" and set(task.score(["hi yo"], ["hi yo"])) == {"wer", "cer"}
    assert task.stride(100) == 2 and task.stride(50) == 1


# --------------------------------------------------------------------------- upstream names, eSpeak


def test_upstream_names(tmp_path, monkeypatch):
    from progre.model import build_encoder, model_config, save_checkpoint

    encoder = build_encoder(model_config("tiny", "hubert"))
    for folder in ("runs/progre_iter2/model", "exports/hubert"):
        save_checkpoint(tmp_path / folder, encoder)
    monkeypatch.chdir(tmp_path)
    assert parse_upstream("mfcc").kind == "mfcc" and parse_upstream("mfcc").name == "mfcc"
    run = parse_upstream("runs/progre_iter2/model")
    assert (run.kind, run.name, run.checkpoint) == ("checkpoint", "progre_iter2", Path("runs/progre_iter2/model"))
    random = parse_upstream("random:runs/progre_iter2/model")
    assert (random.kind, random.name, random.spec) == ("random", "random-progre_iter2", "random:runs/progre_iter2/model")
    assert parse_upstream("exports/hubert", name="HuBERT").name == "HuBERT"
    with pytest.raises(UserError, match="not found"):
        parse_upstream("runs/missing/model")


def test_phonemize_matches_the_phones_of_synthesis():
    assert espeak.phonemize("hello") == ["h", "@", "l", "oU"]
    text = "Frankly, those lazy judges sold our table under the market."
    _, segments = espeak.speak(text, "en-us")
    assert espeak.phonemize(text, "en-us") == [p for p, _, _ in segments if p != espeak.PAUSE]
    assert espeak.phonemize("  ") == [] and espeak.phonemize("...") == []
    assert all("'" not in p and "," not in p for p in espeak.phonemize("Don't stop, Bob!"))


def test_state_table_and_utterance_means(tmp_path: Path):
    """The table holds the normalised frames (in memory, or read per request when they do not fit);
    utterance_means pools them."""
    from progre.downstream.head_data import StateTable, utterance_means
    from progre.downstream.upstreams import HiddenStates
    from progre.features.store import FeatureWriter, write_meta

    frames = {"u1": np.arange(12, dtype=np.float32).reshape(2, 6), "u2": np.ones((3, 6), np.float32)}
    writer = FeatureWriter(tmp_path, 6, "float32")
    for key, value in frames.items():
        writer.add(key, value)
    writer.close()
    write_meta(tmp_path, {"kind": "hidden", "state_names": ["a", "b"], "state_dim": 3, "dim": 6, "frame_rate": 50,
                          "upstream": {"kind": "test"}, "world_size": 1})
    hidden = HiddenStates(tmp_path)
    assert hidden["u1"].shape == (2, 2, 3) and hidden.num_frames("u2") == 3
    in_memory = StateTable(hidden, ["u1", "u2"], lambda x: 2 * x)
    streamed = StateTable(hidden, ["u1", "u2"], lambda x: 2 * x, max_bytes=10)
    assert in_memory.in_memory and not streamed.in_memory
    for table in (in_memory, streamed):
        assert torch.equal(table["u1"], 2 * torch.from_numpy(frames["u1"]).reshape(2, 2, 3))
        assert table.num_frames("u2") == 3
        means = utterance_means(table, ["u1", "u2"])
        assert means["u1"].dtype == np.float16
        assert np.allclose(means["u1"], 2 * frames["u1"].mean(0).reshape(2, 3))
        assert np.allclose(means["u2"], 2 * np.ones((2, 3)))


def test_the_hidden_state_cache_key_covers_the_code_the_weights_and_the_pitch(tmp_path, monkeypatch):
    """An edit of the MFCC code, new weights or other pitch contours give another cache entry."""
    import progre.dsp.mfcc as mfcc_module
    from progre.downstream.upstreams import cache_key, upstream_identity
    from progre.model import build_encoder, model_config, save_checkpoint

    def key(upstream, pitch=None):
        return cache_key(upstream_identity(upstream, seed=1, pitch=pitch), "corpus", "float16")

    mfcc = parse_upstream("mfcc")
    before = key(mfcc)
    edited = tmp_path / "mfcc.py"
    edited.write_text(Path(mfcc_module.__file__).read_text() + "\n# an edit\n")
    monkeypatch.setattr(mfcc_module, "__file__", str(edited))
    assert key(mfcc) != before
    monkeypatch.undo()
    assert key(mfcc) == before

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "a", build_encoder(model_config("tiny", "progre")))
    pitch = tmp_path / "pitch"
    pitch.mkdir()
    (pitch / "part-000-of-001.npy").write_bytes(b"contours")
    upstream = parse_upstream(str(tmp_path / "a"))
    first = key(upstream, pitch)
    assert key(upstream, pitch) == first and key(upstream) != first
    (pitch / "part-000-of-001.npy").write_bytes(b"other contours")
    assert key(upstream, pitch) != first
    without_pitch = key(upstream)
    save_checkpoint(tmp_path / "a", build_encoder(model_config("tiny", "progre")))  # other weights
    assert key(upstream) != without_pitch
    assert key(parse_upstream(f"random:{tmp_path / 'a'}")) not in (key(upstream), without_pitch)


# --------------------------------------------------------------------------- batching and parallel fits


def test_length_buckets_cover_every_utterance_once_and_cut_padding():
    from progre.downstream.head_data import batch_order

    lengths = torch.randint(50, 250, (200,), generator=torch.Generator().manual_seed(0)).tolist()

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    for seed in (1, 2):
        bucketed = batch_order(200, 16, torch.Generator().manual_seed(seed), lengths)
        shuffled = batch_order(200, 16, torch.Generator().manual_seed(seed))
        assert sorted(i for b in bucketed for i in b) == list(range(200)) == sorted(i for b in shuffled for i in b)
        assert all(len(b) == 16 for b in bucketed[:-1] if len(b) != 200 % 16)
        assert padded(bucketed) < 0.8 * padded(shuffled)  # about 0.65 here
        assert bucketed == batch_order(200, 16, torch.Generator().manual_seed(seed), lengths)
    assert batch_order(200, 16, torch.Generator().manual_seed(1), lengths) != \
        batch_order(200, 16, torch.Generator().manual_seed(2), lengths)
    longest_first = batch_order(200, 16, None, lengths)
    assert [lengths[i] for b in longest_first for i in b] == sorted(lengths, reverse=True)
    assert batch_order(5, 2, None) == [[0, 1], [2, 3], [4]]


def test_predictions_come_back_in_the_split_order_whatever_the_batching(tmp_path: Path):
    """Evaluation batches utterances longest first; predictions and references are put back in order."""
    from progre.downstream.head_data import Examples, FrameSplit, StateTable
    from progre.downstream.head_fit import DownstreamModel, predictions_of
    from progre.downstream.upstreams import HiddenStates
    from progre.features.store import FeatureWriter, write_meta

    counts = [3, 9, 1, 7, 5]
    writer = FeatureWriter(tmp_path, 2, "float32")
    for i, n in enumerate(counts):
        writer.add(f"u{i}", np.ones((n, 2), np.float32))
    writer.close()
    write_meta(tmp_path, {"kind": "hidden", "state_names": ["a"], "state_dim": 2, "dim": 2, "frame_rate": 50,
                          "upstream": {"kind": "test"}, "world_size": 1})
    table = StateTable(HiddenStates(tmp_path), [f"u{i}" for i in range(5)], lambda x: x)
    split = FrameSplit(table, Examples([f"u{i}" for i in range(5)], [0] * 5, [f"ref{i}" for i in range(5)]))

    class CountFrames:  # a task whose prediction is the number of frames the head saw
        def predict(self, logits, lengths, vocabulary):
            return lengths.tolist()

    class Identity(nn.Module):
        def forward(self, x, lengths):
            return x, lengths

    model = DownstreamModel(Featurizer(1, 2), Identity())
    references, predictions = predictions_of(CountFrames(), model, split, [], 2, torch.device("cpu"))
    assert references == [f"ref{i}" for i in range(5)] and predictions == counts


def _seeded_fit(job, device):
    """A tiny seeded regression: the same job gives the same weights in any process."""
    seed, steps = job
    torch.manual_seed(seed)
    model = nn.Linear(4, 1).to(device)
    x = torch.randn(32, 4, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return model.weight.detach().cpu().clone(), torch.get_num_threads(), str(device)


@pytest.mark.parametrize("workers,start", [(1, None), (2, "fork"), (2, "spawn")])
def test_fit_pool_runs_every_job_once_with_one_thread_including_jobs_submitted_on_the_way(workers, start,
                                                                                          monkeypatch):
    """In this process, in forked workers (the CPU's) and in spawned ones (CUDA's, here on the CPU)."""
    from progre.downstream import pool as pool_module
    from progre.downstream.pool import FitPool

    if start is not None:
        monkeypatch.setitem(pool_module.START_METHODS, "cpu", start)
    threads = torch.get_num_threads()
    results = {}
    with FitPool(_seeded_fit, [torch.device("cpu")] * workers) as pool:
        for seed in (1, 2):
            pool.submit((seed, 3))
        for job, result in pool.completed():
            results[job] = result
            if job[1] == 3:  # a finished job makes another possible (as a finished search does the other seeds)
                pool.submit((job[0], 5))
    assert sorted(results) == [(1, 3), (1, 5), (2, 3), (2, 5)]
    for job, (weight, used_threads, device) in results.items():
        assert torch.equal(weight, _seeded_fit(job, torch.device("cpu"))[0]) and used_threads == 1 and device == "cpu"
    assert torch.get_num_threads() == threads


def test_fits_spread_over_every_visible_gpu(monkeypatch):
    """`evaluate.workers` processes on the CPU, that many per GPU on CUDA (only the device count is mocked)."""
    from progre.downstream.pool import fit_devices

    cpu = torch.device("cpu")
    assert fit_devices(3, cpu) == [cpu] * 3 and fit_devices(0, cpu) == [cpu]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert fit_devices(2, torch.device("cuda")) == [torch.device("cuda", i) for i in (0, 1, 2, 0, 1, 2)]
    assert fit_devices(1, torch.device("cuda")) == [torch.device("cuda", i) for i in (0, 1, 2)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert fit_devices(1, torch.device("cuda")) == [torch.device("cuda", 0)]  # one in all: fits in this process
