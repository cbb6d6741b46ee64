"""Streaming the merged Parquet shards into padded tensors.

Reads: ``<data>/manifest.json`` and ``<data>/<split>/part-NNNNN.parquet`` (schema
``rs3l.schema.merged_schema()``, written by ``rs3l merge``).

The unit of work is one (shard, row group): a row group never splits a jet, so
pairs of views can be drawn inside it. Per epoch the units are shuffled and dealt
out to the (DDP rank x loader worker) slots, balanced by jet count; each slot reads
one row group at a time, draws its pairs, and emits batches from a shuffle buffer.
Memory is bounded by the buffer and one row group, whatever the dataset size.

Two modes:

* ``pairs`` (pre-training): one item = ``views_per_jet`` (n, default 2) distinct views of
  the same jet, drawn afresh each epoch among ``views`` (``pretrain.augment_views``).
  A view name is a stored view, optionally followed by hand-crafted transforms applied
  on the fly (``seed+jetclr``; transforms only = on the ``nominal`` view; see
  :mod:`rs3l.training.augment`). A jet gives an item when it has n distinct
  (row, view name) choices; a name with transforms may be drawn repeatedly (each draw
  is a new random transform), a plain one once per row. Batch keys: ``x1, mask1, ...,
  xn, maskn, label, jet_id``; with ``jet_columns`` also ``jets1 ... jetsn`` (batch, columns)
  float32, those jet columns of each view's row, and with ``view_index`` ``view1 ... viewn``,
  the index of each view's name in ``views`` (what the ``clip`` objective and the pretext head use).
* ``jets`` (fine-tuning, evaluation): one item = one row whose view is in ``views``.
  Batch keys: ``x, mask, label, jet_id, view`` (``view`` indexes ``views``).

Tensors: ``x`` (batch, particles, features) float32 with particles padded to
``max_constituents`` (highest pt first), ``mask`` (batch, particles) bool.
Every training batch has exactly ``batch_size`` jets, and under DDP every rank
gets the same number of batches (unequal counts would hang the gradient sync).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset

from rs3l import schema
from rs3l.training import augment
from rs3l.data.manifest import SPLITS, read_manifest, shard_paths  # noqa: F401 - re-exported
from rs3l.seeds import rng

log = logging.getLogger(__name__)

MODES = ("pairs", "jets")


# ----------------------------------------------------------------------------- the data folder

def check_features(features: list[str]) -> None:
    unknown = [f for f in features if f not in schema.PARTICLE_FEATURES]
    if unknown:
        raise ValueError(f"training.features: unknown feature(s) {unknown}; known: {', '.join(schema.PARTICLE_FEATURES)}")


def check_views(views: list[str], manifest: dict, what: str) -> None:
    missing = [v for v in views if v not in manifest["views"]]
    if missing:
        raise ValueError(f"{what} names view(s) {missing} that the data do not contain; "
                         f"views in the data: {', '.join(manifest['views'])}")


def check_classes(classes: list[str], manifest: dict) -> None:
    if list(manifest["classes"]) != list(classes):
        raise ValueError(f"the data were labelled with classes {manifest['classes']}, the config has {classes}; "
                         "labels are indices into this list, so they must agree")


def open_shard(path: Path) -> pq.ParquetFile:
    """Open a shard and check its schema against the data contract (ValueError naming the shard)."""
    pf = pq.ParquetFile(path)
    schema.check_schema(pf.schema_arrow, schema.merged_schema(), what=f"shard {path}")
    return pf


# ----------------------------------------------------------------------------- columnar helpers

def compact_particles(table: pa.Table, features: list[str], max_constituents: int,
                      rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``max_constituents`` constituents of ``rows`` (default all) without padding.

    Returns ``values`` (constituents, features) float32, the rows' constituents one after
    the other, and ``offsets`` (len(rows) + 1,): row i owns values[offsets[i]:offsets[i + 1]].
    Constituents are stored highest pt first, so truncation keeps the hardest ones.
    """
    n_all = table.num_rows
    rows = np.arange(n_all) if rows is None else np.asarray(rows, np.int64)
    offsets_all = None
    flats = []
    for name in features:
        col = table.column(name).combine_chunks()
        off = col.offsets.to_numpy()
        off = off - off[0]
        if offsets_all is None:
            offsets_all = off
        elif not np.array_equal(off, offsets_all):
            raise ValueError(f"column {name} and {features[0]} have different numbers of constituents per jet; "
                             "per-constituent columns must have equal lengths per jet")
        flats.append(col.flatten().to_numpy(zero_copy_only=False))
    if offsets_all is None:
        offsets_all = np.zeros(n_all + 1, np.int64)
    starts = offsets_all[rows]
    counts = np.minimum(offsets_all[rows + 1] - starts, max_constituents)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    src = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
    values = np.empty((int(offsets[-1]), len(features)), np.float32)
    for f, flat in enumerate(flats):
        values[:, f] = flat[src]
    return values, offsets


def pad(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, max_constituents: int,
        out: tuple[np.ndarray, np.ndarray] | None = None, at: np.ndarray | None = None):
    """Compact constituents of ``rows`` -> x (len(rows), P, F) float32 and mask (len(rows), P).

    With ``out=(x, mask)`` and ``at`` (positions), fill ``x[at]``/``mask[at]`` of existing
    arrays instead (used to assemble one batch from several buffer chunks). One scatter,
    no loop over jets or particles.
    """
    P, F = max_constituents, values.shape[1]
    if out is None:
        out = (np.zeros((len(rows), P, F), np.float32), np.zeros((len(rows), P), bool))
        at = np.arange(len(rows))
    x, mask = out
    starts = offsets[rows]
    counts = offsets[rows + 1] - starts
    total = int(counts.sum())
    pos = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    dest = np.repeat(at, counts) * P + pos
    if F:  # (no features: only the mask, e.g. for the substructure baseline's jet columns)
        x.reshape(-1, F)[dest] = values[np.repeat(starts, counts) + pos]
    mask[at] = np.arange(P)[None, :] < counts[:, None]
    return x, mask


def pad_particles(table: pa.Table, features: list[str], max_constituents: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-constituent list columns -> x (rows, max_constituents, features) float32, mask (rows, max_constituents).

    Keeps the first ``max_constituents`` constituents of each row (highest pt first).
    """
    values, offsets = compact_particles(table, features, max_constituents)
    return pad(values, offsets, np.arange(table.num_rows), max_constituents)


def gather_rows(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compact constituents of ``rows`` only: (values', offsets') in the order of ``rows``."""
    starts = offsets[rows]
    counts = offsets[rows + 1] - starts
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    src = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
    return values[src], new_offsets


def _runs(jet_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal consecutive ``jet_id``."""
    if len(jet_id) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(jet_id)) + 1])
    return starts, np.diff(np.concatenate([starts, [len(jet_id)]]))


def _view_rows(table: pa.Table, views: list[str], exclude_labels: tuple[int, ...] = (),
               jet_ids: pa.Array | None = None) -> np.ndarray:
    """Indices of the rows whose view is in ``views``, whose label is not in ``exclude_labels``
    (``pretrain.exclude_classes``: a class held out of pre-training; the table then needs ``label``)
    and, if given, whose ``jet_id`` is in ``jet_ids`` (the pre-training pool)."""
    keep = pc.is_in(table.column("view"), value_set=pa.array(views, pa.string()))
    if exclude_labels:
        keep = pc.and_(keep, pc.invert(pc.is_in(table.column("label"), value_set=pa.array(exclude_labels, pa.int16()))))
    if jet_ids is not None:
        keep = pc.and_(keep, pc.is_in(table.column("jet_id"), value_set=jet_ids))
    return np.flatnonzero(keep.to_numpy(zero_copy_only=False))


def _view_index(table: pa.Table, views: list[str]) -> np.ndarray:
    """Index into ``views`` of each row's view (-1: not among them)."""
    idx = pc.index_in(table.column("view"), value_set=pa.array(views, pa.string())).fill_null(-1)
    return idx.to_numpy(zero_copy_only=False).astype(np.int64)


def draw_pairs(jet_id: np.ndarray, rows: np.ndarray, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two distinct random rows per jet among ``rows`` (whose jets are contiguous).

    Jets with a single eligible row are skipped. Returns row indices (a, b), one entry per jet.
    """
    starts, counts = _runs(jet_id[rows])
    if len(starts) != len(np.unique(jet_id[rows])):
        raise ValueError("the rows of a jet are not contiguous in a row group; the merged data break the contract")
    ok = counts >= 2
    starts, counts = starts[ok], counts[ok]
    i = (generator.random(len(counts)) * counts).astype(np.int64)
    j = (generator.random(len(counts)) * (counts - 1)).astype(np.int64)
    j += j >= i
    return rows[starts + i], rows[starts + j]


def _slots(row_view: np.ndarray, spec_base: np.ndarray, stochastic: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (row, view name) choices: positions into the eligible rows and view-name index of each.

    ``row_view``: base-view index of each eligible row; ``spec_base``/``stochastic``: per view
    name, its base-view index and whether it has transforms (then it is offered n times per row).
    """
    pos, spec = [], []
    for s, (base, many) in enumerate(zip(spec_base, stochastic)):
        r = np.repeat(np.flatnonzero(row_view == base), n if many else 1)
        pos.append(r)
        spec.append(np.full(len(r), s, np.int64))
    return np.concatenate(pos), np.concatenate(spec)


def draw_views(jet_id: np.ndarray, rows: np.ndarray, row_view: np.ndarray, spec_base: np.ndarray,
               stochastic: np.ndarray, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n distinct random (row, view name) choices per jet among ``rows`` (whose jets are contiguous).

    Jets with fewer than n choices are skipped. Returns row indices and view-name indices,
    both (n, jets).
    """
    starts, counts = _runs(jet_id[rows])
    group = np.repeat(np.arange(len(starts)), counts)
    pos, spec = _slots(row_view, spec_base, stochastic, n)
    order = np.lexsort((generator.random(len(pos)), group[pos]))  # random order inside each jet
    pos, spec = pos[order], spec[order]
    per_jet = np.bincount(group[pos], minlength=len(starts))
    first = (np.cumsum(per_jet) - per_jet)[per_jet >= n]
    take = first[None, :] + np.arange(n)[:, None]
    return rows[pos[take]], spec[take]


def _count_unit(pf: pq.ParquetFile, group: int, mode: str, views: list[str], spec_base: np.ndarray | None = None,
                stochastic: np.ndarray | None = None, n: int = 2, exclude_labels: tuple[int, ...] = (),
                jet_ids: pa.Array | None = None) -> int:
    """Items in one row group: rows (jets mode) or jets with at least n view choices (pairs mode)."""
    t = pf.read_row_group(group, columns=["jet_id", "view"] + (["label"] if exclude_labels else []))
    rows = _view_rows(t, views, exclude_labels, jet_ids)
    if mode == "jets":
        return len(rows)
    row_view = _view_index(t, views)
    starts, counts = _runs(t.column("jet_id").to_numpy()[rows])
    pos, _ = _slots(row_view[rows], spec_base, stochastic, n)
    per_jet = np.bincount(np.repeat(np.arange(len(starts)), counts)[pos], minlength=len(starts))
    return int((per_jet >= n).sum())


def _trim(quota: np.ndarray, target: int) -> np.ndarray:
    """Lower the largest entries of ``quota`` until it sums to ``target`` (keeps workers balanced)."""
    if quota.sum() <= target:
        return quota
    lo, hi = 0, int(quota.max())  # the highest cap level whose capped sum fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(quota, mid).sum() <= target else (lo, mid - 1)
    out = np.minimum(quota, lo)
    out[np.flatnonzero(quota > lo)[: target - out.sum()]] += 1
    return out


# ----------------------------------------------------------------------------- the dataset

class JetDataset(IterableDataset):
    """Streams batches (dicts of tensors) from one split of a merged data folder.

    Parameters: ``data_dir``; ``split``; ``features`` (names from PARTICLE_FEATURES);
    ``max_constituents``; ``batch_size``; ``mode`` ('pairs' or 'jets'); ``views`` (the
    views drawn from); ``shuffle`` (per-epoch unit order, pair draw and buffer shuffle);
    ``drop_last`` (only full batches; then every DDP rank gets the same number);
    ``views_per_jet`` (views per item in pairs mode); ``augmentations`` (parameters of the
    hand-crafted transforms, ``pretrain.augmentations``);
    ``shuffle_buffer`` (jets); ``seed`` (master seed); ``stream`` (name of the random
    stream, e.g. 'pretrain'); ``max_items_per_epoch`` (0 = all); ``rank``/``world_size``
    (default: from torch.distributed); ``exclude_labels`` (label indices never read); ``jet_ids``
    (only these jets are read: the pre-training pool, :mod:`rs3l.training.pool`; None = all);
    ``jet_columns`` (scalar jet columns emitted per view in pairs mode) and ``view_index``.
    Use with ``DataLoader(ds, batch_size=None)``;
    call :meth:`set_epoch` before each epoch (the :class:`SetEpoch` callback does).
    """

    def __init__(self, data_dir, split: str, features: list[str], max_constituents: int, batch_size: int,
                 mode: str = "pairs", views: list[str] | None = None, shuffle: bool = True, drop_last: bool = True,
                 shuffle_buffer: int = 4096, seed: int = 0, stream: str = "pretrain", max_items_per_epoch: int = 0,
                 rank: int | None = None, world_size: int | None = None, views_per_jet: int = 2,
                 augmentations: dict | None = None, exclude_labels: tuple[int, ...] = (),
                 jet_ids: np.ndarray | None = None, jet_columns: tuple[str, ...] = (), view_index: bool = False):
        super().__init__()
        self.exclude_labels = tuple(int(c) for c in exclude_labels)
        self.jet_ids = None if jet_ids is None else pa.array(np.asarray(jet_ids, np.int64), pa.int64())
        self.jet_columns, self.view_index = tuple(jet_columns), bool(view_index)
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}'; known: {', '.join(MODES)}")
        check_features(features)
        self.data_dir, self.split, self.mode = Path(data_dir), split, mode
        self.manifest = read_manifest(data_dir)
        self.views = list(views or self.manifest["views"])
        self.views_per_jet, self.augment = int(views_per_jet), dict(augmentations or {})
        # pairs mode: view names -> stored (base) views and transforms
        specs = [augment.parse_view(v) for v in self.views] if mode == "pairs" else [(v, ()) for v in self.views]
        self.base_views = list(dict.fromkeys(b for b, _ in specs))
        self.transforms = [t for _, t in specs]
        self.spec_base = np.array([self.base_views.index(b) for b, _ in specs], np.int64)
        self.stochastic = np.array([bool(t) for t in self.transforms])
        check_views(self.base_views, self.manifest, "the requested views")
        if mode == "pairs" and self.views_per_jet < 2:
            raise ValueError(f"views_per_jet must be at least 2; got {self.views_per_jet}")
        if mode == "pairs" and len(self.views) < self.views_per_jet and not self.stochastic.any():
            raise ValueError(f"{self.views_per_jet} views per jet need at least {self.views_per_jet} views "
                             f"(or a hand-crafted augmentation); got {self.views}")
        self.features, self.max_constituents, self.batch_size = list(features), max_constituents, batch_size
        # what is read: the features, plus the kinematics (and jet η) the transforms need
        self.columns = list(self.features)
        if self.stochastic.any():
            self.columns += [c for c in augment.KINEMATIC_FEATURES if c not in self.columns] + [augment.JET_ETA]
        self.shuffle, self.drop_last, self.shuffle_buffer = shuffle, drop_last, max(shuffle_buffer, batch_size)
        self.seed, self.stream, self.max_items_per_epoch = seed, stream, max_items_per_epoch
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.paths = shard_paths(data_dir, split, self.manifest)
        # (shard index, row group) units with their number of items (pairs or rows): read
        # once from the jet_id/view columns so that every slot can plan the epoch alone.
        self.units, self.unit_items = [], []
        for s, path in enumerate(self.paths):
            pf = open_shard(path)
            for g in range(pf.metadata.num_row_groups):
                self.units.append((s, g))
                self.unit_items.append(_count_unit(pf, g, mode, self.base_views, self.spec_base, self.stochastic,
                                                   self.views_per_jet, self.exclude_labels, self.jet_ids))
        self.unit_items = np.array(self.unit_items, np.int64)
        self._files: dict[int, pq.ParquetFile] = {}

    # -- bookkeeping
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}  # open Parquet files stay with their process
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def n_items(self) -> int:
        """Items (pairs or rows) in the split, before any batching."""
        return int(self.unit_items.sum())

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    @staticmethod
    def _worker() -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def plan(self, epoch: int, world_size: int, num_workers: int) -> tuple[list[list[int]], list[int | None]]:
        """Units and batch quota of every slot (rank * num_workers + worker) for ``epoch``.

        Deterministic: every slot computes the same plan and takes its own entry.
        Units are dealt in a per-epoch random order to the least-loaded slot. With
        ``drop_last``, quotas count full batches only and are trimmed so that every
        rank has the same total; otherwise the quota is None (emit everything).
        """
        n_slots = world_size * num_workers
        order = np.arange(len(self.units))
        if self.shuffle:
            order = rng(self.seed, f"{self.stream}-units", self.split, epoch).permutation(order)
        loads = np.zeros(n_slots, np.int64)
        assigned: list[list[int]] = [[] for _ in range(n_slots)]
        for u in order:
            s = int(np.argmin(loads))
            assigned[s].append(int(u))
            loads[s] += self.unit_items[u]
        if not self.drop_last:
            return assigned, [None] * n_slots
        quota = loads // self.batch_size
        per_rank = quota.reshape(world_size, num_workers)
        target = int(per_rank.sum(axis=1).min())
        if self.max_items_per_epoch:
            target = min(target, max(self.max_items_per_epoch // (self.batch_size * world_size), 1))
        quotas = [_trim(per_rank[r], target) for r in range(world_size)]
        return assigned, [int(q) for q in np.concatenate(quotas)]

    def n_batches(self, rank: int = 0, world_size: int = 1, num_workers: int = 0, epoch: int | None = None) -> int:
        """Batches that ``rank`` gets in an epoch with ``num_workers`` loader workers (exact).

        With ``drop_last`` it is the same for every rank and epoch.
        """
        W = max(num_workers, 1)
        assigned, quotas = self.plan(self.epoch if epoch is None else epoch, world_size, W)
        slots = range(rank * W, (rank + 1) * W)
        if self.drop_last:
            return sum(quotas[s] for s in slots)
        return sum(-(-int(self.unit_items[assigned[s]].sum()) // self.batch_size) for s in slots)

    def __len__(self) -> int:
        """Batches of this rank per epoch (``num_workers`` is set by the loader's owner; default 0)."""
        rank, world = self._rank_world()
        return self.n_batches(rank, world, getattr(self, "num_workers", 0))

    # -- reading
    def _file(self, s: int) -> pq.ParquetFile:
        if s not in self._files:
            self._files[s] = open_shard(self.paths[s])
        return self._files[s]

    def read_unit(self, u: int, generator: np.random.Generator) -> dict:
        """One row group -> a buffer chunk: compact constituents of the rows used, and per item
        (views of a jet or row, in file order) ``label``, ``jet_id`` and row references into the
        chunk (``r1`` ... ``rn`` and view-name indices ``s1`` ... ``sn`` for pairs; ``r`` and
        ``view`` for jets)."""
        s, g = self.units[u]
        stored = [c for c in self.columns if c != augment.JET_ETA]
        extra = ["eta"] if augment.JET_ETA in self.columns else []
        jet_cols = [c for c in self.jet_columns if c not in ["jet_id", "view", "label", *extra]]
        t = self._file(s).read_row_group(g, columns=["jet_id", "view", "label"] + extra + stored + jet_cols)
        rows = _view_rows(t, self.base_views, self.exclude_labels, self.jet_ids)
        jet_id = t.column("jet_id").to_numpy()
        label = t.column("label").to_numpy().astype(np.int64)
        if self.mode == "pairs":
            row_view = _view_index(t, self.base_views)
            if self.views_per_jet == 2 and not self.stochastic.any():
                # plain pairs: the original draw (the same pairs as before multi-view batches)
                picks = np.stack(draw_pairs(jet_id, rows, generator))
                spec_of_base = np.zeros(len(self.base_views), np.int64)
                spec_of_base[self.spec_base] = np.arange(len(self.spec_base))
                specs = spec_of_base[row_view[picks]]
            else:
                picks, specs = draw_views(jet_id, rows, row_view[rows], self.spec_base, self.stochastic,
                                          self.views_per_jet, generator)
            n = picks.shape[1]
            values, offsets = compact_particles(t, stored, self.max_constituents, picks.reshape(-1))
            if extra:  # the jet's eta as one more column per constituent
                eta = t.column("eta").to_numpy().astype(np.float32)[picks.reshape(-1)]
                values = np.concatenate([values, np.repeat(eta, np.diff(offsets))[:, None]], axis=1)
            chunk = {"values": values, "offsets": offsets, "n": n, "label": label[picks[0]], "jet_id": jet_id[picks[0]]}
            for k in range(len(picks)):
                chunk[f"r{k + 1}"], chunk[f"s{k + 1}"] = np.arange(k * n, (k + 1) * n), specs[k]
            if self.jet_columns:
                jets = np.column_stack([t.column(c).to_numpy().astype(np.float32) for c in self.jet_columns])
                for k in range(len(picks)):
                    chunk[f"j{k + 1}"] = jets[picks[k]]
            return chunk
        values, offsets = compact_particles(t, self.features, self.max_constituents, rows)
        view = pc.index_in(t.column("view"), value_set=pa.array(self.views, pa.string())).to_numpy(zero_copy_only=False)
        return {"values": values, "offsets": offsets, "n": len(rows), "label": label[rows], "jet_id": jet_id[rows],
                "r": np.arange(len(rows)), "view": view[rows].astype(np.int64)}

    def __iter__(self):
        rank, world = self._rank_world()
        worker, n_workers = self._worker()
        assigned, quotas = self.plan(self.epoch, world, n_workers)
        slot = rank * n_workers + worker
        units, quota = assigned[slot], quotas[slot]
        gen = rng(self.seed, f"{self.stream}-shuffle", self.split, self.epoch, rank, worker)
        # hand-crafted transforms: their own stream, so the draw of views does not depend on them
        self._augment_rng = rng(self.seed, f"{self.stream}-augment", self.split, self.epoch, rank, worker)
        emitted = 0
        for batch in self._batches(units, gen):
            if quota is not None and emitted >= quota:
                break
            yield batch
            emitted += 1

    def _batches(self, units: list[int], gen: np.random.Generator):
        """Batches from a shuffle buffer of compact (unpadded) chunks.

        The buffer is a pool of (chunk, item) references. When it holds ``shuffle_buffer``
        items it is permuted and all but half a buffer is emitted; only the emitted
        items are padded, straight into their batch, so each jet is copied once.
        """
        B = self.batch_size
        chunks: dict[int, dict] = {}
        pool_c, pool_i = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for c, u in enumerate(units):
            chunk = self.read_unit(u, gen)
            if chunk["n"] == 0:
                continue
            chunks[c] = chunk
            pool_c = np.concatenate([pool_c, np.full(chunk["n"], c)])
            pool_i = np.concatenate([pool_i, np.arange(chunk["n"])])
            if len(pool_c) >= (self.shuffle_buffer if self.shuffle else B):
                if self.shuffle:
                    perm = gen.permutation(len(pool_c))
                    pool_c, pool_i = pool_c[perm], pool_i[perm]
                n_emit = (len(pool_c) - (self.shuffle_buffer // 2 if self.shuffle else 0)) // B * B
                for start in range(0, n_emit, B):
                    yield self._assemble(chunks, pool_c[start:start + B], pool_i[start:start + B])
                # Keep only what is left, in one chunk: memory stays at about one buffer
                # plus one row group, instead of every chunk that still has an item left.
                merged = self._consolidate(chunks, pool_c[n_emit:], pool_i[n_emit:])
                chunks = {c: merged} if merged["n"] else {}
                pool_c, pool_i = np.full(merged["n"], c), np.arange(merged["n"])
        if len(pool_c):
            if self.shuffle:
                perm = gen.permutation(len(pool_c))
                pool_c, pool_i = pool_c[perm], pool_i[perm]
            stop = len(pool_c) // B * B if self.drop_last else len(pool_c)
            for start in range(0, stop, B):
                yield self._assemble(chunks, pool_c[start:start + B], pool_i[start:start + B])

    def _refs(self) -> tuple[str, ...]:
        return tuple(f"r{k + 1}" for k in range(self.views_per_jet)) if self.mode == "pairs" else ("r",)

    def _transform(self, x: np.ndarray, mask: np.ndarray, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply each item's hand-crafted transforms (``spec``: view-name index per item) in place."""
        for s in np.flatnonzero(self.stochastic):
            at = np.flatnonzero(spec == s)
            if len(at):
                gen = getattr(self, "_augment_rng", None) or rng(self.seed, f"{self.stream}-augment", self.split)
                x[at], mask[at] = augment.apply(self.transforms[s], x[at], mask[at], self.columns, gen, self.augment)
        return x, mask

    def _consolidate(self, chunks: dict, cids: np.ndarray, items: np.ndarray) -> dict:
        """One chunk holding just the given items and the constituents of their rows.

        Items keep their order (grouped by source chunk, which is arrival order).
        """
        refs = self._refs()
        values, offsets, meta = [], [np.zeros(1, np.int64)], {}
        ref_rows = {r: [] for r in refs}
        n_rows = n_values = 0
        for c in np.unique(cids):
            ch, idx = chunks[int(c)], items[cids == c]
            v, o = gather_rows(ch["values"], ch["offsets"], np.concatenate([ch[r][idx] for r in refs]))
            values.append(v)
            offsets.append(o[1:] + n_values)
            n_values += len(v)
            for k, r in enumerate(refs):
                ref_rows[r].append(n_rows + k * len(idx) + np.arange(len(idx)))
            n_rows += len(refs) * len(idx)
            for key in ("label", "jet_id", "view", *(f"{p}{k + 1}" for p in "sj" for k in range(len(refs)))):
                if key in ch:
                    meta.setdefault(key, []).append(ch[key][idx])
        no_values = np.zeros((0, len(self.columns)), np.float32)
        out = {"n": len(items), "values": np.concatenate(values) if values else no_values,
               "offsets": np.concatenate(offsets)}
        out.update({r: np.concatenate(v) if v else np.zeros(0, np.int64) for r, v in ref_rows.items()})
        out.update({k: np.concatenate(v) for k, v in meta.items()})
        return out

    def _assemble(self, chunks: dict, cids: np.ndarray, items: np.ndarray) -> dict:
        """One batch (dict of tensors) from items of several buffer chunks."""
        n, P, F = len(cids), self.max_constituents, len(self.columns)
        refs = self._refs()
        padded = {r: (np.zeros((n, P, F), np.float32), np.zeros((n, P), bool)) for r in refs}
        label, jet_id, view = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        spec = {r: np.zeros(n, np.int64) for r in refs}
        jets = {r: np.zeros((n, len(self.jet_columns)), np.float32) for r in refs}
        for c in np.unique(cids):
            at = np.flatnonzero(cids == c)
            ch, idx = chunks[int(c)], items[at]
            for k, r in enumerate(refs):
                pad(ch["values"], ch["offsets"], ch[r][idx], P, out=padded[r], at=at)
                if f"s{k + 1}" in ch:
                    spec[r][at] = ch[f"s{k + 1}"][idx]
                if f"j{k + 1}" in ch:
                    jets[r][at] = ch[f"j{k + 1}"][idx]
            label[at], jet_id[at] = ch["label"][idx], ch["jet_id"][idx]
            if "view" in ch:
                view[at] = ch["view"][idx]
        if self.mode == "pairs":
            out = {"label": label, "jet_id": jet_id}
            for k, r in enumerate(refs):
                x, mask = self._transform(*padded[r], spec[r])
                out[f"x{k + 1}"], out[f"mask{k + 1}"] = x[:, :, :len(self.features)], mask
                if self.jet_columns:
                    out[f"jets{k + 1}"] = jets[r]
                if self.view_index:
                    out[f"view{k + 1}"] = spec[r]
        else:
            out = {"x": padded["r"][0], "mask": padded["r"][1], "label": label, "jet_id": jet_id, "view": view}
        return {k: torch.from_numpy(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- Lightning glue

def dataset_from_config(cfg: dict, data_dir, split: str, mode: str, views: list[str] | None = None,
                        stream: str = "pretrain", train: bool = True, rank: int | None = None,
                        world_size: int | None = None) -> JetDataset:
    """A :class:`JetDataset` configured from ``cfg["training"]``; ``train`` = shuffled and full batches only.

    The pre-training train stream reads only the jets of the pool (``pretrain.pool``); its val stream reads
    the whole val split, so val losses compare across pool sizes."""
    from rs3l.training import pool

    t = cfg["training"]
    # pretrain.exclude_classes: the held-out classes never enter the pre-training streams (train and val)
    excluded = pool.excluded_labels(cfg) if stream == "pretrain" else ()
    jet_ids = pool.from_config(cfg, data_dir) if (stream == "pretrain" and split == "train") else None
    from rs3l.models.methods import batch_extras  # what the objective and pretext head read besides the particles
    return JetDataset(
        data_dir, split, features=t["features"], max_constituents=t["max_constituents"], batch_size=t["batch_size"],
        mode=mode, views=views, shuffle=train, drop_last=train, shuffle_buffer=t["shuffle_buffer"], seed=cfg["seed"],
        stream=stream, max_items_per_epoch=cfg["pretrain"]["max_jets_per_epoch"] if (train and stream == "pretrain") else 0,
        rank=rank, world_size=world_size, views_per_jet=cfg["pretrain"]["views_per_jet"],
        augmentations=cfg["pretrain"]["augmentations"], exclude_labels=excluded, jet_ids=jet_ids,
        **(batch_extras(cfg) if stream == "pretrain" and mode == "pairs" else {}))


class SetEpoch(L.Callback):
    """Tell the training dataset the epoch before its iterator starts.

    (Lightning calls ``set_epoch`` only on samplers, which an IterableDataset has none
    of; the loader's iterator is created after ``on_train_epoch_start``.)
    """

    def on_train_epoch_start(self, trainer, pl_module):
        loaders = trainer.train_dataloader
        for dl in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            ds = getattr(dl, "dataset", None)
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(trainer.current_epoch)


def _loader(ds: JetDataset, num_workers: int, pin_memory: bool) -> DataLoader:
    ds.num_workers = num_workers  # for __len__: the epoch plan depends on the number of slots
    return DataLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None)


class JetDataModule(L.LightningDataModule):
    """Train/val loaders over a merged data folder for Lightning.

    ``mode='pairs'`` with ``views = pretrain.augment_views`` for pre-training;
    ``mode='jets'`` for supervised use. Rank and world size come from the trainer.
    """

    def __init__(self, cfg: dict, data_dir, mode: str = "pairs", views: list[str] | None = None,
                 stream: str = "pretrain"):
        super().__init__()
        self.cfg, self.data_dir, self.mode, self.stream = cfg, Path(data_dir), mode, stream
        self.manifest = read_manifest(data_dir)
        check_classes(cfg["classes"], self.manifest)
        check_features(cfg["training"]["features"])
        if views is None:
            views = cfg["pretrain"]["augment_views"] if mode == "pairs" else self.manifest["views"]
        check_views(augment.base_views(views) if mode == "pairs" else views, self.manifest,
                    "pretrain.augment_views" if mode == "pairs" else "views")
        self.views = list(views)
        self.train_set: JetDataset | None = None
        self.val_set: JetDataset | None = None

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def setup(self, stage: str | None = None) -> None:
        rank, world = self._rank_world()
        if self.train_set is None or (self.train_set.rank, self.train_set.world_size) != (rank, world):
            self.train_set = dataset_from_config(self.cfg, self.data_dir, "train", self.mode, self.views, self.stream,
                                                 train=True, rank=rank, world_size=world)
            if self.train_set.n_batches(rank, world, self.cfg["training"]["num_workers"]) == 0:
                pool = self.cfg["pretrain"]["pool"] if self.stream == "pretrain" else None
                where = f"the pre-training pool (pretrain.pool = {pool})" if pool is not None else "the train split"
                raise ValueError(f"{self.data_dir}: {where} has {self.train_set.n_items} "
                                 f"{'pairs' if self.mode == 'pairs' else 'rows'}, fewer than one batch "
                                 f"(training.batch_size = {self.cfg['training']['batch_size']}) per device")
        if self.val_set is None and self.manifest["splits"].get("val", {}).get("shards"):
            # Every rank validates on the whole (small) val split: identical metrics on all
            # ranks, and no rank can run out of val batches while another waits in a reduction.
            self.val_set = dataset_from_config(self.cfg, self.data_dir, "val", self.mode, self.views, self.stream,
                                               train=False, rank=0, world_size=1)

    def _pin(self) -> bool:
        return torch.cuda.is_available() and self.cfg["training"]["accelerator"] in ("auto", "gpu", "cuda")

    def train_dataloader(self):
        return _loader(self.train_set, self.cfg["training"]["num_workers"], self._pin())

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return _loader(self.val_set, self.cfg["training"]["num_workers"], self._pin())


# ----------------------------------------------------------------------------- small in-memory use

def load_arrays(data_dir, split: str, features: list[str], max_constituents: int, views: list[str] | None = None,
                max_jets: int | None = None, seed: int = 0, columns: tuple[str, ...] = ()) -> dict:
    """All rows of ``split`` whose view is in ``views`` (default: all), as numpy arrays.

    Returns dict with ``x`` (rows, max_constituents, features) float32, ``mask`` (rows,
    max_constituents) bool, ``label`` int64, ``jet_id`` int64, ``view`` (str), ``replica``
    int16, and the jet columns ``pt eta phi energy mass soft_drop_mass tau1..tau4 n_constituents``.
    ``max_jets``: stop after this many jets (all their selected rows kept); the row
    groups are then visited in a random order derived from ``seed``, so that a
    sample of a class-ordered split still mixes classes. ``columns``: further scalar columns to return
    (e.g. the key columns, ``view_parameter``; strings as object arrays). For small, in-memory use
    (probes, evaluation, plots); training streams with :class:`JetDataset`.
    """
    check_features(features)
    manifest = read_manifest(data_dir)
    views = list(views or manifest["views"])
    check_views(views, manifest, "the requested views")
    units = []
    for s, path in enumerate(shard_paths(data_dir, split, manifest)):
        pf = open_shard(path)
        units += [(pf, g) for g in range(pf.metadata.num_row_groups)]
    if max_jets is not None:
        units = [units[i] for i in rng(seed, "load-arrays", split).permutation(len(units))]
    jet_cols = [name for name, *_ in schema.JET_COLUMNS]
    jet_cols += [c for c in columns if c not in jet_cols]
    out: dict[str, list] = {k: [] for k in ["x", "mask", "label", "jet_id", "view", "replica"] + jet_cols}
    n_jets = 0
    for pf, g in units:
        t = pf.read_row_group(g, columns=["jet_id", "view", "replica", "label"] + jet_cols + features)
        rows = _view_rows(t, views)
        t = t.take(rows)
        jet_id = t.column("jet_id").to_numpy()
        if max_jets is not None:
            starts, _ = _runs(jet_id)
            if n_jets + len(starts) > max_jets:
                keep = max_jets - n_jets
                t = t.slice(0, int(starts[keep]) if keep < len(starts) else t.num_rows)
                jet_id = jet_id[:t.num_rows]
                starts = starts[:keep]
            n_jets += len(starts)
        x, mask = pad_particles(t, features, max_constituents)
        out["x"].append(x)
        out["mask"].append(mask)
        out["label"].append(t.column("label").to_numpy().astype(np.int64))
        out["jet_id"].append(jet_id)
        out["view"].append(np.array(t.column("view").to_pylist(), dtype=object))
        out["replica"].append(t.column("replica").to_numpy())
        for c in jet_cols:
            col = t.column(c)
            out[c].append(np.array(col.to_pylist(), dtype=object) if col.type == pa.string() else col.to_numpy())
        if max_jets is not None and n_jets >= max_jets:
            break
    F, P = len(features), max_constituents
    empty = {"x": np.zeros((0, P, F), np.float32), "mask": np.zeros((0, P), bool), "view": np.zeros(0, object)}
    return {k: (np.concatenate(v) if v else empty.get(k, np.zeros(0))) for k, v in out.items()}
