"""Optimiser steps of a pre-training method on a pairs dataset, outside Lightning (for tests of objectives and heads)."""

from __future__ import annotations

import torch


def train_steps(method, dataset, steps: int, lr: float = 3e-3, weight_decay: float = 0.0, after_step=None) -> list[float]:
    """``steps`` AdamW steps of ``method`` (its ``_step`` loss) on the batches of ``dataset``, a new epoch whenever one
    runs out; returns the loss of every step. ``after_step(batch)`` is called after each step."""
    opt = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=weight_decay)
    losses, epoch = [], 0
    while len(losses) < steps:
        dataset.set_epoch(epoch)
        epoch += 1
        for batch in dataset:
            loss, _ = method._step(batch, "train")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if after_step is not None:
                after_step(batch)
            if len(losses) == steps:
                break
    return losses
