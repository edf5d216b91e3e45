"""bench.flops: the analytic FLOP count that model FLOPs utilisation is computed from."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench.flops import forward_flops, peak_tflops, train_step_flops
from progre.model import ProgREPretrainModel, build_encoder, model_config


@pytest.mark.parametrize("kind", ["hubert", "progre"])
def test_the_analytic_forward_count_equals_torchs_flop_counter(kind):
    config = model_config("tiny", kind, encoder_layerdrop=0.0)
    torch.manual_seed(0)
    model = ProgREPretrainModel(build_encoder(config), 20, 3).eval()
    batch, samples = 2, 16000
    frames = (samples - 400) // 320 + 1
    mask = torch.zeros(batch, frames, dtype=torch.bool)  # every frame gets logits, as `logit_frames=1`
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):  # attention as counted matmuls
        model(0.1 * torch.randn(batch, samples), None, torch.randint(0, 20, (batch, frames)),
              pitch=torch.randn(batch, frames), mask=mask)
    analytic = sum(forward_flops(config, batch, samples, num_labels=20, final_dim=256).values())
    assert analytic == pytest.approx(counter.get_total_flops(), rel=1e-4)
    assert train_step_flops(config, batch, samples, num_labels=20) == pytest.approx(3 * analytic)


def test_base_flops_per_audio_second_and_peaks():
    from bench.flops import flops_per_audio_second

    hubert = flops_per_audio_second(model_config("base", "hubert"))
    progre = flops_per_audio_second(model_config("base", "progre"))
    assert 40e9 < hubert < 50e9 and 0 < progre / hubert - 1 < 0.03  # ProgRE's branches: under 3% more FLOPs
    assert peak_tflops("NVIDIA H200") == peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("Some Future GPU") is None
