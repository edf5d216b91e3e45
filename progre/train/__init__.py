"""Pretraining: batch plans, the loop, checkpoints, metrics, DDP."""
