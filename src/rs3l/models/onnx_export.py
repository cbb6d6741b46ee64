"""ONNX export of rs3l encoders and classifiers (``rs3l export-onnx``).

The exported graph takes ``x`` (batch, particles, features) float32 and ``mask``
(batch, particles) bool (True = real constituent); both axes are dynamic. Its output is
``embedding`` (batch, latent_dim) for an encoder, ``logits`` (batch, n_outputs) for a
classifier (apply a sigmoid / softmax for scores, as :func:`rs3l.models.classifier.scores_from_logits`).

The training forms of DeepSets and ParticleNet work on the flat list of valid constituents
(``Points``: ``nonzero`` and ``index_add``), whose sizes depend on the data: ``torch.export``
cannot trace them with a dynamic particle axis, and the TorchScript exporter writes
``index_add`` as a scatter that drops repeated indices (wrong sums); the Transformer's
masked batch norm indexes with the mask. Export therefore uses
an *inference form* of each encoder: the same modules and weights in eval mode, evaluated
densely on the padded batch (padding zeroed and masked out of every sum, neighbour search
and attention), which gives the same numbers. ParticleNet's kNN pads its distance matrix
with k infinitely far columns, so ``topk`` never asks for more neighbours than there are
particles. Every export is checked: the ONNX file is run with onnxruntime on random jets
at two batch sizes and particle counts (one with fewer particles than ParticleNet's k) and
must match the torch module in eval mode to 1e-5 (atol and rtol), else nothing is written.
Exporter: ``torch.onnx.export(dynamo=True)`` (needs onnxscript), opset 18.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rs3l.atomic import atomic_path
from rs3l.models import encoders as E

log = logging.getLogger(__name__)

OPSET = 18
TOLERANCE = 1e-5  # atol and rtol of the export check


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


INFERENCE_FORMS = {E.DeepSets: DenseDeepSets, E.ParticleNet: DenseParticleNet, E.Transformer: DenseTransformer}
NOT_EXPORTABLE = {
    # A dense form of it exports, but onnxruntime has no float64 Atan (weaver's φ = atan2(py, px)) and its pair
    # features need float64 (see encoders._InFloat64): in float32 torch and onnxruntime differed by up to 1e-2.
    E.ParticleTransformer: "its pair features need float64, and onnxruntime has no float64 Atan for their φ",
}


def inference_form(model: nn.Module) -> nn.Module:
    """An exportable copy of ``model`` (an rs3l encoder or ``JetClassifier``), in eval mode, same outputs."""
    model = copy.deepcopy(model).eval()
    if hasattr(model, "head") and hasattr(model, "encoder") and type(model).__name__ == "JetClassifier":
        model.encoder = inference_form(model.encoder)
        return model
    form = INFERENCE_FORMS.get(type(model))
    if form is None:
        known = ", ".join(name for name, cls in E.ENCODERS.items() if cls in INFERENCE_FORMS)
        why = f" ({NOT_EXPORTABLE[type(model)]})" if type(model) in NOT_EXPORTABLE else ""
        raise ValueError(f"cannot export a {type(model).__name__} encoder to ONNX{why}; exportable encoders: {known}")
    return form(model).eval()


def random_jets(n_features: int, batch: int, particles: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs for checks: x (batch, particles, n_features), mask with jets of 1..particles constituents."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, particles, n_features, generator=g)
    n = torch.randint(1, particles + 1, (batch,), generator=g)
    n[0] = particles
    return x, torch.arange(particles)[None, :] < n[:, None]


def max_abs_diff(path, model: nn.Module, n_features: int, shapes=((3, 5), (8, 40))) -> float:
    """Run the ONNX file with onnxruntime at each (batch, particles) of ``shapes``; the largest |onnx - torch|.

    Raises ``ValueError`` where the outputs differ by more than ``TOLERANCE`` (atol and rtol).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model = model.eval()
    for i, (b, p) in enumerate(shapes):
        x, mask = random_jets(n_features, b, p, seed=100 + i)
        with torch.no_grad():
            ref = model(x, mask).numpy()
        out = session.run(None, {"x": x.numpy(), "mask": mask.numpy()})[0]
        if out.shape != ref.shape or not np.allclose(out, ref, atol=TOLERANCE, rtol=TOLERANCE):
            diff = np.abs(out - ref).max() if out.shape == ref.shape else float("nan")
            raise ValueError(f"ONNX export '{path}' does not reproduce the torch model at batch {b}, {p} particles: "
                             f"shapes {out.shape} vs {ref.shape}, max |diff| {diff:.3g} > {TOLERANCE}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def export(model: nn.Module, n_features: int, out, output_name: str) -> float:
    """Export ``model`` (x, mask) -> (batch, ...) to ``out`` atomically; returns the check's max |onnx - torch|."""
    form = inference_form(model)
    x, mask = random_jets(n_features, 4, 24)
    batch, particles = torch.export.Dim("batch"), torch.export.Dim("particles")
    out = Path(out)
    with atomic_path(out) as tmp:
        program = torch.onnx.export(form, (x, mask), dynamo=True, input_names=["x", "mask"],
                                    output_names=[output_name], opset_version=OPSET, verbose=False,
                                    dynamic_shapes={"x": {0: batch, 1: particles}, "mask": {0: batch, 1: particles}})
        program.save(str(tmp), external_data=False)
        diff = max_abs_diff(tmp, model, n_features)
    return diff


def main(cfg: dict, args) -> None:
    """``rs3l export-onnx``: ``--model-dir`` (model.pt of ``rs3l finetune``) or ``--encoder`` (encoder.pt)."""
    if (args.model_dir is None) == (args.encoder is None):
        raise ValueError("give exactly one of --model-dir (a fine-tuned classifier, model.pt of `rs3l finetune`) "
                         "and --encoder (encoder.pt of `rs3l pretrain`)")
    if args.model_dir is not None:
        from rs3l.models.classifier import load_model

        model, meta = load_model(args.model_dir)
        what, output = f"classifier {args.model_dir}", "logits"
    else:
        from rs3l.training.pretrain import load_encoder

        model, meta = load_encoder(args.encoder)
        what, output = f"encoder {args.encoder}", "embedding"
    diff = export(model, int(meta["n_features"]), args.out, output)
    print(f"wrote {args.out}: {what} ({meta.get('encoder')}), inputs x (batch, particles, {meta['n_features']}) "
          f"float32 and mask (batch, particles) bool, output {output}; features {', '.join(meta['features'])}; "
          f"onnxruntime matches torch to {diff:.2g}")
