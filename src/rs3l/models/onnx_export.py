"""ONNX export of rs3l encoders and classifiers (``rs3l export-onnx``).

The exported graph takes ``x`` (batch, particles, features) float32 and ``mask``
(batch, particles) bool (True = real constituent); both axes are dynamic. Its output is
``embedding`` (batch, latent_dim) for an encoder, ``logits`` (batch, n_outputs) for a
classifier (apply a sigmoid / softmax for scores, as :func:`rs3l.models.classifier.scores_from_logits`).

Export uses the *inference form* of each encoder (:mod:`rs3l.models.inference`: the same
weights evaluated densely on the padded batch, no data-dependent sizes). The Particle
Transformer has one too, but ONNX cannot hold it (see :data:`NOT_EXPORTABLE`). Every export
is checked: the ONNX file is run with onnxruntime on random jets at two batch sizes and
particle counts (one with fewer particles than ParticleNet's k) and must match the torch
module in eval mode to 1e-5 (atol and rtol), else nothing is written.
Exporter: ``torch.onnx.export(dynamo=True)`` (needs onnxscript), opset 18.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rs3l.atomic import atomic_path
from rs3l.models import encoders as E
from rs3l.models.inference import INFERENCE_FORMS, inference_form, random_jets

log = logging.getLogger(__name__)

OPSET = 18
TOLERANCE = 1e-5  # atol and rtol of the export check

NOT_EXPORTABLE = {
    # Its dense form exports, but onnxruntime has no float64 Atan (weaver's φ = atan2(py, px)) and its pair
    # features need float64 (see encoders._InFloat64): in float32 torch and onnxruntime differed by up to 1e-2.
    E.ParticleTransformer: "its pair features need float64, and onnxruntime has no float64 Atan for their φ",
}


def onnx_form(model: nn.Module) -> nn.Module:
    """The inference form (:func:`rs3l.models.inference.inference_form`) of an encoder or classifier that ONNX
    can hold; ValueError naming the exportable encoders otherwise."""
    encoder = model.encoder if type(model).__name__ == "JetClassifier" else model
    if type(encoder) in NOT_EXPORTABLE or type(encoder) not in INFERENCE_FORMS:
        known = ", ".join(name for name, cls in E.ENCODERS.items()
                          if cls in INFERENCE_FORMS and cls not in NOT_EXPORTABLE)
        why = f" ({NOT_EXPORTABLE[type(encoder)]})" if type(encoder) in NOT_EXPORTABLE else ""
        raise ValueError(f"cannot export a {type(encoder).__name__} encoder to ONNX{why}; exportable encoders: {known}")
    return inference_form(model)


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
    form = onnx_form(model)
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
