"""rs3l's encoders against weaver-core's originals at equal widths: train-step throughput, side by side.

Two comparisons, each in one process on the same random batches (padded constituents with
masks, 30-60 real of 64 by default), forward + backward + AdamW step, after warm-up steps:

- ``particlenet``: rs3l's ParticleNet (``encoders.particlenet``: k, channels, hidden, latent_dim)
  against ``weaver.nn.model.ParticleNet.ParticleNet`` with the same k and EdgeConv widths
  (``conv_params = [(k, (c, c, c)) for c in channels]``: rs3l's blocks have 3 layers of width c),
  no fusion block, and weaver's classifier head ``fc_params=[(hidden, 0.0)],
  num_classes=latent_dim``, which is exactly rs3l's head (Linear(c, hidden), ReLU,
  Linear(hidden, latent_dim)). What still differs: rs3l works on the valid constituents and edges
  only (sparse; its first EdgeConv layer is applied per particle, then gathered), weaver on every
  slot of the padded (N, C, P, k) tensor (padding pushed 1e9 away in the kNN); weaver's input
  batch norm counts the padding; rs3l sums over constituents, weaver averages; rs3l's last block
  keeps a shortcut Linear where weaver's (64 -> 64) has none. On CPU weaver's EdgeConv uses its
  CPU gather (``cpu_mode=True``, which weaver itself sets only for inference), on CUDA its default.
- ``particle_transformer``: rs3l's encoder wraps weaver's ``ParticleTransformer``, so both run the
  same network (``encoders.particle_transformer`` widths and dropout, the class token's LayerNorm,
  then one Linear(embed, latent_dim): weaver's ``num_classes=latent_dim, fc_params=[]``). The
  difference is rs3l's wrapping: it builds the four-vectors from (Δη, Δφ, log pT) inside the step
  in float64 and computes the pair features (ln kT, ln z, ln ΔR, ln m²) in float64; its input
  batch norm skips the padding; its batch norms warm up. weaver gets float32 four-vectors
  precomputed outside the timed step, as its data loader would.

Both weaver models run without their sequence trimmer (rs3l has none: every constituent of every
jet is processed); ``--weaver-trim`` turns it on (weaver's default: in training it cuts the padded
length to a random 90-100% quantile of the batch's multiplicities, dropping the constituents beyond).

Interleaved: every round trains rs3l on ``--jets-per-round`` jets, then weaver on as many, so that the
machine's load affects both alike. Prints jets/s (min / median / max over rounds) of each and
rs3l/weaver (median of the per-round ratios) at each batch size; "by CPU s" is the same ratio
from this process's CPU time (on a machine that other work keeps busy, with ``--threads 1``, the
steadier number: it does not count the time the process waited for a core).

    python benchmarks/bench_weaver.py [--threads 2] [--device cpu] [--batch-sizes 128 512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("particlenet", "particle_transformer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"), help="config YAML (default: %(default)s)")
    p.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS),
                   help="comparisons to run (default: both)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512], help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch.set_num_threads (default: this machine's cores, %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--jets-per-round", type=int, default=1024,
                   help="jets each model trains on per round, in whole batches (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each model first (default: %(default)s)")
    p.add_argument("--multiplicity", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="real constituents per jet, uniform (default: 30 60 for 64 slots, scaled with the slots)")
    p.add_argument("--weaver-trim", action="store_true",
                   help="weaver's default sequence trimmer on (default off: rs3l has none; in training it cuts the "
                        "padded length to a random 90-100%% quantile of the batch's multiplicities, dropping the "
                        "constituents beyond)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data

def make_batches(n_batches: int, batch_size: int, particles: int, features: list[str],
                 multiplicity: tuple[int, int], seed: int = 0, n_classes: int = 8) -> list[dict]:
    """Random jets as the loader gives them: x (B, P, F) float32 in ``features`` order, zero-padded,
    mask (B, P) bool (the real constituents first), label (B,) in [0, n_classes).

    Constituents of a 500-1000 GeV jet at |η| < 2: (Δη, Δφ) ~ N(0, 0.1), pT shares exponential,
    one of 5 particle kinds; the derived features come from :func:`rs3l.physics.features.derived_features`."""
    from rs3l.physics.features import derived_features

    rng = np.random.default_rng(seed)
    lo, hi = multiplicity
    out = []
    for _ in range(n_batches):
        B, P = batch_size, particles
        count = rng.integers(lo, hi + 1, B)
        mask = np.arange(P)[None, :] < count[:, None]
        deta, dphi = np.clip(rng.normal(0, 0.1, (2, B, P)), -0.8, 0.8)
        w = rng.exponential(1.0, (B, P)) * mask
        pt = np.maximum(w / w.sum(1, keepdims=True) * rng.uniform(500, 1000, (B, 1)), 0.5)
        e = pt * np.cosh(rng.uniform(-2, 2, (B, 1)) + deta)
        cols = derived_features(deta, dphi, pt, e, (pt * mask).sum(1, keepdims=True), (e * mask).sum(1, keepdims=True))
        kind = rng.choice(5, (B, P), p=[0.02, 0.01, 0.3, 0.57, 0.1])  # e, mu, photon, charged hadron, neutral hadron
        charge = np.where(np.isin(kind, [0, 1, 3]), rng.choice([-1.0, 1.0], (B, P)), 0.0)
        cols.update(part_charge=charge, part_d0=rng.normal(0, 0.05, (B, P)) * (charge != 0),
                    part_dz=rng.normal(0, 0.1, (B, P)) * (charge != 0))
        for i, name in enumerate(("electron", "muon", "photon", "charged_hadron", "neutral_hadron")):
            cols[f"part_is_{name}"] = kind == i
        missing = [f for f in features if f not in cols]
        if missing:
            raise ValueError(f"make_batches cannot make the features {missing}")
        x = np.stack([cols[f] for f in features], axis=-1).astype(np.float32) * mask[..., None]
        out.append({"x": x, "mask": mask, "label": rng.integers(0, n_classes, B)})
    return out


# ----------------------------------------------------------------------------- models

def _quiet_weaver():
    """weaver logs every constructor argument at INFO."""
    logging.getLogger("weaver").setLevel(logging.WARNING)


def particlenet_pair(cfg: dict, n_features: int, device, weaver_trim: bool = False):
    """(rs3l ParticleNet, weaver ParticleNet, weaver's inputs from a batch) at equal widths."""
    import torch
    from weaver.nn.model import ParticleNet as weaver_pn

    from rs3l.models.encoders import build_encoder, encoder_params

    _quiet_weaver()
    p = encoder_params("particlenet", cfg)
    rs3l = build_encoder("particlenet", cfg, n_features)
    weaver = weaver_pn.ParticleNet(n_features, p["latent_dim"], conv_params=[(p["k"], (c, c, c)) for c in p["channels"]],
                                   fc_params=[(p["hidden"], 0.0)], use_fusion=False, trim=weaver_trim)
    if torch.device(device).type == "cpu":  # weaver's CPU gather (it sets it only with for_inference)
        for block in weaver.edge_convs:
            block.get_graph_feature = functools.partial(weaver_pn.get_graph_feature, cpu_mode=True)

    def weaver_inputs(x, mask):
        features = x.transpose(1, 2).contiguous()  # (N, C, P)
        return (features[:, :2].contiguous(), features, mask.unsqueeze(1))

    return rs3l, weaver, weaver_inputs


def particle_transformer_pair(cfg: dict, n_features: int, device, weaver_trim: bool = False):
    """(rs3l ParticleTransformer, weaver ParticleTransformer, weaver's inputs) with the same network."""
    import torch
    from weaver.nn.model.ParticleTransformer import ParticleTransformer as WeaverParT

    from rs3l.models.encoders import build_encoder, encoder_params

    _quiet_weaver()
    p = encoder_params("particle_transformer", cfg)
    rs3l = build_encoder("particle_transformer", cfg, n_features)
    drop = {"dropout": p["dropout"], "attn_dropout": p["dropout"], "activation_dropout": p["dropout"]}
    weaver = WeaverParT(n_features, num_classes=p["latent_dim"], fc_params=[], embed_dims=list(p["embed_dims"]),
                        pair_embed_dims=list(p["pair_embed_dims"]), num_heads=p["num_heads"],
                        num_layers=p["num_layers"], num_cls_layers=p["num_cls_layers"], block_params=drop,
                        cls_block_params=drop, trim=weaver_trim)

    def weaver_inputs(x, mask):
        with torch.no_grad():
            v = rs3l.four_vectors(x) * mask.unsqueeze(1)  # float32, (N, 4, P)
        return (x.transpose(1, 2).contiguous(), v.contiguous(), mask.unsqueeze(1))

    return rs3l, weaver, weaver_inputs


PAIRS = {"particlenet": particlenet_pair, "particle_transformer": particle_transformer_pair}


class Trainer:
    """One model, its AdamW and its inputs prepared from every batch; ``steps(n)`` trains and times itself."""

    def __init__(self, model, inputs: list[tuple], labels: list, device, lr: float, weight_decay: float):
        import torch

        self.model = model.to(device).train()
        self.inputs, self.labels, self.device = inputs, labels, torch.device(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.losses, self.bad = [], torch.zeros((), dtype=torch.long, device=device)
        self.i = 0

    def _sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def steps(self, n: int) -> tuple[float, float]:
        """Train ``n`` steps (cycling over the batches); returns the wall and the CPU seconds they took."""
        import torch

        self._sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            b = self.i % len(self.inputs)
            out = self.model(*self.inputs[b])
            loss = torch.nn.functional.cross_entropy(out, self.labels[b])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.losses.append(loss.detach())
            self.bad += (~torch.isfinite(out.detach())).sum()
            self.i += 1
        self._sync()
        return time.perf_counter() - t0, time.process_time() - c0


def compare(encoder: str, cfg: dict, batch_size: int, particles: int | None = None, rounds: int = 7, steps: int = 4,
            warmup: int = 3, device: str = "cpu", multiplicity: tuple[int, int] | None = None, n_batches: int = 4,
            seed: int = 0, weaver_trim: bool = False) -> dict:
    """rs3l's ``encoder`` against weaver's, interleaved train steps on the same batches.

    Returns ``rs3l``/``weaver``: jets/s of each round, ``ratio``: rs3l/weaver of each round,
    ``cpu_ratio``: the same by this process's CPU seconds (weaver's / rs3l's; robust to a busy machine
    with one thread, inflated by spinning threads with several),
    ``losses_rs3l``/``losses_weaver``: every step's loss (warm-up included), ``nonfinite_rs3l``/
    ``nonfinite_weaver``: non-finite output entries seen, ``params_rs3l``/``params_weaver``."""
    import torch

    t = cfg["training"]
    features = list(t["features"])
    particles = particles or t["max_constituents"]
    multiplicity = multiplicity or (round(particles * 30 / 64), round(particles * 60 / 64))
    torch.manual_seed(seed)
    rs3l, weaver, weaver_inputs = PAIRS[encoder](cfg, len(features), device, weaver_trim)
    batches = make_batches(n_batches, batch_size, particles, features, multiplicity, seed, n_classes=rs3l.latent_dim)
    as_tensors = [(torch.from_numpy(b["x"]).to(device), torch.from_numpy(b["mask"]).to(device),
                   torch.from_numpy(b["label"]).to(device)) for b in batches]
    labels = [label for _, _, label in as_tensors]
    lr, wd = t["learning_rate"], t["weight_decay"]
    rs3l.to(device)  # before weaver_inputs, which may use its buffers
    sides = {"rs3l": Trainer(rs3l, [(x, m) for x, m, _ in as_tensors], labels, device, lr, wd),
             "weaver": Trainer(weaver, [weaver_inputs(x, m) for x, m, _ in as_tensors], labels, device, lr, wd)}
    for side in sides.values():
        side.steps(warmup)
    rates = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            wall, cpu_s = side.steps(steps)
            rates[name].append(steps * batch_size / wall)
            cpu[name].append(cpu_s)
    result = {name: rates[name] for name in sides}
    result["ratio"] = [a / b for a, b in zip(rates["rs3l"], rates["weaver"])]
    result["cpu_ratio"] = [b / a for a, b in zip(cpu["rs3l"], cpu["weaver"])]
    for name, side in sides.items():
        result[f"losses_{name}"] = [float(v) for v in side.losses]
        result[f"nonfinite_{name}"] = int(side.bad)
        result[f"params_{name}"] = sum(p.numel() for p in side.model.parameters())
    return result


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from rs3l.resolve import load
    from rs3l.models.encoders import encoder_params

    cfg = load(args.config)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    t = cfg["training"]
    P = t["max_constituents"]
    mult = tuple(args.multiplicity) if args.multiplicity else (round(P * 30 / 64), round(P * 60 / 64))
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{os.cpu_count()} CPUs"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"{len(t['features'])} features, {P} constituent slots ({mult[0]}-{mult[1]} real); "
          f"{args.rounds} interleaved rounds of {args.jets_per_round} jets after {args.warmup} warm-up steps; AdamW; "
          f"weaver's sequence trimmer {'on' if args.weaver_trim else 'off'}")
    for enc in args.encoders:
        widths = {k: v for k, v in encoder_params(enc, cfg).items() if k != "features"}
        print(f"\n{enc}: {widths}")
        print(f"{'batch':>6} {'params rs3l/weaver':>19}  {'rs3l jets/s min/med/max':>25}  "
              f"{'weaver jets/s min/med/max':>25}  {'rs3l/weaver (min-max)':>22}  {'by CPU s':>8}")
        for bs in args.batch_sizes:
            steps = max(1, round(args.jets_per_round / bs))
            r = compare(enc, cfg, bs, P, args.rounds, steps, args.warmup, device, mult,
                        weaver_trim=args.weaver_trim)
            fmt = lambda v: f"{min(v):7.0f} {statistics.median(v):7.0f} {max(v):7.0f}"  # noqa: E731
            print(f"{bs:>6} {r['params_rs3l']:>9}/{r['params_weaver']:<9}  {fmt(r['rs3l']):>25}  "
                  f"{fmt(r['weaver']):>25}  {statistics.median(r['ratio']):8.2f}x ({min(r['ratio']):.2f}-"
                  f"{max(r['ratio']):.2f})  {statistics.median(r['cpu_ratio']):7.2f}x", flush=True)
            if r["nonfinite_rs3l"] or r["nonfinite_weaver"]:
                print(f"       non-finite outputs: rs3l {r['nonfinite_rs3l']}, weaver {r['nonfinite_weaver']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
