"""The pre-training method of a configuration: the one module that knows every objective's LightningModule.

:mod:`rs3l.models.method` holds the contrastive method and JEPA, :mod:`rs3l.models.clip` the two-modality
method built on them; this module sits above both (neither imports it).
"""

from __future__ import annotations

from rs3l.models.clip import CLIPMethod
from rs3l.models.method import ContrastiveMethod, JEPAMethod, jet_columns


def method_class(objective: str) -> type:
    """The LightningModule class of ``pretrain.objective``."""
    return {"jepa": JEPAMethod, "clip": CLIPMethod}.get(objective, ContrastiveMethod)


def build_method(cfg: dict, n_features: int) -> ContrastiveMethod:
    """The pre-training method of ``cfg`` (its objective's class, encoder, pretext head)."""
    return method_class(cfg["pretrain"]["objective"]).from_config(cfg, n_features)


def batch_extras(cfg: dict) -> dict:
    """What a pre-training batch carries besides the particles, as :class:`rs3l.training.data.JetDataset`
    arguments: ``jet_columns`` (:func:`rs3l.models.method.jet_columns`) and ``view_index`` (``view1 ... viewn``,
    for a pretext)."""
    p = cfg["pretrain"]
    pre = p.get("pretext") or {}
    return {"jet_columns": jet_columns(method_class(p["objective"]), pre.get("target")), "view_index": bool(pre)}
