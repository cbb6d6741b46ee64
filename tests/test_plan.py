"""`rs3l plan` counts what Snakemake schedules; a misspelt Pythia setting stops `snakemake -n`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from conftest import REPO, VENV_BIN, snakemake
from rs3l import config
from rs3l.resolve import load, resolve
from rs3l.plan import format_plan, job_counts, plan


def _job_table(text: str) -> dict[str, int]:
    """The `job  count` table of `snakemake -n`."""
    table = text[text.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


def test_plan_counts_the_jobs_snakemake_schedules(tmp_path):
    cfg = load(REPO / "config" / "smoke.yaml")
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    # a pool-size scan with one job per deep arm, and the study config itself
    scan = {"pretrain": {**raw["pretrain"], "pools": [0.5, 1.0]},
            "finetune": {**raw["finetune"], "arms_per_job": 1, "label_counts": [10]}}
    study = {k: v for k, v in yaml.safe_load((REPO / "config" / "study-2core.yaml").read_text()).items()
             if k != "results_dir"}
    for overrides, base in ((scan, raw), (study, {}), ({"merge": {**cfg["merge"], "chunks_per_part": 1}}, raw)):
        path = tmp_path / "smoke.yaml"
        path.write_text(yaml.safe_dump({**base, **overrides}))
        res = snakemake("-n", results_dir=tmp_path / "r", configfile=str(path))
        scheduled = _job_table(res.stdout + res.stderr)
        counts = job_counts(load(path))
        assert scheduled.pop("total") == sum(counts.values())
        assert scheduled == counts
    out = subprocess.run([str(Path(VENV_BIN) / "rs3l"), "plan", "--config", str(path)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "= 6 units (resimulate jobs)" in out
    assert re.search(r"^merge_part\s+2\s+2$", out, flags=re.M)  # two parts with chunks_per_part 1


def test_plan_bundles_grouped_jobs_as_the_slurm_profile_says(tmp_path):
    cfg = load(REPO / "config" / "study.yaml")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "simulation.smk").write_text('rule resimulate:\n    input:\n        "x"\n    group:\n        "resim"\n'
                                          'rule generate:\n    output:\n        "y"\n')
    for components in ({"resim": 50}, ["resim=50"]):
        profile = tmp_path / "config.yaml"
        profile.write_text(yaml.safe_dump({"executor": "slurm", "group-components": components}))
        p = plan(cfg, profile, rules)
        assert p["jobs"]["resimulate"] == 7 * 300 * 15 == 31_500
        assert p["submissions"]["resimulate"] == 630 and p["submissions"]["generate"] == 2100
    p = plan(cfg, tmp_path / "absent.yaml", rules)  # no profile: one submission per job
    assert p["submissions"]["resimulate"] == 31_500
    text = format_plan(plan(cfg, profile, rules), cfg)
    assert sum(sum(p["jets"][s].values()) for s in p["jets"]) > 1e6  # the study is cluster size
    for needle in ("CPU-hours", "resimulate", "fragments", "hbb", "measured here", "DESIGN.md"):
        assert needle in text


def test_misspelt_pythia_setting_fails_the_dry_run_naming_view_and_setting(tmp_path):
    bad = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    bad["views"] = {"nominal": {}, "seed": {}, "fsr_down": {"settings": ["TimeShower:renormMultFak = 4"]}}
    bad["simulation"]["views"] = ["nominal", "seed", "fsr_down"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = snakemake("-n", results_dir=tmp_path / "r", configfile=str(path), check=False)
    assert res.returncode != 0
    assert "views.fsr_down.settings: Pythia does not know 'TimeShower:renormMultFak = 4'" in res.stdout + res.stderr
    assert not (tmp_path / "r").exists()


def test_pythia_check_names_process_settings_and_out_of_range_values():
    cfg = load(REPO / "config" / "smoke.yaml")
    cases = [("processes", "top", ["Top:gg2ttbar = on", "Top:gg2ttbarr = on"], "processes.top.settings: Pythia does not know"),
             ("views", "fsr_up", ["TimeShower:renormMultFac = 100"], "views.fsr_up.settings: Pythia rejects "
              "'TimeShower:renormMultFac = 100' (variable recognized, but its value is out of range)")]
    for kind, name, settings, message in cases:
        raw = {k: v for k, v in cfg.items()}
        raw[kind] = {**cfg[kind], name: {**cfg[kind][name], "settings": settings}}
        try:
            resolve(raw)
        except config.ConfigError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"{settings} accepted")
    raw = {**cfg, "simulation": {**cfg["simulation"], "pythia_settings": ["Tune:pp = 14", "Tune:ppp = 14"]}}
    try:
        resolve(raw)
    except config.ConfigError as exc:
        assert "simulation.pythia_settings: Pythia does not know 'Tune:ppp = 14'" in str(exc)
    else:
        raise AssertionError("Tune:ppp accepted")
