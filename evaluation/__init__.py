"""Evaluation: held-out episodes, metrics, scoring, videos and run records; the CLIs in `experiments/` are thin."""
