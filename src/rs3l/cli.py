"""``rs3l``: one subcommand per pipeline stage; each Snakemake rule calls exactly one.

Heavy libraries (Pythia, torch, MLflow) are imported by the stage only when it
runs, so ``rs3l --help`` and ``rs3l <stage> --help`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import io
import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

from rs3l import __version__

log = logging.getLogger("rs3l")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/config.yaml",
                   help="YAML config, validated against workflow/schemas/config.schema.yaml (default: %(default)s)")


# name -> (module:function, help, argument builder)
def _generate(p):
    p.add_argument("--process", required=True, help="process name defined under `processes` in the config (e.g. top)")
    p.add_argument("--events", type=int, required=True, help="number of hard-scattering events (> 0)")
    p.add_argument("--chunk", type=int, default=0, help="chunk index; with the master seed it derives the seed (default 0)")
    p.add_argument("--seed", type=int, default=None, help="Pythia seed; default: derived from (config seed, process, chunk)")
    p.add_argument("--out", required=True, help="output LHE file (.lhe or .lhe.gz), written atomically")


def _split_lhe(p):
    p.add_argument("--process", required=True, help="process defined by `lhe: <path or glob>` under `processes` in the config")
    p.add_argument("--out-dir", required=True, help="output folder: chunk{c}.lhe.gz (simulation.events_per_chunk events "
                   "each, at most simulation.chunks) and lhe_sources.json, written atomically")


def _resimulate(p):
    p.add_argument("--lhe", required=True, help="LHE file written by `rs3l generate` or `rs3l split-lhe`")
    p.add_argument("--view", required=True, help="view name defined under `views` in the config (e.g. fsr_up)")
    p.add_argument("--replica", type=int, default=0, help="replica number of the view (new random numbers; default 0)")
    p.add_argument("--out", required=True, help="output Parquet fragment, written atomically")
    p.add_argument("--max-events", type=int, default=None, help="stop after this many events (for quick looks)")


def _merge(p):
    p.add_argument("--fragment-list", default=None, help="file naming the fragments from `rs3l resimulate`, one a line")
    p.add_argument("--fragments", nargs="+", default=None, help="the fragments on the command line (by hand; few)")
    p.add_argument("--part", type=int, default=None, help="merge only part N: <split>/part-NNNNN-*.parquet and "
                   "parts/part-NNNNN.json, no manifest (default: everything, then manifest.json)")
    p.add_argument("--finalize", type=int, default=None, metavar="PARTS",
                   help="write manifest.json from parts 0 .. PARTS-1 (reads only their JSON files)")
    p.add_argument("--out-dir", required=True, help="output folder: <split>/part-*.parquet and manifest.json")


def _export_root(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--split", default="test", help="split to export (default: %(default)s)")
    p.add_argument("--out", required=True, help="output ROOT file with TTree `jets`")


def _export_jetclass(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--split", default="test", help="split to export (default: %(default)s)")
    p.add_argument("--out", required=True, help="output file: .root (TTree `tree`) or .parquet, chosen by the extension")
    p.add_argument("--view", default=None, help="view whose jets are exported, replica 0 (default: config jetclass.view)")


def _tracking_init(p):
    pass


def _tracking_server(p):
    p.add_argument("--host", default="0.0.0.0",
                   help="network interface to listen on (default: %(default)s, every interface, so that compute nodes "
                        "reach it; 127.0.0.1 for this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default: %(default)s; 0 = a free port)")
    p.add_argument("--backend-store-uri", default=None,
                   help="where runs are stored: sqlite:///<file on a LOCAL disk> or postgresql://user:pw@host/db "
                        "(default: sqlite:////var/tmp/rs3l-tracking-<user>/mlflow.db)")
    p.add_argument("--artifacts-destination", default=None,
                   help="folder or URI for artifacts (models, plots), served through the server; may be on a shared "
                        "filesystem (default: mlartifacts next to a SQLite store)")
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default: %(default)s)")


def _pretrain(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--out-dir", required=True, help="output folder: checkpoints, encoder.pt")
    p.add_argument("--pool", default=None, metavar="N",
                   help="the pre-training pool: N train jets (N > 1), a fraction (N <= 1) or 'all'; overrides "
                        "pretrain.pool, and must be one of pretrain.pools in a pool-size scan")
    p.add_argument("--restart-if-changed", action="store_true",
                   help="if last.ckpt in --out-dir belongs to another configuration or dataset, delete it and start "
                        "over (the workflow does this: it re-runs pre-training only when those changed); without "
                        "this flag such a checkpoint is an error")


def _finetune(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--encoder", default=None, help="encoder.pt from `rs3l pretrain` (not used with --mode scratch)")
    p.add_argument("--task", required=True, help="task name under finetune.tasks")
    p.add_argument("--mode", required=True, choices=["mlp", "full", "scratch"],
                   help="mlp: frozen encoder + MLP head; full: pre-trained encoder fine-tuned; scratch: random init "
                        "(the linear and kNN probes are `rs3l probe`)")
    p.add_argument("--fraction", type=float, default=None, help="one arm: fraction of training labels used, in (0, 1]")
    p.add_argument("--labels", default=None, metavar="TOKEN",
                   help="one arm: the labelled set as f<fraction> (f0.1) or n<jets> (n300: 150 signal + 150 background)")
    p.add_argument("--seed", type=int, default=0,
                   help="repeat seed in 0..finetune.seeds-1: picks the labelled subset and the initialisation "
                        "(default 0)")
    p.add_argument("--arms", nargs="+", default=None, metavar="LABELS:SEED",
                   help="several arms in one process (start-up, data and test set loaded once), e.g. "
                        "--arms n100:0 n100:1 f0.1:0; each is written to <out-dir>/<labels>/s<seed>/ and --evaluate "
                        "gets the list of their records (what the workflow does)")
    p.add_argument("--out-dir", required=True, help="output folder: model.pt, labels.json (with --arms: the folder "
                   "of the arms' folders)")
    p.add_argument("--evaluate", default=None, metavar="JSON",
                   help="then evaluate the model(s) on the test split in the same process and write `rs3l evaluate`'s "
                        "record (with --arms: a list of records) here (what the workflow does)")


def _probe(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--encoder", required=True, help="encoder.pt from `rs3l pretrain`")
    p.add_argument("--out", required=True, help="JSON list of evaluation records (every task, labelled set, seed)")
    p.add_argument("--only", choices=["pretrained", "baselines"], default=None,
                   help="only the pre-trained encoder's probes, or only the baselines (random encoder, substructure "
                        "BDT; --encoder then gives the architecture); default both")


def _science(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--encoder", required=True, help="encoder.pt from `rs3l pretrain` (frozen)")
    p.add_argument("--out", required=True, help="JSON: invariance AUC per view, parameter R² per scan view, "
                   "anomaly AUC of the held-out class (written atomically)")


def _neighbours(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--encoder", required=True, help="encoder.pt from `rs3l pretrain` (frozen)")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--jet", help="the query jet: its jet_id (e.g. 1234) or process:chunk:event:object (e.g. top:0:17:5)")
    query.add_argument("--observables", help="a clip encoder only: search particle embeddings by observables, "
                       "'mass=172,soft_drop_mass=170,tau21=0.4,tau32=0.5,tau43=0.7,n_constituents=60,pt=600' (GeV) or a "
                       "jet name (its stored observables)")
    p.add_argument("-k", type=int, default=10, help="neighbours to list (default: %(default)s)")
    p.add_argument("--split", default="test", help="split searched (default: %(default)s)")
    p.add_argument("--view", default="nominal", help="view searched; the query jet's own row is left out, its other "
                   "views are not searched (default: %(default)s)")


def _evaluate(p):
    p.add_argument("--data", required=True, help="merged data folder (with manifest.json)")
    p.add_argument("--model-dir", required=True, help="output folder of `rs3l finetune`")
    p.add_argument("--out", required=True, help="metrics JSON")


def _ui(p):
    p.add_argument("--port", type=int, default=None, help="port of the UI on 127.0.0.1 (default: a free one)")


def _plan(p):
    p.add_argument("--profile", default=None, help="Slurm profile whose group-components bundle jobs "
                   "(default: workflow/profiles/slurm/config.yaml)")
    p.add_argument("--cores", type=int, default=2, help="cores of the local wall-time estimate (default 2)")


def _report(p):
    p.add_argument("--inputs", nargs="+", required=True, help="JSON files from `rs3l evaluate` and `rs3l probe`")
    p.add_argument("--data", default=None, help="merged data folder, for the physics-validation plots")
    p.add_argument("--out-dir", required=True, help="output folder: results.csv, results.md, plots")


def _ablation_report(p):
    p.add_argument("--dir", required=True, help="ablation folder: <variant>/probes.json, <variant>/science.json "
                   "(optional) and baselines/probes.json, as the workflow writes them (<results_dir>/ablation)")
    p.add_argument("--out-dir", default=None, help="output folder: ablation.csv, ablation.md, ablation_*.png "
                   "(default: --dir)")


def _export_onnx(p):
    p.add_argument("--model-dir", default=None, help="output folder of `rs3l finetune` (model.pt): export the classifier")
    p.add_argument("--encoder", default=None, help="encoder.pt of `rs3l pretrain`: export the encoder")
    p.add_argument("--out", required=True, help="output .onnx file, written atomically after an onnxruntime check")


COMMANDS = {
    "generate": ("rs3l.physics.generate:main", "generate hard-scattering events with Pythia 8 and write them as LHE", _generate),
    "split-lhe": ("rs3l.physics.lhe_input:main", "check external LHE files (MadGraph, POWHEG, ...) of an `lhe` process and "
                  "split them into chunks in place of `generate`", _split_lhe),
    "resimulate": ("rs3l.physics.resimulate:main", "re-simulate one view of an LHE file: shower, hadronization, detector, jets -> Parquet", _resimulate),
    "merge": ("rs3l.data.merge:main", "align the views of each jet into train/val/test Parquet shards + manifest.json", _merge),
    "export-root": ("rs3l.data.export_root:main", "write merged shards as a ROOT TTree (uproot)", _export_root),
    "export-jetclass": ("rs3l.data.export_jetclass:main", "write the jets of one split and view in the JetClass format "
                        "(.root or .parquet) that weaver-core's JetClass data configurations read", _export_jetclass),
    "tracking-init": ("rs3l.tracking:main", "create the MLflow store, experiment and the workflow's parent run", _tracking_init),
    "tracking-server": ("rs3l.tracking_server:main", "run an MLflow tracking server for a cluster (on the login node; "
                        "jobs log to it over HTTP) and print the setting that points the workflow at it; Ctrl-C stops "
                        "it", _tracking_server),
    "pretrain": ("rs3l.training.pretrain:main", "contrastive pre-training of an encoder on view pairs (Lightning)", _pretrain),
    "finetune": ("rs3l.training.finetune:main", "fine-tune a pre-trained encoder (or train from scratch) on a labelled task, by optimiser steps with early stopping", _finetune),
    "probe": ("rs3l.evaluation.probe:main", "frozen-encoder probes (linear, kNN; pre-trained and random encoder) and "
              "the substructure BDT baseline, every task, label fraction and seed", _probe),
    "science": ("rs3l.evaluation.science:main", "what a frozen encoder kept: nominal-vs-view invariance probes, "
                "regression of drawn Pythia parameters, kNN anomaly AUC of a held-out class", _science),
    "neighbours": ("rs3l.evaluation.neighbours:main", "the k nearest jets to a jet in a frozen encoder's embedding "
                   "space, with class, view, mass, pt and distance", _neighbours),
    "evaluate": ("rs3l.evaluation.evaluate:main", "evaluate a fine-tuned model on the test split, per view", _evaluate),
    "report": ("rs3l.evaluation.report:main", "results table and plots from evaluation outputs", _report),
    "ablation-report": ("rs3l.evaluation.ablation:main", "compare the pre-training variants of the config's "
                        "ablation grid: one table (probe AUC per label fraction, held-out W1, invariance, parameter "
                        "R², anomaly AUC), plots and a sentence naming the winners", _ablation_report),
    "export-onnx": ("rs3l.models.onnx_export:main", "export a fine-tuned classifier or a pre-trained encoder as ONNX "
                    "(inputs x, mask; dynamic batch and particle axes)", _export_onnx),
    "ui": ("rs3l.ui:main", "start the MLflow UI on the run's store (the config's tracking.uri or "
           "<results_dir>/mlflow.db) and print the URL of the experiment's training runs; Ctrl-C stops it", _ui),
    "plan": ("rs3l.plan:main", "jobs, Slurm submissions, CPU-hours, disk and merged jets of a config, before a run", _plan),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rs3l", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rs3l {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (target, help_text, build) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _config_arg(p)
        build(p)
        p.set_defaults(target=target)
    return parser


def _disk_full(exc: BaseException | None) -> BaseException | None:
    """The exception in ``exc``'s chain (raised from, or while handling) that says a disk is full:
    OSError ENOSPC or EDQUOT, or SQLite's "database or disk is full" (which SQLAlchemy and MLflow
    wrap in their own exceptions)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        if "database or disk is full" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _written_file(exc: BaseException) -> str | None:
    """The file a write failed on where the error does not say (write() on an open file, e.g. in
    shutil.copyfileobj): the innermost file object open for writing among the traceback's locals."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for i in range(len(frames) - 1, -1, -1):
        for value in frames[i].f_locals.values():
            name, mode = getattr(value, "name", None), getattr(value, "mode", "")
            if not (isinstance(value, io.IOBase) and isinstance(mode, str) and set(mode) & set("wax+")):
                continue
            if isinstance(name, str):
                return name
            # opened with os.fdopen (name: the descriptor, closed by now, e.g. MLflow's staged artifacts): the
            # nearest caller's absolute path local named *path
            for frame in reversed(frames[:i + 1]):
                for key, v in frame.f_locals.items():
                    if key.endswith("path") and isinstance(v, str) and os.path.isabs(v):
                        return v
    return None


def _free_space(path: Path) -> str:
    from rs3l.mounts import nearest_existing

    usage = shutil.disk_usage(nearest_existing(path))
    return f"{usage.free / 1e6:.1f} MB free of {usage.total / 1e6:.1f} MB"


def disk_full_message(command: str, cfg: dict | None, exc: BaseException) -> str:
    """One line naming the full disk, the file being written and what to do."""
    from rs3l.mounts import nearest_existing
    from rs3l.tracking import sqlite_path, tracking_uri

    what, path = "no space left on device", None
    if isinstance(exc, OSError):
        what = "disk quota exceeded" if exc.errno == errno.EDQUOT else what
        # an error of write() on an open file carries no file name
        path = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes, os.PathLike)) else _written_file(exc)
    elif cfg is not None:
        uri = tracking_uri(cfg)
        if sqlite_path(uri) is None:  # the server's own disk is full, not this machine's
            return (f"rs3l {command}: the MLflow tracking server {uri} could not write its store (database or disk "
                    f"is full): free space on the server's disk, then run the same command again")
        path = f"the MLflow store {sqlite_path(uri)}"
    details = [] if isinstance(exc, OSError) else ["SQLite: database or disk is full"]
    results = Path(cfg["results_dir"]).absolute() if cfg is not None else None
    if isinstance(exc, OSError) and path and (results is None or nearest_existing(path).stat().st_dev
                                              != nearest_existing(results).stat().st_dev):
        details.append(f"{_free_space(Path(path))} there")  # another disk than results_dir's
    if results is not None:
        details.append(f"results_dir {results}: {_free_space(results)}")
    todo = "free space (or ask for a larger quota)" if what == "disk quota exceeded" else "free space"
    return (f"rs3l {command}: {what}" + (f" writing {path}" if path else "") + (f" ({'; '.join(details)})" if details else "")
            + f": {todo} or move results_dir, then run the same command again")


class _DiskFullReport(logging.Filter):
    """Says "disk full" in one line, once, before any traceback.

    Some libraries log a full disk's error with its traceback before they raise it (MLflow logs
    SQLite's "database or disk is full" at ERROR): as a filter on the log handler, this prints
    the line first and drops such a record's traceback, which the CLI prints once at the end."""

    def __init__(self, command: str):
        super().__init__()
        self.command, self.cfg, self.said = command, None, False

    def say(self, exc: BaseException) -> None:
        if self.said:
            return
        self.said = True
        try:
            line = disk_full_message(self.command, self.cfg, exc)
        except Exception:  # noqa: BLE001 - the report of an error must not raise one of its own
            line = f"rs3l {self.command}: no space left on device ({exc}): free space, then run the same command again"
        with contextlib.suppress(OSError):  # stderr may be a log file on the very disk that is full
            print(line, file=sys.stderr, flush=True)

    def filter(self, record: logging.LogRecord) -> bool:
        full = _disk_full(record.exc_info[1]) if record.exc_info else None
        if full is not None:
            self.say(full)
            record.exc_info, record.exc_text = None, None
        return True


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # MLflow's loggers pass their records on to the handler below (not to a handler of their own),
    # so that the full-disk filter sees them
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    disk_full = _DiskFullReport(args.command)
    for handler in logging.getLogger().handlers:
        handler.addFilter(disk_full)
    from rs3l.config import ConfigError
    from rs3l.resolve import load

    if os.environ.get("SLURM_JOB_ID"):
        log.info("rs3l %s running as Slurm job %s on %s", args.command, os.environ["SLURM_JOB_ID"],
                 os.environ.get("SLURMD_NODENAME", "?"))
    module, func = args.target.split(":")
    try:
        disk_full.cfg = load(args.config)
        stage = importlib.import_module(module)
        # Lightning's package logger prints to the console itself and also passes every record on
        # to the root logger configured above: each line would appear twice
        logging.getLogger("lightning").handlers.clear()
        getattr(stage, func)(disk_full.cfg, args)
    except Exception as exc:  # noqa: BLE001 - sorted below; anything else is re-raised
        full = _disk_full(exc)
        if full is not None:
            disk_full.say(full)  # the one line that says what happened comes first (if not said yet)
            with contextlib.suppress(OSError):
                traceback.print_exception(exc)  # then the traceback, for the record
            return 2
        if not isinstance(exc, (ConfigError, ValueError, FileNotFoundError, RuntimeError)):
            raise
        log.error("%s", exc)
        print(f"rs3l {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
