"""Evaluation: metrics (pure numpy), per-view evaluation of fine-tuned models, plots and the results report."""
