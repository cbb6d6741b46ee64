"""``rs3l neighbours``: the k jets nearest to a given jet in a frozen encoder's embedding space.

The search runs over the rows of one split and one view (``--split``, ``--view``), embedded once;
distances are Euclidean after standardising the embedding over those rows (as the kNN probe and
the anomaly score of ``rs3l science`` do); scikit-learn's ``NearestNeighbors`` is the index.
Since only one view is searched, the query jet appears once, as itself: that row is left out of
the list (the other views of the query jet are not candidates).

A jet is named by its ``jet_id`` (e.g. ``1234``) or by its key ``process:chunk:event:object``
(e.g. ``top:0:17:5``).

With an encoder pre-trained with ``objective: clip`` the query may be a jet's high-level observables
instead (``--observables``: ``mass=172,soft_drop_mass=170,tau21=0.4,tau32=0.5,tau43=0.7,n_constituents=60,pt=600``
in GeV, or a jet name, whose stored observables are used): the observables MLP saved in ``encoder.pt``
embeds them and the jets whose *particle* embeddings lie nearest are listed, by cosine distance
(1 - cosine similarity, the space the clip loss aligned). A named jet is not left out then: finding
it near the top is the cross-modal retrieval that ``rs3l science`` measures.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

KEY_COLUMNS = ("process", "chunk", "event", "object")


def nearest(z: np.ndarray, query: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, distances) of the ``k`` rows of ``z`` (n, d) nearest to row ``query``, nearest first,
    the query row itself excluded; distances after standardising ``z``."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    zs = StandardScaler().fit_transform(z)
    n = min(k + 1, len(z))
    dist, rows = NearestNeighbors(n_neighbors=n).fit(zs).kneighbors(zs[query:query + 1])
    dist, rows = dist[0], rows[0]
    keep = rows != query
    return rows[keep][:k], dist[keep][:k]


def find_jet(data: dict, key: str) -> int:
    """Row of the jet named ``key`` (``jet_id`` or ``process:chunk:event:object``); ValueError if absent."""
    parts = str(key).split(":")
    if len(parts) == 1 and parts[0].lstrip("-").isdigit():
        hit = np.flatnonzero(data["jet_id"] == int(parts[0]))
    elif len(parts) == 4 and all(p.lstrip("-").isdigit() for p in parts[1:]):
        hit = np.flatnonzero((data["process"] == parts[0]) & (data["chunk"] == int(parts[1]))
                             & (data["event"] == int(parts[2])) & (data["object"] == int(parts[3])))
    else:
        raise ValueError(f"--jet '{key}': give a jet_id (e.g. 1234) or process:chunk:event:object (e.g. top:0:17:5)")
    if len(hit) == 0:
        raise ValueError(f"jet '{key}' is not among the searched rows (this split and view)")
    return int(hit[0])


def jet_key(data: dict, row: int) -> str:
    return ":".join(str(data[c][row]) for c in KEY_COLUMNS)


def nearest_cosine(z: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, distances) of the ``k`` rows of ``z`` (n, d) nearest to ``query`` (d,) by 1 - cosine similarity."""
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - zn @ (query / max(np.linalg.norm(query), 1e-12))
    rows = np.argsort(dist, kind="stable")[:k]
    return rows, dist[rows]


def neighbours(cfg: dict, data_dir, encoder_path, jet: str | None, k: int = 10, split: str = "test",
               view: str = "nominal", observables: str | None = None) -> list[dict]:
    """The ``k`` nearest jets to ``jet``, or to the ``observables`` query (a clip encoder): one dict per
    neighbour (rank, jet_id, key, class, view, mass, pt, distance); rank 0 is the query."""
    import torch

    from rs3l.evaluation.science import embed_split
    from rs3l.models import observables as obs
    from rs3l.models.classifier import read_encoder_checkpoint
    from rs3l.training.data import check_views, read_manifest
    from rs3l.training.pretrain import load_encoder

    if k < 1:
        raise ValueError(f"-k must be >= 1; got {k}")
    if (jet is None) == (observables is None):
        raise ValueError("give exactly one query: --jet or --observables")
    manifest = read_manifest(data_dir)
    check_views([view], manifest, "--view")
    if split not in manifest["splits"]:
        raise ValueError(f"unknown split '{split}'; the data have {', '.join(manifest['splits'])}")
    info = read_encoder_checkpoint(encoder_path, cfg)
    mlp = obs.load(info) if observables is not None else None
    if observables is not None and mlp is None:
        raise ValueError(f"--observables needs an encoder pre-trained with objective 'clip' (its encoder.pt holds the "
                         f"observables MLP); '{encoder_path}' has none")
    encoder, _ = load_encoder(encoder_path, cfg)
    data = embed_split(cfg, data_dir, split, [view], encoder, 0, KEY_COLUMNS)
    first = data["replica"] == 0  # one row per jet
    data = {c: v[first] for c, v in data.items()}
    classes = manifest["classes"]

    def describe(row, rank, d):
        return {"rank": rank, "jet_id": int(data["jet_id"][row]), "key": jet_key(data, row),
                "class": classes[int(data["label"][row])], "view": str(data["view"][row]),
                "mass": float(data["mass"][row]), "pt": float(data["pt"][row]), "distance": float(d)}

    if observables is None:
        query = find_jet(data, jet)
        rows, dist = nearest(data["z"], query, k)
        head = describe(query, 0, 0.0)
    elif "=" in observables:
        values = obs.parse(observables)
        named = dict(zip(obs.OBSERVABLES, values[0].tolist()))
        head = {"rank": 0, "jet_id": "-", "key": "observables", "class": "-", "view": "-", "mass": named["mass"],
                "pt": named["pt"], "distance": 0.0}
    else:
        query = find_jet(data, observables)
        values = obs.from_arrays({c: data[c][query:query + 1] for c in obs.RAW_COLUMNS})
        head = describe(query, 0, 0.0)
    if observables is not None:
        with torch.no_grad():
            u = mlp(torch.from_numpy(values)).numpy()[0]
        rows, dist = nearest_cosine(data["z"], u, k)
    return [head] + [describe(r, i + 1, d) for i, (r, d) in enumerate(zip(rows, dist))]


def format_table(entries: list[dict]) -> str:
    """A plain-text table; rank 0 is the query jet."""
    head = f"{'rank':>4}  {'jet_id':>8}  {'key':<22} {'class':<6} {'view':<10} {'mass':>8} {'pt':>8} {'distance':>9}"
    lines = [head, "-" * len(head)]
    for e in entries:
        lines.append(f"{e['rank'] if e['rank'] else 'query':>4}  {e['jet_id']:>8}  {e['key']:<22} {e['class']:<6} "
                     f"{e['view']:<10} {e['mass']:8.1f} {e['pt']:8.1f} {e['distance']:9.3f}")
    return "\n".join(lines)


def main(cfg: dict, args) -> None:
    """``rs3l neighbours``: prints the table (masses and pt in GeV, distances in standardised units)."""
    entries = neighbours(cfg, args.data, args.encoder, args.jet, args.k, args.split, args.view, args.observables)
    print(format_table(entries))
