"""Self-supervised objectives and embedding diagnostics: small pure functions of embeddings.

``z1``, ``z2`` are (batch, dim) embeddings of two views of the same jets (row i of
``z1`` and row i of ``z2`` are a positive pair; all other combinations are negatives);
with n views per jet (``pretrain.views_per_jet``) the objectives take ``z1, ..., zn``.
Every objective returns a scalar loss to minimise. Adding an objective is adding a
function here and one entry in :data:`OBJECTIVES`. ``jepa`` is a loss of predicted and
target embeddings; its target encoder lives in :class:`rs3l.models.method.JEPAMethod`. ``clip``
is a loss of two modalities of the same jets (particle embeddings, observables embeddings); its
observables MLP lives in :class:`rs3l.models.clip.CLIPMethod`.
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


def ntxent_multi(*zs: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Multi-positive NT-Xent (SupCon form, Khosla et al. 2020, with jets as labels) of n views.

    ``zs``: n tensors (batch, dim); row i of every one is a view of jet i. Each of the
    n·batch embeddings scores all others by cosine similarity / ``temperature``; its loss
    is minus the mean log-softmax probability of its n - 1 positives (the other views of
    its jet). Mean over anchors. For n = 2 this is :func:`ntxent` exactly.
    """
    n_views, n = len(zs), zs[0].shape[0]
    if n_views < 2:
        raise ValueError(f"a contrastive loss needs at least 2 views; got {n_views}")
    z = F.normalize(torch.cat(zs), dim=1)
    self_mask = torch.eye(n_views * n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    jet = torch.arange(n, device=z.device).repeat(n_views)
    positive = (jet[:, None] == jet[None, :]) & ~self_mask
    return -(log_prob.masked_fill(~positive, 0).sum(dim=1) / (n_views - 1)).mean()


def variance_covariance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's anti-collapse terms of one branch z (batch, dim): mean over dimensions of
    max(0, gamma - std), and the sum of squared off-diagonal covariances / dim."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + eps)
    cov = (z.T @ z) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return torch.relu(gamma - std).mean(), off.pow(2).sum() / d


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> dict:
    """The three unweighted VICReg terms (Bardes, Ponce, LeCun 2022).

    invariance: mean squared distance of positive pairs; variance: mean over
    dimensions of max(0, gamma - std) (per branch, averaged); covariance: sum of
    squared off-diagonal covariances / dim (per branch, summed).
    """
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    for z in (z1, z2):
        var, cov = variance_covariance(z, gamma, eps)
        variance = variance + var / 2
        covariance = covariance + cov
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg(z1: torch.Tensor, z2: torch.Tensor, invariance: float = 25.0, variance: float = 25.0,
           covariance: float = 1.0) -> torch.Tensor:
    """VICReg loss: weighted sum of :func:`vicreg_terms` (weights as in the paper by default)."""
    t = vicreg_terms(z1, z2)
    return invariance * t["invariance"] + variance * t["variance"] + covariance * t["covariance"]


def mean_over_pairs(fn, *zs: torch.Tensor) -> torch.Tensor:
    """A two-view loss ``fn(z_a, z_b)`` averaged over all n(n-1)/2 pairs of n views (n = 2: ``fn(z1, z2)``)."""
    losses = [fn(zs[a], zs[b]) for a in range(len(zs)) for b in range(a + 1, len(zs))]
    return torch.stack(losses).mean()


def jepa(predictions: list[torch.Tensor], targets: list[torch.Tensor], context: torch.Tensor,
         prediction: float = 1.0, variance: float = 1.0, covariance: float = 0.04) -> torch.Tensor:
    """JEPA loss: predict target embeddings from a context embedding, in embedding space.

    ``predictions[k]``, ``targets[k]``: (batch, dim), the predictor's output for target view k
    and the target encoder's embedding of it (detached here: no gradient reaches the target);
    ``context``: (batch, dim), the context encoder's embedding. Loss = ``prediction`` · mean
    over targets of the squared distance of the L2-normalised embeddings (2 - 2 cos, as in
    BYOL) + VICReg's ``variance`` and ``covariance`` terms on the context embeddings, which
    make a collapsed (constant) context embedding cost ``variance`` · gamma more than a spread one.
    """
    pred = torch.stack([(F.normalize(p, dim=1) - F.normalize(t.detach(), dim=1)).pow(2).sum(dim=1).mean()
                        for p, t in zip(predictions, targets)]).mean()
    var, cov = variance_covariance(context)
    return prediction * pred + variance * var + covariance * cov


def clip(z: torch.Tensor, u: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE of two modalities (CLIP, Radford et al. 2021): ``z``, ``u`` (batch, dim), row i of
    both from jet i (e.g. particle-cloud and high-level-observables embeddings).

    logits = cos(z_i, u_j) / ``temperature`` (batch, batch); loss = (cross entropy of each z_i picking
    its u_i among the batch's u + of each u_i picking its z_i) / 2. Symmetric in (z, u); lowest when
    every pair is aligned and the other jets' embeddings point elsewhere.
    """
    logits = F.normalize(z, dim=1) @ F.normalize(u, dim=1).T / temperature
    target = torch.arange(z.shape[0], device=z.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


OBJECTIVES = {"ntxent": ntxent, "vicreg": vicreg, "jepa": jepa, "clip": clip}


def get_objective(name: str):
    """The objective function called ``name``."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def objective_from_config(cfg: dict):
    """``pretrain.objective`` with its hyper-parameters bound (picklable): for ntxent and vicreg a
    function (z1, ..., zn) -> loss of the n = ``pretrain.views_per_jet`` views (ntxent: multi-positive;
    vicreg: mean over pairs); for jepa the function (predictions, targets, context) -> loss; for clip the
    function (particle embeddings, observables embeddings) -> loss."""
    p = cfg["pretrain"]
    name = p["objective"]
    fn = get_objective(name)
    if name == "ntxent":
        return functools.partial(ntxent_multi, temperature=p["temperature"])
    if name == "vicreg":
        return functools.partial(mean_over_pairs, functools.partial(fn, **p["vicreg_weights"]))
    if name == "jepa":
        return functools.partial(fn, **p["jepa_weights"])
    if name == "clip":
        return functools.partial(fn, temperature=p["temperature"])
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
