"""``rs3l export-jetclass``: the jets of one split and view in the format of the JetClass dataset.

JetClass (Qu, Li, Qian, arXiv:2202.03772; jet-universe/particle_transformer) is what
weaver-core's data configurations read: a TTree ``tree`` with one entry per jet,
per-particle variable-length lists without padding, jet scalars and ten one-hot labels.
``.root`` (uproot) or ``.parquet`` is chosen by the output's extension; both hold the
same names, types and values, so ``JetClass_full.yaml`` reads either unmodified.

Names and types are those of the JetClass files (``tree.show()`` of
``JetClass_example_100k.root`` in particle_transformer's ``notebooks/JetClass101.ipynb``):
float32 particle lists and jet scalars, int32 particle-identification lists, and
labels of mixed types (``label_QCD`` float32, ``label_Hbb..label_Hqql`` bool,
``label_Zqq..label_Tbl`` int32). Units GeV and mm, as in rs3l. Conventions taken from
JetClass where rs3l's own differ: ``part_deta`` is flipped for jets with eta < 0
(``sign(jet_eta) * (eta - jet_eta)``), and ``jet_nparticles`` is a float.
Differences that remain: uproot writes counted arrays (with a counter branch ``n_part``)
where the JetClass files hold ``std::vector<float>``; readers (uproot, weaver) see the
same jagged arrays.

One entry per jet: the rows of the configured view (``jetclass.view``, replica 0).
A jet missing in that view is not exported. Labels map rs3l classes to JetClass's
(``jetclass.labels``); a class without one is refused or dropped (``jetclass.unmapped``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rs3l import schema
from rs3l.atomic import atomic_path
from rs3l.data.export_root import row_groups, write_tree
from rs3l.data.manifest import read_manifest

log = logging.getLogger(__name__)

TREE = "tree"
LABELS = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
#: label branch types of the JetClass files (as stored there)
LABEL_TYPES = {"QCD": np.float32, **{k: np.bool_ for k in ("Hbb", "Hcc", "Hgg", "H4q", "Hqql")},
               **{k: np.int32 for k in ("Zqq", "Wqq", "Tbqq", "Tbl")}}
#: JetClass particle branch -> (rs3l column, dtype); part_deta is also re-signed
PARTICLE_BRANCHES = {
    "part_px": ("part_px", np.float32),
    "part_py": ("part_py", np.float32),
    "part_pz": ("part_pz", np.float32),
    "part_energy": ("part_energy", np.float32),
    "part_deta": ("part_deta", np.float32),
    "part_dphi": ("part_dphi", np.float32),
    "part_d0val": ("part_d0", np.float32),
    "part_d0err": ("part_d0err", np.float32),
    "part_dzval": ("part_dz", np.float32),
    "part_dzerr": ("part_dzerr", np.float32),
    "part_charge": ("part_charge", np.float32),
    "part_isChargedHadron": ("part_is_charged_hadron", np.int32),
    "part_isNeutralHadron": ("part_is_neutral_hadron", np.int32),
    "part_isPhoton": ("part_is_photon", np.int32),
    "part_isElectron": ("part_is_electron", np.int32),
    "part_isMuon": ("part_is_muon", np.int32),
}
#: JetClass jet branch -> rs3l column (all float32 in JetClass)
JET_BRANCHES = {
    "jet_pt": "pt", "jet_eta": "eta", "jet_phi": "phi", "jet_energy": "energy", "jet_nparticles": "n_constituents",
    "jet_sdmass": "soft_drop_mass", "jet_tau1": "tau1", "jet_tau2": "tau2", "jet_tau3": "tau3", "jet_tau4": "tau4",
}
FORMATS = (".root", ".parquet")


def label_codes(classes: list[str], label_map: dict, unmapped: str, present: dict) -> np.ndarray:
    """Index into LABELS of each rs3l class (-1: dropped). ``present``: jets per class in the split.

    ValueError naming the classes if one that occurs has no JetClass label and ``unmapped`` is error.
    """
    missing = [c for c in classes if c not in label_map]
    occurring = [c for c in missing if present.get(c, 0) > 0]
    if occurring and unmapped == "error":
        raise ValueError(f"class(es) {occurring} have no JetClass label in jetclass.labels "
                         f"(JetClass labels: {', '.join(LABELS)}); map them there, or set jetclass.unmapped: drop")
    return np.array([LABELS.index(label_map[c]) if c in label_map else -1 for c in classes], dtype=np.int64)


def jetclass_columns(t: pa.Table, view: str, codes: np.ndarray) -> tuple[dict, dict, np.ndarray, int]:
    """JetClass columns of the rows of ``t`` (a merged row group) in ``view``, replica 0, with a JetClass label.

    Returns (jet-level {branch: array}, particle-level {branch: flat array}, particles per jet,
    number of jets of the view dropped for want of a JetClass label).
    """
    t = t.filter(pc.and_(pc.equal(t.column("view"), view), pc.equal(t.column("replica"), 0)))
    code = codes[t.column("label").to_numpy()]
    n_dropped = int((code < 0).sum())
    t = t.filter(pa.array(code >= 0))
    code = code[code >= 0]
    # labels, then jet scalars: the JetClass files' order
    jets = {f"label_{name}": (code == i).astype(LABEL_TYPES[name]) for i, name in enumerate(LABELS)}
    jets.update({b: t.column(c).to_numpy().astype(np.float32) for b, c in JET_BRANCHES.items()})
    counts = t.column("n_constituents").to_numpy().astype(np.int64)
    parts = {b: t.column(c).combine_chunks().flatten().to_numpy().astype(dt) for b, (c, dt) in PARTICLE_BRANCHES.items()}
    # JetClass flips delta-eta for jets in the backward half (eta < 0)
    parts["part_deta"] *= np.repeat(np.where(jets["jet_eta"] < 0, -1, 1), counts).astype(np.float32)
    return jets, parts, counts, n_dropped


def export_jetclass(cfg: dict, data_dir: str | Path, split: str, out: str | Path, view: str | None = None) -> dict:
    """Write the jets of ``split`` (one entry per jet of ``view``, default ``jetclass.view``) to ``out``.

    Returns counts: ``jets`` written, ``dropped`` (class without JetClass label), per JetClass label.
    """
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"--out {out}: unknown format '{out.suffix}'; known: {', '.join(FORMATS)}")
    jc = cfg["jetclass"]
    view = view or jc["view"]
    manifest = read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"unknown split '{split}'; known: {', '.join(manifest['splits'])}")
    if view not in manifest["views"]:
        raise ValueError(f"view '{view}' is not in the data; views in the data: {', '.join(manifest['views'])}")
    codes = label_codes(manifest["classes"], jc["labels"], jc["unmapped"], manifest["splits"][split]["per_class"])
    counts_by_label = np.zeros(len(LABELS), np.int64)
    n_dropped = 0

    def batches():
        nonlocal n_dropped
        for t in row_groups(data_dir, split, manifest):
            jets, parts, counts, dropped = jetclass_columns(t, view, codes)
            n_dropped += dropped
            counts_by_label[:] += [int(jets[f"label_{n}"].sum()) for n in LABELS]
            if len(counts):  # a row group whose jets all miss the view adds nothing
                yield jets, parts, counts

    if out.suffix == ".root":
        n = write_tree(out, TREE, ({"part": ak.zip({b[len("part_"):]: ak.unflatten(v, counts) for b, v in parts.items()}), **jets}
                                   for jets, parts, counts in batches()))
    else:
        n = _write_parquet(out, batches())
    result = {"jets": n, "dropped": n_dropped, **{f"label_{k}": int(v) for k, v in zip(LABELS, counts_by_label)}}
    log.info("wrote %d jets of split %s, view %s to %s (JetClass format); %d dropped (no JetClass label); %s",
             n, split, view, out, n_dropped, {k: v for k, v in result.items() if k.startswith("label_") and v})
    return result


def _write_parquet(out: Path, batches) -> int:
    """The JetClass columns as Parquet, one row group per merged row group; non-nullable, so that
    awkward (weaver) reads plain numbers, not option types."""
    fields = [pa.field(b, pa.list_(pa.field("item", pa.from_numpy_dtype(dt), nullable=False)), nullable=False)
              for b, (_, dt) in PARTICLE_BRANCHES.items()]
    fields += [pa.field(f"label_{k}", pa.from_numpy_dtype(np.dtype(LABEL_TYPES[k])), nullable=False) for k in LABELS]
    fields += [pa.field(b, pa.float32(), nullable=False) for b in JET_BRANCHES]
    sch = pa.schema(fields, metadata={"rs3l.format": "JetClass", "rs3l.schema_version": str(schema.SCHEMA_VERSION)})
    n = 0
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, sch, **schema.parquet_options(sch)) as w:
            for jets, parts, counts in batches:
                offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
                arrays = [pa.ListArray.from_arrays(offsets, pa.array(parts[f.name]), type=f.type) for f in fields[:len(parts)]]
                arrays += [pa.array(jets[f.name]) for f in fields[len(parts):]]
                w.write_table(pa.Table.from_arrays(arrays, schema=sch))
                n += len(counts)
    return n


def main(cfg: dict, args) -> None:
    export_jetclass(cfg, args.data, args.split, args.out, view=args.view)
