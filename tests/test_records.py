"""The results store: run ids, atomic records, kept-aside reruns, validation, locks."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clusterbench import Method, param
from clusterbench.api import ConfigError
from clusterbench.budget import Budget
from clusterbench.settings import EngineSettings
from clusterbench.datasets.synthetic import Synthetic
from clusterbench.plugins import Registry
from clusterbench.cell import Cell
from clusterbench.plugins import PluginRef, load_registry
from clusterbench.results.schema import SCHEMA_VERSION, load_record, validate_record
from clusterbench.results.store import MARKER, RecordError, ResultsStore, make_run_id
from clusterbench.runner import run_cell


# ---- helpers -----------------------------------------------------------------------------
def identity(**changes):
    ident = {
        "schema": SCHEMA_VERSION,
        "method": "kmeans",
        "method_version": "1",
        "params": {"n_clusters": 0, "niter": 100},
        "dataset": {"name": "digits", "options": {}},
        "dataset_digest": "abc123",
        "seed": 0,
        "budget": {"epochs": 100.0},
        "protocols": ["head"],
        "engine": {},
    }
    ident.update(changes)
    return ident


def done_record(run_id="kmeans--digits--s0--000000000000", acc=0.79, **changes):
    rec = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "done",
        "method": "kmeans",
        "method_spec": "kmeans",
        "dataset": {"name": "digits", "options": {}},
        "seed": 0,
        "budget": {},
        "params": {"n_clusters": 0},
        "protocols": {"head": {"acc": acc, "nmi": 0.74, "ari": 0.66, "n_clusters": 10}},
        "primary_protocol": "head",
        "cost": {"wall_seconds": 1.0},
    }
    rec.update(changes)
    return rec


def failed_record(run_id="kmeans--digits--s0--000000000000"):
    rec = done_record(run_id, status="failed", error={"reason": "boom"})
    del rec["protocols"]
    return rec


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results")


# ---- run ids -----------------------------------------------------------------------------
def test_run_id_is_stable_and_readable():
    a = make_run_id(identity())
    assert a == make_run_id(identity())
    shuffled = dict(reversed(list(identity().items())))
    shuffled["params"] = {"niter": 100, "n_clusters": 0}
    assert make_run_id(shuffled) == a  # key order never matters
    method, dataset, seed, digest = a.split("--")
    assert (method, dataset, seed) == ("kmeans", "digits", "s0")
    assert len(digest) == 12 and all(c in "0123456789abcdef" for c in digest)


@pytest.mark.parametrize(
    "changes",
    [
        {"params": {"n_clusters": 0, "niter": 99}},
        {"params": {"n_clusters": 0, "niter": 100, "extra": 1}},
        {"seed": 1},
        {"budget": {"epochs": 50.0}},
        {"budget": {"epochs": 100.0, "minutes": 1.0}},
        {"method_version": "2"},
        {"dataset_digest": "abc124"},
        {"dataset": {"name": "digits", "options": {"n": "5"}}},
        {"protocols": ["head", "kmeans"]},
        {"engine": {"precision": "bf16"}},
    ],
)
def test_run_id_changes_with_what_determines_the_result(changes):
    assert make_run_id(identity(**changes)) != make_run_id(identity())


def test_run_id_is_filesystem_safe():
    rid = make_run_id(identity(method="a/b c", dataset={"name": "../x", "options": {}}))
    assert "/" not in rid and " " not in rid
    assert rid.startswith("a_b_c--.._x--s0--")


class _Toy(Method):
    name = "toy-deep"
    description = "labels by image index (for run-id tests)"
    deep = True

    @dataclass(frozen=True)
    class Params:
        k: int = param(3, "clusters")

    def fit(self, data, ctx):
        pass

    def predict(self, data):
        return np.arange(len(data)) % self.params.k


class _ToyShallow(_Toy):
    name = "toy-shallow"
    deep = False


DS = Synthetic(n="30", classes="3", size="4", channels="1")
DATA = DS.load()


def _cell(method, seed=0, budget="epochs=1", settings=None, protocols=None, ref=None):
    return Cell.of(method, ref or PluginRef(method.name), DS, DATA.digest(), seed, Budget.parse(budget),
                   settings or EngineSettings(device="cpu"), protocols)


def _run(store, method_cls, seed=0, budget="epochs=1", k=3, force=False):
    method = method_cls(method_cls.resolve_params({"k": str(k)}))
    return run_cell(Registry(), _cell(method, seed, budget), DATA, store, force=force)


def test_runner_run_ids_follow_params_seed_and_budget(store):
    base = _run(store, _Toy)
    assert base.status == "done"
    assert _run(store, _Toy).run_id == base.run_id
    assert _run(store, _Toy).status == "skipped"
    assert _run(store, _Toy, seed=1).run_id != base.run_id
    assert _run(store, _Toy, k=4).run_id != base.run_id
    assert _run(store, _Toy, budget="epochs=2").run_id != base.run_id
    # a method the engine does not train ignores the budget: same cell
    shallow = _run(store, _ToyShallow, budget="epochs=1")
    assert _run(store, _ToyShallow, budget="epochs=2").run_id == shallow.run_id
    rec = load_record(store.record_path(base.run_id))
    assert rec["status"] == "done" and rec["run_id"] == base.run_id
    assert rec["budget"] == {"epochs": 1.0}


# ---- the cell: one identity ---------------------------------------------------------------
# run ids computed by the runner before the Cell refactor: finished runs of these configurations
# must still be found (a changed id would silently rerun every cell of an existing results directory)
PINNED = {
    "toy": "toy-deep--synthetic--s0--19e007f91ab4",
    "toy-gpu": "toy-deep--synthetic--s1--fd46a85cb9b1",
    "shallow": "toy-shallow--synthetic--s0--4912f7021be9",
    "kmeans": "kmeans--synthetic--s0--0a099aa65b9b",
}
GPU = EngineSettings(device="cuda", precision="bf16", compile=True)


def test_cell_run_ids_are_the_ones_recorded_before():
    kmeans = load_registry().make_method("kmeans[nredo=1]")
    cells = {
        "toy": _cell(_Toy()),
        "toy-gpu": _cell(_Toy(_Toy.resolve_params({"k": "4"})), seed=1, budget="steps=10,minutes=2", settings=GPU,
                         ref=PluginRef.parse("toy-deep[k=4]")),
        "shallow": _cell(_ToyShallow()),
        "kmeans": _cell(kmeans, ref=PluginRef.parse("kmeans[nredo=1]")),
    }
    assert {k: c.run_id for k, c in cells.items()} == PINNED
    assert cells["toy"].run_id == make_run_id(cells["toy"].identity())


def test_cell_identity_is_what_determines_the_result():
    cell = _cell(_Toy(), settings=GPU)
    assert cell.identity() == {
        "schema": SCHEMA_VERSION, "method": "toy-deep", "method_version": "1", "params": {"k": 3},
        "dataset": {"name": "synthetic", "options": DS.identity()["options"]}, "dataset_digest": DATA.digest(),
        "seed": 0, "budget": {"epochs": 1.0}, "protocols": ["head"], "engine": {"precision": "bf16", "compile": True},
    }
    # the device is recorded, not hashed; a shallow method ignores budget and engine
    assert _cell(_Toy(), settings=EngineSettings(device="cuda:1", precision="bf16", compile=True)).run_id == cell.run_id
    assert _cell(_Toy(), settings=EngineSettings(device="cpu", precision="bf16")).run_id != cell.run_id
    shallow = _cell(_ToyShallow(), budget="epochs=1", settings=GPU)
    assert shallow.identity()["budget"] == {} and shallow.identity()["engine"] == {}
    assert _cell(_ToyShallow(), budget="steps=5").run_id == shallow.run_id


def test_cell_record_header_repeats_the_identity():
    cell = _cell(_Toy(), settings=GPU, ref=PluginRef.parse("toy-deep[k=3]"))
    head = cell.record_header(DATA, "test-provider")
    assert head["run_id"] == cell.run_id and head["schema_version"] == SCHEMA_VERSION
    assert head["method_spec"] == "toy-deep[k=3]" and head["method_provider"] == "test-provider"
    assert head["params"] == cell.identity()["params"] and head["budget"] == {"epochs": 1.0}
    assert head["protocols_requested"] == ["head"]
    assert head["dataset"]["digest"] == DATA.digest() and head["dataset"]["n"] == 30
    assert head["engine"]["device"] == "cuda" and head["engine"]["compile"] is True
    assert _cell(_ToyShallow(), settings=GPU).record_header(DATA, "?")["engine"] == {"device": "cpu"}


def test_unsupported_protocols_are_warned_about_not_silently_replaced():
    with pytest.warns(UserWarning, match=r"does not support protocol\(s\) kmeans.*running its 'head' protocol"):
        assert _cell(_Toy(), protocols=["kmeans"]).protocols == ("head",)
    with pytest.warns(UserWarning, match=r"does not support protocol\(s\) linear \(it supports head\)$"):
        assert _cell(_Toy(), protocols=["head", "linear"]).protocols == ("head",)
    with pytest.raises(ConfigError, match="unknown protocol 'bogus'"):
        _cell(_Toy(), protocols=["bogus"])


# ---- atomic writes, kept-aside records -----------------------------------------------------
def test_write_leaves_no_temp_files(store):
    rid = "m--d--s0--aaaaaaaaaaaa"
    path = store.write_record(rid, done_record(rid), labels=np.array([0, 1, 1]))
    assert path == store.record_path(rid)
    assert sorted(p.name for p in store.run_dir(rid).iterdir()) == ["labels.npy", "record.json"]
    assert load_record(path)["run_id"] == rid
    assert np.load(store.run_dir(rid) / "labels.npy").tolist() == [0, 1, 1]


@pytest.mark.parametrize("labels, dtype", [([0, 9, 3], np.int8), ([-1, 0, 127], np.int8), ([0, 128], np.int16),
                                           ([0, 40_000], np.int32), ([], np.int32)])
def test_labels_are_stored_in_the_narrowest_integer_type_and_read_back_as_int32(store, labels, dtype):
    rid = "m--d--s0--aaaaaaaaaaaa"
    rec = done_record(rid)
    store.write_record(rid, rec, labels=np.array(labels, dtype=np.int64))
    on_disk = np.load(store.run_dir(rid) / "labels.npy")
    assert on_disk.dtype == dtype and on_disk.tolist() == labels
    back = store.load_labels(rec, len(labels))
    assert back.dtype == np.int32 and back.tolist() == labels


def test_nan_metrics_are_stored_as_null(store):
    rid = "m--d--s0--aaaaaaaaaaaa"
    rec = done_record(rid)
    rec["protocols"]["head"]["ari"] = float("nan")
    path = store.write_record(rid, rec)
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["protocols"]["head"]["ari"] is None
    load_record(path)  # still valid


@pytest.mark.parametrize("old", [failed_record, done_record])
def test_crash_while_writing_keeps_the_old_record(store, monkeypatch, old):
    rid = "m--d--s0--aaaaaaaaaaaa"
    store.write_record(rid, old(rid))
    before = store.record_path(rid).read_bytes()

    real_replace = os.replace

    def crash(src, dst, *a, **kw):  # the process dies just before the new record lands
        if Path(dst).name == "record.json":
            raise OSError("simulated crash")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", crash)
    new = done_record(rid, acc=0.11)
    with pytest.raises(OSError, match="simulated crash"):
        store.write_record(rid, new)
    monkeypatch.setattr(os, "replace", real_replace)

    assert store.record_path(rid).read_bytes() == before
    assert leftovers(store.run_dir(rid)) == []
    assert load_record(store.record_path(rid))["status"] == old(rid)["status"]


def test_forced_rewrite_keeps_each_finished_record_aside(store):
    rid = "m--d--s0--aaaaaaaaaaaa"
    for acc in (0.5, 0.6, 0.7):
        store.write_record(rid, done_record(rid, acc=acc))
    assert load_record(store.record_path(rid))["protocols"]["head"]["acc"] == 0.7
    aside = sorted(store.run_dir(rid).glob("record.replaced-*.json"))
    kept = sorted(json.loads(p.read_text())["protocols"]["head"]["acc"] for p in aside)
    assert kept == [0.5, 0.6]  # both earlier results, even when replaced within one second
    # kept-aside records are not part of the store's records
    assert [r["protocols"]["head"]["acc"] for r in store.iter_records()] == [0.7]


def test_failed_record_is_simply_replaced(store):
    rid = "m--d--s0--aaaaaaaaaaaa"
    store.write_record(rid, failed_record(rid))
    assert store.finished(rid) is None
    store.write_record(rid, done_record(rid))
    assert store.finished(rid)["status"] == "done"
    assert list(store.run_dir(rid).glob("record.replaced-*")) == []


# ---- validation ---------------------------------------------------------------------------
def _without(key):
    def f(rec):
        del rec[key]
    return f


def _set(path, value):
    def f(rec):
        d = rec
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return f


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (_set(["schema_version"], 0), "record format version 0 is not supported"),
        (_without("schema_version"), "record format version None is not supported"),
        (_without("seed"), "missing field 'seed'"),
        (_without("run_id"), "missing field 'run_id'"),
        (_without("params"), "missing field 'params'"),
        (_set(["seed"], "0"), "field 'seed' should be int, got str"),
        (_set(["seed"], True), "field 'seed' should be int, got bool"),
        (_set(["dataset"], "digits"), "field 'dataset' should be dict"),
        (_set(["budget"], None), "field 'budget' should be dict"),
        (_set(["status"], "running"), "status 'running' is not one of"),
        (_set(["protocols", "head", "acc"], 1.5), "protocols.head.acc=1.5 is outside [0, 1]"),
        (_set(["protocols", "head", "nmi"], -0.1), "protocols.head.nmi=-0.1 is outside [0, 1]"),
        (_set(["protocols", "head", "acc"], "0.8"), "protocols.head.acc should be a number"),
        (_set(["protocols"], {}), "needs a non-empty 'protocols'"),
        (_without("protocols"), "needs a non-empty 'protocols'"),
        (_set(["protocols", "head"], [0.5]), "protocols.head should be an object"),
        (_set(["dataset"], {"options": {}}), "dataset.name is missing"),
    ],
)
def test_invalid_records_are_rejected_naming_the_file(tmp_path, mutate, fragment):
    rec = copy.deepcopy(done_record())
    mutate(rec)
    path = tmp_path / "runs" / "x" / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    with pytest.raises(RecordError) as info:
        load_record(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ":")
    assert fragment in msg


def test_valid_records_pass():
    validate_record(done_record(), "x")
    validate_record(failed_record(), "x")
    rec = done_record()
    rec["protocols"]["head"]["ari"] = None  # a metric that could not be computed
    rec["protocols"]["linear"] = {"accuracy": 1}
    validate_record(rec, "x")


@pytest.mark.parametrize("text", ["{", '{"schema_version": 1,', "", "not json"])
def test_invalid_json_names_the_file(tmp_path, text):
    path = tmp_path / "record.json"
    path.write_text(text)
    with pytest.raises(RecordError, match="not valid JSON") as info:
        load_record(path)
    assert str(path) in str(info.value)


def test_non_object_json(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("[1, 2]")
    with pytest.raises(RecordError, match="must be a JSON object, got list"):
        load_record(path)


def test_store_reads_back_and_reports_broken_records(store):
    good, bad = "m--d--s0--aaaaaaaaaaaa", "m--d--s1--bbbbbbbbbbbb"
    store.write_record(good, done_record(good))
    store.write_record(bad, done_record(bad, seed=1))
    store.record_path(bad).write_text('{"schema_version": 1, "truncated')
    assert store.finished(good)["run_id"] == good
    assert store.finished(bad) is None  # a broken record never counts as finished
    assert store.finished("never--ran--s0--cccccccccccc") is None
    with pytest.raises(RecordError, match=str(store.record_path(bad)).replace(".", r"\.")):
        list(store.iter_records(strict=True))
    assert [r["run_id"] for r in store.iter_records(strict=False)] == [good]


# ---- the results directory ------------------------------------------------------------------
def test_store_creates_marker_and_reopens(tmp_path):
    root = tmp_path / "a" / "b"
    ResultsStore(root)
    assert (root / MARKER).is_file() and (root / "runs").is_dir()
    assert json.loads((root / MARKER).read_text())["schema_version"] == SCHEMA_VERSION
    ResultsStore(root)
    ResultsStore(root, create=False)


def test_store_accepts_an_empty_directory(tmp_path):
    ResultsStore(tmp_path)
    assert (tmp_path / MARKER).exists()


def test_store_refuses_a_non_empty_foreign_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    for create in (True, False):
        with pytest.raises(ConfigError, match="not a clusterbench results directory"):
            ResultsStore(tmp_path, create=create)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]  # nothing written


def test_store_refuses_a_file(tmp_path):
    f = tmp_path / "results.json"
    f.write_text("{}")
    for create in (True, False):
        with pytest.raises(ConfigError, match="is a file"):
            ResultsStore(f, create=create)


def test_store_without_create(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ResultsStore(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a clusterbench results directory"):
        ResultsStore(tmp_path / "empty", create=False)


# ---- locks --------------------------------------------------------------------------------
HOLDER = textwrap.dedent(
    """
    import fcntl, sys
    f = open(sys.argv[1], "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
    sys.stdin.read()  # hold until the parent closes our stdin
    """
)


def test_lock_held_by_another_process(store):
    pytest.importorskip("fcntl")
    rid = "m--d--s0--aaaaaaaaaaaa"
    store.run_dir(rid).mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.run_dir(rid) / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with store.lock(rid) as got:
            assert got is False
        with store.lock("m--d--s1--bbbbbbbbbbbb") as other:
            assert other is True  # other cells are not blocked
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with store.lock(rid) as got:
        assert got is True  # released when the holder exits


def test_lock_is_exclusive_within_a_process_and_released(store):
    pytest.importorskip("fcntl")
    rid = "m--d--s0--aaaaaaaaaaaa"
    with store.lock(rid) as first:
        assert first is True
        with store.lock(rid) as second:
            assert second is False
    with store.lock(rid) as again:
        assert again is True


def test_busy_cell_is_skipped_by_the_runner(store):
    pytest.importorskip("fcntl")
    probe = _run(store, _Toy)  # learn the run id, then forget the record
    store.record_path(probe.run_id).unlink()
    with store.lock(probe.run_id) as got:
        assert got
        out = run_cell(Registry(), _cell(_Toy()), DATA, store)
    assert out.run_id == probe.run_id
    assert out.status == "busy"
    assert not store.record_path(probe.run_id).exists()


def test_a_store_another_process_is_creating_is_accepted(tmp_path):
    """Two processes start on one new --results: the second may see runs/ or the marker's temp
    file before the marker lands; that is a store being created, not someone else's folder."""
    root = tmp_path / "res"
    (root / "runs").mkdir(parents=True)
    (root / f".{MARKER}.abc123.tmp").write_text("{}")
    ResultsStore(root)
    assert (root / MARKER).exists()
    other = tmp_path / "other"
    (other / "runs").mkdir(parents=True)
    (other / "runs" / "x").mkdir()  # a non-empty runs/ without a marker is not ours
    with pytest.raises(ConfigError, match="not a clusterbench results directory"):
        ResultsStore(other)
