"""What training earned is kept: a protocol failing after training leaves a partial record and the
final checkpoint (a rerun evaluates without training); a resumed run's wall time covers every
attempt; a killed ``--force`` rerun resumes instead of starting over."""

from __future__ import annotations

import json

import pytest

import clusterbench.evaluate.protocols as protocols
from clusterbench.cli import main
from clusterbench.results.store import ResultsStore
from helpers import records_in

SMALL = "synthetic[n=48,classes=3,size=8]"
CC = ["run", "--methods", "cc[preset=smoke]", "--datasets", SMALL, "--seeds", "0", "--budget", "epochs=2",
      "--device", "cpu", "--protocols", "head", "kmeans", "--quiet"]


def test_a_protocol_failing_after_training_keeps_the_others_and_the_model(tmp_path, capsys, monkeypatch):
    res = tmp_path / "res"

    def no_faiss(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'faiss'")

    monkeypatch.setattr(protocols, "kmeans", no_faiss)
    assert main([*CC, "--results", str(res)]) == 1
    err = capsys.readouterr().err
    (rec,) = records_in(res)
    assert rec["status"] == "partial" and set(rec["protocols"]) == {"head"}
    assert rec["stats"]["augment_compiled"] is False  # the CPU runs the jitter eagerly: the record says so
    assert rec["protocol_errors"] == {"kmeans": "ModuleNotFoundError: No module named 'faiss'"}
    assert "protocol kmeans failed: ModuleNotFoundError" in err
    run_dir = res / "runs" / rec["run_id"]
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "labels.npy").exists()

    out = capsys.readouterr() and main(["report", "--results", str(res)])  # the head result is in the table
    report = capsys.readouterr().out
    assert out == 0 and "| cc[preset=smoke]" in report and "protocol kmeans failed" in report

    monkeypatch.undo()  # faiss is back: the rerun evaluates from the final checkpoint, no training
    assert main([*CC, "--results", str(res)]) == 0
    (rec2,) = records_in(res)
    assert rec2["status"] == "done" and set(rec2["protocols"]) == {"head", "kmeans"}
    assert rec2["stats"]["resumed_from_epoch"] == 2 and rec2["stats"]["steps"] == rec["stats"]["steps"]
    assert rec2["protocols"]["head"] == rec["protocols"]["head"]
    assert rec2["cost"]["attempts"] == 2 and not (run_dir / "checkpoint.pt").exists()


def test_a_resumed_run_records_the_time_of_every_attempt(tmp_path, capsys):
    res = tmp_path / "res"
    args = ["run", "--methods", "kmeans", "--datasets", SMALL, "--seeds", "0", "--results", str(res), "--quiet"]
    assert main(args) == 0
    (rec,) = records_in(res)
    assert rec["cost"]["attempts"] == 1
    run_dir = res / "runs" / rec["run_id"]
    (run_dir / "record.json").unlink()  # as if killed after 30 s: what the attempt clock had saved
    (run_dir / "attempts.json").write_text(json.dumps({"attempts": 1, "seconds": 30.0}))
    assert main(args) == 0
    (rec,) = records_in(res)
    assert rec["cost"]["attempts"] == 2 and rec["cost"]["wall_seconds"] >= 30.0
    assert not (run_dir / "attempts.json").exists()  # done: the next --force starts counting again


def test_a_killed_force_rerun_resumes(tmp_path, capsys, monkeypatch):
    res = tmp_path / "res"
    args = [*CC, "--results", str(res)]
    assert main(args) == 0
    real = ResultsStore.write_record

    def killed(self, *a, **k):  # killed after training, before the record was rewritten
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultsStore, "write_record", killed)
    assert main([*args, "--force"]) == 130
    (rec,) = records_in(res)
    assert (res / "runs" / rec["run_id"] / "checkpoint.pt").exists()  # the --force attempt's model
    monkeypatch.setattr(ResultsStore, "write_record", real)
    assert main([*args, "--force"]) == 0
    (rec2,) = records_in(res)
    assert rec2["stats"]["resumed_from_epoch"] == 2 and rec2["cost"]["attempts"] == 2
    assert rec2["finished_at"] >= rec["finished_at"]
    assert main([*args, "--force"]) == 0  # a --force after a finished one trains again from scratch
    (rec3,) = records_in(res)
    assert "resumed_from_epoch" not in rec3["stats"] and rec3["cost"]["attempts"] == 1


@pytest.mark.parametrize("poison", ["nan"])
def test_nan_during_training_is_a_failed_cell_and_the_grid_goes_on(tmp_path, capsys, poison):
    res = tmp_path / "res"
    rc = main(["run", "--methods", "cc[preset=smoke,lr=1e30]", "kmeans", "--datasets", SMALL, "--seeds", "0",
               "--budget", "epochs=3", "--device", "cpu", "--results", str(res), "--quiet"])
    by = {r["method"]: r for r in records_in(res)}
    assert rc == 1 and by["kmeans"]["status"] == "done"
    assert by["cc"]["status"] == "failed" and "loss became nan" in by["cc"]["error"]["reason"]
