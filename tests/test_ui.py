"""`rs3l ui`: the MLflow UI on a run's store, opened in a real (headless) browser on the training runs,
stopped cleanly with Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import VENV_BIN
from rs3l import tracking
from rs3l.resolve import resolve

RUN_NAME = "ui-check"
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/#/experiments/(\d+)\?workflowType=machine_learning")
# this machine shares its cores with long jobs: MLflow's start and Chromium's page load can take minutes
START_TIMEOUT_S, BROWSER_TIMEOUT_S = 600, 900


def chromium() -> str:
    """Chromium's path. Fails where it could be installed (root, apt-get: `scripts/test.sh` installs it),
    skips with the reason only where it cannot."""
    path = shutil.which("chromium")
    if path:
        return path
    how = "bash scripts/setup.sh --with-browser (the Debian package chromium, via apt-get)"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(f"Chromium is not installed: run {how}, as scripts/test.sh does")
    pytest.skip(f"Chromium is not installed and cannot be here ({'no apt-get' if os.geteuid() == 0 else 'not root'}): "
                f"{how} needs root and apt-get")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A workflow's store as the stages write it (rs3l.tracking): the parent and pre-training, fine-tuning
    and evaluation child runs with metrics."""
    import mlflow

    tmp = tmp_path_factory.mktemp("ui")
    raw = {"results_dir": str(tmp / "results"), "run_name": RUN_NAME}
    (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = resolve(raw)
    parent = tracking.init_parent(cfg)
    for name, stage in [("pretrain", "pretrain"), ("finetune-top_vs_qcd-full-0.1-s0", "finetune"),
                        ("evaluate top_vs_qcd full f0.1 s0", "evaluate")]:
        with tracking.child_run(cfg, name=name, stage=stage):
            mlflow.log_metric("val/loss", 0.5)
    return {"config": tmp / "config.yaml", "cfg": cfg, "parent": parent, "tmp": tmp}


def test_rs3l_ui_opens_the_runs_in_a_browser_and_stops_on_ctrl_c(store):
    browser = chromium()
    # its own process group, as a terminal's foreground job: Ctrl-C below goes to the whole group
    ui = subprocess.Popen([str(Path(VENV_BIN) / "rs3l"), "ui", "--config", str(store["config"])],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines, deadline = [], time.monotonic() + START_TIMEOUT_S
        while not (lines and URL.search(lines[-1])):
            line = ui.stdout.readline()
            assert line or ui.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        url = URL.search(lines[-1])
        port, experiment = url.groups()
        assert experiment == tracking.experiment_id(store["cfg"])
        server_pid = int(re.search(r"pid (\d+)", "".join(lines)).group(1))
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                              f"--user-data-dir={store['tmp'] / 'browser'}",  # a fresh browser: no stored UI choices
                              "--virtual-time-budget=20000", "--dump-dom", url.group(0)],
                             capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S).stdout
        (store["tmp"] / "dom.html").write_text(dom)
        # the runs table, not the GenAI overview: the workflow's parent run, and its pre-training run under it
        assert re.search(rf">\s*{RUN_NAME}-workflow\s*<", dom), f"no parent run in the page ({store['tmp']}/dom.html)"
        assert re.search(r">\s*pretrain\s*<", dom), f"no pre-training run in the page ({store['tmp']}/dom.html)"
        assert "matching runs" in dom
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C
        out, _ = ui.communicate(timeout=120)
    assert ui.returncode == 0, out
    assert f"stopped the MLflow UI (pid {server_pid})" in out and "Traceback" not in out, out
    with pytest.raises(ProcessLookupError):  # the server and everything it started are gone
        os.killpg(server_pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_rs3l_ui_without_a_store_says_so_in_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"results_dir": str(tmp_path / "none")}))
    res = subprocess.run([str(Path(VENV_BIN) / "rs3l"), "ui", "--config", str(tmp_path / "c.yaml")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert f"rs3l ui: error: no MLflow store at {tmp_path / 'none' / 'mlflow.db'}" in res.stderr
    assert not (tmp_path / "none").exists()  # nothing was created
