"""Benchmarks against the anchors (never run as tests); results go to bench/results/."""
