"""Inference forms of the encoders: the same weights, evaluated densely on the padded batch.

The training forms of DeepSets and ParticleNet work on the flat list of valid constituents
(``Points``: ``nonzero`` and ``index_add``), whose sizes depend on the data; the Transformer's and
the Particle Transformer's masked batch norm index with the mask, and weaver's pair embedding
gathers the valid pairs with ``nonzero``. ``torch.export`` cannot trace such sizes with free
batch and particle axes, and the TorchScript exporter writes ``index_add`` as a scatter that
drops repeated indices (wrong sums). An *inference form* holds the same modules and weights in
eval mode and evaluates them densely on the padded batch (padding zeroed and masked out of every
sum, neighbour search, attention and pair), which gives the same numbers (to about 1e-6).
ParticleNet's kNN pads its distance matrix with k infinitely far columns, so ``topk`` never asks
for more neighbours than there are particles. Used by the ONNX export
(:mod:`rs3l.models.onnx_export`) and by MLflow's ``pt2`` model files (:mod:`rs3l.models.mlflow_model`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from rs3l.models import encoders as E


def _bn(norm: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
    """Eval-mode batch norm over the last dimension of ``h`` (..., C)."""
    return nn.functional.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0,
                                    norm.eps) if h.dim() == 2 else _bn(norm, h.reshape(-1, h.shape[-1])).reshape(h.shape)


def dense_knn(coords: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rs3l.models.encoders.knn` without data-dependent sizes: idx, valid (B, P, k) for any P >= 1."""
    B, P, _ = coords.shape
    d = (coords.unsqueeze(2) - coords.unsqueeze(1)).square().sum(-1).sqrt()  # (B, P, P)
    arange = torch.arange(P, device=coords.device)
    keep = mask.unsqueeze(1) & (arange.unsqueeze(0) != arange.unsqueeze(1))  # valid neighbour, not itself
    inf = torch.full((), float("inf"), dtype=d.dtype, device=d.device)
    d = torch.cat([torch.where(keep, d, inf), inf.expand(B, P, k)], dim=-1)
    dist, idx = d.topk(k, dim=-1, largest=False)
    valid = torch.isfinite(dist) & mask.unsqueeze(-1)
    return torch.where(valid, idx, torch.zeros_like(idx)), valid


class _Dense(nn.Module):
    """A dense inference copy of an encoder: holds the encoder (its weights) and its latent size."""

    def __init__(self, enc: nn.Module):
        super().__init__()
        self.enc = enc
        self.latent_dim = enc.latent_dim


class DenseDeepSets(_Dense):
    """Inference form of :class:`rs3l.models.encoders.DeepSets` (eval mode, shares its weights)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.enc
        h = e.phi(_bn(e.input_norm, E._clean(x, mask)))
        return e.rho(E.masked_sum(h, mask))


class DenseParticleNet(_Dense):
    """Inference form of :class:`rs3l.models.encoders.ParticleNet` (eval mode, shares its weights)."""

    @staticmethod
    def edge_conv(block: E.EdgeConvBlock, coords: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """coords (B, P, C'), h (B, P, C) -> (B, P, out_channels), zero at padded particles."""
        B, P, _ = h.shape
        idx, valid = dense_knn(coords, mask, block.k)  # (B, P, k)
        k = idx.shape[-1]
        nb = block.neighbour(h)
        nb = torch.gather(nb, 1, idx.reshape(B, P * k, 1).expand(B, P * k, nb.shape[-1])).reshape(B, P, k, -1)
        e = torch.relu(_bn(block.norms[0], block.center(h).unsqueeze(2) + nb))  # (B, P, k, C)
        for lin, norm in zip(block.linears, block.norms[1:]):
            e = torch.relu(_bn(norm, lin(e)))
        e = torch.where(valid.unsqueeze(-1), e, torch.zeros((), dtype=e.dtype, device=e.device))
        n = valid.sum(-1, keepdim=True).clamp(min=1).to(e.dtype)
        out = torch.relu(e.sum(2) / n + _bn(block.shortcut_norm, block.shortcut(h)))
        return E._clean(out, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.enc
        x = E._clean(x, mask)
        coords = x[..., :2]
        h = E._clean(_bn(e.input_norm, x), mask)
        for i, block in enumerate(e.blocks):
            h = self.edge_conv(block, coords if i == 0 else h, h, mask)
        return e.head(E.masked_sum(h, mask))


class DenseTransformer(_Dense):
    """Inference form of :class:`rs3l.models.encoders.Transformer` (eval mode, shares its weights)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.enc
        h = e.embed(E._clean(_bn(e.input_norm.bn, E._clean(x, mask)), mask))
        attend = torch.cat([mask[:, :1] | ~mask.any(dim=1, keepdim=True), mask[:, 1:]], dim=1)
        h = e.encoder(h, src_key_padding_mask=~attend)
        return e.head(E.masked_mean(e.norm(h), mask))


class DenseParticleTransformer(_Dense):
    """Inference form of :class:`rs3l.models.encoders.ParticleTransformer` (eval mode, a copy of its weights).

    weaver's pair embedding is switched to its dense path (``sparse_eval`` off: no ``nonzero`` over the
    valid pairs) and to every ordered pair (``is_symmetric`` off: no ``tril_indices``, whose size torch.export
    would fix); the pair features (ln kT, ln z, ln ΔR, ln m²) are symmetric and no self-pair is removed,
    so the result is the same. The pair features stay float64 (see ``encoders._InFloat64``).
    """

    def __init__(self, enc: nn.Module):
        enc = copy.deepcopy(enc)  # the pair embedding's switches change below
        pairs = enc.part.pair_embed
        if pairs is not None:
            if pairs.remove_self_pair:  # then weaver's all-pairs path embeds zeroed self-pairs instead of leaving 0
                raise ValueError("no inference form for a Particle Transformer that removes self-pairs")
            pairs.sparse_eval, pairs.is_symmetric = (False, False), False
        super().__init__(enc)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.enc
        x = E._clean(x, mask)
        attend = torch.cat([mask[:, :1] | ~mask.any(dim=1, keepdim=True), mask[:, 1:]], dim=1)
        h = E._clean(_bn(e.input_norm.bn, x), mask)
        v = e.four_vectors(x.double())
        v = torch.where(attend.unsqueeze(1), v, torch.zeros((), dtype=v.dtype, device=v.device))
        return e.head(e.part(h.transpose(1, 2), v=v, mask=attend.unsqueeze(1)))


INFERENCE_FORMS = {E.DeepSets: DenseDeepSets, E.ParticleNet: DenseParticleNet, E.Transformer: DenseTransformer,
                   E.ParticleTransformer: DenseParticleTransformer}


def inference_form(model: nn.Module) -> nn.Module:
    """A dense copy of ``model`` (an rs3l encoder or ``JetClassifier``), in eval mode, same outputs.
    ValueError naming the encoders that have one for any other module."""
    model = copy.deepcopy(model).eval()
    if hasattr(model, "head") and hasattr(model, "encoder") and type(model).__name__ == "JetClassifier":
        model.encoder = inference_form(model.encoder)
        return model
    form = INFERENCE_FORMS.get(type(model))
    if form is None:
        known = ", ".join(name for name, cls in E.ENCODERS.items() if cls in INFERENCE_FORMS)
        raise ValueError(f"no inference form for a {type(model).__name__}; encoders that have one: {known}")
    return form(model).eval()


def random_jets(n_features: int, batch: int, particles: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs for checks: x (batch, particles, n_features), mask with jets of 1..particles constituents."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, particles, n_features, generator=g)
    n = torch.randint(1, particles + 1, (batch,), generator=g)
    n[0] = particles
    return x, torch.arange(particles)[None, :] < n[:, None]
