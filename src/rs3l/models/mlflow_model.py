"""Encoders and classifiers as MLflow models (pytorch flavour), so that MLflow's UI and APIs show them as models.

MLflow's pytorch flavour calls a model with one tensor, and rs3l models take two
(``x``, ``mask``). The logged module is therefore :class:`MaskLastInput`: its one input
``jets`` (batch, particles, features + 1) float32 holds the features, then the mask as
the last column (1 = real constituent, 0 = padding). ``mlflow.pytorch.load_model(uri)``
returns that module (``.model`` is the rs3l ``(x, mask)`` module);
``mlflow.pyfunc.load_model(uri).predict(jets)`` works on numpy arrays. The signature
leaves the batch and particle axes free.

Loading an MLflow pytorch model unpickles Python objects (MLflow's format) and needs
rs3l importable; the weights-only path stays ``encoder.pt`` / ``model.pt``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn


class MaskLastInput(nn.Module):
    """``jets`` (batch, particles, features + 1), mask as the last column -> ``model(x, mask)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, jets: torch.Tensor) -> torch.Tensor:
        return self.model(jets[..., :-1], jets[..., -1] > 0.5)


def pack(x: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """x (batch, particles, features), mask (batch, particles) -> the one input of :class:`MaskLastInput`."""
    x, mask = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(mask)
    return torch.cat([x, mask.to(torch.float32).unsqueeze(-1)], dim=-1)


def _requirements(model: nn.Module) -> list[str]:
    """The pip requirements, given explicitly (MLflow's inference of them imports and times every package)."""
    from importlib.metadata import version

    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    if any(type(m).__module__.startswith("weaver") for m in model.modules()):
        reqs.append(f"weaver-core=={version('weaver-core')}")
    return reqs


def log_model(model: nn.Module, name: str, features: list[str]) -> str:
    """Log ``model`` ((x, mask) -> (batch, n)) to the active MLflow run as model ``name``; returns its URI."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    wrapped = MaskLastInput(copy.deepcopy(model).cpu().eval()).eval()
    n_features = len(features)
    example = pack(torch.zeros(2, 4, n_features), torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool))
    with torch.no_grad():
        n_out = wrapped(example).shape[-1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, n_features + 1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_out))]))
    # pickle, not MLflow 3's default 'pt2' (torch.export): the training forms of DeepSets and ParticleNet have
    # data-dependent sizes that torch.export cannot trace with free batch and particle axes (see onnx_export)
    info = mlflow.pytorch.log_model(wrapped, name=name, signature=signature, pip_requirements=_requirements(model),
                                    metadata={"inputs": list(features) + ["mask"]}, serialization_format="pickle")
    return info.model_uri

