"""A re-simulation unit that finished keeps its fragment when Snakemake runs it again (a retried
bundle, a requeued job, a restarted workflow): ``rs3l resimulate`` links back its receipt instead of
simulating again, only for the same LHE content, settings and view; a failing unit names itself."""

from __future__ import annotations

import logging
import os

import pytest

from rs3l import receipts
from rs3l.atomic import atomic_path, link, temp_path
from rs3l.cli import main as cli_main


def test_receipt_is_reused_for_its_key_only_and_one_is_kept(tmp_path):
    out = tmp_path / "chunk0" / "seed.r0.parquet"
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"first")
    assert receipts.reuse(out, "a" * 64) is None  # nothing finished yet: the unit runs
    receipts.record(out, "a" * 64)
    out.unlink()  # what Snakemake does before it runs a job again
    assert receipts.reuse(out, "b" * 64) is None  # another key (settings, input): runs again
    assert receipts.reuse(out, "a" * 64) == receipts.path(out, "a" * 64)
    assert out.read_bytes() == b"first" and out.stat().st_ino == receipts.path(out, "a" * 64).stat().st_ino
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"second")
    receipts.record(out, "b" * 64)  # the unit's receipt of the old key goes
    assert sorted(p.name for p in out.parent.joinpath(receipts.FOLDER).iterdir()) == [receipts.path(out, "b" * 64).name]


def test_fragments_removed_by_a_cancelled_bundle_are_restored_from_their_receipts(tmp_path):
    """The restart's race (rs3l.cluster): a bundle cancelled just after a unit finished removes that
    unit's fragment, which the restarted Snakemake's DAG already counted as done. Each fragment that
    existed before the cancel comes back as the same file (its receipt, same inode); one without a
    receipt of that inode (none, or a stale receipt of another key) is reported, not invented."""
    from rs3l import cluster

    results = tmp_path / "results"
    chunk = results / "fragments" / "top" / "chunk0"
    frags = {name: chunk / f"{name}.r0.parquet" for name in ("nominal", "seed", "fsr_up")}
    for name, out in frags.items():
        with atomic_path(out) as tmp:
            tmp.write_bytes(name.encode())
    receipts.record(frags["nominal"], "a" * 64)
    receipts.record(frags["fsr_up"], "c" * 64)
    before = cluster.finished_outputs(results)
    assert sorted(before) == sorted(frags.values())
    for out in frags.values():  # what the cancelled bundle's Snakemake does to the outputs of its "failed" units
        out.unlink()
    # a stale receipt (another key, other content) of fsr_up must not stand in for the removed file
    receipts.path(frags["fsr_up"], "c" * 64).unlink()
    with atomic_path(receipts.path(frags["fsr_up"], "d" * 64)) as tmp:
        tmp.write_bytes(b"stale")
    said = []
    lost = cluster.restore_removed(before, said.append)
    assert lost == sorted([frags["fsr_up"], frags["seed"]])
    assert frags["nominal"].read_bytes() == b"nominal" and frags["nominal"].stat().st_ino == before[frags["nominal"]]
    assert not frags["seed"].exists() and not frags["fsr_up"].exists()
    assert len(said) == 1 and "restored from its receipt" in said[0]


def test_temporary_names_differ_per_writer_and_link_replaces_atomically(tmp_path):
    target = tmp_path / "f.parquet"
    assert temp_path(target) != temp_path(target)  # same process, same host: still two names
    assert temp_path(target).name.startswith(".f.parquet.tmp-")
    source = tmp_path / "src"
    source.write_text("x")
    target.write_text("old")
    link(source, target)
    assert target.read_text() == "x" and target.stat().st_ino == source.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "src"]


@pytest.mark.slow
def test_resimulate_reuses_a_finished_unit_and_names_a_failing_one(cfg, lhe_files, tmp_path, caplog, capsys):
    config = tmp_path / "config.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "frag" / "seed.r0.parquet"
    args = ["resimulate", "--config", str(config), "--lhe", str(lhe_files["top"]), "--view", "seed",
            "--out", str(out), "--max-events", "20"]
    assert cli_main(args) == 0
    inode = out.stat().st_ino
    os.unlink(out)
    with caplog.at_level(logging.INFO):
        assert cli_main(args) == 0
    assert "finished before: kept its fragment" in caplog.text and out.stat().st_ino == inode
    # a corrupt LHE file: the error names the unit (LHE file, view, replica, output) and the cause
    bad = tmp_path / "top.lhe.gz"
    bad.write_bytes(lhe_files["top"].read_bytes()[:3000])
    assert cli_main([*args[:4], str(bad), *args[5:]]) == 2
    err = capsys.readouterr().err
    assert f"resimulate unit (LHE file '{bad}', view seed, replica 0, output '{out}')" in err
    assert "is corrupt or truncated" in err
