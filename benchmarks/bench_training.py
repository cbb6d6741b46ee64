"""Pre-training throughput vs data-loader throughput on the same data.

Prints views/s (two views per jet pair) of (1) the training loop (forward, backward,
optimiser step; Lightning, the configured accelerator) and (2) the data loader alone
(read Parquet row groups, draw pairs, pad, shuffle, batch), and their ratio. Target:
the loader is at least 5x faster than training, so that data never starve the model.

    python benchmarks/bench_training.py                       # synthetic data, config/config.yaml
    python benchmarks/bench_training.py --data results/data --config config/config.yaml --steps 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"), help="config YAML (default: %(default)s)")
    p.add_argument("--data", default=None, help="merged data folder; default: make a synthetic one")
    p.add_argument("--jets", type=int, default=6000, help="train jets of the synthetic dataset (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (default: %(default)s)")
    p.add_argument("--encoder", default=None, help="override pretrain.encoder")
    p.add_argument("--batch-size", type=int, default=None, help="override training.batch_size")
    p.add_argument("--num-workers", type=int, default=None, help="override training.num_workers")
    return p.parse_args(argv)


def synthetic_data(cfg: dict, jets: int, folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic import make_dataset

    return make_dataset(folder, n_jets_per_split={"train": jets, "val": max(jets // 10, 100), "test": 0},
                        views=cfg["simulation"]["views"], classes=cfg["classes"],
                        replicas=cfg["simulation"]["replicas"], jets_per_shard=cfg["merge"]["shard_size"],
                        row_group_jets=cfg["merge"]["row_group_size"])


def loader_throughput(dataset, loader, min_seconds: float = 3.0) -> tuple[float, int]:
    """Views per second of iterating ``loader``: whole epochs (start-up included: the shuffle
    buffer fills before the first batch), repeated with new epochs until ``min_seconds``."""
    views, epoch, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        dataset.set_epoch(epoch)
        for batch in loader:
            views += 2 * len(batch["label"])
        epoch += 1
    return views / (time.perf_counter() - start), views


def training_throughput(cfg: dict, datamodule, steps: int) -> float:
    """Views per second of Lightning training steps (first 3 steps are warm-up)."""
    import lightning as L

    from rs3l.models.method import ContrastiveMethod

    class Clock(L.Callback):
        """Wall time from the start of the 4th step to the end of the last (epochs may roll over)."""

        def __init__(self):
            self.t0, self.t1, self.views, self.seen = None, None, 0, 0

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.seen += 1
            if self.seen == 4:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.t0 is not None:
                self.views += 2 * len(batch["label"])
                self.t1 = time.perf_counter()

    t = cfg["training"]
    clock = Clock()
    model = ContrastiveMethod.from_config(cfg, len(t["features"]))
    trainer = L.Trainer(max_epochs=100, max_steps=steps + 3, accelerator=t["accelerator"], devices=1,
                        precision=t["precision"], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[clock])
    trainer.fit(model, datamodule=datamodule)
    if clock.t0 is None or clock.t1 is None:
        raise RuntimeError(f"fewer than 4 training steps ran; use more data than {datamodule.train_set.n_items} pairs")
    return clock.views / (clock.t1 - clock.t0)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from rs3l.resolve import load
    from rs3l.training.data import JetDataModule

    cfg = load(args.config)
    if args.encoder:
        cfg["pretrain"]["encoder"] = args.encoder
    if args.batch_size:
        cfg["training"]["batch_size"] = args.batch_size
    if args.num_workers is not None:
        cfg["training"]["num_workers"] = args.num_workers
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else synthetic_data(cfg, args.jets, Path(tmp) / "data")
        dm = JetDataModule(cfg, data, mode="pairs")
        dm.setup("fit")
        t = cfg["training"]
        print(f"data: {data if args.data else 'synthetic'} ({dm.train_set.n_items} train pairs, views {dm.views})")
        print(f"encoder {cfg['pretrain']['encoder']}, objective {cfg['pretrain']['objective']}, batch {t['batch_size']}, "
              f"max_constituents {t['max_constituents']}, {len(t['features'])} features, num_workers {t['num_workers']}, "
              f"torch threads {torch.get_num_threads()}")
        loader_rate, n_views = loader_throughput(dm.train_set, dm.train_dataloader())
        print(f"data loader alone:  {loader_rate:10.0f} views/s  ({n_views} views)")
        train_rate = training_throughput(cfg, dm, args.steps)
        print(f"training:           {train_rate:10.0f} views/s  ({args.steps} steps)")
        ratio = loader_rate / train_rate
        print(f"ratio loader/training: {ratio:.1f}x  (target >= 5x: {'OK' if ratio >= 5 else 'BELOW TARGET'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
