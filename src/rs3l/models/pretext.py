"""A pretext-task regulariser of pre-training (``pretrain.pretext``, in the manner of ScatSimCLR).

An auxiliary head (MLP latent -> ``hidden`` -> outputs) reads the encoder embedding of every view in
the batch and predicts

- ``target: view``: which entry of ``pretrain.augment_views`` the sample is (classification; loss =
  cross entropy, also logged: accuracy), or
- ``target: parameter``: the drawn parameter of a parameter-scan view (``views.<v>.draw``; regression
  of log(value) for log-uniform draws, of the value for uniform ones, standardised to zero mean and
  unit variance by the drawn range; loss = mean squared error over the samples of scan views, 0 when
  a batch has none).

The head's loss joins the objective's: loss = objective + ``weight`` · pretext (λ = ``weight``). With
λ = 0 the encoder's training is exactly the plain objective's: the head adds nothing to the loss or to
the encoder's gradients, and it is initialised from its own random stream (not the global one), so
dropout and everything else draw the same numbers. Its loss and accuracy are still logged: how
predictable the view is from an embedding trained without the regulariser.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("view", "parameter")
PARAMETER_COLUMN = "view_parameter"


def view_loss(logits: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy and accuracy of view logits (batch, n_views) against view indices (batch,)."""
    return F.cross_entropy(logits, view), (logits.argmax(dim=1) == view).float().mean()


def parameter_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``prediction`` (batch,) over the rows whose ``target`` (batch,) is finite; a batch
    without any gives 0 (still connected to the head, so every rank's graph is the same under DDP)."""
    ok = torch.isfinite(target)
    err = (prediction - torch.where(ok, target, torch.zeros_like(target))).pow(2)
    return (err * ok).sum() / ok.sum().clamp(min=1)


def standardised_parameter(value: torch.Tensor, view: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                           log: torch.Tensor) -> torch.Tensor:
    """Regression target of drawn ``value`` (batch,) for view-name indices ``view`` (batch,): (log(value) or
    value - center) / scale of that view's drawn range; NaN for views that draw nothing (center NaN)."""
    v = torch.where(log[view], torch.log(value.clamp(min=1e-30)), value)
    return (v - center[view]) / scale[view]


def draw_ranges(cfg: dict) -> tuple[list[float], list[float], list[bool]]:
    """Per ``pretrain.augment_views`` entry: (center, scale, log) of its base view's drawn range, the
    target's mean and standard deviation under the draw (log-uniform: of log(value)); NaN, 1, False for
    views that draw nothing."""
    from rs3l.physics.resimulate import draw_spec
    from rs3l.training.augment import parse_view

    center, scale, log = [], [], []
    for name in cfg["pretrain"]["augment_views"]:
        spec = draw_spec(cfg, parse_view(name)[0])
        if spec is None:
            center.append(math.nan), scale.append(1.0), log.append(False)
            continue
        _, kind, lo, hi = spec
        lo, hi = (math.log(lo), math.log(hi)) if kind == "log_uniform" else (lo, hi)
        center.append((lo + hi) / 2), scale.append((hi - lo) / math.sqrt(12)), log.append(kind == "log_uniform")
    return center, scale, log


class PretextHead(nn.Module):
    """The auxiliary head and its loss: ``forward(hs, views, parameters)`` with per-view lists of encoder
    embeddings (batch, latent_dim), view-name indices (batch,) and drawn values (batch,) (NaN: no draw;
    only for ``parameter``) -> (loss, stats to log)."""

    def __init__(self, target: str, weight: float, latent_dim: int, n_views: int, hidden: int = 64,
                 center=None, scale=None, log=None):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown pretrain.pretext.target '{target}'; known: {', '.join(TARGETS)}")
        self.target, self.weight = target, float(weight)
        out = n_views if target == "view" else 1
        self.mlp = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
        if target == "parameter":
            self.register_buffer("center", torch.tensor(center, dtype=torch.float32), persistent=False)
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
            self.register_buffer("log", torch.tensor(log, dtype=torch.bool), persistent=False)

    def forward(self, hs: list[torch.Tensor], views: list[torch.Tensor],
                parameters: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        out = self.mlp(torch.cat(hs))
        view = torch.cat(views)
        if self.target == "view":
            loss, acc = view_loss(out, view)
            return loss, {"pretext": loss.detach(), "pretext_acc": acc}
        target = standardised_parameter(torch.cat(parameters), view, self.center, self.scale, self.log)
        loss = parameter_loss(out[:, 0], target)
        return loss, {"pretext": loss.detach()}


def from_config(cfg: dict, latent_dim: int) -> PretextHead | None:
    """The head of ``pretrain.pretext`` (None without one). Initialised from its own stream (derived from the
    master seed): the global random state, and so everything else in the run, stays that of the plain
    objective."""
    from rs3l.seeds import derive_seed

    p = cfg["pretrain"].get("pretext")
    if not p:
        return None
    ranges = draw_ranges(cfg) if p["target"] == "parameter" else (None, None, None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg["seed"], "pretext-head"))
        return PretextHead(p["target"], p["weight"], latent_dim, len(cfg["pretrain"]["augment_views"]), p["hidden"],
                           *ranges)

