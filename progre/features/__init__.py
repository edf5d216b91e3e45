"""Features of a corpus: the one feature loop (computing.py), feature folders (store.py), the writers
of `progre features` (writing.py and one module per kind: pitch_features.py, mfcc_features.py,
layer_features.py) and the hidden states of a frozen encoder (hidden.py). The signal processing they
run lives in `progre.dsp`."""
