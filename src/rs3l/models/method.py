"""A self-supervised method = encoder (backbone) + optional projection head + objective.

In the manner of lightly / solo-learn: the encoder knows nothing about the
objective, the objective is a pure function of two embedding batches. The
module logs per epoch (prefix ``train/`` and ``val/``): ``loss``, ``pos_sim``
(mean cosine similarity of positive pairs), ``neg_sim`` (of negative pairs),
``alignment`` and ``uniformity`` (Wang & Isola 2020), and at validation
``val/knn_acc``, a leave-one-out kNN accuracy of the encoder embeddings of the
val jets, the only place labels are used.

Batches carry n >= 2 views of each jet (``x1, mask1, ..., xn, maskn``); the diagnostics
use the first two. :class:`JEPAMethod` (objective ``jepa``) adds an EMA target encoder
and a predictor, :class:`rs3l.models.clip.CLIPMethod` (objective ``clip``) an MLP of the
jet's observables; ``encoder`` is always the network that ``encoder.pt`` gets. Any method
may carry a pretext head (``pretrain.pretext``, :mod:`rs3l.models.pretext`): its loss,
times its weight, joins the objective's (logged as ``pretext``, and ``pretext_acc``).
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
from torch import nn

from rs3l.models import objectives, pretext as pretext_head
from rs3l.models.encoders import BatchNorm, build_encoder


def projection_head(latent_dim: int, out_dim: int) -> nn.Module:
    """MLP latent -> max(latent, out) -> out (SimCLR-style); identity when ``out_dim`` is 0."""
    if out_dim <= 0:
        return nn.Identity()
    hidden = max(latent_dim, out_dim)
    return nn.Sequential(nn.Linear(latent_dim, hidden), BatchNorm(hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def jet_columns(method: type, pretext_target: str | None) -> tuple[str, ...]:
    """The jet columns of each view a batch carries (``jets1 ... jetsn``, in this order): the method's own
    (``JET_COLUMNS``: the observables' for ``clip``), then ``view_parameter`` for a ``parameter`` pretext."""
    return tuple(method.JET_COLUMNS) + ((pretext_head.PARAMETER_COLUMN,) if pretext_target == "parameter" else ())


def jets_of_view(batch: dict, k: int, names, columns) -> torch.Tensor:
    """Columns ``names`` (batch, len(names)) of view k's jet columns ``batch[f"jets{k + 1}"]``, whose order is ``columns``."""
    columns = list(columns)
    return batch[f"jets{k + 1}"][:, [columns.index(n) for n in names]]


def n_views(batch: dict) -> int:
    """Views per jet in a batch (keys ``x1`` ... ``xn``)."""
    n = 0
    while f"x{n + 1}" in batch:
        n += 1
    return n


class ContrastiveMethod(L.LightningModule):
    """Pre-training on positive views: batches with ``x1, mask1, ..., xn, maskn`` (and ``label`` for the probe)."""

    JET_COLUMNS: tuple[str, ...] = ()  # jet columns per view the objective reads (batch ``jets1 ...``)

    def __init__(self, encoder: nn.Module, objective, projection: int = 0, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 1, knn_k: int = 20, probe_jets: int = 5000,
                 pretext: pretext_head.PretextHead | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.latent_dim, projection)
        self.objective = objective
        self.pretext = pretext
        self.save_hyperparameters(ignore=["encoder", "objective", "pretext"])
        self._probe: list[tuple[torch.Tensor, torch.Tensor]] = []

    @classmethod
    def from_config(cls, cfg: dict, n_features: int) -> "ContrastiveMethod":
        """This method from the config, with the pretext head of ``pretrain.pretext`` (the class of
        ``pretrain.objective``: :func:`rs3l.models.methods.build_method`)."""
        p, t = cfg["pretrain"], cfg["training"]
        encoder = build_encoder(p["encoder"], cfg, n_features)
        return cls(encoder, objectives.objective_from_config(cfg),
                   projection=p["projection_head"], learning_rate=t["learning_rate"], weight_decay=t["weight_decay"],
                   epochs=p["epochs"], knn_k=p["knn_k"], probe_jets=p["probe_jets"],
                   pretext=pretext_head.from_config(cfg, encoder.latent_dim), **cls.config_kwargs(cfg))

    @classmethod
    def config_kwargs(cls, cfg: dict) -> dict:
        """The method's own constructor arguments from the config (none here)."""
        return {}

    def saved_modules(self) -> dict[str, nn.Module]:
        """Modules beside the encoder whose weights of the best epoch ``encoder.pt`` keeps (none here)."""
        return {}

    def encoder_extras(self) -> dict:
        """Extra entries of ``encoder.pt`` (tensors and plain types; none here)."""
        return {}

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder embedding (batch, latent_dim), without the projection head."""
        return self.encoder(x, mask)

    @staticmethod
    def _stack(batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        v = n_views(batch)
        return (torch.cat([batch[f"x{k + 1}"] for k in range(v)]),
                torch.cat([batch[f"mask{k + 1}"] for k in range(v)]), v)

    def _embed_views(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder embeddings and head outputs of every view, lists of (batch, dim)."""
        # All views through the encoder in one pass: one set of batch-norm statistics.
        x, mask, v = self._stack(batch)
        h = self.encoder(x, mask)
        return list(h.chunk(v)), list(self.head(h).chunk(v))

    def _loss(self, batch: dict, hs: list[torch.Tensor], zs: list[torch.Tensor]) -> torch.Tensor:
        return self.objective(*zs)

    def _pretext(self, batch: dict, hs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The pretext head's loss and stats (batch keys ``view1 ... viewn``, and ``jets1 ...`` for ``parameter``)."""
        views = [batch[f"view{k + 1}"] for k in range(len(hs))]
        params = None
        if self.pretext.target == "parameter":
            columns = jet_columns(type(self), self.pretext.target)
            params = [jets_of_view(batch, k, [pretext_head.PARAMETER_COLUMN], columns)[:, 0] for k in range(len(hs))]
        return self.pretext(hs, views, params)

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        hs, zs = self._embed_views(batch)
        loss = self._loss(batch, hs, zs)
        extra = {}
        if self.pretext is not None:
            aux, extra = self._pretext(batch, hs)
            loss = loss + self.pretext.weight * aux
        h1, z1, z2 = hs[0], zs[0], zs[1]
        n = z1.shape[0]
        with torch.no_grad():
            pos, neg = objectives.pair_similarities(z1, z2)
            stats = {"loss": loss.detach(), "pos_sim": pos, "neg_sim": neg,
                     "alignment": objectives.alignment(z1, z2),
                     "uniformity": objectives.uniformity(torch.cat([z1, z2])), **extra}
        self.log_dict({f"{stage}/{k}": v for k, v in stats.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=n)
        if stage == "train":
            self.log("loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n, logger=False)
        return loss, h1

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._probe = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, h1 = self._step(batch, "val")
        if sum(len(p[1]) for p in self._probe) < self.hparams.probe_jets:
            self._probe.append((h1.detach().float().cpu(), batch["label"].detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._probe:
            return
        z = torch.cat([p[0] for p in self._probe])[: self.hparams.probe_jets]
        y = torch.cat([p[1] for p in self._probe])[: self.hparams.probe_jets]
        # Every rank sees the whole val split (see JetDataModule), so the ranks agree.
        acc = objectives.knn_accuracy(z, y, k=self.hparams.knn_k)
        self.log("val/knn_acc", acc, prog_bar=True, sync_dist=True)
        self._probe = []

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]  # not the EMA target of JEPA
        opt = torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.hparams.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}



class JEPAMethod(ContrastiveMethod):
    """JEPA (joint-embedding predictive architecture; I-JEPA, Assran et al. 2023) on views of jets.

    The context encoder (``encoder``, trained) embeds each view; a predictor MLP maps the
    embedding of view a to the embedding of view b (every ordered pair a != b) that the target
    encoder gives. The target encoder is an exponential moving average of the context encoder
    (``requires_grad`` False, no gradient; updated after every optimiser step with momentum
    ``m`` rising from ``ema_momentum`` to 1 on a cosine over the training's steps). Against
    collapse: VICReg's variance and covariance terms on the context embeddings (see
    :func:`rs3l.models.objectives.jepa`), plus the EMA target and the predictor (BYOL's
    stop-gradient asymmetry). No projection head: the predictor plays that part.
    """

    def __init__(self, encoder: nn.Module, objective, projection: int = 0, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 1, knn_k: int = 20, probe_jets: int = 5000,
                 pretext: pretext_head.PretextHead | None = None, ema_momentum: float = 0.996,
                 predictor_hidden: int = 64):
        if projection:
            raise ValueError("objective 'jepa' takes no projection head (its predictor is the head); "
                             "set pretrain.projection_head to 0")
        super().__init__(encoder, objective, 0, learning_rate, weight_decay, epochs, knn_k, probe_jets, pretext)
        self.save_hyperparameters(ignore=["encoder", "objective", "pretext"])
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        d = encoder.latent_dim
        self.predictor = nn.Sequential(nn.Linear(d, predictor_hidden), BatchNorm(predictor_hidden), nn.ReLU(),
                                       nn.Linear(predictor_hidden, d))

    @classmethod
    def config_kwargs(cls, cfg: dict) -> dict:
        p = cfg["pretrain"]
        return {"ema_momentum": p["ema_momentum"], "predictor_hidden": p["predictor_hidden"]}

    def _loss(self, batch: dict, hs: list[torch.Tensor], zs: list[torch.Tensor]) -> torch.Tensor:
        x, mask, v = self._stack(batch)
        with torch.no_grad():
            targets = list(self.target_encoder(x, mask).chunk(v))
        predicted = list(self.predictor(torch.cat(hs)).chunk(v))
        pairs = [(a, b) for a in range(v) for b in range(v) if a != b]
        return self.objective([predicted[a] for a, _ in pairs], [targets[b] for _, b in pairs], torch.cat(hs))

    def momentum(self) -> float:
        """EMA momentum now: ``ema_momentum`` at step 0 rising to 1 at the last step (cosine)."""
        m0 = self.hparams.ema_momentum
        total = 0
        if self._trainer is not None:
            try:
                total = int(self.trainer.estimated_stepping_batches)
            except Exception:  # noqa: BLE001 - no estimate (e.g. unsized loader): constant momentum
                total = 0
        if total <= 0 or not math.isfinite(total):
            return m0
        progress = min(self.global_step / total, 1.0)
        return 1 - (1 - m0) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target = momentum * target + (1 - momentum) * context (parameters); buffers (batch-norm
        statistics) copied from the context encoder."""
        for t, c in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.mul_(momentum).add_(c.detach(), alpha=1 - momentum)
        for t, c in zip(self.target_encoder.buffers(), self.encoder.buffers()):
            t.copy_(c)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # called after the optimiser step of this batch
        self.update_target(self.momentum())
