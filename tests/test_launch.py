"""DDP under Slurm needs one task per device (Lightning reads SLURM_NTASKS); the layout and the
srun that starts the tasks follow `training.devices` x `training.num_nodes`."""

from __future__ import annotations

import pytest

from rs3l.training.launch import ddp_layout, slurm_resources, srun_prefix


def cfg(devices, nodes=1):
    return {"training": {"devices": devices, "num_nodes": nodes}}


@pytest.mark.parametrize("devices, layout", [("auto", (1, 1, 1)), (-1, (1, 1, 1)), ("-1", (1, 1, 1)), (1, (1, 1, 1)),
                                             (4, (4, 1, 4)), ("2", (2, 1, 2)), ("0,1", (2, 1, 2)), ([0, 2, 3], (3, 1, 3)),
                                             ("0,", (1, 1, 1))])
def test_layout_follows_lightning_device_forms(devices, layout):
    assert ddp_layout(cfg(devices)) == layout


def test_one_device_is_an_ordinary_job():
    assert slurm_resources(cfg("auto")) == {}
    assert srun_prefix(cfg(1), 4, 1) == ""


def test_ddp_is_one_task_per_device_over_the_nodes():
    c = cfg(4, nodes=2)
    assert slurm_resources(c) == {"mpi": "srun", "tasks": 8, "nodes": 2}
    cmd = srun_prefix(c, 6, 4)
    assert cmd.startswith("srun ")
    for flag in ("--ntasks=8", "--ntasks-per-node=4", "--nodes=2", "--cpus-per-task=6", "--gpu-bind=none"):
        assert flag in cmd.split()
    assert "--gpu-bind=none" not in srun_prefix(c, 6, 0)
