"""Jet encoders: a set of constituents -> one latent vector per jet.

Every encoder maps ``x`` (batch, particles, features) float32 and ``mask``
(batch, particles) bool (True = real constituent) to (batch, latent_dim), and
exposes ``.latent_dim``. Padded entries never influence the output (they are
zeroed on entry, excluded from normalisation statistics, neighbour searches,
attention and pooling), and the output does not depend on the particle order.

Encoders know nothing about objectives. Choose one by name with
:func:`build_encoder`; hyper-parameters come from ``cfg["encoders"][name]``
(defaults in ``workflow/schemas/config.schema.yaml``).
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- helpers

class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose running statistics warm up as a plain average of the first batches.

    The momentum is 1/n for the n-th training batch until it reaches ``momentum`` (0.1),
    then the usual exponential average. With the standard fixed momentum the running
    statistics stay biased towards their initial values (mean 0, variance 1) for tens
    of steps, and a short pre-training (a laptop run has only a few dozen) would give
    eval-mode embeddings unlike the training ones.
    """

    def __init__(self, channels: int, momentum: float = 0.1):
        super().__init__(channels, momentum=momentum)
        self.final_momentum = momentum
        self._seen: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats:
            if self._seen is None:  # read once (after a checkpoint load), not every step
                self._seen = int(self.num_batches_tracked)
            self._seen += 1
            self.momentum = max(1.0 / self._seen, self.final_momentum)
        return super().forward(x)


def batch_norm(norm: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
    """``norm`` on rows ``h`` (N, C); with fewer than 2 rows in training, use the running statistics."""
    if norm.training and h.shape[0] < 2:
        return nn.functional.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                        False, 0.0, norm.eps)
    return norm(h)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the last dimension whose statistics use only valid entries.

    ``h`` (..., C), ``valid`` (...) bool. Invalid entries come out as 0.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bn = BatchNorm(channels)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(h)
        out[valid] = batch_norm(self.bn, h[valid])
        return out


def _clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero padded entries (with ``where``, so that inf/nan there cannot leak through 0 * inf)."""
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, P, C), (B, P) -> (B, C): sum over valid particles."""
    return _clean(h, mask).sum(dim=1)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, P, C), (B, P) -> (B, C): mean over valid particles (0 for an empty jet)."""
    n = mask.sum(dim=1, keepdim=True).clamp(min=1).to(h.dtype)
    return masked_sum(h, mask) / n


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def knn(coords: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest valid neighbours of each particle, itself excluded.

    coords (B, P, C), mask (B, P) -> idx (B, P, k) long, valid (B, P, k) bool.
    ``valid`` is False for edges to padded particles, from padded particles, and
    where a jet has fewer than k + 1 constituents (then some slots are empty).
    """
    B, P, _ = coords.shape
    k = min(k, P)
    d = torch.cdist(coords, coords)  # (B, P, P)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    d = torch.where(mask.unsqueeze(1), d, inf)  # padded neighbours are infinitely far
    d = d.masked_fill(torch.eye(P, dtype=torch.bool, device=d.device), float("inf"))
    dist, idx = d.topk(k, dim=-1, largest=False)
    valid = torch.isfinite(dist) & mask.unsqueeze(-1)
    return idx, valid


# ----------------------------------------------------------------------------- ParticleNet

class Points:
    """The valid constituents of a padded batch as one flat list (sparse form).

    ``ids`` (N,) are positions in the flattened (B * P) padded layout, ``jet`` (N,)
    the jet index of each point, ``pos`` (B * P,) the inverse map (-1 for padding).
    Work on points and edges then never touches a padded entry.
    """

    def __init__(self, mask: torch.Tensor):
        self.B, self.P = mask.shape
        self.ids = mask.reshape(-1).nonzero().squeeze(1)
        self.jet = torch.div(self.ids, self.P, rounding_mode="floor")
        self.pos = torch.full((self.B * self.P,), -1, dtype=torch.long, device=mask.device)
        self.pos[self.ids] = torch.arange(len(self.ids), device=mask.device)
        self.mask = mask

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, C) -> (N, C)."""
        return x.reshape(self.B * self.P, -1)[self.ids]

    def dense(self, h: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, P, C), zeros at padded positions."""
        out = h.new_zeros(self.B * self.P, h.shape[-1])
        out = out.index_copy(0, self.ids, h)
        return out.reshape(self.B, self.P, -1)

    def sum(self, h: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, C): sum over each jet's points."""
        return h.new_zeros(self.B, h.shape[-1]).index_add(0, self.jet, h)


class EdgeConvBlock(nn.Module):
    """EdgeConv (Wang et al., ParticleNet): MLP on (x_i, x_j - x_i) for the k nearest j, mean, shortcut.

    Works on the valid edges only. The first layer, W·(x_i, x_j - x_i) = (A - B)·x_i + B·x_j,
    is evaluated per particle and then gathered, k times cheaper than on every edge.
    """

    def __init__(self, in_channels: int, out_channels: int, k: int, layers: int = 3):
        super().__init__()
        self.k = k
        self.center = nn.Linear(in_channels, out_channels, bias=False)  # A - B
        self.neighbour = nn.Linear(in_channels, out_channels, bias=False)  # B
        self.linears = nn.ModuleList(nn.Linear(out_channels, out_channels, bias=False) for _ in range(layers - 1))
        self.norms = nn.ModuleList(BatchNorm(out_channels) for _ in range(layers))
        self.shortcut = nn.Linear(in_channels, out_channels, bias=False)
        self.shortcut_norm = BatchNorm(out_channels)

    def forward(self, coords: torch.Tensor, h: torch.Tensor, pts: Points) -> torch.Tensor:
        """coords (B, P, C') padded; h (N, C) valid points -> (N, out_channels)."""
        idx, valid = knn(coords, pts.mask, self.k)
        b, i, slot = valid.nonzero(as_tuple=True)
        src = pts.pos[b * pts.P + i]  # edge i <- j, as point numbers
        dst = pts.pos[b * pts.P + idx[b, i, slot]]
        e = self.center(h)[src] + self.neighbour(h)[dst]  # (E, C)
        e = torch.relu(batch_norm(self.norms[0], e))
        for lin, norm in zip(self.linears, self.norms[1:]):
            e = torch.relu(batch_norm(norm, lin(e)))
        n = torch.bincount(src, minlength=h.shape[0]).clamp(min=1).unsqueeze(1).to(e.dtype)
        agg = e.new_zeros(h.shape[0], e.shape[1]).index_add(0, src, e) / n
        return torch.relu(agg + batch_norm(self.shortcut_norm, self.shortcut(h)))


class ParticleNet(nn.Module):
    """ParticleNet-style encoder.

    The first EdgeConv block finds neighbours in (Δη, Δφ), taken to be the first
    two input features; later blocks in the previous block's feature space.
    Sum pooling over constituents, then an MLP to ``latent_dim``.
    """

    def __init__(self, n_features: int, k: int, channels: list[int], latent_dim: int, hidden: int = 128):
        super().__init__()
        if n_features < 2:
            raise ValueError("particlenet needs at least 2 features; the first two are the (Δη, Δφ) coordinates")
        self.latent_dim = latent_dim
        self.input_norm = BatchNorm(n_features)
        blocks, c_in = [], n_features
        for c in channels:
            blocks.append(EdgeConvBlock(c_in, c, k))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.head = mlp([c_in, hidden, latent_dim])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = _clean(x, mask)
        pts = Points(mask)
        coords = x[..., :2]
        h = batch_norm(self.input_norm, pts.gather(x))
        for i, block in enumerate(self.blocks):
            h = block(coords if i == 0 else pts.dense(h), h, pts)
        return self.head(pts.sum(h))


# ----------------------------------------------------------------------------- Transformer

class Transformer(nn.Module):
    """Masked Transformer encoder (no positional encoding: a jet is a set), mean pooling, MLP."""

    def __init__(self, n_features: int, dim: int, heads: int, layers: int, latent_dim: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"encoders.transformer: dim ({dim}) must be divisible by heads ({heads})")
        self.latent_dim = latent_dim
        self.input_norm = MaskedBatchNorm(n_features)
        self.embed = nn.Linear(n_features, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = mlp([dim, dim, latent_dim])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = _clean(x, mask)
        h = self.embed(self.input_norm(x, mask))
        # An all-padded row would make attention softmax over nothing (nan): let such a
        # row attend to its first slot; it is excluded from pooling anyway.
        attend = mask.clone()
        attend[:, 0] |= ~mask.any(dim=1)
        h = self.encoder(h, src_key_padding_mask=~attend)
        return self.head(masked_mean(self.norm(h), mask))


# ----------------------------------------------------------------------------- DeepSets

class DeepSets(nn.Module):
    """DeepSets / Energy-Flow-Network-style baseline: per-particle MLP, masked sum, MLP."""

    def __init__(self, n_features: int, hidden: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.input_norm = BatchNorm(n_features)
        self.phi = mlp([n_features, hidden, hidden, hidden], final_activation=True)
        self.rho = mlp([hidden, hidden, latent_dim])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pts = Points(mask)
        h = self.phi(batch_norm(self.input_norm, pts.gather(_clean(x, mask))))
        return self.rho(pts.sum(h))


# ----------------------------------------------------------------------------- Particle Transformer

class ParticleTransformer(nn.Module):
    """Particle Transformer (ParT, Qu, Li, Qian 2022, arXiv:2202.03772) from weaver-core, as an rs3l encoder.

    Wraps ``weaver.nn.model.ParticleTransformer.ParticleTransformer`` built with
    ``num_classes=None, fc_params=None`` (its output is the class-token embedding
    (batch, embed_dims[-1]) after the class-attention blocks and a LayerNorm), followed by a
    Linear to ``latent_dim``. ParT wants ``x`` (batch, features, particles), the particles'
    four-vectors ``v`` (batch, 4, particles) = (px, py, pz, E) in GeV for its pairwise
    attention bias (ln kT, ln z, ln ΔR, ln m² of every pair) and ``mask`` (batch, 1, particles).

    The four-vectors are built from three of the input features, so ``features`` (the names
    of the input columns, ``training.features``) must contain ``part_deta``, ``part_dphi``
    and ``part_log_pt``: pt = exp(part_log_pt), and the massless four-vector in the jet
    frame, px = pt cos Δφ, py = pt sin Δφ, pz = pt sinh Δη, E = pt cosh Δη. That frame is the
    lab frame boosted along the beam by the jet's pseudo-rapidity and rotated in φ by the
    jet's azimuth (exactly so for massless constituents, whose rapidity is their
    pseudo-rapidity); ΔR, kT, z and the pair mass m² are invariant under both, so ParT's pair
    features are those of the lab-frame massless constituents. ``part_log_e`` is deliberately
    not used as E: the lab energy with a jet-frame pz would give wrong rapidities and
    spurious pair masses (the constituents' masses, ≲ 0.5 GeV, are neglected instead).

    Differences from weaver's defaults, so that the rs3l encoder contract holds (padding never
    influences the output, the output does not depend on the particle order): the input is
    normalised by a batch norm over valid constituents only (weaver's ``input_bn`` also counts
    the padding), all batch norms warm up like :class:`BatchNorm`, the sequence trimmer (which
    drops a random share of constituents in training) is off, dropout is ``dropout`` everywhere,
    an all-padded jet attends to its first slot instead of to nothing (nan), and the four-vectors
    and pair features are computed in float64 (see :class:`_InFloat64`; the network stays float32).
    """

    FOUR_VECTOR_FEATURES = ("part_deta", "part_dphi", "part_log_pt")

    def __init__(self, n_features: int, embed_dims: list[int], pair_embed_dims: list[int], num_heads: int,
                 num_layers: int, num_cls_layers: int, latent_dim: int, dropout: float = 0.0,
                 features: list[str] | None = None):
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

        need = ", ".join(self.FOUR_VECTOR_FEATURES)
        if not features:
            raise ValueError(f"particle_transformer needs the names of its input features (training.features) to "
                             f"build the particles' four-vectors from {need}")
        if len(features) != n_features:
            raise ValueError(f"particle_transformer: {n_features} input features but {len(features)} feature names "
                             f"{list(features)}")
        missing = [f for f in self.FOUR_VECTOR_FEATURES if f not in features]
        if missing:
            raise ValueError(f"particle_transformer builds the particles' four-vectors from {need}, but "
                             f"training.features {list(features)} lacks {', '.join(missing)}")
        if embed_dims[-1] % num_heads:
            raise ValueError(f"encoders.particle_transformer: embed_dims[-1] ({embed_dims[-1]}) must be divisible by "
                             f"num_heads ({num_heads})")
        self.latent_dim = latent_dim
        self.features = list(features)
        self.register_buffer("four_vector_index", torch.tensor([self.features.index(f) for f in
                                                                 self.FOUR_VECTOR_FEATURES]), persistent=False)
        self.input_norm = MaskedBatchNorm(n_features)
        drop = {"dropout": dropout, "attn_dropout": dropout, "activation_dropout": dropout}
        weaver_log = logging.getLogger("weaver")
        level = weaver_log.level
        weaver_log.setLevel(logging.WARNING)  # weaver logs every constructor argument at INFO
        try:
            self.part = WeaverParT(n_features, num_classes=None, fc_params=None, embed_dims=list(embed_dims),
                                   pair_embed_dims=list(pair_embed_dims), num_heads=num_heads, num_layers=num_layers,
                                   num_cls_layers=num_cls_layers, block_params=drop, cls_block_params=drop,
                                   trim=False)
        finally:
            weaver_log.setLevel(level)
        self.part.embed.input_bn = nn.Identity()  # replaced by input_norm (valid constituents only)
        if self.part.pair_embed is not None:
            self.part.pair_embed.pairwise_lv_fts = _InFloat64(self.part.pair_embed.pairwise_lv_fts)
        _warm_up_batch_norms(self.part)
        self.head = nn.Linear(embed_dims[-1], latent_dim)

    def four_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, P, F) -> (px, py, pz, E) (B, 4, P) in GeV, massless, in the jet frame (see the class docstring)."""
        deta, dphi, log_pt = x[..., self.four_vector_index].unbind(-1)
        pt = torch.exp(log_pt)
        return torch.stack([pt * torch.cos(dphi), pt * torch.sin(dphi), pt * torch.sinh(deta),
                            pt * torch.cosh(deta)], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = _clean(x, mask)
        # An all-padded jet attends to its (zeroed) first slot rather than to nothing (nan).
        attend = mask.clone()
        attend[:, 0] |= ~mask.any(dim=1)
        h = self.input_norm(x, mask)
        v = self.four_vectors(x.double())  # float64: see _InFloat64
        v = torch.where(attend.unsqueeze(1), v, torch.zeros((), dtype=v.dtype, device=v.device))
        emb = self.part(h.transpose(1, 2), v=v, mask=attend.unsqueeze(1))
        return self.head(emb)


class _InFloat64:
    """ParT's pair features (ln kT, ln z, ln ΔR, ln m²) computed in float64, returned in float32.

    weaver computes m² = E² - |p|², which for a particle with itself and for nearly collinear
    pairs cancels almost completely: in float32 the rounding (~1e-7 E²) lands above or below
    the clamp (1e-8 GeV²) at random, ln m² jumps by several units, and a 1e-6 change of one
    log pt moved a (randomly initialised) embedding by 0.1. The four-vectors are built in
    float64 too, since already their float32 rounding gives a massless particle a mass.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
        return self.fn(xi.double(), xj.double()).float()


def _warm_up_batch_norms(module: nn.Module) -> None:
    """Replace every ``nn.BatchNorm1d`` inside ``module`` by :class:`BatchNorm` (same parameters and buffers)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            setattr(module, name, BatchNorm(child.num_features, momentum=child.momentum))
        else:
            _warm_up_batch_norms(child)


# ----------------------------------------------------------------------------- registry

ENCODERS = {"particlenet": ParticleNet, "transformer": Transformer, "deepsets": DeepSets,
            "particle_transformer": ParticleTransformer}

# Encoders whose constructor takes ``features`` (the input columns' names, ``training.features``):
# :func:`encoder_params` adds them, so that encoder.pt / model.pt carry them with the hyper-parameters.
NEEDS_FEATURE_NAMES = {"particle_transformer"}


@functools.lru_cache(maxsize=None)
def _schema_encoder_defaults() -> dict:
    from rs3l.config import schema

    encoders = schema()["properties"]["encoders"]["properties"]
    return {name: {k: v["default"] for k, v in enc["properties"].items() if "default" in v}
            for name, enc in encoders.items()}


def _schema_defaults(name: str) -> dict:
    return copy.deepcopy(_schema_encoder_defaults().get(name, {}))


def encoder_params(name: str, cfg: dict) -> dict:
    """Hyper-parameters of encoder ``name``: ``cfg["encoders"][name]`` over the schema defaults.

    For the encoders in ``NEEDS_FEATURE_NAMES`` also ``features``: ``cfg["training"]["features"]``.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder '{name}'; known: {', '.join(ENCODERS)}")
    params = _schema_defaults(name)
    params.update((cfg.get("encoders") or {}).get(name) or {})
    if name in NEEDS_FEATURE_NAMES and "features" not in params:
        features = (cfg.get("training") or {}).get("features")
        if features:
            params["features"] = list(features)
    return params


def build_encoder(name: str, cfg: dict, n_features: int) -> nn.Module:
    """The encoder called ``name`` for inputs with ``n_features`` per-particle features.

    ``cfg`` is the full (resolved) config. Returns a module mapping
    (x (B, P, F), mask (B, P)) -> (B, latent_dim), with attribute ``latent_dim``.
    """
    params = encoder_params(name, cfg)
    if name == "particlenet":
        feats = (cfg.get("training") or {}).get("features") or []
        if feats[:2] and feats[:2] != ["part_deta", "part_dphi"]:
            log.warning("particlenet uses the first two features %s as (Δη, Δφ) coordinates", feats[:2])
    try:
        return ENCODERS[name](n_features=n_features, **params)
    except TypeError as exc:
        raise ValueError(f"encoders.{name}: bad hyper-parameters {params}: {exc}") from exc
