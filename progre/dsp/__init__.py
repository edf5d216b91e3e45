"""Signal processing that needs no model: WORLD DIO pitch contours (pitch.py), Kaldi MFCC, batched
(mfcc.py), WORLD analysis and synthesis for voice conversion (world.py), padding signals into a batch
(padding.py). It sits below `progre.model` (the encoder reads its pitch contours) and never imports
a model, so the pitch and MFCC stages do not depend on the model's code."""
