"""``objective: clip``: align the particle-cloud encoder with an MLP of the jet's high-level observables.

Two towers, as in CLIP (Radford et al. 2021; AstroM3 does it with three modalities): the particle
encoder (any rs3l encoder) embeds each view's constituents, an :class:`~rs3l.models.observables.ObservablesEncoder`
embeds each view's observables (mass, soft-drop mass, τ21, τ32, τ4/τ3, multiplicity, pT), both into the
encoder's latent space; the loss is the symmetric InfoNCE over the batch
(:func:`rs3l.models.objectives.clip`, temperature ``pretrain.temperature``). Re-simulated views stay in
play: with ``pretrain.clip_pairing: cross`` (default) the particles of view k are paired with the
observables of view k+1 (mod n) of the same jet, so the encoder learns what of the observables survives
a re-simulation; ``same`` pairs each view with its own observables. No projection head: the two towers
meet in the encoder's own embedding, which probes and fine-tuning use as for every other objective.

``encoder.pt`` gets the observables MLP as an extra entry ``observables``
(:func:`rs3l.models.observables.checkpoint_entry`), read back by :func:`rs3l.models.observables.load`:
``rs3l science`` measures cross-modal retrieval with it and ``rs3l neighbours --observables`` searches
particle embeddings by observables.
"""

from __future__ import annotations

import torch
from torch import nn

from rs3l.models import observables as obs
from rs3l.models.method import ContrastiveMethod, jet_columns, jets_of_view

PAIRINGS = ("cross", "same")


def view_pairs(n_views: int, pairing: str) -> list[tuple[int, int]]:
    """(particle view, observables view) index pairs: ``cross`` (k, k+1 mod n) or ``same`` (k, k)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pretrain.clip_pairing '{pairing}'; known: {', '.join(PAIRINGS)}")
    return [(k, (k + 1) % n_views if pairing == "cross" else k) for k in range(n_views)]


class CLIPMethod(ContrastiveMethod):
    """Particle encoder + observables MLP; batches carry ``jets1 ... jetsn`` (the raw jet columns
    :data:`rs3l.models.observables.RAW_COLUMNS` of each view) beside ``x1, mask1, ...``."""

    JET_COLUMNS = obs.RAW_COLUMNS

    def __init__(self, encoder: nn.Module, objective, projection: int = 0, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 1, knn_k: int = 20, probe_jets: int = 5000,
                 pretext=None, clip_hidden: int = 64, clip_pairing: str = "cross", temperature: float = 0.1):
        if projection:
            raise ValueError("objective 'clip' takes no projection head (the observables MLP maps into the encoder's "
                             "embedding); set pretrain.projection_head to 0")
        view_pairs(2, clip_pairing)  # a bad name fails here
        super().__init__(encoder, objective, 0, learning_rate, weight_decay, epochs, knn_k, probe_jets, pretext)
        self.save_hyperparameters(ignore=["encoder", "objective", "pretext"])
        self.observables = obs.ObservablesEncoder(encoder.latent_dim, clip_hidden)

    @classmethod
    def config_kwargs(cls, cfg: dict) -> dict:
        p = cfg["pretrain"]
        return {"clip_hidden": p["clip_hidden"], "clip_pairing": p["clip_pairing"], "temperature": p["temperature"]}

    def embed_observables(self, batch: dict, n_views: int) -> list[torch.Tensor]:
        """Observables embeddings of every view, list of (batch, latent_dim); one pass (one set of batch-norm
        statistics)."""
        columns = jet_columns(type(self), self.pretext.target if self.pretext is not None else None)
        raw = torch.cat([jets_of_view(batch, k, obs.RAW_COLUMNS, columns) for k in range(n_views)])
        return list(self.observables(obs.from_raw(raw)).chunk(n_views))

    def _loss(self, batch: dict, hs: list[torch.Tensor], zs: list[torch.Tensor]) -> torch.Tensor:
        us = self.embed_observables(batch, len(zs))
        pairs = view_pairs(len(zs), self.hparams.clip_pairing)
        return torch.stack([self.objective(zs[a], us[b]) for a, b in pairs]).mean()

    def saved_modules(self) -> dict[str, nn.Module]:
        return {"observables": self.observables}

    def encoder_extras(self) -> dict:
        return {"observables": obs.checkpoint_entry(self.observables, self.hparams.temperature)}
