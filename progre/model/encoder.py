"""`ProgREEncoder`: ProgRE (arXiv 2409.00387), or the HuBERT baseline without the branches, and
`build_encoder`, the factory that builds its modules from a `ModelConfig` and hands them to it.

    wav -> [waveform norm] -> CNN -> LayerNorm -> Linear --(- pitch branch -> sub_norm)--> dropout -> [mask] ->
    pos conv -> LayerNorm -> layers 1..k --(- speaker branch [-> speaker_norm])--> layers k+1..L -> output

The parts in brackets and parentheses are optional modules: the encoder runs those it was given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..frames import SAMPLE_RATE, WINDOW
from ..errors import UserError
from .branches import PitchBranch, SpeakerBranch
from .cnn import ConvFeatureEncoder, scale_grad
from .model_config import ModelConfig
from .norms import WaveformNorm
from .transformer import Transformer


@dataclass
class EncoderOutput:
    """What `ProgREEncoder.forward` returns. B utterances, T frames, D model width, C CNN channels."""

    x: Tensor
    """(B, T, D) final output."""
    padding_mask: Tensor
    """(B, T) bool, True on padded frames."""
    frame_lengths: Tensor
    """(B,) long, valid frames per utterance."""
    cnn_features: Tensor
    """(B, T, C) CNN output before the feature LayerNorm (the feature penalty's input)."""
    speaker_states: Optional[Tensor]
    """(B, T, D) speaker-branch output (before it is detached for the subtraction), or None."""
    hidden_states: list[Tensor]
    """(B, T, D) each, in the order of `ProgREEncoder.hidden_state_names`."""


class ProgREEncoder(nn.Module):
    """ProgRE's encoder; the HuBERT baseline without the branches. Build it with `build_encoder`.

    Composed of the modules it is given, torchaudio-style: the optional ones (the waveform
    normalisation, the pitch branch with the LayerNorm after its subtraction, the speaker branch and
    the LayerNorm after its subtraction) are modules or None, and the forward pass runs those that
    exist. `config` is what the modules were built from (checkpoints write it); the forward pass reads
    from it only the numbers that belong to no module: `feature_grad_mult`, `encoder_layerdrop`,
    `speaker_layer` and `speaker_grad_through`.

    Input is 16 kHz audio, (B, N) float; `lengths` (B,) gives each utterance's valid samples. Every
    padding-dependent step (the first conv's GroupNorm, the pitch branch's convs, BatchNorm and GRU,
    the position conv, attention, the speaker branch's softmax over time) excludes padded frames, so in
    eval mode an utterance gets the same states batched as alone.
    """

    def __init__(self, config: ModelConfig, feature_extractor: ConvFeatureEncoder, feature_norm: nn.LayerNorm,
                 feature_projection: nn.Linear, dropout_input: nn.Dropout, mask_embedding: nn.Parameter,
                 transformer: Transformer, waveform_norm: Optional[WaveformNorm] = None,
                 pitch_branch: Optional[PitchBranch] = None, sub_norm: Optional[nn.LayerNorm] = None,
                 speaker_branch: Optional[SpeakerBranch] = None, speaker_norm: Optional[nn.LayerNorm] = None):
        super().__init__()
        if (pitch_branch is None) != (sub_norm is None):
            raise ValueError("the pitch branch and the LayerNorm after its subtraction (sub_norm) come together")
        given = {"normalize": waveform_norm, "pitch_branch": pitch_branch, "speaker_branch": speaker_branch,
                 "speaker_norm": speaker_norm}
        mismatch = [name for name, module in given.items() if getattr(config, name) != (module is not None)]
        if mismatch:
            raise ValueError(f"the optional modules given do not match the config's {', '.join(mismatch)}")
        self.config = config
        self.waveform_norm = waveform_norm
        # registered in this order, which fixes the order of the state dict and of parameters() (and so of
        # the optimizer state); the mask embedding, the encoder's own parameter, comes first in both
        self.feature_extractor = feature_extractor
        self.feature_norm = feature_norm
        self.feature_projection = feature_projection
        self.pitch_branch = pitch_branch
        self.sub_norm = sub_norm
        self.dropout_input = dropout_input
        self.mask_embedding = mask_embedding
        self.transformer = transformer
        self.speaker_branch = speaker_branch
        self.speaker_norm = speaker_norm

    # ------------------------------------------------------------------ public API

    def hidden_state_names(self) -> list[str]:
        """Names of `extract`'s states: ["pitch" or "input", "layer1", ..., "speaker",
        "layer<k>-speaker", ...]. With `speaker_norm`, "layer<k>-speaker" is taken after that norm."""
        names = ["pitch" if self.pitch_branch is not None else "input"]
        for i in range(1, len(self.transformer.layers) + 1):
            if self.speaker_branch is not None and i == self.config.speaker_layer:
                names += ["speaker", f"layer{i}-speaker"]
            else:
                names.append(f"layer{i}")
        return names

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Frames for `lengths` samples: floor((N - 400) / 320) + 1 with the standard CNN."""
        return self.feature_extractor.output_lengths(lengths)

    def num_parameters(self) -> int:
        """Parameters without training heads and without BatchNorm buffers, mask embedding included."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, wav: Tensor, lengths: Optional[Tensor] = None, pitch: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> EncoderOutput:
        """Encode a batch (training or inference).

        Args:
            wav: (B, N) float 16 kHz audio, padded (with anything) after each utterance's `lengths[i]`
                samples.
            lengths: (B,) long valid samples, or None when nothing is padded.
            pitch: (B, T) float 50 Hz pitch contours (`progre.dsp.pitch.compute_pitch`), padded
                with anything; computed here from `wav` when None and the pitch branch is on (slow).
            mask: (B, T) bool, True where a frame is replaced by the learned mask embedding, or None.
        """
        return self._encode(wav, lengths, pitch, mask, layerdrop=True)

    def extract(self, wav: Tensor, pitch: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> tuple[list[Tensor], Tensor]:
        """All hidden states for downstream use, in the release's order (see `hidden_state_names`):
        ProgRE Base gives 14, HuBERT Base 13, each (B, T, D); plus the (B,) frame lengths.

        Layer drop is off here, so the count never changes. Padded frames hold arbitrary values. As in
        the release, a pre-LN model's last state is taken before the final LayerNorm (`forward().x` is
        after it).
        """
        out = self._encode(wav, lengths, pitch, None, layerdrop=False)
        return out.hidden_states, out.frame_lengths

    # ------------------------------------------------------------------ internals

    def _encode(self, wav: Tensor, lengths: Optional[Tensor], pitch: Optional[Tensor], mask: Optional[Tensor],
                layerdrop: bool) -> EncoderOutput:
        cfg = self.config
        lengths = self._check_audio(wav, lengths)
        frames = int(self.frame_lengths(torch.tensor([wav.shape[1]]))[0])
        frame_lengths = self.frame_lengths(lengths).to(wav.device)
        padding_mask = torch.arange(frames, device=wav.device) >= frame_lengths[:, None]
        padded = bool(padding_mask.any())
        # samples can be padded where frames are not (a tail shorter than one hop): the CNN's
        # normalisation must still skip them
        sample_lengths = lengths.to(wav.device) if bool((lengths < wav.shape[1]).any()) else None
        if self.pitch_branch is not None:
            if pitch is None:
                pitch = self._pitch(wav, lengths, frames)
            self._check_pitch(pitch, wav.shape[0], frames)

        if self.waveform_norm is not None:
            wav = self.waveform_norm(wav, sample_lengths)
        if cfg.feature_grad_mult > 0:
            features = scale_grad(self.feature_extractor(wav, sample_lengths), cfg.feature_grad_mult)
        else:
            with torch.no_grad():
                features = self.feature_extractor(wav, sample_lengths)
        x = self.feature_projection(self.feature_norm(features))

        hidden: list[Tensor] = []
        if self.pitch_branch is not None:
            pitch_states = self.pitch_branch(pitch.to(wav.device, wav.dtype), frame_lengths if padded else None)
            hidden.append(pitch_states)
            x = self.sub_norm(x - pitch_states)
        x = self.dropout_input(x)
        if mask is not None:
            if mask.shape != padding_mask.shape:
                raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(padding_mask.shape)}")
            x = torch.where(mask.to(x.device)[..., None], self.mask_embedding.to(x.dtype), x)

        x = self.transformer.embed(x, padding_mask if padded else None)
        if self.pitch_branch is None:
            hidden.append(x)
        attn_mask = (~padding_mask)[:, None, None, :] if padded else None
        speaker_states = None
        drop = layerdrop and self.training and cfg.encoder_layerdrop > 0
        for i, layer in enumerate(self.transformer.layers, start=1):
            # a dropped layer passes its input on, so the number of states never changes
            if not (drop and torch.rand(()).item() < cfg.encoder_layerdrop):
                x = layer(x, attn_mask)
            if self.speaker_branch is not None and i == cfg.speaker_layer:
                speaker_states = self.speaker_branch(x, padding_mask if padded else None)
                hidden.append(speaker_states)
                x = x - (speaker_states if cfg.speaker_grad_through else speaker_states.detach())
                if self.speaker_norm is not None:
                    # the release's MindSpore encoder normalises right after the subtraction, in the
                    # step whose result its PyTorch loop records: "layer<k>-speaker" is after the norm
                    x = self.speaker_norm(x)
            hidden.append(x)
        x = self.transformer.finish(x)
        return EncoderOutput(x=x, padding_mask=padding_mask, frame_lengths=frame_lengths,
                             cnn_features=features, speaker_states=speaker_states, hidden_states=hidden)

    @staticmethod
    def _check_audio(wav: Tensor, lengths: Optional[Tensor]) -> Tensor:
        """Validate the batch; returns lengths (B,) long on the CPU."""
        if wav.dim() != 2 or not wav.is_floating_point():
            raise ValueError(f"wav must be a (batch, samples) float tensor, got {wav.dim()}-d {wav.dtype}")
        batch, samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        else:
            lengths = lengths.detach().to("cpu", torch.long)
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            if bool((lengths > samples).any()):
                raise ValueError(f"lengths go up to {int(lengths.max())} samples but wav has only {samples}")
        if int(lengths.min()) < WINDOW:
            raise UserError(f"audio of {int(lengths.min())} samples is shorter than one frame "
                            f"({WINDOW} samples = {1000 * WINDOW // SAMPLE_RATE} ms)")
        return lengths

    @staticmethod
    def _check_pitch(pitch: Tensor, batch: int, frames: int) -> None:
        if tuple(pitch.shape) != (batch, frames):
            raise ValueError(f"pitch must be ({batch}, {frames}) for this audio (one value per 20 ms CNN frame), "
                             f"got {tuple(pitch.shape)}")

    @staticmethod
    def _pitch(wav: Tensor, lengths: Tensor, frames: int) -> Tensor:
        from ..dsp.pitch import compute_pitch

        pitch = torch.zeros(wav.shape[0], frames)
        audio = wav.detach().float().cpu().numpy()
        for i, n in enumerate(lengths.tolist()):
            contour = compute_pitch(np.asarray(audio[i, :n]), SAMPLE_RATE)
            pitch[i, : len(contour)] = torch.from_numpy(contour)
        return pitch.to(wav.device)


def build_encoder(config: ModelConfig) -> ProgREEncoder:
    """The encoder that `config` describes, with fresh weights (fairseq's initialisation).

    Each module is built from explicit arguments named as fairseq's options; the optional ones exist
    only when `config` switches them on. The modules are built, and their weights drawn, in one fixed
    order (CNN, feature norm and projection, pitch branch and its norm, mask embedding, Transformer,
    speaker branch and its norm, then the re-initialisation), so ``torch.manual_seed(s)`` before this
    call always gives the same weights.
    """
    dim = config.encoder_embed_dim
    feature_extractor = ConvFeatureEncoder(conv_feature_layers=config.conv_feature_layers,
                                           conv_bias=config.conv_bias, extractor_mode=config.extractor_mode)
    feature_norm = nn.LayerNorm(config.conv_dim)
    feature_projection = nn.Linear(config.conv_dim, dim)
    pitch_branch = sub_norm = None
    if config.pitch_branch:
        pitch_branch = PitchBranch(dim, channels=config.pitch_channels, kernel=config.pitch_kernel,
                                   gru_hidden=config.pitch_gru_hidden)
        sub_norm = nn.LayerNorm(dim)
    dropout_input = nn.Dropout(config.dropout_input)
    mask_embedding = nn.Parameter(torch.empty(dim).uniform_())
    transformer = Transformer(encoder_embed_dim=dim, encoder_layers=config.encoder_layers,
                              encoder_attention_heads=config.encoder_attention_heads,
                              encoder_ffn_embed_dim=config.encoder_ffn_embed_dim, dropout=config.dropout,
                              attention_dropout=config.attention_dropout,
                              activation_dropout=config.activation_dropout,
                              layer_norm_first=config.layer_norm_first, conv_pos=config.conv_pos,
                              conv_pos_groups=config.conv_pos_groups)
    speaker_branch = speaker_norm = None
    if config.speaker_branch:
        speaker_branch = SpeakerBranch(dim, bottleneck=config.speaker_bottleneck)
        if config.speaker_norm:
            speaker_norm = nn.LayerNorm(dim)
    encoder = ProgREEncoder(config, feature_extractor, feature_norm, feature_projection, dropout_input,
                            mask_embedding, transformer, waveform_norm=WaveformNorm() if config.normalize else None,
                            pitch_branch=pitch_branch, sub_norm=sub_norm, speaker_branch=speaker_branch,
                            speaker_norm=speaker_norm)
    _init_weights(encoder)
    return encoder


def _init_weights(encoder: ProgREEncoder) -> None:
    # fairseq's: Kaiming-normal convs in the CNN, N(0, 0.02) linears in the Transformer (BERT init,
    # which the release's speaker branch also got, living inside its Transformer); defaults elsewhere.
    for block in encoder.feature_extractor.conv_layers:
        nn.init.kaiming_normal_(block.conv.weight)
    bert_init = list(encoder.transformer.layers.modules())
    if encoder.speaker_branch is not None:
        bert_init.append(encoder.speaker_branch.out)
    for module in bert_init:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
