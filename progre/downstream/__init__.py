"""Downstream evaluation of frozen upstreams (SUPERB-style).

- `evaluation`: `progre evaluate`, every task on one upstream (`evaluate_upstream`, `EvaluationSettings`)
- `registry`: every task built by name, with SE's noisy audio and VC's judges
- `rows`: what tasks prepare from: the index rows by split (or by cross-validation fold), and the audio
  of a row (SE, VC)
- `fits`: which head fits run when (learning-rate search, then the other seeds); `pool`: fits side by
  side in worker processes
- `records`: what a task writes: metrics.json (mean and std over head seeds), layer weights, history
- `upstreams`: upstreams (a checkpoint, `mfcc`, `random:<checkpoint>`) and the on-disk hidden-state cache
- `featurizer`: the learned softmax-weighted sum of hidden states
- `head_data`: batches of cached states for the heads (frames, or utterance means)
- `head_fit`: fitting one head with early stopping on valid, scoring test (gradient clipping, a
  warmup-and-decay learning rate, `specaugment` while training, where the recipe asks)
- `specaugment`: SpecAugment of the featurizer's output (s3prl's ASR settings)
- `tasks`: `Task`, and SID, PR, ASR, ER, LID and the classification of any metadata column: labels,
  heads, losses, decoding, metrics
- `enhancement` (SE) and `conversion` (VC, with `judges`: the MFCC heads that judge its outputs)
- `transcripts`: transcripts as ASR targets in any script (Unicode normalisation, word spaces)
- `heads`: linear and BiLSTM heads; `ctc`: CTC loss and greedy decoding
- `recipes`: the recipe books (`demo`, `superb`) that `evaluate.protocol` names: head sizes, schedules
- `error_rates`: edit distance, PER, WER, CER, accuracy
- `speech_quality`: PESQ, STOI, SI-SDR and SI-SDRi (SE); mel-cepstral distortion with DTW (VC)
- `plots`: layer-weight bar plots and spectrograms
"""

TASKS = ("sid", "pr", "asr", "er", "se", "vc", "lid")
"""The tasks `progre evaluate` knows by name (`registry.BUILDERS` builds each), in report order;
`cls:COLUMN` (any categorical metadata column) comes on top, reported after them as ``cls-COLUMN``."""
DEFAULT_TASKS = ("sid", "pr", "asr", "er", "se", "vc")
"""The tasks evaluated unless told otherwise."""
