"""The config schema rejects bad input before any job, naming the key and the allowed values;
catalogues (processes, views) extend the built-in ones."""

import gzip
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import VENV_BIN
from rs3l import config, seeds
from rs3l.resolve import load, resolve


def test_defaults_are_filled_from_the_schema(cfg):
    assert cfg["views"]["fsr_up"]["settings"] == ["TimeShower:renormMultFac = 0.25"]
    assert cfg["views"]["fsr_up"]["intervention"] == "hard"
    assert cfg["detector"]["ecal"]["energy_min"] == pytest.approx(0.5)  # nested defaults too
    assert cfg["jets"]["radius"] == pytest.approx(0.8)


@pytest.mark.parametrize("bad, message", [
    ({"simulation": {"events_per_chunk": -5}}, "simulation.events_per_chunk"),
    ({"simulation": {"chunks": 0}}, "simulation.chunks"),
    ({"simulation": {"views": ["nominal", "fsr_upp"]}}, "unknown view 'fsr_upp'; known: nominal"),
    ({"simulation": {"processes": ["ttbar"]}}, "unknown process 'ttbar'; known: qcd, top"),
    ({"processes": {"top": {"labelling": {"kind": "resonance"}}}}, "processes.top: give exactly one of 'settings'"),
    ({"pretrain": {"encoder": "resnet"}}, "allowed values: particlenet, transformer, deepsets"),
    ({"views": {"nominal": {"intervention": "reco"}}}, "allowed values: hard, parton, detector"),
    ({"views": {"nominal": {}, "x": {"intervention": "parton", "settings": ["TimeShower:pTmin = 1"]}},
      "simulation": {"views": ["nominal", "x"]}}, "may only change hadronization settings"),
    ({"finetune": {"tasks": {"t": {"signal": ["higgs"], "background": ["q"]}}}}, "unknown class 'higgs'"),
    ({"simulatoin": {}}, "allowed keys"),
])
def test_invalid_config_is_rejected_with_the_key_named(bad, message):
    with pytest.raises(config.ConfigError, match=message):
        resolve(bad)


def test_seed_derivation_is_deterministic_and_separates_streams():
    a = seeds.derive_seed(1, "top", 0, "nominal", 0, "shower", 7)
    assert a == seeds.derive_seed(1, "top", 0, "nominal", 0, "shower", 7)
    others = {seeds.derive_seed(1, "top", 0, v, r, "shower", 7) for v in ("nominal", "seed") for r in (0, 1)}
    assert len(others) == 4
    assert seeds.derive_seed(2, "top", 0, "nominal", 0, "shower", 7) != a
    assert 1 <= a <= seeds.PYTHIA_SEED_MAX


def test_the_core_points_callers_of_the_old_resolve_to_rs3l_resolve():
    """rs3l.config no longer resolves (it would skip the stages' checks): the error says where it went."""
    with pytest.raises(AttributeError, match=r"rs3l\.config\.load moved to rs3l\.resolve\.load"):
        config.load("config/config.yaml")


# ----------------------------------------------------------------------------- catalogues

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = config.schema()["properties"]


def readme_lhe_config() -> str:
    """The README's own example of a config with an LHE process (its first yaml block naming `lhe:`)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return next(b for b in blocks if "lhe:" in b)


def test_the_readme_lhe_process_is_added_beside_the_built_in_qcd(tmp_path):
    """The README's snippet, verbatim, as a config: the workflow schedules the built-in qcd and the LHE
    sample, and the resolved config.yaml holds the built-in catalogue plus the new process."""
    snippet = yaml.safe_load(readme_lhe_config())
    assert "qcd" in snippet["simulation"]["processes"] and "qcd" not in snippet["processes"]
    (name, entry), = snippet["processes"].items()
    # the files where the snippet's glob (relative to the working directory) looks for them
    sample = tmp_path / Path(entry["lhe"]).parent / "mg5_ttbar.lhe.gz"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(gzip.compress((REPO / "tests" / "data" / "mg5_ttbar.lhe").read_bytes()))
    (tmp_path / "my.yaml").write_text(readme_lhe_config())
    res = subprocess.run([str(Path(VENV_BIN) / "snakemake"), "-s", str(REPO / "Snakefile"), "-n",
                          "--configfile", "my.yaml", "--config", "results_dir=r"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    scheduled = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", res.stdout, flags=re.M))
    assert scheduled["generate"] == "2" and scheduled[f"split_lhe_{name}"] == "1"  # qcd's chunks, the sample's split
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert list(resolved["processes"]) == [*BUILT_IN["processes"]["default"], name]
    assert resolved["processes"][name] == {**entry, "negative_weights": "refuse"}
    assert resolved["processes"]["qcd"]["settings"] == BUILT_IN["processes"]["default"]["qcd"]["settings"]


def test_a_custom_view_is_added_beside_the_built_in_views():
    cfg = resolve({"simulation": {"views": ["nominal", "seed", "fsr_extreme"]},
                   "views": {"fsr_extreme": {"settings": ["TimeShower:renormMultFac = 0.1"]}}})
    assert list(cfg["views"]) == [*BUILT_IN["views"]["default"], "fsr_extreme"]
    assert cfg["views"]["fsr_extreme"]["settings"] == ["TimeShower:renormMultFac = 0.1"]
    assert cfg["views"]["fsr_extreme"]["intervention"] == "hard"  # the entry's own defaults are filled in
    assert cfg["views"]["nominal"] == resolve({})["views"]["nominal"]


def test_an_entry_replaces_the_built_in_of_its_name_and_null_removes_one():
    cfg = resolve({"views": {"fsr_up": {"settings": ["TimeShower:renormMultFac = 0.5"]}, "vincia": None}})
    assert cfg["views"]["fsr_up"]["settings"] == ["TimeShower:renormMultFac = 0.5"]
    assert "vincia" not in cfg["views"] and "fsr_down" in cfg["views"]
    assert list(cfg["views"]).index("fsr_up") == list(BUILT_IN["views"]["default"]).index("fsr_up")
    with pytest.raises(config.ConfigError, match="unknown view 'vincia'; known: nominal, seed, fsr_up"):
        resolve({"simulation": {"views": ["nominal", "vincia"]}, "views": {"vincia": None}})
    with pytest.raises(config.ConfigError, match="unknown process 'top'"):
        resolve({"processes": {"top": None}})
    # settings, not catalogues: a config's tasks replace the default task
    tasks = {"hbb_vs_qcd": {"signal": ["hbb"], "background": ["q", "g"]}}
    assert list(resolve({"simulation": {"processes": ["qcd", "hbb"]}, "finetune": {"tasks": tasks}})
                ["finetune"]["tasks"]) == ["hbb_vs_qcd"]


# Configs that give no catalogue entries resolve, and hash, exactly as without catalogue merging. First
# computed on an unmodified checkout of main (7caa0e6, before catalogues were merged); recomputed when the
# schema gained keys (the pre-training's pretext head and clip settings, finetune.log_models, inference
# batches of 256) and the default and ablation configs changed what they simulate (a second fsr_scan
# replica, Vincia for the test split only: hence their new simulation hash). The default config's own hash
# changed again with its ParticleNet-Lite encoder, patience 3 and log_models largest (its simulation hash
# did not). On 7caa0e6: 71b94e06d908bd48, 9204a07f064dfa20, 78abebfcedf921dd, 59e468832f29fd03 (simulation
# 8e1fa087ac4fb1e8 for config and ablation).
HASHES_ON_MAIN = {  # config: (config_hash, simulation_hash)
    "config.yaml": ("fb92d2299aa194cb", "fd26d44ac84d6c95"),  # ParticleNet-Lite, patience 3, log_models largest
    "smoke.yaml": ("44049a78a5e65d85", "2d54363c60c4762b"),
    "study.yaml": ("3d5bc0ccbbafb7a5", "9f97c7d90129aa77"),
    "ablation.yaml": ("93d6dc6bcaeae813", "fd26d44ac84d6c95"),
}


@pytest.mark.parametrize("name", HASHES_ON_MAIN)
def test_configs_without_catalogue_entries_hash_as_before(name):
    cfg = load(REPO / "config" / name)
    assert (config.config_hash(cfg), config.simulation_hash(cfg)) == HASHES_ON_MAIN[name]


# ----------------------------------------------------------------------------- results_dir

@pytest.mark.parametrize("case", ["a file", "inside a file", "a folder that cannot be written",
                                  "a folder that cannot be created"])
def test_a_results_dir_that_cannot_hold_results_is_a_one_line_error_before_any_job(tmp_path, case):
    """In the workflow (`snakemake -n`) and in the CLI: one line naming results_dir and the path, nothing
    written. /proc/sys cannot be written even by root (which may write into any mode-0555 folder)."""
    (tmp_path / "results.txt").write_text("not a folder\n")
    path, message = {
        "a file": (tmp_path / "results.txt", "names an existing file; results_dir must be a folder"),
        "inside a file": (tmp_path / "results.txt" / "r", f"is inside '{tmp_path / 'results.txt'}', which is a file"),
        "a folder that cannot be written": (Path("/proc/sys"), "is a folder rs3l cannot write into"),
        "a folder that cannot be created": (Path("/proc/sys/rs3l"), "cannot be created: '/proc/sys' is not writable"),
    }[case]
    line = f"results_dir '{path}' {message}"
    before = sorted(tmp_path.rglob("*"))
    res = subprocess.run([str(Path(VENV_BIN) / "snakemake"), "-n", "--configfile", "config/smoke.yaml",
                          "--config", f"results_dir={path}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    out = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert out[-1].startswith(f"rs3l: error: {line}"), out  # the last line, alone: no traceback after it
    assert not [x for x in out if "Traceback" in x or x.lstrip().startswith("File ")], out
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()),
                                                     "results_dir": str(path)}))
    res = subprocess.run([str(Path(VENV_BIN) / "rs3l"), "plan", "--config", str(tmp_path / "c.yaml")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and f"rs3l plan: error: {line}" in res.stderr, res.stderr
    assert sorted(p for p in tmp_path.rglob("*") if p.name != "c.yaml") == before


def test_an_unused_catalogue_entry_may_label_a_class_the_config_lacks():
    """A config with fewer classes keeps the built-in processes it does not simulate; a simulated one must
    label a class of the config."""
    cfg = resolve({"classes": ["q", "c", "b", "g", "top"], "simulation": {"processes": ["qcd", "top"]},
                   "science": {"anomaly": {"class": "top", "background": ["q", "g"]}}})
    assert cfg["processes"]["wqq"]["labelling"]["label"] == "wqq"
    with pytest.raises(config.ConfigError, match=r"processes\.wqq\.labelling\.label 'wqq' is not a class; classes: q"):
        resolve({"classes": ["q", "c", "b", "g", "top"], "simulation": {"processes": ["qcd", "wqq"]}})
