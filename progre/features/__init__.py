"""Features: MFCC, pitch contours, hidden states of a frozen encoder, feature folders."""
