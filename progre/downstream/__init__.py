"""Downstream evaluation of frozen upstreams (SUPERB-style).

- `upstreams`: upstreams (a checkpoint, `mfcc`, `random:<checkpoint>`) and the on-disk hidden-state cache
- `featurizer`: the learned softmax-weighted sum of hidden states
- `data`: batches of cached states (frames, or utterance means)
- `tasks`: SID, PR, ASR, ER, LID and the classification of any metadata column: labels, heads, losses,
  decoding, metrics
- `transcripts`: transcripts as ASR targets in any script (Unicode normalisation, word spaces)
- `heads`: linear and BiLSTM heads; `ctc`: CTC loss and greedy decoding
- `metrics`: edit distance, PER, WER, CER, accuracy
- `speech_metrics`: PESQ, STOI, SI-SDR and SI-SDRi (SE); mel-cepstral distortion with DTW (VC)
- `train`: fitting a head with early stopping on valid, scoring test
- `protocol`: `progre evaluate`, every task on one upstream
- `plots`: layer-weight bar plots
"""

TASKS = ("sid", "pr", "asr", "er", "se", "vc", "lid")
"""The tasks `progre evaluate` knows by name, in report order; `cls:COLUMN` (any categorical metadata
column) comes on top, reported after them as ``cls-COLUMN``."""
DEFAULT_TASKS = ("sid", "pr", "asr", "er", "se", "vc")
"""The tasks evaluated unless told otherwise."""
