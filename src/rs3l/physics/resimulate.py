"""``rs3l resimulate``: one view of an LHE file -> labelled jets in a Parquet fragment.

Per hard event, everything downstream of the view's intervention point is re-run:

- ``hard``: parton shower + MPI + hadronization from the LHE event, with the view's settings;
- ``parton``: the shower is shared by all views of the event (a seed that does not
  depend on the view); only hadronization (view settings and seed) and detector are re-run;
- ``detector``: the whole generator-level event is shared; only the detector is re-run.

Random numbers: Pythia's generator is re-initialised per event from
``rs3l.seeds.derive_seed`` in UserHooks (after the process level, and for ``parton``
views again before hadronization), so event *i* of a view always gets the same
random numbers; the detector draws from a generator derived from
(process, chunk, view, replica). Events come from ``pythia.nextBatch``; all later
steps are columnar over a batch.

Parameter-scan views (``views.<view>.draw``) draw one value of a Pythia setting per block of
``draw_block`` events (:func:`drawn_values`) and run one Pythia per block, initialised with
that value and starting at the block's first event: Pythia reads shower and hadronization
parameters only at ``init()``. The value is stored per jet in ``view_parameter``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rs3l import receipts, schema, seeds
from rs3l.atomic import atomic_path, temp_path
from rs3l.config import settings_hash, simulation_hash
from rs3l.physics import detector, jets, lhe
from rs3l.physics.pythia import PythiaError, make_pythia
from rs3l.progress import Progress

log = logging.getLogger(__name__)
_HEADER = re.compile(r'<rs3l process="([^"]+)" chunk="(\d+)"')


def view_config(cfg: dict, view: str) -> dict:
    """The config of a named view; an unknown name is an error listing the known ones."""
    if view not in cfg["views"]:
        raise ValueError(f"unknown view '{view}'; known: {', '.join(cfg['views'])}")
    return cfg["views"][view]


def lhe_origin(path: str | Path) -> tuple[str, int]:
    """(process, chunk) recorded by ``rs3l generate`` or ``rs3l split-lhe`` in the LHE header."""
    with lhe.open_text(path) as fh:
        head = fh.read(4096)
    m = _HEADER.search(head)
    if not m:
        raise lhe.LHEError(f"LHE file '{path}' has no rs3l header (process, chunk); write it with `rs3l generate`, "
                           f"or for external LHE files with `rs3l split-lhe`")
    return m.group(1), int(m.group(2))


def view_seed_parts(cfg: dict, process: str, chunk: int, view: str, replica: int) -> dict:
    """Seed paths per stage; shared stages do not mention the view."""
    intervention = cfg["views"][view]["intervention"]
    own = (process, chunk, view, replica)
    shared = (process, chunk, "shared")
    return {
        "shower": own + ("shower",) if intervention == "hard" else shared + ("shower",),
        "hadronization": None if intervention == "hard" else
        (own + ("hadronization",) if intervention == "parton" else shared + ("hadronization",)),
        "detector": own + ("detector",),
    }


def draw_spec(cfg: dict, view: str) -> tuple[str, str, float, float] | None:
    """(Pythia setting, 'uniform' or 'log_uniform', lo, hi) of a parameter-scan view; None if it draws nothing."""
    draw = cfg["views"][view].get("draw") or {}
    if not draw:
        return None
    (setting, spec), = draw.items()
    (kind, (lo, hi)), = spec.items()
    return setting, kind, float(lo), float(hi)


def drawn_values(cfg: dict, process: str, chunk: int, view: str, replica: int, n_events: int) -> np.ndarray:
    """The view's drawn parameter per hard event of a chunk, float32 (n_events,); NaN if the view draws nothing.

    One value per block of ``views.<view>.draw_block`` consecutive events, from a stream derived from
    (process, chunk, view, replica, "draw"): the same config gives the same values. ``log_uniform``
    draws log(value) uniformly. Values are rounded to float32 before Pythia sees them, so the stored
    ``view_parameter`` is exactly the value simulated with.
    """
    spec = draw_spec(cfg, view)
    if spec is None:
        return np.full(n_events, np.nan, np.float32)
    _, kind, lo, hi = spec
    block = cfg["views"][view]["draw_block"]
    gen = seeds.rng(cfg["seed"], process, chunk, view, replica, "draw")
    n_blocks = -(-n_events // block)
    if kind == "log_uniform":
        values = np.exp(gen.uniform(np.log(lo), np.log(hi), n_blocks))
    else:
        values = gen.uniform(lo, hi, n_blocks)
    return np.repeat(values.astype(np.float32), block)[:n_events]


def _hooks_factory(master: int, parts: dict, n_events: int, first_event: int = 0,
                   event_ids: np.ndarray | None = None):
    import pythia8mc

    # per-event seeds computed up front: the callbacks, run inside Pythia's event loop, only look them up.
    # ``event_ids``: the event number of each entry of the file Pythia reads (a subset of a chunk's
    # events, simulation.view_splits), so an event gets the same random numbers in a subset as in full
    ids = np.arange(n_events) if event_ids is None else np.asarray(event_ids, np.int64)

    def table(stage):
        if parts[stage] is None:
            return None
        known = seeds.derive_seeds(master, *parts[stage], events=ids).tolist()
        return lambda i: known[i] if i < len(known) else seeds.derive_seed(master, *parts[stage], i)

    shower, hadronization = table("shower"), table("hadronization")

    class SeedHooks(pythia8mc.UserHooks):
        """Re-seed Pythia per event: after the process level (shower) and before hadronization."""

        def __init__(self, pythia):
            pythia8mc.UserHooks.__init__(self)
            self.rndm = pythia.rndm
            self.index = first_event - 1  # LHE index of the event being generated

        def canVetoProcessLevel(self):
            return True

        def doVetoProcessLevel(self, process):
            self.index += 1
            self.rndm.init(shower(self.index))
            return False

        def canVetoPartonLevel(self):
            return hadronization is not None

        def doVetoPartonLevel(self, event):
            self.rndm.init(hadronization(self.index))
            return False

    return SeedHooks


class Charges:
    """Electric charge by PDG id: Pythia's particle data asked once per distinct id, then a sorted lookup."""

    def __init__(self, pythia):
        self.data = pythia.particleData
        self.ids, self.values = np.zeros(0, np.int64), np.zeros(0)

    def __call__(self, pid: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.ids, pid), max(len(self.ids) - 1, 0))
        known = (self.ids[pos] == pid) if len(self.ids) else np.zeros(len(pid), bool)
        if not known.all():
            new = np.unique(pid[~known])
            ids = np.concatenate([self.ids, new])
            values = np.concatenate([self.values, [self.data.charge(int(i)) for i in new]])
            order = np.argsort(ids)
            self.ids, self.values = ids[order], values[order]
            return self(pid)
        return self.values[pos]


def _final_particles(prt) -> dict:
    """Flat numpy columns of the final-state particles (status > 0) of a ``nextBatch`` particle array.

    Reads the awkward layout's buffers directly: one boolean selection per column instead of a
    jagged record mask (pythia8mc gives ``var * PythiaParticle`` with momentum ``p`` and an optional
    production vertex ``vProd``, None meaning the origin).
    """
    layout = prt.layout
    if not isinstance(layout, ak.contents.ListOffsetArray) or not isinstance(layout.content, ak.contents.RecordArray):
        raise PythiaError(f"unexpected layout of pythia8mc nextBatch particles: {prt.type}")
    offsets = np.asarray(layout.offsets)
    rec = layout.content
    lo, hi = int(offsets[0]), int(offsets[-1])

    def column(node):
        return np.asarray(node.data)[lo:hi][final]

    final = np.flatnonzero(np.asarray(rec.content("status").data)[lo:hi] > 0)
    counts = np.diff(np.searchsorted(final, offsets - lo))
    momentum, vertex = rec.content("p"), rec.content("vProd").to_IndexedOptionArray64()
    v_index = np.asarray(vertex.index)[lo:hi][final]
    has_vertex = v_index >= 0

    def vertex_column(name):
        return np.where(has_vertex, np.asarray(vertex.content.content(name).data)[np.maximum(v_index, 0)], 0.0)

    return {"event": np.repeat(np.arange(len(counts)), counts), "id": column(rec.content("id")).astype(np.int64),
            **{k: column(momentum.content(k)) for k in ("px", "py", "pz", "e")},
            "vx": vertex_column("px"), "vy": vertex_column("py"), "vz": vertex_column("pz")}


def pythia_settings(cfg: dict, lhe_path: str | Path, view: str) -> list[str]:
    return ["Beams:frameType = 4", f"Beams:LHEF = {Path(lhe_path).resolve()}"] + \
        list(cfg["simulation"]["pythia_settings"]) + list(cfg["views"][view]["settings"])


def seeded_pythia(cfg: dict, lhe_path: str | Path, view: str, replica: int, n_events: int,
                  first_event: int = 0, extra_settings: tuple[str, ...] = (), event_ids: np.ndarray | None = None):
    """(pythia, hooks): Pythia reading ``lhe_path`` with the view's settings, re-seeded per event by ``hooks``.

    ``hooks.index`` is the LHE index of the last hard event Pythia has read. The same (view, replica)
    always gives the same events, whichever program drives the loop (rs3l or the throughput
    benchmark's bare loop). ``first_event``: start reading there (``Beams:nSkipLHEFatInit``);
    ``extra_settings`` come last (a drawn parameter's value); ``event_ids``: the chunk's event number
    of each event in ``lhe_path`` when it holds a subset (default: 0, 1, ...).
    """
    process, chunk = lhe_origin(lhe_path)
    parts = view_seed_parts(cfg, process, chunk, view, replica)
    skip = [f"Beams:nSkipLHEFatInit = {int(first_event)}"] if first_event else []
    return make_pythia(pythia_settings(cfg, lhe_path, view) + skip + list(extra_settings),
                       seeds.derive_seed(cfg["seed"], "pythia-init"),
                       hooks_factory=_hooks_factory(cfg["seed"], parts, n_events, first_event, event_ids))


def pythia_segments(cfg: dict, lhe_path: str | Path, view: str, replica: int, n_total: int):
    """(first event, end, extra settings) of each Pythia instance a view needs for ``n_total`` events.

    One segment for an ordinary view; a parameter-scan view (``draw``) gets one Pythia per block of
    events sharing a drawn value, because Pythia reads shower and hadronization parameters at init.
    """
    spec = draw_spec(cfg, view)
    if spec is None:
        return [(0, n_total, ())]
    process, chunk = lhe_origin(lhe_path)
    values = drawn_values(cfg, process, chunk, view, replica, n_total)
    block = cfg["views"][view]["draw_block"]
    return [(start, min(start + block, n_total), (f"{spec[0]} = {float(values[start])!r}",))
            for start in range(0, n_total, block)]


def generator_level(cfg: dict, lhe_path: str | Path, view: str, replica: int = 0, max_events: int | None = None,
                    lhe_events: ak.Array | None = None, with_partons: bool = False,
                    event_ids: np.ndarray | None = None):
    """Yield (lhe_index, particles) per batch: generator-level final-state particles as flat numpy arrays.

    ``particles``: dict ``event`` (batch-local), ``id, px, py, pz, e, vx, vy, vz, charge``; with
    ``with_partons`` also ``parton_px``/``parton_pz``: the parton-level history (hard process, MPI,
    ISR, FSR, beam remnants: |status| 21-69), which a ``parton``-intervention view shares.
    ``event_ids``: see :func:`seeded_pythia` (``lhe_index`` stays the position in ``lhe_path``).
    When exhausted, the generator returns (StopIteration.value) ``{"events", "failures", "seconds"}``,
    ``seconds`` holding the wall time of Pythia's initialisation and of its ``nextBatch`` calls.
    """
    view_config(cfg, view)  # unknown view: error before Pythia starts
    if replica < 0:
        raise ValueError(f"--replica must be >= 0; got {replica}")
    if lhe_events is None:
        lhe_events = lhe.read(lhe_path)
    n_total = len(lhe_events) if max_events is None else min(max_events, len(lhe_events))
    half = cfg["simulation"]["sqrt_s"] / 2
    lhe_x1 = ak.to_numpy(lhe_events.particles.pz[:, 0]) / half
    lhe_x2 = -ak.to_numpy(lhe_events.particles.pz[:, 1]) / half
    x_order = np.argsort(lhe_x1)
    batch_size = cfg["simulation"]["batch_size"]
    max_fail = max(5, int(cfg["simulation"]["max_failure_fraction"] * n_total))
    done = failures = 0
    init_seconds = event_seconds = 0.0
    for first, end, extra in pythia_segments(cfg, lhe_path, view, replica, n_total):
        if done + failures < first:  # the LHE file ended early
            break
        t0 = time.perf_counter()
        pythia, hooks = seeded_pythia(cfg, lhe_path, view, replica, len(lhe_events), first, extra, event_ids)
        init_seconds += time.perf_counter() - t0
        charges = Charges(pythia)
        # infoPython() returns a copy: ask it again after every batch
        while done + failures < end and not pythia.infoPython().atEndOfFile():
            want = min(batch_size, end - done - failures)
            t0 = time.perf_counter()
            batch = pythia.nextBatch(want)
            event_seconds += time.perf_counter() - t0
            read = hooks.index + 1 - done - failures
            if read == 0:
                raise PythiaError(f"{view}: Pythia stopped reading '{lhe_path}' after {done + failures} of {n_total} events")
            failures += max(read - len(batch), 0)
            if failures > max_fail:
                raise PythiaError(f"{view}: {failures} events failed in Pythia (more than {max_fail})")
            if len(batch) == 0:
                continue
            x1, x2 = ak.to_numpy(batch.info.x1), ak.to_numpy(batch.info.x2)
            pos = np.clip(np.searchsorted(lhe_x1[x_order], x1), 0, len(x_order) - 1)
            cand = np.stack([x_order[np.maximum(pos - 1, 0)], x_order[pos]])
            best = np.take_along_axis(cand, np.argmin(np.abs(lhe_x1[cand] - x1), axis=0)[None], 0)[0]
            if not (np.allclose(lhe_x1[best], x1, rtol=1e-6, atol=1e-9) and np.allclose(lhe_x2[best], x2, rtol=1e-6, atol=1e-9)):
                raise PythiaError("could not match showered events to their LHE events (x1, x2 differ)")
            flat = _final_particles(batch.prt)
            flat["charge"] = charges(flat["id"])
            if with_partons:
                st = abs(batch.prt.status)
                partons = batch.prt[(st >= 21) & (st <= 69)]
                flat["parton_px"] = ak.to_numpy(ak.flatten(partons.p.px))
                flat["parton_pz"] = ak.to_numpy(ak.flatten(partons.p.pz))
            done += len(batch)
            yield best, flat
    return {"events": done, "failures": failures, "seconds": {"pythia_init": init_seconds, "pythia_events": event_seconds}}


def view_events(cfg: dict, process: str, chunk: int, view: str, n_events: int) -> np.ndarray | None:
    """Event numbers (ascending) of the chunk's first ``n_events`` that ``view`` simulates: those the
    merge puts into the splits ``simulation.view_splits[view]``; None when the view covers every event."""
    splits = cfg["simulation"]["view_splits"].get(view)
    if not splits:
        return None
    from rs3l.data.manifest import split_of_events

    events = np.arange(n_events)
    return events[np.isin(split_of_events(cfg, process, chunk, events), list(splits))]


@contextlib.contextmanager
def _subset_file(lhe_path, event_ids: np.ndarray | None, out):
    """The LHE file Pythia reads: ``lhe_path`` itself, or a scratch copy of the events ``event_ids``
    beside ``out`` (removed afterwards, also when the job fails)."""
    if event_ids is None:
        yield lhe_path
        return
    scratch = Path(f"{temp_path(out)}.lhe")  # unique per writer (see rs3l.atomic)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        lhe.write_subset(lhe_path, scratch, event_ids)
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


def resimulate(cfg: dict, lhe_path: str | Path, view: str, out: str | Path, replica: int = 0,
               max_events: int | None = None, after_batch=None) -> dict:
    """Run one view over an LHE file and write the jets as a Parquet fragment.

    Returns the counts stored in the fragment's metadata and, apart from them, ``seconds``: wall time
    of the whole call (``total``), of Pythia's initialisation (``pythia_init``) and of its event
    generation (``pythia_events``); the rest is rs3l's own work. ``after_batch(n_events)``, if
    given, is called after each batch (the throughput benchmark runs its bare loop there); the
    time spent in it is not counted.
    """
    t_start = time.perf_counter()
    view_cfg = view_config(cfg, view)
    lhe_events = lhe.read(lhe_path)
    process, chunk = lhe_origin(lhe_path)
    if process not in cfg["processes"]:
        raise ValueError(f"LHE file '{lhe_path}' is of process '{process}', unknown to this config; "
                         f"known: {', '.join(cfg['processes'])}")
    labelling = cfg["processes"][process]["labelling"]
    classes = cfg["classes"]
    det_params = detector.merge_params(cfg["detector"], view_cfg["detector"])
    parts = view_seed_parts(cfg, process, chunk, view, replica)
    det_rng = seeds.rng(cfg["seed"], *parts["detector"])
    parameter = drawn_values(cfg, process, chunk, view, replica, len(lhe_events))  # per hard event; NaN: no draw
    n_total = len(lhe_events) if max_events is None else min(max_events, len(lhe_events))
    event_ids = view_events(cfg, process, chunk, view, n_total)  # None: every event
    if event_ids is not None:
        log.info("%s: simulated for the %s split(s) only (simulation.view_splits): %d of %d events", view,
                 ", ".join(cfg["simulation"]["view_splits"][view]), len(event_ids), n_total)
        lhe_events, n_total = lhe_events[event_ids], len(event_ids)
    progress = Progress(n_total, f"resimulate {process} chunk {chunk} {view}#{replica}")
    cols: dict[str, list] = {}
    n_selected = n_matched = 0
    with _subset_file(lhe_path, event_ids, out) as sim_path:
        # (no event of the chunk in the view's splits: an empty fragment, no Pythia)
        gen = generator_level(cfg, sim_path, view, replica, n_total, lhe_events, event_ids=event_ids) if n_total \
            else iter(())
        while True:
            try:
                lhe_index, particles = next(gen)
            except StopIteration as stop:
                stats = stop.value or {"events": 0, "failures": 0, "seconds": {"pythia_init": 0.0, "pythia_events": 0.0}}
                break
            n_batch = len(lhe_index)
            event = lhe_index if event_ids is None else event_ids[lhe_index]  # the chunk's event numbers
            cands = detector.respond(particles, particles["charge"], det_params, det_rng)
            found = jets.cluster(cands, n_batch, cfg["jets"])
            truth = jets.truth_objects(lhe_events.particles[lhe_index], labelling)
            ji, oi = jets.match(found, truth, cfg["jets"]["radius"])
            n_selected += len(found["event"])
            n_matched += len(ji)
            sub = jets.substructure(cands, found, ji, cfg["jets"])
            feats = jets.constituent_features(cands, found, ji)
            names = truth["label_name"][oi]
            missing = set(names.tolist()) - set(classes)
            if missing:
                raise ValueError(f"labels {sorted(missing)} are not in config classes {classes}")
            batch_cols = {
                "event": event[found["event"][ji]], "object": truth["line"][oi],
                "label": np.array([classes.index(n) for n in names], dtype=np.int16) if len(names) else np.zeros(0, np.int16),
                "label_name": names, "view_parameter": parameter[event[found["event"][ji]]],
                **{k: found[k][ji] for k in ("pt", "eta", "phi", "mass")},
                **sub,
                **feats,
            }
            for k, v in batch_cols.items():
                cols.setdefault(k, []).append(v)
            progress.update(n_batch)
            if after_batch is not None:
                t0 = time.perf_counter()
                after_batch(n_batch)
                t_start += time.perf_counter() - t0
    progress.close()
    table = _table(cfg, cols, process, chunk, view, replica)
    counts = {"events": stats["events"], "failures": stats["failures"], "jets_selected": n_selected,
              "jets_matched": n_matched, "jets_unmatched_dropped": n_selected - n_matched}
    meta = {"simulation_hash": simulation_hash(cfg), "process": process, "chunk": chunk, "view": view,
            "replica": replica, "counts": json.dumps(counts)}
    table = table.replace_schema_metadata(schema.fragment_schema(meta).metadata)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, **schema.parquet_options(table.schema))
    seconds = {"total": time.perf_counter() - t_start, **stats["seconds"]}
    log.info("%s %s#%d: %d events, %d failures, %d jets in window, %d labelled, %d unmatched dropped -> %s",
             process, view, replica, counts["events"], counts["failures"], n_selected, n_matched,
             n_selected - n_matched, out)
    own = seconds["total"] - seconds["pythia_init"] - seconds["pythia_events"]
    log.info("time %.1f s: Pythia init %.1f s, Pythia events %.1f s, rs3l's own work %.1f s (%.0f%% of Pythia)",
             seconds["total"], seconds["pythia_init"], seconds["pythia_events"], own,
             100 * own / max(seconds["pythia_init"] + seconds["pythia_events"], 1e-9))
    return {**counts, "seconds": seconds}


def _table(cfg: dict, cols: dict, process: str, chunk: int, view: str, replica: int) -> pa.Table:
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    n = len(cat.get("event", []))
    order = np.lexsort((cat["object"], cat["event"])) if n else np.zeros(0, np.int64)
    view_cfg = cfg["views"][view]
    fixed = {"process": process, "chunk": chunk, "view": view, "replica": replica,
             "intervention": view_cfg["intervention"], "settings_hash": settings_hash(view_cfg["settings"])}
    counts = cat["counts"][order] if n else np.zeros(0, np.int64)
    idx = jets.rows(cat["counts"], order) if n else np.zeros(0, np.int64)  # constituents in the new jet order
    arrays = {}
    sch = schema.fragment_schema()
    for field in sch:
        name = field.name
        if name in fixed:
            values = [fixed[name]] * n if isinstance(fixed[name], str) else np.full(n, fixed[name])
        elif name == "n_constituents":
            values = counts
        elif name.startswith("part_"):
            values = (cat[name][idx] if n else np.zeros(0), counts)
        else:
            values = cat[name][order] if n else np.zeros(0)
        arrays[name] = schema.to_arrow(values, field.type)
    return pa.Table.from_arrays(list(arrays.values()), schema=sch)


class UnitFailed(RuntimeError):
    """A unit (one view and replica of one LHE file) failed; the message names it and the cause."""


def main(cfg: dict, args) -> None:
    """``rs3l resimulate``: one unit. A unit that finished before (same LHE content, settings and
    algorithm version) is not simulated again: its receipt is linked back (:mod:`rs3l.receipts`),
    so a retried bundle, a requeued job or a restarted workflow costs only the units that had not
    finished. Errors name the unit, its LHE file and its output."""
    unit = f"resimulate unit (LHE file '{args.lhe}', view {args.view}, replica {args.replica}, output '{args.out}')"
    try:
        unit_key = receipts.key(simulation_hash=simulation_hash(cfg), view=args.view, replica=args.replica,
                                max_events=args.max_events, lhe_sha256=receipts.file_sha256(args.lhe))
        receipt = receipts.reuse(args.out, unit_key)
        if receipt is not None:
            log.info("%s finished before: kept its fragment (receipt %s), not simulated again", unit, receipt)
            return
        resimulate(cfg, args.lhe, args.view, args.out, replica=args.replica, max_events=args.max_events)
        receipts.record(args.out, unit_key)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        raise UnitFailed(f"{unit}: {exc}") from exc
