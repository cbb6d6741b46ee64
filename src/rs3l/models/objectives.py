"""Self-supervised objectives and embedding diagnostics: small pure functions of embeddings.

``z1``, ``z2`` are (batch, dim) embeddings of two views of the same jets (row i of
``z1`` and row i of ``z2`` are a positive pair; all other combinations are negatives).
Every objective returns a scalar loss to minimise. Adding an objective is adding a
function here and one entry in :data:`OBJECTIVES`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent (SimCLR, Chen et al. 2020): normalised-temperature cross entropy.

    Each of the 2N embeddings must pick out its partner among the other 2N - 1
    by cosine similarity / ``temperature``. Mean over the 2N anchors.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> dict:
    """The three unweighted VICReg terms (Bardes, Ponce, LeCun 2022).

    invariance: mean squared distance of positive pairs; variance: mean over
    dimensions of max(0, gamma - std) (per branch, averaged); covariance: sum of
    squared off-diagonal covariances / dim (per branch, summed).
    """
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    n, d = z1.shape
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + eps)
        variance = variance + torch.relu(gamma - std).mean() / 2
        cov = (z.T @ z) / max(n - 1, 1)
        off = cov - torch.diag(torch.diagonal(cov))
        covariance = covariance + off.pow(2).sum() / d
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg(z1: torch.Tensor, z2: torch.Tensor, invariance: float = 25.0, variance: float = 25.0,
           covariance: float = 1.0) -> torch.Tensor:
    """VICReg loss: weighted sum of :func:`vicreg_terms` (weights as in the paper by default)."""
    t = vicreg_terms(z1, z2)
    return invariance * t["invariance"] + variance * t["variance"] + covariance * t["covariance"]


OBJECTIVES = {"ntxent": ntxent, "vicreg": vicreg}


def get_objective(name: str):
    """The objective function called ``name``."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def objective_from_config(cfg: dict):
    """``pretrain.objective`` with its hyper-parameters bound: a function (z1, z2) -> loss (picklable)."""
    p = cfg["pretrain"]
    name = p["objective"]
    fn = get_objective(name)
    if name == "ntxent":
        return functools.partial(fn, temperature=p["temperature"])
    if name == "vicreg":
        return functools.partial(fn, **p["vicreg_weights"])
    return fn


# ----------------------------------------------------------------------------- diagnostics

def pair_similarities(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cosine similarity of positive pairs, mean cosine similarity of negative pairs z1_i, z2_j, i != j)."""
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    sim = a @ b.T
    n = sim.shape[0]
    pos = sim.diagonal().mean()
    neg = (sim.sum() - sim.diagonal().sum()) / max(n * (n - 1), 1)
    return pos, neg


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Alignment (Wang & Isola 2020): mean ||f(x) - f(y)||^alpha of normalised positive pairs (lower = better)."""
    return (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).norm(dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity (Wang & Isola 2020): log mean exp(-t ||f(x) - f(y)||^2) over distinct pairs (lower = better)."""
    z = F.normalize(z, dim=1)
    if z.shape[0] < 2:
        return z.new_zeros(())
    return torch.pdist(z).pow(2).mul(-t).exp().mean().log()


def knn_accuracy(z: torch.Tensor, labels: torch.Tensor, k: int = 20, chunk: int = 1024) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (cosine similarity, majority vote) of labelled embeddings.

    z (N, D), labels (N,) int. Labels are used only for this probe, never for training.
    """
    n = z.shape[0]
    if n < 2:
        return float("nan")
    k = min(k, n - 1)
    z = F.normalize(z.float(), dim=1)
    n_classes = int(labels.max()) + 1
    correct = 0
    for start in range(0, n, chunk):
        sim = z[start:start + chunk] @ z.T
        rows = torch.arange(sim.shape[0], device=z.device)
        sim[rows, rows + start] = float("-inf")  # leave one out
        idx = sim.topk(k, dim=1).indices
        votes = F.one_hot(labels[idx], n_classes).sum(dim=1)
        correct += int((votes.argmax(dim=1) == labels[start:start + chunk]).sum())
    return correct / n
