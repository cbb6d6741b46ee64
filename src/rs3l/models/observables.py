"""A jet's high-level observables, the second modality of ``objective: clip``, and the MLP that embeds them.

The observables (units GeV): ``mass``, ``soft_drop_mass``, ``tau21`` = τ2/τ1, ``tau32`` = τ3/τ2,
``tau43`` = τ4/τ3, ``n_constituents`` (multiplicity) and ``pt``: the substructure BDT's features
(:mod:`rs3l.evaluation.substructure_bdt`) plus τ4/τ3. They are computed from the merged shards' jet
columns :data:`RAW_COLUMNS` (``rs3l.schema.JET_COLUMNS``); masses, multiplicity and pT enter as
logarithms (masses and multiplicity floored at 1), and :class:`ObservablesEncoder` standardises them
with a batch norm whose running mean and variance are saved with it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rs3l.models.encoders import BatchNorm

RAW_COLUMNS = ("pt", "mass", "soft_drop_mass", "tau1", "tau2", "tau3", "tau4", "n_constituents")
OBSERVABLES = ("mass", "soft_drop_mass", "tau21", "tau32", "tau43", "n_constituents", "pt")
# other names accepted on the command line (rs3l neighbours --observables)
ALIASES = {"sdmass": "soft_drop_mass", "msd": "soft_drop_mass", "multiplicity": "n_constituents",
           "n": "n_constituents", "nconst": "n_constituents"}


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)), torch.zeros_like(a))


def from_raw(raw: torch.Tensor) -> torch.Tensor:
    """The observables (batch, len(OBSERVABLES)) in physical units (GeV) from the jet columns
    ``raw`` (batch, len(RAW_COLUMNS)), in the order of :data:`RAW_COLUMNS`."""
    c = {name: raw[:, i] for i, name in enumerate(RAW_COLUMNS)}
    out = {"mass": c["mass"], "soft_drop_mass": c["soft_drop_mass"], "tau21": _ratio(c["tau2"], c["tau1"]),
           "tau32": _ratio(c["tau3"], c["tau2"]), "tau43": _ratio(c["tau4"], c["tau3"]),
           "n_constituents": c["n_constituents"], "pt": c["pt"]}
    return torch.stack([out[name] for name in OBSERVABLES], dim=1)


def from_arrays(arr: dict) -> np.ndarray:
    """(n, len(OBSERVABLES)) float32 from the jet columns of :func:`rs3l.training.data.load_arrays`."""
    raw = np.column_stack([np.asarray(arr[c], np.float32) for c in RAW_COLUMNS])
    return from_raw(torch.from_numpy(raw)).numpy()


def parse(text: str) -> np.ndarray:
    """``'mass=172,soft_drop_mass=170,tau21=0.5,...'`` -> (1, len(OBSERVABLES)) float32; every observable once
    (aliases: sdmass, msd, multiplicity, n, nconst). ValueError naming the missing or unknown ones."""
    values = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or name not in OBSERVABLES:
            raise ValueError(f"--observables: '{item}' is not name=value with a name among {', '.join(OBSERVABLES)} "
                             f"(or {', '.join(ALIASES)})")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--observables: '{item}': '{value.strip()}' is not a number") from None
    missing = [n for n in OBSERVABLES if n not in values]
    if missing:
        raise ValueError(f"--observables: missing {', '.join(missing)}; give all of {', '.join(OBSERVABLES)} "
                         f"(masses and pt in GeV)")
    return np.array([[values[n] for n in OBSERVABLES]], np.float32)


def transform(obs: torch.Tensor) -> torch.Tensor:
    """What the MLP sees (before standardisation): log of the masses, multiplicity (floored at 1) and pT;
    the τ ratios as they are. (batch, len(OBSERVABLES)) -> same shape."""
    logs = torch.tensor([n in ("mass", "soft_drop_mass", "n_constituents", "pt") for n in OBSERVABLES],
                        device=obs.device)
    return torch.where(logs, torch.log(obs.clamp(min=1.0)), obs)


class ObservablesEncoder(nn.Module):
    """MLP of a jet's observables: (batch, len(OBSERVABLES)) in physical units -> (batch, latent_dim).

    log transform (:func:`transform`), standardisation (batch norm, running statistics), then
    Linear(7, hidden) - ReLU - Linear(hidden, hidden) - ReLU - Linear(hidden, latent_dim).
    """

    def __init__(self, latent_dim: int, hidden: int = 64):
        super().__init__()
        self.latent_dim, self.hidden = latent_dim, hidden
        self.norm = BatchNorm(len(OBSERVABLES))
        self.mlp = nn.Sequential(nn.Linear(len(OBSERVABLES), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, latent_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(transform(obs)))


def checkpoint_entry(module: ObservablesEncoder, temperature: float) -> dict:
    """The ``observables`` entry of ``encoder.pt`` (tensors and plain types only)."""
    return {"state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "observables": list(OBSERVABLES), "hidden": module.hidden, "latent_dim": module.latent_dim,
            "temperature": float(temperature)}


def load(info: dict) -> ObservablesEncoder | None:
    """The observables MLP saved in an ``encoder.pt`` dict (eval mode), or None if the encoder was not
    trained with ``objective: clip``."""
    entry = info.get("observables")
    if not entry:
        return None
    if list(entry["observables"]) != list(OBSERVABLES):
        raise ValueError(f"the encoder's observables MLP was trained on {entry['observables']}; this rs3l computes "
                         f"{list(OBSERVABLES)}")
    module = ObservablesEncoder(int(entry["latent_dim"]), int(entry["hidden"]))
    module.load_state_dict(entry["state_dict"])
    return module.eval()
