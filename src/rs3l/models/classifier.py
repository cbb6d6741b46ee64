"""Jet classifiers for fine-tuning: an encoder plus a head, and the ``model.pt`` / ``encoder.pt`` readers.

Heads: ``linear`` (one layer) or ``mlp`` (latent -> hidden -> hidden -> outputs, ReLU).
Checkpoints hold only tensors and plain Python types and are read with
``torch.load(weights_only=True)``: a file from a colleague cannot run code on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_FILE = "model.pt"


def safe_load(path, what: str):
    """``torch.load(path, weights_only=True)`` on the CPU; a file that needs unpickling code is refused."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refusing to load {what} '{path}': it holds Python objects other than tensors and plain "
                         f"types, which could run code when unpickled (torch.load weights_only=True: "
                         f"{str(exc).splitlines()[0]})") from exc


def build_head(kind: str, latent_dim: int, n_outputs: int, hidden: int):
    from torch import nn

    if kind == "linear":
        return nn.Linear(latent_dim, n_outputs)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, n_outputs))
    raise ValueError(f"unknown head '{kind}'; known: linear, mlp")


def _classifier_class():
    from torch import nn

    class JetClassifier(nn.Module):
        """Encoder + head: (x (B, P, F), mask (B, P)) -> logits (B, n_outputs)."""

        def __init__(self, encoder: nn.Module, head: nn.Module):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, x, mask):
            return self.head(self.encoder(x, mask))

    return JetClassifier


def build_classifier(encoder_name: str, encoder_params: dict, n_features: int, head: str, n_outputs: int,
                     hidden: int):
    from rs3l.models.encoders import build_encoder

    encoder = build_encoder(encoder_name, {"encoders": {encoder_name: encoder_params}}, n_features)
    return _classifier_class()(encoder, build_head(head, encoder.latent_dim, n_outputs, hidden))


def scores_from_logits(logits, multiclass: bool) -> np.ndarray:
    """Binary: sigmoid (n,); multi-class: softmax (n, n_classes). numpy in, numpy out."""
    import torch

    t = torch.as_tensor(logits, dtype=torch.float32)
    return (torch.softmax(t, dim=1) if multiclass else torch.sigmoid(t[:, 0])).numpy()


def load_model(model_dir: str | Path):
    """(classifier in eval mode, metadata dict) from ``<model_dir>/model.pt`` written by ``rs3l finetune``."""
    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {MODEL_FILE} in '{model_dir}'; run `rs3l finetune --out-dir {model_dir}` first")
    payload = safe_load(path, "fine-tuned model")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    model = build_classifier(meta["encoder"], meta["encoder_params"], meta["n_features"], meta["head"],
                             meta["n_outputs"], meta["head_hidden"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), meta


def device(cfg: dict):
    """The GPU if there is one (and ``training.accelerator`` is not ``cpu``), else the CPU."""
    import torch

    if cfg["training"]["accelerator"] != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def predict(model, x: np.ndarray, mask: np.ndarray, batch_size: int, dev=None) -> np.ndarray:
    """Model outputs (n, ...) for ``x`` (n, P, F), ``mask`` (n, P), in eval mode, batched, as float32 numpy."""
    import torch

    dev = dev or next(model.parameters()).device
    model.eval().to(dev)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i:i + batch_size], dtype=torch.float32, device=dev)
            mb = torch.as_tensor(mask[i:i + batch_size], dtype=torch.bool, device=dev)
            out.append(model(xb, mb).float().cpu().numpy())
    if not out:
        raise ValueError("no jets to run the model on")
    return np.concatenate(out)


def read_encoder_checkpoint(path, cfg: dict) -> dict:
    """``encoder.pt`` of ``rs3l pretrain``, checked against the config's inputs (features, max_constituents).

    A pre-trained arm and its baselines must see the same inputs; any mismatch is an error naming both.
    """
    if path is None:
        raise FileNotFoundError("no pre-trained encoder given: pass --encoder results/pretrain/encoder.pt "
                                "(from `rs3l pretrain`), or use --mode scratch")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pre-trained encoder checkpoint '{path}' does not exist; run `rs3l pretrain` "
                                f"first, or use --mode scratch")
    ckpt = safe_load(path, "encoder checkpoint")
    missing = [k for k in ("state_dict", "encoder", "n_features", "features", "max_constituents") if k not in ckpt]
    if missing:
        raise ValueError(f"'{path}' is not an rs3l encoder checkpoint: missing {missing}")
    if list(ckpt["features"]) != list(cfg["training"]["features"]):
        raise ValueError(f"encoder '{path}' was pre-trained on features {ckpt['features']}, but training.features "
                         f"is {cfg['training']['features']}; the scratch baseline must see the same inputs")
    if int(ckpt["max_constituents"]) != cfg["training"]["max_constituents"]:
        raise ValueError(f"encoder '{path}' was pre-trained with max_constituents {ckpt['max_constituents']}, but "
                         f"training.max_constituents is {cfg['training']['max_constituents']}; the scratch baseline "
                         f"must see the same inputs")
    return ckpt
