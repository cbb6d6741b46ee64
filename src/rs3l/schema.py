"""The data contract: every Parquet column rs3l writes or reads, with dtype, unit and meaning.

Every writer and reader imports this module; nothing else spells a column name
list. Units: GeV for energies, momenta and masses; mm for impact parameters.

Fragment (``rs3l resimulate``): one row = one jet in one view (one replica).
Merged shard (``rs3l merge``): the same columns plus ``jet_id`` and ``split``;
all rows (views) of a jet are contiguous and a row group never splits a jet.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: 2: four-momenta and impact-parameter resolutions per constituent, jet energy and tau_4; view_parameter
SCHEMA_VERSION = 2

#: (name, arrow type, unit, meaning)
KEY_COLUMNS = [
    ("process", pa.string(), "", "process name from config (e.g. top)"),
    ("chunk", pa.int32(), "", "chunk index of the hard-event file"),
    ("event", pa.int32(), "", "event index inside the chunk"),
    ("object", pa.int16(), "", "index of the matched truth object in the hard event (LHE line)"),
]
VIEW_COLUMNS = [
    ("view", pa.string(), "", "view name from config (e.g. fsr_up)"),
    ("replica", pa.int16(), "", "replica number of the view (0 for the first)"),
    ("intervention", pa.string(), "", "hard, parton or detector"),
    ("settings_hash", pa.string(), "", "hash of the view's Pythia settings"),
    ("view_parameter", pa.float32(), "", "value of the Pythia parameter the view draws (views.<v>.draw, in the "
     "setting's own unit); NaN for views that draw nothing"),
]
LABEL_COLUMNS = [
    ("label", pa.int16(), "", "index of label_name in config classes"),
    ("label_name", pa.string(), "", "class name (q, c, b, g, top, wqq, ...)"),
]
JET_COLUMNS = [
    ("pt", pa.float32(), "GeV", "jet transverse momentum"),
    ("eta", pa.float32(), "", "jet pseudorapidity"),
    ("phi", pa.float32(), "rad", "jet azimuth"),
    ("energy", pa.float32(), "GeV", "jet energy"),
    ("mass", pa.float32(), "GeV", "jet invariant mass"),
    ("soft_drop_mass", pa.float32(), "GeV", "groomed mass (soft drop, beta and zcut from config)"),
    ("tau1", pa.float32(), "", "N-subjettiness tau_1 (beta=1, normalised by sum pT * R, winner-take-all kT axes)"),
    ("tau2", pa.float32(), "", "N-subjettiness tau_2"),
    ("tau3", pa.float32(), "", "N-subjettiness tau_3"),
    ("tau4", pa.float32(), "", "N-subjettiness tau_4"),
    ("n_constituents", pa.int32(), "", "number of reconstructed constituents"),
]
PARTICLE_COLUMNS = [
    ("part_deta", "", "eta(particle) - eta(jet) (export-jetclass flips it for eta(jet) < 0, as JetClass does)"),
    ("part_dphi", "rad", "phi(particle) - phi(jet), wrapped to [-pi, pi)"),
    ("part_log_pt", "log GeV", "log pt"),
    ("part_log_e", "log GeV", "log energy"),
    ("part_log_pt_rel", "", "log(pt / jet pt)"),
    ("part_log_e_rel", "", "log(energy / jet energy)"),
    ("part_delta_r", "", "distance to the jet axis in (eta, phi)"),
    ("part_charge", "e", "electric charge (0 for calorimeter objects)"),
    ("part_d0", "mm", "transverse impact parameter (0 for neutrals)"),
    ("part_dz", "mm", "longitudinal impact parameter (0 for neutrals)"),
    ("part_is_electron", "", "1 if identified electron"),
    ("part_is_muon", "", "1 if identified muon"),
    ("part_is_photon", "", "1 if ECAL neutral cluster"),
    ("part_is_charged_hadron", "", "1 if charged track not identified as lepton"),
    ("part_is_neutral_hadron", "", "1 if HCAL neutral cluster"),
    ("part_px", "GeV", "momentum x component"),
    ("part_py", "GeV", "momentum y component"),
    ("part_pz", "GeV", "momentum z component"),
    ("part_energy", "GeV", "energy"),
    ("part_d0err", "mm", "resolution of part_d0 (the smearing width of the track; 0 for neutrals)"),
    ("part_dzerr", "mm", "resolution of part_dz (the smearing width of the track; 0 for neutrals)"),
]
PARTICLE_FEATURES = [name for name, _, _ in PARTICLE_COLUMNS]
MERGED_EXTRA_COLUMNS = [
    ("jet_id", pa.int64(), "", "unique jet number in the dataset (same for all views of a jet)"),
    ("split", pa.string(), "", "train, val or test (decided per hard event)"),
]
KEY = [name for name, *_ in KEY_COLUMNS]


_NUMPY_TYPES = {pa.from_numpy_dtype(np.dtype(t)): np.dtype(t)
                for t in ("int8", "int16", "int32", "int64", "float32", "float64")}


def to_arrow(values, typ: pa.DataType) -> pa.Array:
    """A numpy array (or, for strings, any sequence) as an Arrow array of type ``typ``.

    Built from buffers: ``pa.array`` imports pandas on first use, about 0.5 s in every
    re-simulation job. ``typ`` may be a primitive number type, ``pa.string()`` or a list of a
    primitive type; for a list, ``values`` is ``(flat values, counts per row)``.
    """
    if isinstance(typ, pa.ListType):
        flat, counts = values
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return pa.ListArray.from_arrays(to_arrow(offsets, pa.int32()), to_arrow(flat, typ.value_type))
    if typ == pa.string():
        encoded = [str(v).encode() for v in values]
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)]).astype(np.int32)
        return pa.Array.from_buffers(typ, len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    data = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[typ])
    return pa.Array.from_buffers(typ, len(data), [None, pa.py_buffer(data)])


def _fields(cols):
    return [pa.field(name, typ, nullable=False) for name, typ, *_ in cols]


def fragment_schema(metadata: dict | None = None) -> pa.Schema:
    fields = _fields(KEY_COLUMNS + VIEW_COLUMNS + LABEL_COLUMNS + JET_COLUMNS)
    fields += [pa.field(name, pa.list_(pa.float32()), nullable=False) for name in PARTICLE_FEATURES]
    return pa.schema(fields, metadata=_meta(metadata))


def merged_schema(metadata: dict | None = None) -> pa.Schema:
    base = fragment_schema()
    return pa.schema(list(base) + _fields(MERGED_EXTRA_COLUMNS), metadata=_meta(metadata))


def _meta(metadata: dict | None) -> dict:
    meta = {"rs3l.schema_version": str(SCHEMA_VERSION)}
    meta.update({f"rs3l.{k}": str(v) for k, v in (metadata or {}).items()})
    return meta


def parquet_options(schema: pa.Schema) -> dict:
    """Writer options for rs3l Parquet files: zstd; dictionary encoding only for the string columns
    (on float columns it costs half the write time and makes the files larger)."""
    return {"compression": "zstd", "use_dictionary": [f.name for f in schema if f.type == pa.string()]}


def read_metadata(schema: pa.Schema) -> dict:
    """rs3l.* key-value metadata of a Parquet/Arrow schema, without the prefix."""
    raw = schema.metadata or {}
    return {k.decode()[5:]: v.decode() for k, v in raw.items() if k.startswith(b"rs3l.")}


def check_schema(actual: pa.Schema, expected: pa.Schema, what: str) -> None:
    """Raise ValueError naming the first differing column if ``actual`` is not ``expected``."""
    exp = {f.name: f.type for f in expected}
    act = {f.name: f.type for f in actual}
    missing = [n for n in exp if n not in act]
    extra = [n for n in act if n not in exp]
    wrong = [f"{n} ({act[n]} instead of {exp[n]})" for n in exp if n in act and act[n] != exp[n]]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        if wrong:
            parts.append(f"wrong types {wrong}")
        raise ValueError(f"{what}: schema does not match rs3l schema version {SCHEMA_VERSION}: " + "; ".join(parts))
    version = read_metadata(actual).get("schema_version")
    if version != str(SCHEMA_VERSION):
        raise ValueError(f"{what}: rs3l schema version {version!r}, expected {SCHEMA_VERSION}")
