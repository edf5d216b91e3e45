"""Recipe books: per task, the head's size and the training schedule (a `Recipe`), and how hidden
states are normalised before the learned weighted sum. The `evaluate.protocol` param names the book
an evaluation follows (`RECIPE_BOOKS`):

- ``demo``: sized for the built-in corpus on 2 CPU cores (17 minutes of training audio): small heads,
  schedules in epochs with early stopping, every hidden state standardised with its training-frame
  statistics so that the layer weights compare states rather than their scales.
- ``superb``: SUPERB's downstream settings as s3prl's configs set them, for Base-scale upstreams on
  real corpora (see `SUPERB_SOURCES`): the featurizer sums the raw states (s3prl's featurizer
  normalises nothing by default), heads of s3prl's sizes, Adam (AdamW with no weight decay),
  schedules in updates with a valid evaluation every `eval_every` updates and the best one kept, and
  the learning rate searched over a log grid (SUPERB tuned only the learning rate per upstream and
  task).

A book's values can be overridden per run from the `evaluate` params (`lr`, `batch_size`,
`max_epochs`, `patience`, `standardize`, `layer_norm`, `asr_hidden`, `asr_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional


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

    def updates(self, batches_per_epoch: int) -> tuple[int, int]:
        """(total updates, updates between valid evaluations) for a training split of that many batches."""
        if self.max_steps is not None:
            return self.max_steps, min(self.eval_every or self.max_steps, self.max_steps)
        assert self.max_epochs is not None
        return self.max_epochs * batches_per_epoch, batches_per_epoch


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

SUPERB = RecipeBook("superb", standardize=False, layer_norm=False, recipes={
    "sid": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=200_000, eval_every=5_000, projection=256),
    "er": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=30_000, eval_every=1_000, projection=256),
    "cls": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=30_000, eval_every=1_000, projection=256),
    "pr": Recipe(lrs=LOG_GRID, batch_size=32, max_steps=100_000, eval_every=1_000, projection=256),
    "asr": Recipe(lrs=LOG_GRID, batch_size=16, max_steps=200_000, eval_every=2_000, projection=1024, hidden=1024,
                  layers=2, dropout=0.2),
    "se": Recipe(lrs=LOG_GRID, batch_size=8, max_steps=150_000, eval_every=1_250, hidden=896, layers=3, dropout=0.5),
    "vc": Recipe(lrs=LOG_GRID, batch_size=6, max_steps=10_000, eval_every=1_000, hidden=1024, layers=2, dropout=0.5),
})

SUPERB_SOURCES = {
    "sid": "s3prl downstream/voxceleb1/config.yaml: Linear(D, 256), mean pooling, Linear(256, classes); Adam 1e-4, "
           "batch 8 x 4 accumulated, 200k steps, eval every 5k, best on dev accuracy",
    "er": "s3prl downstream/emotion/config.yaml: the same head; Adam 1e-4, batch 4 x 8 accumulated, 30k steps",
    "pr": "s3prl downstream/ctc/libriphone.yaml: Linear(D, 256), Linear(256, phones + blank), CTC; Adam 1e-2, "
          "batch 16 x 2 accumulated, 100k steps, best on dev PER",
    "asr": "s3prl downstream/asr/config.yaml: projection 1024, 2 BiLSTM layers of 1024 per direction, dropout 0.2, "
           "Linear to characters + blank, CTC; Adam 1e-4, batch 32 halved for utterances over 2000 samples (so 16), "
           "200k steps, best on dev WER",
    "se": "s3prl downstream/enhancement_stft/configs/cfg_voicebank.yaml: 3 BLSTM layers of 896 per direction, "
          "dropout 0.5, Linear to 257 bins, ReLU mask on the noisy STFT (n_fft 512, hop = the upstream's hop), "
          "MSE to the phase-sensitive mask; AdamW 1e-4, batch 8, 150k steps, eval every 1250, best on dev PESQ "
          "(here: dev SI-SDR improvement)",
    "vc": "s3prl downstream/a2o-vc-vcc2020/config.yaml: Taco2-AR to 80-bin mel for a neural vocoder, one model per "
          "target, AdamW 1e-4, batch 6, 10k steps; here a BiLSTM of that width to WORLD features, chosen on the "
          "target's valid utterances (s3prl picks the step by test MCD)",
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
