"""A self-supervised method = encoder (backbone) + optional projection head + objective.

In the manner of lightly / solo-learn: the encoder knows nothing about the
objective, the objective is a pure function of two embedding batches. The
module logs per epoch (prefix ``train/`` and ``val/``): ``loss``, ``pos_sim``
(mean cosine similarity of positive pairs), ``neg_sim`` (of negative pairs),
``alignment`` and ``uniformity`` (Wang & Isola 2020), and at validation
``val/knn_acc``, a leave-one-out kNN accuracy of the encoder embeddings of the
val jets, the only place labels are used.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from rs3l.models import objectives
from rs3l.models.encoders import BatchNorm, build_encoder


def projection_head(latent_dim: int, out_dim: int) -> nn.Module:
    """MLP latent -> max(latent, out) -> out (SimCLR-style); identity when ``out_dim`` is 0."""
    if out_dim <= 0:
        return nn.Identity()
    hidden = max(latent_dim, out_dim)
    return nn.Sequential(nn.Linear(latent_dim, hidden), BatchNorm(hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class ContrastiveMethod(L.LightningModule):
    """Pre-training on positive pairs: batches with ``x1, mask1, x2, mask2`` (and ``label`` for the probe)."""

    def __init__(self, encoder: nn.Module, objective, projection: int = 0, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 1, knn_k: int = 20, probe_jets: int = 5000):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.latent_dim, projection)
        self.objective = objective
        self.save_hyperparameters(ignore=["encoder", "objective"])
        self._probe: list[tuple[torch.Tensor, torch.Tensor]] = []

    @classmethod
    def from_config(cls, cfg: dict, n_features: int) -> "ContrastiveMethod":
        p, t = cfg["pretrain"], cfg["training"]
        return cls(build_encoder(p["encoder"], cfg, n_features), objectives.objective_from_config(cfg),
                   projection=p["projection_head"], learning_rate=t["learning_rate"], weight_decay=t["weight_decay"],
                   epochs=p["epochs"], knn_k=p["knn_k"], probe_jets=p["probe_jets"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder embedding (batch, latent_dim), without the projection head."""
        return self.encoder(x, mask)

    def _embed_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Both views through the encoder in one pass: one set of batch-norm statistics.
        n = batch["x1"].shape[0]
        h = self.encoder(torch.cat([batch["x1"], batch["x2"]]), torch.cat([batch["mask1"], batch["mask2"]]))
        z = self.head(h)
        return h[:n], z[:n], z[n:]

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        h1, z1, z2 = self._embed_pair(batch)
        loss = self.objective(z1, z2)
        n = z1.shape[0]
        with torch.no_grad():
            pos, neg = objectives.pair_similarities(z1, z2)
            stats = {"loss": loss.detach(), "pos_sim": pos, "neg_sim": neg,
                     "alignment": objectives.alignment(z1, z2),
                     "uniformity": objectives.uniformity(torch.cat([z1, z2]))}
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
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.hparams.epochs, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

