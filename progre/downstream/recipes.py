"""Recipe books: per task, the head's size and the training schedule (a `Recipe`), and how hidden
states are normalised before the learned weighted sum. The `evaluate.protocol` param names the book
an evaluation follows (`RECIPE_BOOKS`):

- ``demo``: sized for the built-in corpus on 2 CPU cores (17 minutes of training audio): small heads,
  schedules in epochs with early stopping, every hidden state standardised with its training-frame
  statistics so that the layer weights compare states rather than their scales; no gradient
  clipping, no SpecAugment, ASR picked by valid CER, SE trained on a clipped mask, VC at a constant
  learning rate, ER on the corpus's own split.
- ``superb``: SUPERB's downstream settings as s3prl's configs and experts set them, for Base-scale
  upstreams on real corpora (see `SUPERB_SOURCES`): the featurizer sums the raw states (s3prl's
  featurizer normalises nothing by default), heads of s3prl's sizes, Adam (AdamW with no weight
  decay), gradient norms clipped at 1, schedules in updates with a valid evaluation every
  `eval_every` updates and the best one kept, SpecAugment on ASR's features and ASR picked by valid
  WER, SE trained with s3prl's NPSM loss, VC with a linear warmup and decay, ER cross-validated over
  the corpus's `fold` column (IEMOCAP's sessions), and the learning rate searched over a log grid
  (SUPERB tuned only the learning rate per upstream and task). What still differs from s3prl is
  listed in docs/DESIGN.md.

A book's values can be overridden per run from the `evaluate` params (`lr`, `batch_size`,
`max_epochs`, `patience`, `standardize`, `layer_norm`, `asr_hidden`, `asr_layers`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional

from .specaugment import SpecAugmentSettings

MASK_LOSSES = ("clipped_mask", "npsm")
"""SE's training losses (`Recipe.mask_loss`; `enhancement.SpeechEnhancement` computes them)."""


@dataclass(frozen=True)
class Recipe:
    """How one task's head is built and trained."""

    lrs: tuple[float, ...]
    """Learning rates tried with the first head seed; the best on valid is used for the other seeds."""
    batch_size: int
    max_epochs: Optional[int] = None
    """Passes over the training split, each followed by a valid evaluation (the demo's unit)."""
    max_steps: Optional[int] = None
    """Or: updates, with a valid evaluation every `eval_every` updates (s3prl's unit)."""
    eval_every: Optional[int] = None
    patience: Optional[int] = None
    """Valid evaluations without a better score before training stops; None: train to the end."""
    hidden: int = 0
    """Head width: LSTM units per direction (ASR, SE, VC), or a linear projection (SID, ER, PR; 0: none)."""
    layers: int = 0
    """LSTM layers (ASR, SE, VC)."""
    projection: int = 0
    """A linear projection of the features before the LSTM (s3prl's ASR: 1024; 0: none)."""
    dropout: float = 0.0
    clip_norm: Optional[float] = None
    """Clip the gradient norm of the featurizer's and the head's parameters at this value before each
    update (s3prl's ``gradient_clipping``); None: no clipping."""
    warmup_steps: Optional[int] = None
    """A learning rate rising linearly from 0 over this many updates, then falling linearly to 0 at the
    last update (s3prl's ``linear_schedule_with_warmup``; the rate of update k, counted from 0, is
    lr * k / warmup, then lr * (total - k) / (total - warmup)); None: a constant learning rate."""
    specaugment: Optional[SpecAugmentSettings] = None
    """SpecAugment on the featurizer's output while training (s3prl's ASR ``specaug``); None: none."""
    select_on_main_metric: bool = False
    """ASR only: pick the update (and the learning rate) by the task's main metric on valid (WER, or
    CER where the transcripts have no word spaces), as s3prl does; False: by CER."""
    mask_loss: str = "clipped_mask"
    """SE only: the training loss (`MASK_LOSSES`): "clipped_mask", the mean square error between the
    predicted mask and the phase-sensitive mask clipped to [0, 1], every time-frequency bin alike;
    "npsm", s3prl's: the squared error between the masked noisy magnitude and the clean magnitude
    times max(0, cos(phase difference)), summed over an utterance's bins and frames and divided by its
    frames."""
    folds: Optional[str] = None
    """Cross-validate over this metadata column when the corpus has it (ER: IEMOCAP's ``fold``, the
    session): each fold is tested once by a head trained on the others (`rows.fold_rows`), and the test
    score is the mean over the folds; None, or a corpus without the column: the corpus's own split."""

    def __post_init__(self) -> None:
        if self.mask_loss not in MASK_LOSSES:
            raise ValueError(f"mask_loss: expected one of {', '.join(MASK_LOSSES)}, got {self.mask_loss!r}")

    def record(self) -> dict[str, Any]:
        """The recipe as metrics.json records it: every field, but those of s3prl's training
        (`S3PRL_TRAINING`) only when they differ from their default, so a demo record reads as it did
        before they existed."""
        defaults = {f.name: f.default for f in fields(self) if f.name in S3PRL_TRAINING}
        return {k: v for k, v in asdict(self).items() if k not in defaults or getattr(self, k) != defaults[k]}

    def updates(self, batches_per_epoch: int) -> tuple[int, int]:
        """(total updates, updates between valid evaluations) for a training split of that many batches."""
        if self.max_steps is not None:
            return self.max_steps, min(self.eval_every or self.max_steps, self.max_steps)
        assert self.max_epochs is not None
        return self.max_epochs * batches_per_epoch, batches_per_epoch


S3PRL_TRAINING = ("clip_norm", "warmup_steps", "specaugment", "select_on_main_metric", "mask_loss", "folds")
"""The `Recipe` fields that follow s3prl's training (off in the demo book; `Recipe.record`)."""


@dataclass(frozen=True)
class RecipeBook:
    """The recipe of every task, and the normalisation of hidden states, of one evaluation protocol:
    `name` is the value of `evaluate.protocol` that picks it (recorded in each task's metrics.json)."""

    name: str
    standardize: bool
    """Standardise every hidden state per dimension with its training-frame mean and std."""
    layer_norm: bool
    """Layer-normalise every hidden state per frame (no affine; s3prl's optional `normalize`)."""
    recipes: dict[str, Recipe] = field(default_factory=dict)

    def recipe(self, task: str) -> Recipe:
        if task not in self.recipes:
            raise KeyError(f"protocol {self.name} has no recipe for task {task!r}")
        return self.recipes[task]


LOG_GRID = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
"""SUPERB's learning-rate search: five log-spaced rates (s3prl issue #120)."""

DEMO = RecipeBook("demo", standardize=True, layer_norm=False, recipes={
    # linear heads on utterance means: seconds per fit
    "sid": Recipe(lrs=(1e-2, 1e-3), batch_size=16, max_epochs=100, patience=10),
    "er": Recipe(lrs=(1e-2, 1e-3), batch_size=16, max_epochs=100, patience=10),
    "cls": Recipe(lrs=(1e-2, 1e-3), batch_size=16, max_epochs=100, patience=10),
    # A linear CTC head first sits on a plateau (mostly blanks) for 10-30 epochs: on the demo, trained
    # upstreams gained 8-10 PER points after epochs where patience 6 had stopped them
    "pr": Recipe(lrs=(1e-1, 3e-2), batch_size=16, max_epochs=80, patience=15),
    # 96 units per direction: on the demo 2 CER points behind 128 (HuBERT, one seed) in two thirds of the
    # time; ASR was half of the evaluation's fitting time
    "asr": Recipe(lrs=(1e-2,), batch_size=16, max_epochs=20, patience=5, hidden=96, layers=2),
    # BiLSTM heads on a few minutes of audio: small and short
    "se": Recipe(lrs=(1e-3,), batch_size=8, max_epochs=20, patience=5, hidden=128, layers=1),
    "vc": Recipe(lrs=(3e-3,), batch_size=4, max_epochs=60, patience=10, hidden=128, layers=1),
})

CLIP = 1.0
"""s3prl's ``gradient_clipping`` in every downstream config used here."""

SUPERB = RecipeBook("superb", standardize=False, layer_norm=False, recipes={
    "sid": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=200_000, eval_every=5_000, projection=256, clip_norm=CLIP),
    "er": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=30_000, eval_every=1_000, projection=256, clip_norm=CLIP,
                 folds="fold"),
    "cls": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=30_000, eval_every=1_000, projection=256, clip_norm=CLIP),
    "pr": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=100_000, eval_every=1_000, projection=256, clip_norm=CLIP),
    "asr": Recipe(lrs=LOG_GRID, batch_size=16, max_steps=200_000, eval_every=2_000, projection=1024, hidden=1024,
                  layers=2, dropout=0.2, clip_norm=CLIP, specaugment=SpecAugmentSettings(),
                  select_on_main_metric=True),
    "se": Recipe(lrs=LOG_GRID, batch_size=8, max_steps=150_000, eval_every=1_250, hidden=896, layers=3, dropout=0.5,
                 clip_norm=CLIP, mask_loss="npsm"),
    "vc": Recipe(lrs=LOG_GRID, batch_size=6, max_steps=10_000, eval_every=1_000, hidden=1024, layers=2, dropout=0.5,
                 clip_norm=CLIP, warmup_steps=4_000),
})

SUPERB_SOURCES = {
    "sid": "s3prl downstream/voxceleb1/config.yaml: Linear(D, 256), mean pooling, Linear(256, classes); Adam 1e-4, "
           "batch 8 x 4 accumulated, 200k steps, eval every 5k, gradient clipping 1, best on dev accuracy; training "
           "utterances cropped to 8 s at random (here: whole-utterance means)",
    "er": "s3prl downstream/emotion/config.yaml and expert.py: the same head; Adam 1e-4, batch 4 x 8 accumulated, "
          "30k steps, gradient clipping 1, whole utterances; test_fold fold1..fold5, each session tested once, "
          "valid a random fifth of the other sessions (here: every fifth utterance by key of each), SUPERB reports "
          "the mean over the folds",
    "pr": "s3prl downstream/ctc/libriphone.yaml: Linear(D, 256), Linear(256, phones + blank), CTC; Adam 1e-2, "
          "batch 16 x 2 accumulated, 100k steps, gradient clipping 1, best on dev PER",
    "asr": "s3prl downstream/asr/config.yaml: projection 1024, 2 BiLSTM layers of 1024 per direction, dropout 0.2, "
           "Linear to characters + blank, CTC; Adam 1e-4, batch 32 halved for utterances over 2000 samples (so 16), "
           "200k steps, gradient clipping 1, SpecAugment on the featurizer's output while training (time warp 5, "
           "2 time masks under 40 frames, 4 feature masks under 50 dims), best on dev WER",
    "se": "s3prl downstream/enhancement_stft/configs/cfg_voicebank.yaml: 3 BLSTM layers of 896 per direction, "
          "dropout 0.5, Linear to 257 bins, ReLU mask on the noisy STFT (n_fft 512, hop = the upstream's hop), "
          "loss_type MSE with mask_type NPSM (loss.py: squared error between the masked noisy magnitude and the "
          "clean magnitude times relu(cos(phase difference)), summed over bins and frames, divided by the frame "
          "count, averaged over utterances); AdamW 1e-4, batch 8, 150k steps, eval every 1250, gradient clipping "
          "1, best on dev PESQ (here: dev SI-SDR improvement)",
    "vc": "s3prl downstream/a2o-vc-vcc2020/config.yaml: Taco2-AR to 80-bin mel for a neural vocoder, one model per "
          "target, AdamW 1e-4, batch 6, 10k steps, gradient clipping 1, linear_schedule_with_warmup with 4000 "
          "warmup steps; the four source speakers' evaluation sentences converted; here a BiLSTM of that width to "
          "WORLD features, chosen on the target's valid utterances (s3prl picks the step by test MCD)",
}

RECIPE_BOOKS = {book.name: book for book in (DEMO, SUPERB)}
"""The recipe books by name: the values `evaluate.protocol` takes."""


def with_overrides(book: RecipeBook, *, lrs: Optional[tuple[float, ...]] = None, batch_size: Optional[int] = None,
                   max_epochs: Optional[int] = None, patience: Optional[int] = None,
                   standardize: Optional[bool] = None, layer_norm: Optional[bool] = None,
                   asr_hidden: Optional[int] = None, asr_layers: Optional[int] = None) -> RecipeBook:
    """The book with the given values (None: keep the book's) in every task's recipe."""
    recipes = {}
    for task, recipe in book.recipes.items():
        changes = {k: v for k, v in dict(lrs=lrs, batch_size=batch_size, patience=patience).items() if v is not None}
        if max_epochs is not None:
            changes |= {"max_epochs": max_epochs, "max_steps": None, "eval_every": None}
        if task == "asr":
            changes |= {k: v for k, v in dict(hidden=asr_hidden, layers=asr_layers).items() if v is not None}
        recipes[task] = replace(recipe, **changes)
    return RecipeBook(book.name, book.standardize if standardize is None else standardize,
                      book.layer_norm if layer_norm is None else layer_norm, recipes)
