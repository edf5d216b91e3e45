"""ProgRE and the HuBERT baseline: encoder (built by `build_encoder`), masked-prediction heads and loss,
span masking, checkpoints, weight import."""

from .checkpoint import (load_encoder, load_pretrain_model, load_state_dict_checked, read_checkpoint_config,
                         save_checkpoint)
from .model_config import ModelConfig, model_config
from .encoder import EncoderOutput, ProgREEncoder, build_encoder
from .masked_prediction import IGNORE_LABEL, PretrainOutput, ProgREPretrainModel, pretraining_losses
from .masking import compute_span_mask, sample_span_starts
from .official import official_to_ours, ours_to_official, torchaudio_hubert_to_ours

__all__ = [
    "EncoderOutput", "IGNORE_LABEL", "ModelConfig", "PretrainOutput", "ProgREEncoder", "ProgREPretrainModel",
    "build_encoder", "compute_span_mask", "load_encoder", "load_pretrain_model", "load_state_dict_checked",
    "pretraining_losses", "model_config", "official_to_ours", "ours_to_official", "read_checkpoint_config",
    "sample_span_starts", "save_checkpoint", "torchaudio_hubert_to_ours",
]
