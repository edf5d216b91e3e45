"""HuBERT's masked prediction around a `ProgREEncoder`: span masking, the training heads (prediction of
frame labels, ProgRE's speaker classification) and the one pretraining loss. The training loop that
runs them is `progre.train.loop`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import ProgREEncoder
from .masking import compute_span_mask

IGNORE_LABEL = -100
"""Frame label of padding and of frames without a label."""


@dataclass
class PretrainOutput:
    """The losses' inputs. N_m masked and N_u unmasked labelled frames; C label classes; S speakers."""

    masked_logits: Tensor
    """(N_m, C) cosine(proj(x), label embedding) / logit_temp on masked frames."""
    masked_targets: Tensor
    """(N_m,) long."""
    unmasked_logits: Tensor
    """(N_u, C) as `masked_logits`, on unmasked frames."""
    unmasked_targets: Tensor
    """(N_u,) long."""
    feature_penalty: Tensor
    """() mean square of the CNN features over valid frames (HuBERT weighs it by 10)."""
    speaker_logits: Optional[Tensor]
    """(B, S) from the time-pooled speaker-branch output, or None without a speaker head."""
    mask: Tensor
    """(B, T) bool, the frames replaced by the mask embedding."""
    frame_lengths: Tensor
    """(B,) valid frames."""


class ProgREPretrainModel(nn.Module):
    """A `ProgREEncoder` with HuBERT's masked-prediction head and ProgRE's speaker head.

    Args:
        encoder: the encoder (a speaker head exists only if it has a speaker branch).
        num_labels: k-means classes of the frame labels.
        num_speakers: speaker classes; the speaker classifier exists only when > 0 and the encoder has
            a speaker branch.
        final_dim: width of the prediction projection and the label embeddings (HuBERT Base 256).
        logit_temp: cosine similarities are divided by this (0.1).
        mask_prob, mask_length, min_masks: span masking (`compute_span_mask`).
    """

    def __init__(self, encoder: ProgREEncoder, num_labels: int, num_speakers: int = 0, final_dim: int = 256,
                 logit_temp: float = 0.1, mask_prob: float = 0.8, mask_length: int = 10, min_masks: int = 2):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.encoder = encoder
        self.num_labels, self.num_speakers, self.final_dim = num_labels, num_speakers, final_dim
        self.logit_temp = logit_temp
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        dim = encoder.config.encoder_embed_dim
        self.final_proj = nn.Linear(dim, final_dim)
        self.label_embeddings = nn.Parameter(torch.empty(num_labels, final_dim).uniform_())
        self.speaker_classifier = (nn.Linear(dim, num_speakers)
                                   if encoder.speaker_branch is not None and num_speakers > 0 else None)

    def heads_config(self) -> dict:
        """Constructor arguments besides the encoder (stored in checkpoints)."""
        return dict(num_labels=self.num_labels, num_speakers=self.num_speakers, final_dim=self.final_dim,
                    logit_temp=self.logit_temp, mask_prob=self.mask_prob, mask_length=self.mask_length,
                    min_masks=self.min_masks)

    def forward(self, wav: Tensor, lengths: Optional[Tensor], labels: Tensor, pitch: Optional[Tensor] = None,
                speakers: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                mask: Optional[Tensor] = None) -> PretrainOutput:
        """One pretraining forward pass.

        Args:
            wav, lengths, pitch: as `ProgREEncoder.forward`.
            labels: (B, T) long frame labels at 50 Hz, `IGNORE_LABEL` (-100) on padding or missing labels.
            speakers: (B,) long speaker ids; unused by the model (the trainer's loss reads them), accepted
                so a batch can be passed whole.
            generator: CPU generator for the span mask.
            mask: (B, T) bool to use instead of a sampled span mask.
        """
        del speakers
        frames = int(self.encoder.frame_lengths(torch.tensor([wav.shape[1]]))[0])
        if labels.shape != (wav.shape[0], frames):
            raise ValueError(f"labels must be (batch, frames) = ({wav.shape[0]}, {frames}) for this audio, "
                             f"got {tuple(labels.shape)}")
        if mask is None:
            lengths_cpu = (torch.full((wav.shape[0],), wav.shape[1]) if lengths is None else lengths.cpu())
            frame_lengths = self.encoder.frame_lengths(lengths_cpu)
            mask = compute_span_mask(frame_lengths, frames, self.mask_prob, self.mask_length, self.min_masks,
                                     generator)
        mask = mask.to(wav.device)
        out = self.encoder(wav, lengths, pitch, mask)
        valid = ~out.padding_mask
        labels = labels.to(wav.device)
        labelled = valid & (labels != IGNORE_LABEL)
        masked, unmasked = labelled & mask, labelled & ~mask

        proj = self.final_proj(out.x)
        masked_logits = self.logits(proj[masked])
        unmasked_logits = self.logits(proj[unmasked])

        frame_sq = out.cnn_features.float().square().mean(-1)
        feature_penalty = frame_sq[valid].mean()

        speaker_logits = None
        if self.speaker_classifier is not None:
            pooled = (out.speaker_states * valid[..., None]).sum(1) / out.frame_lengths[:, None]
            speaker_logits = self.speaker_classifier(pooled)
        return PretrainOutput(masked_logits=masked_logits, masked_targets=labels[masked],
                              unmasked_logits=unmasked_logits, unmasked_targets=labels[unmasked],
                              feature_penalty=feature_penalty, speaker_logits=speaker_logits, mask=mask,
                              frame_lengths=out.frame_lengths)

    def logits(self, proj: Tensor) -> Tensor:
        """(N, final_dim) projected frames -> (N, C) cosine similarity to each label embedding / temp."""
        # cosine similarities in float32 even under autocast (fairseq computes them in float too)
        with torch.autocast(proj.device.type, enabled=False):
            x = F.normalize(proj.float(), dim=-1, eps=1e-8)
            e = F.normalize(self.label_embeddings.float(), dim=-1, eps=1e-8)
            return x @ e.t() / self.logit_temp


def pretraining_losses(out: PretrainOutput, speakers: Optional[Tensor] = None, *, unmasked_weight: float = 0.0,
                       feature_penalty_weight: float = 10.0, speaker_weight: float = 1.0) -> dict[str, Tensor]:
    """HuBERT's loss and ProgRE's speaker loss, with the prediction accuracies.

    ``loss = masked + unmasked_weight * unmasked + feature_penalty_weight * feature_penalty
    + speaker_weight * speaker``: cross-entropy of the label predictions on masked frames (and on
    unmasked ones, computed only when weighted; HuBERT: 0), 10 x the mean square of the CNN features,
    and the cross-entropy of the speaker classifier over `speakers` ((B,) ids, `IGNORE_LABEL` where
    unknown; 0 without a speaker head or without any known speaker).
    """
    zero = out.feature_penalty.new_zeros(())
    masked = F.cross_entropy(out.masked_logits, out.masked_targets) if out.masked_targets.numel() else zero
    unmasked = F.cross_entropy(out.unmasked_logits, out.unmasked_targets) \
        if out.unmasked_targets.numel() and unmasked_weight > 0 else zero
    speaker = zero
    if out.speaker_logits is not None and speakers is not None and bool((speakers != IGNORE_LABEL).any()):
        speaker = F.cross_entropy(out.speaker_logits.float(), speakers, ignore_index=IGNORE_LABEL)
    total = masked + unmasked_weight * unmasked + feature_penalty_weight * out.feature_penalty \
        + speaker_weight * speaker
    with torch.no_grad():
        acc_masked = (out.masked_logits.argmax(-1) == out.masked_targets).float().mean() \
            if out.masked_targets.numel() else zero
        acc_unmasked = (out.unmasked_logits.argmax(-1) == out.unmasked_targets).float().mean() \
            if out.unmasked_targets.numel() else zero
    return {"loss": total, "loss_masked": masked, "loss_unmasked": unmasked, "feature_penalty": out.feature_penalty,
            "loss_speaker": speaker, "acc_masked": acc_masked, "acc_unmasked": acc_unmasked}
