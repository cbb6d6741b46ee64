"""A small synthetic merged dataset in exactly the format ``rs3l merge`` writes.

Jets have class-dependent structure so that learning is possible: class ``c`` has
``1 + c % 3`` prongs, a constituent spread that depends on ``c // 3`` and a
multiplicity that grows with the number of prongs. All views of a jet share the
"hard event" (jet axis, prong directions and pt shares) and differ like
re-simulations: constituents are drawn afresh, and each view name slightly
changes the multiplicity and spread (as an FSR or hadronization variation
would). Pure numpy, vectorised; a few thousand jets take well under a second.

    from synthetic import make_dataset
    data = make_dataset(tmp_path / "data", n_jets_per_split={"train": 400, "val": 100, "test": 100})
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rs3l import schema

DEFAULT_VIEWS = ["nominal", "seed", "fsr_up", "vincia"]
DEFAULT_CLASSES = ["q", "top", "wqq"]


def _view_params(view: str) -> tuple[float, float]:
    """(multiplicity factor, spread factor) of a view: a deterministic small perturbation."""
    h = int.from_bytes(hashlib.sha256(view.encode()).digest()[:4], "little") / 2**32
    if view in ("nominal", "seed"):
        return 1.0, 1.0
    return 0.85 + 0.3 * h, 0.85 + 0.3 * (1 - h)


def _jets(n: int, n_classes: int, rng: np.random.Generator) -> dict:
    """The shared 'hard event' of each jet."""
    label = rng.integers(0, n_classes, n)
    prongs = 1 + label % 3
    axes = rng.uniform(-0.35, 0.35, (n, 3, 2))
    axes[:, 0] = rng.normal(0, 0.02, (n, 2))  # the leading prong sits on the jet axis
    share = rng.dirichlet([2.0, 2.0, 2.0], n)
    share[prongs < 3, 2] = 0
    share[prongs < 2, 1] = 0
    share /= share.sum(axis=1, keepdims=True)
    return {
        "label": label, "prongs": prongs, "axes": axes, "share": share,
        "spread": 0.03 * (1 + (label // 3) % 2) * (1 + 0.5 * (prongs == 1)),
        "pt": rng.uniform(500, 1000, n), "eta": rng.uniform(-2, 2, n), "phi": rng.uniform(-np.pi, np.pi, n),
    }


def _view_table(jets: dict, view: str, replica: int, jet_id: np.ndarray, split: str, classes: list[str],
                rng: np.random.Generator) -> pa.Table:
    n = len(jet_id)
    mult, spread = _view_params(view)
    # a "<name>_scan" view draws a parameter per jet (log-uniform in [0.25, 4], as fsr_scan) that scales the multiplicity
    param = np.exp(rng.uniform(np.log(0.25), np.log(4.0), n)) if view.endswith("_scan") else np.full(n, np.nan)
    count = np.clip(rng.poisson((8 + 8 * jets["prongs"]) * mult * np.nan_to_num(param, nan=1.0) ** -0.3), 2, 120)
    offsets = np.concatenate([[0], np.cumsum(count)])
    jet = np.repeat(np.arange(n), count)
    m = len(jet)
    prong = (rng.random(m)[:, None] > np.cumsum(jets["share"], axis=1)[jet]).sum(axis=1).clip(0, 2)
    pos = jets["axes"][jet, prong] + rng.normal(0, 1, (m, 2)) * (jets["spread"][jet] * spread)[:, None]
    w = rng.exponential(1.0, m) * jets["share"][jet, prong]
    pt_frac = w / np.bincount(jet, weights=w, minlength=n)[jet]
    pt = np.maximum(pt_frac * jets["pt"][jet], 0.5)
    # constituents sorted by pt, descending, inside each jet
    order = np.lexsort((-pt, jet))
    pt, pos, prong = pt[order], pos[order], prong[order]
    deta, dphi = pos[:, 0], pos[:, 1]
    eta = jets["eta"][jet] + deta
    energy = pt * np.cosh(eta)
    px, py, pz = pt * np.cos(jets["phi"][jet] + dphi), pt * np.sin(jets["phi"][jet] + dphi), pt * np.sinh(eta)
    sums = {k: np.bincount(jet, weights=v, minlength=n) for k, v in (("e", energy), ("px", px), ("py", py), ("pz", pz))}
    jet_pt = np.hypot(sums["px"], sums["py"])
    jet_mass = np.sqrt(np.maximum(sums["e"] ** 2 - sums["px"] ** 2 - sums["py"] ** 2 - sums["pz"] ** 2, 0))
    kind = rng.choice(5, m, p=[0.02, 0.01, 0.3, 0.57, 0.1])  # e, mu, photon, charged hadron, neutral hadron
    charge = np.where(np.isin(kind, [0, 1, 3]), rng.choice([-1.0, 1.0], m), 0.0)
    heavy = np.isin(np.array(classes)[jets["label"]], ["b", "c", "top", "zbb", "hbb", "hcc"])[jet]
    d0 = np.where(charge != 0, rng.normal(0, 0.02 + 0.2 * heavy, m), 0.0)
    dz = np.where(charge != 0, rng.normal(0, 0.05 + 0.2 * heavy, m), 0.0)
    # resolutions as the detector's defaults give them (mm; 0 for neutrals)
    d0err = np.where(charge != 0, np.hypot(0.010, 0.035 / pt), 0.0)
    dzerr = np.where(charge != 0, np.hypot(0.030, 0.045 / pt), 0.0)
    part = {
        "part_deta": deta, "part_dphi": dphi, "part_log_pt": np.log(pt), "part_log_e": np.log(energy),
        "part_log_pt_rel": np.log(pt / jet_pt[jet]), "part_log_e_rel": np.log(energy / sums["e"][jet]),
        "part_delta_r": np.hypot(deta, dphi), "part_charge": charge, "part_d0": d0, "part_dz": dz,
        "part_is_electron": kind == 0, "part_is_muon": kind == 1, "part_is_photon": kind == 2,
        "part_is_charged_hadron": kind == 3, "part_is_neutral_hadron": kind == 4,
        "part_px": px, "part_py": py, "part_pz": pz, "part_energy": energy, "part_d0err": d0err, "part_dzerr": dzerr,
    }
    label = jets["label"]
    cols = {
        "process": np.array(classes)[label], "chunk": np.zeros(n, np.int32), "event": (jet_id % 2**31).astype(np.int32),
        "object": np.zeros(n, np.int16), "view": np.full(n, view), "replica": np.full(n, replica, np.int16),
        "intervention": np.full(n, "hard"), "settings_hash": np.full(n, hashlib.sha256(view.encode()).hexdigest()[:12]),
        "view_parameter": param,
        "label": label.astype(np.int16), "label_name": np.array(classes)[label],
        "pt": jet_pt, "eta": jets["eta"], "phi": jets["phi"], "energy": sums["e"], "mass": jet_mass, "soft_drop_mass": 0.9 * jet_mass,
        "tau1": 0.3 / jets["prongs"] + 0.01 * rng.random(n), "tau2": 0.2 / jets["prongs"] + 0.01 * rng.random(n),
        "tau3": 0.1 / jets["prongs"] + 0.01 * rng.random(n), "n_constituents": count.astype(np.int32),
        "jet_id": jet_id, "split": np.full(n, split),
    }
    cols["tau4"] = 0.5 * cols["tau3"]  # no draw of its own: the random streams stay those of schema version 1
    sch = schema.merged_schema()
    arrays = []
    for field in sch:
        if field.name in part:
            values = pa.array(part[field.name].astype(np.float32), pa.float32())
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values))
        else:
            arrays.append(pa.array(cols[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_dataset(out_dir, n_jets_per_split=None, views=None, classes=None, seed: int = 0,
                 replicas: dict | None = None, jets_per_shard: int = 250, row_group_jets: int = 50) -> Path:
    """Write a merged dataset (``manifest.json`` + ``<split>/part-NNNNN.parquet``) into ``out_dir``.

    ``n_jets_per_split``: int (same for train, val, test) or {split: jets}.
    ``replicas``: {view: number of replicas} (default 1 each). Returns ``out_dir``.
    """
    out = Path(out_dir)
    views = list(views or DEFAULT_VIEWS)
    classes = list(classes or DEFAULT_CLASSES)
    replicas = replicas or {}
    if n_jets_per_split is None:
        n_jets_per_split = {"train": 300, "val": 100, "test": 100}
    if isinstance(n_jets_per_split, int):
        n_jets_per_split = {s: n_jets_per_split for s in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    instances = [(v, r) for v in views for r in range(replicas.get(v, 1))]
    manifest = {"schema_version": schema.SCHEMA_VERSION, "config_hash": "synthetic", "simulation_hash": "synthetic",
                "classes": classes, "views": views, "splits": {}}
    next_id = 0
    for split in ("train", "val", "test"):
        n = n_jets_per_split.get(split, 0)
        jet_id = np.arange(next_id, next_id + n, dtype=np.int64)
        next_id += n
        jets = _jets(n, len(classes), rng)
        tables = [_view_table(jets, v, r, jet_id, split, classes, rng) for v, r in instances]
        table = pa.concat_tables(tables)
        # all views of a jet contiguous: row (view instance i, jet j) -> position j * len(instances) + i
        order = np.argsort(np.tile(np.arange(n), len(instances)) * len(instances)
                           + np.repeat(np.arange(len(instances)), n), kind="stable")
        table = table.take(order)
        per_jet = len(instances)
        shards = []
        (out / split).mkdir(parents=True, exist_ok=True)
        for s, start in enumerate(range(0, n, jets_per_shard)):
            stop = min(start + jets_per_shard, n)
            path = out / split / f"part-{s:05d}.parquet"
            with pq.ParquetWriter(path, schema.merged_schema({"config_hash": "synthetic"}), compression="zstd") as w:
                for g in range(start, stop, row_group_jets):
                    part = table.slice(g * per_jet, (min(g + row_group_jets, stop) - g) * per_jet)
                    w.write_table(part, row_group_size=len(part))
            shards.append({"path": f"{split}/{path.name}", "jets": stop - start, "rows": (stop - start) * per_jet,
                           "sha256": _sha256(path)})
        labels = np.array(classes)[jets["label"]]
        manifest["splits"][split] = {
            "shards": shards, "jets": n, "rows": n * per_jet,
            "per_class": {c: int((labels == c).sum()) for c in classes},
            "per_view": {v: n * replicas.get(v, 1) for v in views},
        }
    shas = [sh["sha256"] for sp in manifest["splits"].values() for sh in sp["shards"]]
    manifest["content_hash"] = hashlib.sha256("".join(shas).encode()).hexdigest()[:16]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def make_config(results_dir, classes=None, views=None, **sections) -> dict:
    """A resolved config matching :func:`make_dataset`'s defaults, small and fast for tests.

    ``sections`` update the named config sections (e.g. ``pretrain={"epochs": 2}``).
    """
    from rs3l.resolve import resolve

    classes = list(classes or DEFAULT_CLASSES)
    views = list(views or DEFAULT_VIEWS)
    processes = {c: {"settings": ["HardQCD:all = on"], "labelling": {"kind": "parton"}} if i == 0 else
                 {"settings": ["Top:gg2ttbar = on"], "labelling": {"kind": "resonance", "pdg_id": 6, "n_partons": 3, "label": c}}
                 for i, c in enumerate(classes)}
    # Only the views the data have (the config check's cost grows with the number of views).
    view_defs = {v: {} for v in views}
    cfg = {
        "results_dir": str(results_dir), "classes": classes, "processes": processes, "views": view_defs,
        "simulation": {"views": views, "processes": list(processes)},
        "training": {"batch_size": 32, "max_constituents": 32, "shuffle_buffer": 128, "accelerator": "cpu", "devices": 1},
        "pretrain": {"encoder": "deepsets", "augment_views": [v for v in views if v != "vincia"][:3], "epochs": 2,
                     "probe_jets": 500},
        "finetune": {"tasks": {"top_vs_q": {"signal": [classes[1]], "background": [classes[0]]}}},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **values}
        else:
            cfg[name] = values
    return resolve(cfg)
