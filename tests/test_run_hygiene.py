"""What a killed or repeated run leaves behind, and what makes two runs one cell.

- labels are written before the record, the record vouches for them (sha256), and a
  finished record never stands beside missing or other labels;
- a rerun removes a killed attempt's temp files and orphan labels;
- IO-only dataset options (``download=true``) are recorded but not part of the run id.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clusterbench import Method, param
from clusterbench.budget import Budget
from clusterbench.cli import main
from clusterbench.settings import EngineSettings
from clusterbench.datasets.synthetic import Synthetic
from clusterbench.datasets.torchvision_sets import Cifar10
from clusterbench.cell import Cell
from clusterbench.plugins import PluginRef, Registry
from clusterbench.results.schema import SCHEMA_VERSION, load_record
from clusterbench.results.store import ResultsStore
from clusterbench.runner import run_cell

DATA = "synthetic[n=30,classes=3,size=4]"
TEMP_NAMES = (".checkpoint.pt.k1ll3d.tmp", ".record.json.abc123.tmp", ".labels.npy.x_y.tmp")


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def done_record(rid: str, acc: float = 0.5) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": rid, "status": "done", "method": "m",
            "dataset": {"name": "d", "options": {}}, "seed": 0, "budget": {}, "params": {},
            "protocols": {"head": {"acc": acc, "nmi": 0.5, "ari": 0.1}}}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(results: Path, *extra: str, methods: str = "kmeans[nredo=1]", data: str = DATA) -> int:
    return main(["run", "--methods", methods, "--datasets", data, "--seeds", "0", "--results", str(results),
                 "--device", "cpu", *extra])


def only_run_dir(results: Path) -> Path:
    (d,) = results.glob("runs/*")
    return d


# ---- labels and record: order, checksum, stale files ---------------------------------------------
def test_the_record_vouches_for_its_labels(tmp_path):
    store, rid = ResultsStore(tmp_path / "res"), "m--d--s0--aaaaaaaaaaaa"
    store.write_record(rid, done_record(rid), labels=np.array([0, 1, 1]))
    labels = store.run_dir(rid) / "labels.npy"
    rec = load_record(store.record_path(rid))
    assert rec["labels"] == {"file": "labels.npy", "sha256": sha(labels), "n": 3}
    assert store.finished(rid) is not None
    labels.unlink()  # a finished record never points at missing labels: the cell is not finished
    assert store.finished(rid) is None


def test_killed_between_new_labels_and_record_of_a_forced_rerun(tmp_path, monkeypatch):
    store, rid = ResultsStore(tmp_path / "res"), "m--d--s0--aaaaaaaaaaaa"
    store.write_record(rid, done_record(rid, acc=0.5), labels=np.array([0, 1, 1]))
    old = store.record_path(rid).read_bytes()
    real_replace = os.replace

    def die_before_the_record(src, dst, *a, **kw):
        if Path(dst).name == "record.json":
            raise OSError("killed")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", die_before_the_record)
    with pytest.raises(OSError, match="killed"):
        store.write_record(rid, done_record(rid, acc=0.9), labels=np.array([1, 1, 0]))
    monkeypatch.setattr(os, "replace", real_replace)
    # the old record is still there (and kept aside), but it does not match the new labels:
    # it no longer counts as finished, so the cell runs again rather than pairing them
    assert store.record_path(rid).read_bytes() == old
    assert len(list(store.run_dir(rid).glob("record.replaced-*.json"))) == 1
    assert store.finished(rid) is None


def test_a_record_without_labels_removes_stale_ones(tmp_path):
    store, rid = ResultsStore(tmp_path / "res"), "m--d--s0--aaaaaaaaaaaa"
    store.write_record(rid, done_record(rid), labels=np.array([0, 1, 1]))
    failed = {k: v for k, v in done_record(rid).items() if k != "protocols"}
    store.write_record(rid, {**failed, "status": "failed", "error": {"reason": "boom"}})  # --force, then it failed
    assert not (store.run_dir(rid) / "labels.npy").exists()
    assert "labels" not in load_record(store.record_path(rid))


def test_rerun_after_a_kill_cleans_temp_files_and_orphan_labels(tmp_path, capsys):
    results = tmp_path / "res"
    assert run_cli(results) == 0
    d = only_run_dir(results)
    good = np.load(d / "labels.npy")
    # what a process killed between labels and record (and mid-checkpoint) leaves behind
    (d / "record.json").unlink()
    np.save(d / "labels.npy", np.full(len(good), 7, dtype=np.int32))
    for name in TEMP_NAMES:
        (d / name).write_bytes(b"half")
    capsys.readouterr()
    assert run_cli(results) == 0
    assert "done    kmeans[nredo=1] on synthetic seed 0" in capsys.readouterr().err  # ran again
    assert sorted(p.name for p in d.iterdir()) == [".lock", "labels.npy", "record.json"]
    rec = load_record(d / "record.json")
    assert rec["labels"]["sha256"] == sha(d / "labels.npy")
    assert np.array_equal(np.load(d / "labels.npy"), good)


def test_finished_run_whose_labels_were_lost_runs_again(tmp_path, capsys):
    results = tmp_path / "res"
    assert run_cli(results) == 0
    d = only_run_dir(results)
    (d / "labels.npy").unlink()
    capsys.readouterr()
    assert run_cli(results) == 0
    assert "done    kmeans[nredo=1]" in capsys.readouterr().err
    assert load_record(d / "record.json")["labels"]["sha256"] == sha(d / "labels.npy")


class _Resumable(Method):
    """A stand-in deep method: notes what is in its run directory when training starts."""

    name = "resumable"
    description = "test"
    deep = True
    seen: list[str] = []

    @dataclass(frozen=True)
    class Params:
        k: int = param(3, "clusters")

    def fit(self, data, ctx):
        type(self).seen = sorted(p.name for p in ctx.run_dir.iterdir())

    def predict(self, data):
        return np.arange(len(data)) % self.params.k


def test_resumed_run_starts_without_stale_temp_files(tmp_path):
    store = ResultsStore(tmp_path / "res")
    ds = Synthetic(n="30", classes="3", size="4", channels="1")
    data = ds.load()

    def cell():
        c = Cell.of(_Resumable(), PluginRef("resumable"), ds, data.digest(), 0, Budget.parse("epochs=1"),
                    EngineSettings(device="cpu"))
        return run_cell(Registry(), c, data, store)

    rid = cell().run_id
    d = store.run_dir(rid)
    (d / "record.json").unlink()  # killed mid-training: a checkpoint and a half-written one
    (d / "checkpoint.pt").write_bytes(b"epoch 3")
    for name in TEMP_NAMES:
        (d / name).write_bytes(b"half")
    assert cell().status == "done"
    assert _Resumable.seen == [".lock", "attempts.json", "checkpoint.pt"]  # resumed: the checkpoint stays, the debris is gone
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


# ---- io-only dataset options ---------------------------------------------------------------------
def write_cifar10(root: Path, per_batch: int = 3) -> None:
    rng, d = np.random.default_rng(0), root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", per_batch)]:
        with open(d / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": [k % 10 for k in range(n * 7, n * 8)]}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_download_option_is_not_part_of_the_run_id(tmp_path):
    assert Cifar10(root=tmp_path, download="true").identity() == Cifar10(root=tmp_path).identity()
    assert Cifar10(root=tmp_path, download="true").io_identity() == {"download": "true"}
    assert Cifar10(root=tmp_path, split="train").identity() != Cifar10(root=tmp_path).identity()


def test_asking_to_download_data_already_there_is_the_same_cell(tmp_path, capsys, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "check_md5", lambda *args, **kwargs: True)  # the files written are not the originals
    write_cifar10(tmp_path / "data")  # complete: download=true fetches nothing
    results = tmp_path / "res"
    common = ["--data-root", str(tmp_path / "data")]
    assert run_cli(results, *common, data="cifar10[download=true]") == 0
    assert run_cli(results, *common, data="cifar10") == 0
    err = capsys.readouterr().err
    assert "skipped kmeans[nredo=1] on cifar10 seed 0" in err
    (rec,) = [json.loads(p.read_text()) for p in results.glob("runs/*/record.json")]
    assert rec["dataset"]["options"] == {} and rec["dataset"]["io_options"] == {"download": "true"}
    # the report reloads the data without downloading and files both under one table
    assert main(["report", "--results", str(results), "--format", "csv"]) == 0


def test_report_does_not_draw_labels_the_record_does_not_vouch_for(tmp_path, capsys):
    results = tmp_path / "res"
    assert run_cli(results) == 0
    d = only_run_dir(results)
    np.save(d / "labels.npy", np.zeros(30, dtype=np.int32))  # other labels of the right shape
    capsys.readouterr()
    assert main(["report", "--results", str(results), "--html", "-o", str(tmp_path / "r.html")]) == 0
    assert "is not the labels this record was written with" in capsys.readouterr().err
