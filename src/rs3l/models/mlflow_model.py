"""Encoders and classifiers as MLflow models (pytorch flavour), so that MLflow's UI and APIs show them as models.

MLflow's pytorch flavour calls a model with one tensor, and rs3l models take two
(``x``, ``mask``). The logged module is therefore :class:`MaskLastInput`: its one input
``jets`` (batch, particles, features + 1) float32 holds the features, then the mask as
the last column (1 = real constituent, 0 = padding). The signature leaves the batch and
particle axes free.

The file is MLflow's ``pt2`` format (``torch.export``): a graph of tensor operations and the
weights, which loads without unpickling Python objects (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``
accepts it) and without rs3l installed. What is exported is the model's *inference form*
(:mod:`rs3l.models.inference`, the same weights evaluated densely; every rs3l encoder has one):
the training forms have data-dependent sizes that ``torch.export`` cannot trace with free axes.
``mlflow.pytorch.load_model(uri)`` returns the exported module (call it on :func:`pack` (x, mask));
``mlflow.pyfunc.load_model(uri).predict(jets)`` works on numpy arrays. A module without an
inference form (not an rs3l encoder or classifier), or whose form does not reproduce it, is logged
pickled, with a warning naming it (metadata ``rs3l_format`` says which).
The weights-only files stay ``encoder.pt`` / ``model.pt``.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from rs3l.models.inference import inference_form, random_jets

log = logging.getLogger(__name__)

TOLERANCE = 1e-5  # the inference form must reproduce the module this closely (atol and rtol)


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
        reqs.append(f"weaver-core=={version('weaver-core')}")  # only the pickled fallback needs it
    return reqs


def exportable(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, str]:
    """(module to log, ``"pt2"`` or ``"pickle"``): :class:`MaskLastInput` of the inference form where there is
    one and it reproduces ``model`` on ``example`` (else the module itself, to be pickled)."""
    wrapped = MaskLastInput(copy.deepcopy(model).cpu().eval()).eval()
    try:
        dense = MaskLastInput(inference_form(wrapped.model)).eval()
    except ValueError as exc:
        log.warning("MLflow model of a %s: %s; logged pickled (loading it unpickles code)", type(model).__name__, exc)
        return wrapped, "pickle"
    with torch.no_grad():
        ref, got = wrapped(example), dense(example)
    if not torch.allclose(got, ref, atol=TOLERANCE, rtol=TOLERANCE):  # a bug of the form: keep the job's result
        log.warning("MLflow model of a %s: its inference form differs by %.3g > %g; logged pickled (loading it "
                    "unpickles code)", type(model).__name__, (got - ref).abs().max().item(), TOLERANCE)
        return wrapped, "pickle"
    return dense, "pt2"


def log_model(model: nn.Module, name: str, features: list[str]) -> str:
    """Log ``model`` ((x, mask) -> (batch, n)) to the active MLflow run as model ``name``; returns its URI."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    n_features = len(features)
    # more than one jet and one particle: torch.export would fix an axis of size 1
    example = pack(*random_jets(n_features, 4, 24))
    module, fmt = exportable(model, example)
    with torch.no_grad():
        n_out = module(example).shape[-1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, n_features + 1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_out))]))
    # a numpy example (not a tensor): MLflow adds the pyfunc flavour to a pt2 model only then
    info = mlflow.pytorch.log_model(module, name=name, signature=signature, pip_requirements=_requirements(model),
                                    metadata={"inputs": list(features) + ["mask"], "rs3l_format": fmt},
                                    input_example=example.numpy() if fmt == "pt2" else None,
                                    serialization_format=fmt)
    return info.model_uri
