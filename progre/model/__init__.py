"""ProgRE and the HuBERT baseline: encoder, pretraining heads, span masking, checkpoints, weight import."""

from .checkpoint import (load_encoder, load_pretrain_model, load_state_dict_checked, read_checkpoint_config,
                         save_checkpoint)
from .config import ModelConfig, model_config
from .encoder import EncoderOutput, ProgREEncoder
from .masking import compute_span_mask, sample_span_starts
from .official import official_to_ours, ours_to_official, torchaudio_hubert_to_ours
from .pretrain import IGNORE_LABEL, PretrainOutput, ProgREPretrainModel, pretraining_losses

__all__ = [
    "EncoderOutput", "IGNORE_LABEL", "ModelConfig", "PretrainOutput", "ProgREEncoder", "ProgREPretrainModel",
    "compute_span_mask", "load_encoder", "load_pretrain_model", "load_state_dict_checked", "pretraining_losses",
    "model_config", "official_to_ours", "ours_to_official", "read_checkpoint_config", "sample_span_starts",
    "save_checkpoint", "torchaudio_hubert_to_ours",
]
