"""The one frame grid: model frames, MFCC frames, label mapping and chunks agree with the components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from progre.frames import MFCC_RATE, chunk_samples, chunk_starts, hop, labels_per_frame, num_frames
from progre.model import build_encoder, model_config


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_the_cnn_gives_the_grid_s_frame_count(size):
    encoder = build_encoder(model_config(size, "hubert"))
    lengths = torch.tensor([400, 719, 720, 1000, 16000, 16399, 123457])
    assert encoder.frame_lengths(lengths).tolist() == [num_frames(int(n)) for n in lengths]
    assert num_frames(lengths).tolist() == encoder.frame_lengths(lengths).tolist()  # elementwise on tensors
    assert num_frames(399) == 0 and num_frames(0) == 0 and num_frames(400) == 1 and num_frames(720) == 2


def test_mfcc_frames_follow_kaldi_with_snip_edges():
    for n in (400, 559, 560, 4000, 16001):
        wav = torch.randn(1, n)
        assert kaldi.mfcc(wav, sample_frequency=16000).shape[0] == num_frames(n, MFCC_RATE)
    assert num_frames(np.array([399, 560]), MFCC_RATE).tolist() == [0, 2]


def test_label_mapping_and_hops():
    assert (hop(50), hop(100), labels_per_frame(50), labels_per_frame(100)) == (320, 160, 1, 2)
    with pytest.raises(ValueError, match="not on the grid"):
        hop(25)


def test_chunks_start_on_the_grid_and_cover_every_frame_once():
    n = 16000 * 7 + 123
    starts = chunk_starts(n, 2.0)
    length = chunk_samples(2.0)
    assert length == 100 * 320 + 80
    assert all(start % 320 == 0 and first == start // 320 for start, first in starts)
    frames = [f for start, first in starts for f in range(first, first + num_frames(len(range(n)[start:start + length])))]
    assert frames == list(range(num_frames(n)))
    assert chunk_starts(399, 2.0) == [(0, 0)]
