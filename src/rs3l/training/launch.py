"""How a multi-device pre-training is launched on Slurm: one task per device.

Lightning's DDP under Slurm expects to be started by ``srun`` with ``SLURM_NTASKS`` equal to
devices x nodes; it does not spawn the other ranks itself there. The executor plugin's job step
runs every job as ``srun -n1`` (world size 1), so the pre-training rule is a Snakemake "MPI"
job (``mpi``, ``tasks`` resources: the plugin submits ``--ntasks`` = world size and runs the job
without its own ``srun -n1``) and launches ``rs3l pretrain`` through the ``srun`` of
:func:`srun_prefix`. Outside Slurm nothing changes: Lightning starts its ranks as subprocesses.
"""

from __future__ import annotations


def ddp_layout(cfg: dict) -> tuple[int, int, int]:
    """(devices per node, nodes, world size) of ``training``; ``devices: auto`` (or -1) counts as 1.

    Only an explicit device count (an integer, "2", or a list of device indices) asks for DDP;
    Lightning's "auto" picks the visible devices at run time, which a Slurm request cannot know.
    """
    t = cfg["training"]
    devices = t["devices"]
    if isinstance(devices, str):  # Lightning's string forms: "auto", "-1", "2", "0,1"
        parts = [d.strip() for d in devices.split(",") if d.strip()]
        devices = parts if len(parts) > 1 else (int(parts[0]) if parts and parts[0].lstrip("-").isdigit() else 1)
    n = len(devices) if isinstance(devices, list) else max(int(devices), 1)
    nodes = int(t["num_nodes"])
    return n, nodes, n * nodes


def slurm_resources(cfg: dict) -> dict:
    """Extra Snakemake resources of the pre-training rule: none for one device; for DDP an MPI
    job of ``tasks`` = world size over ``nodes`` (snakemake-executor-plugin-slurm)."""
    per_node, nodes, world = ddp_layout(cfg)
    if world <= 1:
        return {}
    return {"mpi": "srun", "tasks": world, "nodes": nodes}


def srun_prefix(cfg: dict, cpus_per_task: int, gpus: int) -> str:
    """The ``srun`` that starts one task per device inside the job's allocation ("" for one device).

    The plugin's job step removes the allocation's SLURM_* settings from the environment (only
    the job id stays), so every geometry flag is explicit. With GPUs every task sees all of the
    node's GPUs (``--gpu-bind=none``): Lightning gives rank i the device ``cuda:<local rank>``.
    """
    per_node, nodes, world = ddp_layout(cfg)
    if world <= 1:
        return ""
    flags = [f"--ntasks={world}", f"--ntasks-per-node={per_node}", f"--nodes={nodes}",
             f"--cpus-per-task={max(int(cpus_per_task), 1)}", "--kill-on-bad-exit=1"]
    if gpus:
        flags.append("--gpu-bind=none")
    return "srun " + " ".join(flags)
