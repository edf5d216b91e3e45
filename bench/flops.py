"""Model FLOPs of a pretraining step, counted analytically, and the GPUs' peak bf16 rates.

Counted: every multiply-add of the convolutions (CNN front end, position conv, pitch branch), the
linear layers (feature projection, attention projections, feed-forward, speaker branch, GRU gates,
prediction head) and the attention products Q K^T and A V, at 2 FLOPs per multiply-add. Not
counted: normalisations, activations, softmax, dropout, the optimizer (all element-wise). A
training step is 3 x the forward pass (the backward pass computes gradients for inputs and
weights: 2 x), as model FLOPs utilisation (MFU) is usually reported; `tests/test_flops.py` checks
the forward count against torch's FlopCounterMode.
"""

from __future__ import annotations

from progre.model import ModelConfig

PEAK_BF16_DENSE_TFLOPS = {
    # dense bf16 tensor-core peak (no sparsity), from NVIDIA's datasheets
    "H200": 989.0,  # the H100's chip (GH100) with more memory: same compute as H100 SXM
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


def peak_tflops(gpu_name: str) -> float | None:
    """Datasheet bf16 dense peak of a GPU from its CUDA name, e.g. "NVIDIA H100 80GB HBM3"; None if unknown."""
    name = gpu_name.upper()
    if "H200" in name:
        return PEAK_BF16_DENSE_TFLOPS["H200"]
    if "GH200" in name:
        return PEAK_BF16_DENSE_TFLOPS["GH200"]
    if "H100" in name:
        if "NVL" in name:
            return PEAK_BF16_DENSE_TFLOPS["H100 NVL"]
        if "PCIE" in name:
            return PEAK_BF16_DENSE_TFLOPS["H100 PCIe"]
        return PEAK_BF16_DENSE_TFLOPS["H100 SXM"]
    for key in ("A100", "L40S", "L4", "A10"):
        if key in name.replace("-", " ").split() or key in name:
            return PEAK_BF16_DENSE_TFLOPS[key]
    return None


def forward_flops(config: ModelConfig, batch: int, samples: int, *, num_labels: int = 500, final_dim: int = 256,
                  logit_frames: float = 1.0) -> dict[str, float]:
    """Forward FLOPs by component for `batch` unpadded utterances of `samples` samples each.

    `logit_frames`: the fraction of frames whose label logits are computed (ours computes them for
    masked and unmasked frames: 1.0).
    """
    length, channels_in = samples, 1
    cnn = 0.0
    for channels, kernel, stride in config.conv_feature_layers:
        length = (length - kernel) // stride + 1
        cnn += 2.0 * channels_in * channels * kernel * length
        channels_in = channels
    frames = length
    dim, ffn = config.encoder_embed_dim, config.encoder_ffn_embed_dim
    out = {"cnn": cnn, "feature_projection": 2.0 * config.conv_dim * dim * frames}
    if config.pitch_branch:
        c, k, h = config.pitch_channels, config.pitch_kernel, config.pitch_gru_hidden
        convs = 2.0 * (1 * c * k + 2 * c * c * k) * frames
        gru = 2 * 2.0 * 3 * (c * h + h * h) * frames  # 2 directions x 3 gates x (input + recurrent) products
        out["pitch_branch"] = convs + gru + 2.0 * 2 * h * dim * frames
    # an even kernel computes one frame more, which is dropped
    conv_frames = frames + (1 if config.conv_pos % 2 == 0 else 0)
    out["position_conv"] = 2.0 * dim * (dim // config.conv_pos_groups) * config.conv_pos * conv_frames
    layers = config.encoder_layers
    out["attention_projections"] = layers * 2.0 * 4 * dim * dim * frames
    out["attention_products"] = layers * 2.0 * 2 * frames * frames * dim
    out["feed_forward"] = layers * 2.0 * 2 * dim * ffn * frames
    if config.speaker_branch:
        b = config.speaker_bottleneck
        out["speaker_branch"] = 2.0 * (dim * b + b * dim + 2 * dim * dim) * frames
    out["prediction_head"] = 2.0 * dim * final_dim * frames + 2.0 * final_dim * num_labels * frames * logit_frames
    return {name: value * batch for name, value in out.items()}


def train_step_flops(config: ModelConfig, batch: int, samples: int, **kwargs) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward)."""
    return 3.0 * sum(forward_flops(config, batch, samples, **kwargs).values())


def flops_per_audio_second(config: ModelConfig, crop_seconds: float = 10.0, **kwargs) -> float:
    """Training FLOPs per second of audio at a given crop length (attention grows with it)."""
    samples = int(crop_seconds * 16000)
    return train_step_flops(config, 1, samples, **kwargs) / (samples / 16000)
