"""External hard-process samples: a process defined by `lhe: <path or glob>` (issue #11, item 5).

The input is tests/data/mg5_ttbar.lhe: 40 t tbar -> b q q' b q q' events of `rs3l generate` dressed as
MadGraph5_aMC@NLO writes them (banner, <MGVersion>, <MG5ProcCard>, <initrwgt>, two processes in <init>
with a <generator> tag, IDWTUP -4, non-unit weights, `#aMCatNLO` comment lines, <mgrwt> and <rwgt>);
tests/data/make_mg5_lhe.py made it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pylhe
import pytest
import yaml

from conftest import REPO, VENV_BIN, snakemake
from rs3l import config
from rs3l.resolve import load, resolve
from rs3l.data import merge
from rs3l.physics import lhe, lhe_input
from rs3l.physics.lhe_input import LHEInputError
from rs3l.plan import format_plan, job_counts, plan, process_chunks

MG5 = REPO / "tests" / "data" / "mg5_ttbar.lhe"
N_EVENTS = 40
TOP = {"kind": "resonance", "pdg_id": 6, "n_partons": 3, "label": "top"}


def _raw(pattern, chunks=3, events_per_chunk=16, **proc) -> dict:
    return {"simulation": {"processes": ["qcd", "ttmg"], "events_per_chunk": events_per_chunk, "chunks": chunks},
            "processes": {"qcd": {"settings": ["HardQCD:all = on"], "labelling": {"kind": "parton"}},
                          "ttmg": {"lhe": str(pattern), "labelling": TOP, **proc}}}


def _cfg(pattern, results_dir=None, **kwargs) -> dict:
    raw = _raw(pattern, **kwargs)
    if results_dir is not None:
        raw["results_dir"] = str(results_dir)
    return resolve(raw)


def _source_events(path):
    return list(pylhe.LHEFile.fromfile(str(path)).events)


@pytest.fixture(scope="module", params=["plain", "gzip"])
def mg5_file(request, tmp_path_factory):
    if request.param == "plain":
        return MG5
    path = tmp_path_factory.mktemp("gz") / "mg5_ttbar.lhe.gz"
    path.write_bytes(gzip.compress(MG5.read_bytes()))
    return path


def test_madgraph_file_splits_into_the_expected_chunks_deterministically(mg5_file, tmp_path):
    """40 events, 16 per chunk: chunks of 16, 16 and 8 events holding the source events in order, with their
    process ids (two <init> processes) and weights; the same input gives the same bytes twice."""
    cfg = _cfg(mg5_file)
    assert process_chunks(cfg) == {"qcd": 3, "ttmg": 3}
    record = lhe_input.split(cfg, "ttmg", tmp_path / "a")
    again = lhe_input.split(cfg, "ttmg", tmp_path / "b")
    assert record == again
    for c in range(3):
        assert (tmp_path / "a" / f"chunk{c}.lhe.gz").read_bytes() == (tmp_path / "b" / f"chunk{c}.lhe.gz").read_bytes()
    source = _source_events(mg5_file)
    assert [(ch["first"], ch["stop"]) for ch in record["chunks"]] == [(0, 16), (16, 32), (32, 40)]
    assert record["events"] == record["events_used"] == N_EVENTS and record["weighting"] == -4
    assert record["files"][0]["sha256"] == hashlib.sha256(mg5_file.read_bytes()).hexdigest()
    assert [p["id"] for p in record["init_processes"]] == [1, 2]
    for ch in record["chunks"]:
        path = tmp_path / "a" / f"chunk{ch['chunk']}.lhe.gz"
        assert ch["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        ours = lhe.read(path)  # the reader `rs3l resimulate` uses
        theirs = _source_events(path)
        src = source[ch["first"]:ch["stop"]]
        assert len(ours) == len(theirs) == len(src)
        assert ours.process_id.tolist() == [int(e.eventinfo.pid) for e in src]
        np.testing.assert_allclose([e.eventinfo.weight for e in theirs], [e.eventinfo.weight for e in src], rtol=1e-7)
        assert ch["sum_weights"] == pytest.approx(sum(e.eventinfo.weight for e in src), rel=1e-7)
        for i in (0, len(src) - 1):
            assert ours.particles.id[i].tolist() == [p.id for p in src[i].particles]
            assert ours.particles.mother1[i].tolist() == [p.mother1 for p in src[i].particles]
            np.testing.assert_allclose(ours.particles.pz[i].to_numpy(), [p.pz for p in src[i].particles], rtol=1e-9)
        assert set(ours.process_id.tolist()) <= {1, 2}
    # both processes of <init> occur (gg and qq~ initial states)
    assert {int(e.eventinfo.pid) for e in source} == {1, 2}


def test_simulation_chunks_caps_the_chunks_of_an_lhe_process(tmp_path):
    """simulation.chunks = 2 keeps the first 2 x 16 events, like a Pythia process of that size."""
    cfg = _cfg(MG5, chunks=2)
    assert process_chunks(cfg) == {"qcd": 2, "ttmg": 2}
    record = lhe_input.split(cfg, "ttmg", tmp_path)
    assert record["events"] == N_EVENTS and record["events_used"] == 32
    assert sorted(p.name for p in tmp_path.glob("chunk*")) == ["chunk0.lhe.gz", "chunk1.lhe.gz"]


def _split_text(text: str, at: int) -> tuple[str, str]:
    """The file's events [0, at) and [at, N) as two complete LHE files."""
    head, body = text.split("<event>", 1)
    events = ("<event>" + body).split("</event>\n")[:-1]
    tail = "</LesHouchesEvents>\n"
    return (head + "".join(e + "</event>\n" for e in events[:at]) + tail,
            head + "".join(e + "</event>\n" for e in events[at:]) + tail)


def test_a_glob_reads_its_files_in_sorted_path_order(tmp_path):
    """Two files (25 + 15 events) matched by a glob give the chunks of the single file; the record maps
    each chunk to its source event ranges."""
    first, second = _split_text(MG5.read_text(), 25)
    (tmp_path / "run_02.lhe").write_text(second)
    (tmp_path / "run_01.lhe").write_text(first)
    cfg = _cfg(tmp_path / "run_*.lhe")
    record = lhe_input.split(cfg, "ttmg", tmp_path / "out")
    assert [Path(f["path"]).name for f in record["files"]] == ["run_01.lhe", "run_02.lhe"]
    assert [f["events"] for f in record["files"]] == [25, 15]
    assert record["chunks"][1]["sources"] == [[0, 16, 25], [1, 0, 7]]
    single = lhe_input.split(_cfg(MG5), "ttmg", tmp_path / "single")
    for c in range(3):
        a, b = lhe.read(tmp_path / "out" / f"chunk{c}.lhe.gz"), lhe.read(tmp_path / "single" / f"chunk{c}.lhe.gz")
        np.testing.assert_array_equal(a.particles.px.to_list(), b.particles.px.to_list())
    assert [c["sum_weights"] for c in record["chunks"]] == pytest.approx([c["sum_weights"] for c in single["chunks"]])


def test_split_chunk_resimulates_with_real_pythia_into_top_jets(tmp_path):
    """A chunk of the MadGraph-style file (IDWTUP -4, two processes, weights != 1) is showered by Pythia
    through `rs3l resimulate`; its boosted tops give fat jets labelled top, keyed by the LHE process."""
    cfg = _cfg(MG5, results_dir=tmp_path / "r")
    lhe_input.split(cfg, "ttmg", tmp_path / "r" / "lhe" / "ttmg")
    cfg_path = tmp_path / "r" / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "frag.parquet"
    subprocess.run([str(Path(VENV_BIN) / "rs3l"), "resimulate", "--config", str(cfg_path), "--lhe",
                    str(tmp_path / "r" / "lhe" / "ttmg" / "chunk0.lhe.gz"), "--view", "nominal", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    jets = pq.read_table(out).to_pandas()
    assert len(jets) >= 4  # 16 events with pT-hat > 400 GeV tops: about 0.56 labelled jets per event
    assert set(jets["label_name"]) == {"top"} and set(jets["process"]) == {"ttmg"} and set(jets["chunk"]) == {0}
    assert jets["event"].between(0, 15).all()
    assert (jets["pt"] > cfg["jets"]["pt_min"]).all()
    # merge copies the split record into manifest.json
    assert merge.lhe_sources(cfg)["ttmg"]["chunks"][0]["stop"] == 16


def _bad_files(tmp_path) -> dict[str, Path]:
    text = MG5.read_text()
    cut = len(text) * 2 // 3
    files = {
        "truncated": ("cut.lhe", text[:cut].encode()),
        "truncated_gzip": ("cut.lhe.gz", gzip.compress(text.encode())[:20_000]),
        "truncated_after_event": ("cut_event.lhe", text[:text.rindex("</event>") + len("</event>\n")].encode()),
        "empty": ("empty.lhe", b""),
        "empty_gzip": ("empty.lhe.gz", gzip.compress(b"")),
        "not_lhe": ("table.lhe", b"px,py,pz,e\n1,2,3,4\n" * 50),
        "no_events": ("noevents.lhe", (text[:text.index("<event>")] + "</LesHouchesEvents>\n").encode()),
        "particle_count": ("count.lhe", text.replace("<event>\n 12 1 ", "<event>\n 13 1 ", 1).encode()),
    }
    out = {}
    for kind, (name, data) in files.items():
        out[kind] = tmp_path / name
        out[kind].write_bytes(data)
    return out


@pytest.mark.parametrize("kind, why", [
    ("truncated", "truncated"), ("truncated_gzip", "truncated or not valid gzip"),
    ("truncated_after_event", "truncated"), ("empty", "empty"), ("empty_gzip", "empty"),
    ("not_lhe", "not an LHE file"), ("no_events", "no <event>"), ("particle_count", "announces 13 particles"),
])
def test_a_bad_file_fails_the_split_naming_the_file(tmp_path, kind, why):
    """A damaged source stops `rs3l split-lhe` (the only upstream of re-simulation) with the file named."""
    path = _bad_files(tmp_path)[kind]
    cfg = _cfg(path)
    with pytest.raises(LHEInputError) as err:
        lhe_input.split(cfg, "ttmg", tmp_path / "out")
    assert str(path) in str(err.value) and why in str(err.value)
    assert not (tmp_path / "out" / lhe_input.RECORD).exists()


def test_the_cli_reports_a_bad_file_and_exits_nonzero(tmp_path):
    path = _bad_files(tmp_path)["truncated"]
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_raw(path)))
    res = subprocess.run([str(Path(VENV_BIN) / "rs3l"), "split-lhe", "--config", str(cfg_path), "--process", "ttmg",
                          "--out-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"LHE file '{path}' is truncated" in res.stderr


def test_negative_weights_are_refused_unless_kept(tmp_path):
    """NLO samples carry negative weights: refused by default, naming the key that keeps them; kept ones are
    counted in the record."""
    text = MG5.read_text()
    path = tmp_path / "nlo.lhe"
    path.write_text(re.sub(r"(<event>\n \d+ \d )\+", r"\1-", text, count=3))
    with pytest.raises(LHEInputError, match=r"negative weight.*processes\.ttmg\.negative_weights: keep"):
        lhe_input.split(_cfg(path), "ttmg", tmp_path / "a")
    record = lhe_input.split(_cfg(path, negative_weights="keep"), "ttmg", tmp_path / "b")
    assert record["files"][0]["negative_weights"] == 3 and record["chunks"][0]["negative_weights"] == 3


def test_beams_must_match_the_configured_energy_and_each_other(tmp_path):
    text = MG5.read_text()
    other = tmp_path / "b.lhe"
    other.write_text(text.replace("+6.5000000000e+03 +6.5000000000e+03", "+7.0000000000e+03 +7.0000000000e+03"))
    with pytest.raises(LHEInputError, match=r"b\.lhe.*simulation\.sqrt_s = 13000"):
        lhe_input.split(_cfg(other), "ttmg", tmp_path / "out")
    shutil.copy(MG5, tmp_path / "a.lhe")
    with pytest.raises(LHEInputError, match=r"b\.lhe.*differ from those of .*a\.lhe"):
        lhe_input.split(_cfg(tmp_path / "*.lhe"), "ttmg", tmp_path / "out")


@pytest.mark.parametrize("proc, message", [
    ({"settings": ["Top:gg2ttbar = on"]}, r"processes\.ttmg: give exactly one of 'settings'.*got both"),
    ({"lhe": None}, r"processes\.ttmg: give exactly one of 'settings'.*got neither"),
    ({"lhe": "no/such/dir/*.lhe"}, r"processes\.ttmg\.lhe: no file matches 'no/such/dir/\*\.lhe'"),
    ({"pt_hat_min": 300.0}, r"processes\.ttmg\.pt_hat_min does not apply to an 'lhe' process"),
])
def test_bad_process_source_is_rejected_at_config_resolution(proc, message):
    raw = _raw(MG5)
    raw["processes"]["ttmg"].update(proc)
    if proc.get("lhe", "") is None:
        del raw["processes"]["ttmg"]["lhe"]
    with pytest.raises(config.ConfigError, match=message):
        resolve(raw)


def test_lhe_process_defaults_leave_pythia_processes_unchanged():
    """negative_weights is filled in for lhe processes only, pt_hat_min for Pythia processes only."""
    cfg = _cfg(MG5)
    assert cfg["processes"]["ttmg"] == {"lhe": str(MG5), "labelling": TOP, "negative_weights": "refuse"}
    assert cfg["processes"]["qcd"]["pt_hat_min"] == 400.0 and "negative_weights" not in cfg["processes"]["qcd"]


def test_dry_run_schedules_split_lhe_instead_of_generate(tmp_path):
    """`snakemake -n`: the LHE process gets one split job and no generate job; `rs3l plan` counts the same."""
    path = tmp_path / "lhe.yaml"
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    raw["simulation"]["processes"] = ["qcd", "ttmg"]
    raw["simulation"]["events_per_chunk"] = 16
    raw["simulation"]["chunks"] = 2
    raw["processes"] = {**raw.get("processes", {}), **_raw(MG5)["processes"]}
    path.write_text(yaml.safe_dump(raw))
    res = snakemake("-n", results_dir=tmp_path / "r", configfile=str(path))
    text = res.stdout + res.stderr
    table = text[text.index("Job stats:"):]
    scheduled = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}
    assert scheduled["split_lhe_ttmg"] == 1
    assert scheduled["generate"] == 2  # qcd's two chunks only
    jobs = re.split(r"\n\s*rule ", text)
    assert not [j for j in jobs if j.startswith("generate:") and "process=ttmg" in j]
    assert [j for j in jobs if j.startswith("resimulate:") and "/lhe/ttmg/chunk1.lhe.gz" in j]
    scheduled.pop("total")
    assert scheduled == job_counts(load(path))


def test_plan_counts_lhe_chunks_from_the_events_of_the_files():
    """With simulation.chunks = 5 and 16 events per chunk, qcd has 5 chunks (80 events) and the 40-event
    file 3 (16 + 16 + 8): `rs3l plan` counts 8 chunks' resimulate jobs and 120 hard events."""
    cfg = _cfg(MG5, chunks=5)
    p = plan(cfg)
    n_views = len(config.view_instances(cfg))
    assert p["chunks"] == {"qcd": 5, "ttmg": 3}
    assert p["jobs"]["generate"] == 5 and p["jobs"]["split_lhe_ttmg"] == 1
    assert p["jobs"]["resimulate"] == 8 * n_views
    assert p["events"] == 5 * 16 + N_EVENTS
    assert "split-lhe" in format_plan(p, cfg)


@pytest.mark.slow
def test_workflow_with_an_lhe_process_runs_to_the_manifest(tmp_path):
    """End to end up to `merge`: Pythia qcd + the MadGraph-style t tbar file, two views; the manifest holds
    top jets and the split record (source sha256, chunk ranges)."""
    path = tmp_path / "lhe.yaml"
    raw = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    raw["simulation"].update({"processes": ["qcd", "ttmg"], "events_per_chunk": 24, "chunks": 1,
                              "views": ["nominal", "seed"]})
    raw["processes"] = {**raw.get("processes", {}), **_raw(MG5)["processes"]}
    path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "r"
    snakemake("--cores", "2", "--workflow-profile", "workflow/profiles/default", "merge", results_dir=results,
              configfile=str(path))
    manifest = json.loads((results / "data" / "manifest.json").read_text())
    record = manifest["lhe_sources"]["ttmg"]
    assert record["files"][0]["sha256"] == hashlib.sha256(MG5.read_bytes()).hexdigest()
    assert [(c["first"], c["stop"]) for c in record["chunks"]] == [(0, 24)] and record["events"] == N_EVENTS
    assert sum(manifest["splits"][s]["per_class"].get("top", 0) for s in manifest["splits"]) > 3
    assert not (results / "lhe" / "ttmg" / "chunk0.lhe.gz").read_bytes().startswith(b"<")  # gzip, as generate's


def test_powheg_style_lhef1_file_with_event_attributes_splits_like_the_madgraph_one(tmp_path):
    """LHEF 1.0 as POWHEG-BOX writes it: a run-card comment and no <header>, `#pwg`/`#rwgt` lines after
    the particles, IDWTUP -4; some events carry LHEF 3 attributes (`<event npLO=" -1 " npNLO=" 1 ">`).
    The chunks hold the same particles and weights as those of the MadGraph-style file."""
    text = MG5.read_text()
    head, events = text[:text.index("<init>")], text[text.index("<init>"):]
    events = re.sub(r"<mgrwt>.*?</mgrwt>\n<rwgt>.*?</rwgt>\n", "#pwgsudakovs 0.5 0.7\n#rwgt 1 3 40 1 2\n", events,
                    flags=re.S)
    events = events.replace("<event>\n", "<event npLO=\" -1 \" npNLO=\" 1 \">\n", 5)
    assert "<header>" in head and "#pwgsudakovs" in events
    path = tmp_path / "pwgevents.lhe"
    path.write_text("<LesHouchesEvents version=\"1.0\">\n<!--\nfile generated with POWHEG-BOX-V2\nncall1 10000\n-->\n"
                    + events)
    powheg = lhe_input.split(_cfg(path), "ttmg", tmp_path / "pwg")
    madgraph = lhe_input.split(_cfg(MG5), "ttmg", tmp_path / "mg")
    assert [c["sum_weights"] for c in powheg["chunks"]] == [c["sum_weights"] for c in madgraph["chunks"]]
    for c in range(3):
        a, b = lhe.read(tmp_path / "pwg" / f"chunk{c}.lhe.gz"), lhe.read(tmp_path / "mg" / f"chunk{c}.lhe.gz")
        assert a.particles.to_list() == b.particles.to_list()
