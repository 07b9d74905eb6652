"""Nothing lost, nothing silently wrong: driven through the command line as a user would.

- a ``run`` killed with SIGKILL mid-grid keeps its finished runs, leaves no half-written
  record, and the same command resumes (a deep run from its epoch checkpoint);
- two ``run`` processes writing into one results directory at once lose nothing and do
  no cell twice;
- a method that raises, runs out of memory, or produces NaN is recorded as failed with the
  reason, the other runs go on, and the exit code is 1;
- corrupt inputs give one clear error line naming the file and the problem (exit 2).

The methods come from a local plugin file (``--plugin``): ``sleepy`` (sleeps, or hangs on
one seed, so a kill lands deterministically), failing methods, and ``tinydeep``, a tiny
:class:`~clusterbench.DeepMethod` trained by the real engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clusterbench.cli import main
from clusterbench.results.schema import load_record
from helpers import error_lines, subprocess_env

PLUGIN = r'''
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from clusterbench import DeepMethod, Method, hookimpl, param


def _log(event, seed):
    path = os.environ.get("CB_TEST_LOG")
    if path:
        with open(path, "a") as f:  # O_APPEND: one short line per write, never interleaved
            f.write(f"{event} {seed} {os.getpid()}\n")


_log("loaded", -1)
_BARRIER_DEADLINE = time.time() + 30  # a barrier whose other process died lets go by then


class Sleepy(Method):
    name = "sleepy"
    description = "test: sleeps in fit; hangs on seed $CB_TEST_HANG_SEED; waits until $CB_TEST_BARRIER processes are in fit"

    @dataclass(frozen=True)
    class Params:
        delay: float = param(0.0, "seconds fit sleeps")

    def fit(self, data, ctx):
        _log("start", ctx.seed)
        barrier = int(os.environ.get("CB_TEST_BARRIER", "0"))
        # Wait until `barrier` processes are each inside a cell, so the runs overlap for sure.  Waiting
        # only for them to load the plugin was a flake: under load one finished every cell first.
        while barrier and time.time() < _BARRIER_DEADLINE:  # one deadline per process, not per cell
            with open(os.environ["CB_TEST_LOG"]) as f:
                pids = {parts[2] for parts in map(str.split, f) if len(parts) == 3 and parts[0] == "start"}
            if len(pids) >= barrier:
                break
            time.sleep(0.02)
        if os.environ.get("CB_TEST_HANG_SEED") == str(ctx.seed):
            time.sleep(600)
        time.sleep(self.params.delay)
        self._labels = (np.arange(len(data)) + ctx.seed) % data.n_classes
        _log("end", ctx.seed)

    def predict(self, data):
        return self._labels


class Boom(Sleepy):
    name = "boom"
    description = "test: raises in fit"

    def fit(self, data, ctx):
        raise RuntimeError("exploded on purpose")


class Oom(Sleepy):
    name = "oom"
    description = "test: runs out of GPU memory"

    def fit(self, data, ctx):
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class NanFeatures(Sleepy):
    name = "nanfeatures"
    description = "test: NaN features for the kmeans protocol"
    protocols = ("kmeans",)

    def features(self, data):
        f = np.random.default_rng(0).normal(size=(len(data), 4)).astype(np.float32)
        f[3, 1] = np.nan
        return f


class TinyDeep(DeepMethod):
    name = "tinydeep"
    description = "test: a tiny deep method trained by the engine"

    @dataclass(frozen=True)
    class Params:
        batch_size: int = param(16, "batch")
        lr: float = param(1e-2, "lr")
        weight_decay: float = param(0.0, "wd")
        image_size: int = param(0, "size")
        n_clusters: int = param(0, "K")
        poison_at_step: int = param(-1, "the loss is NaN from this step on")

    def build_model(self, in_chans, image_size, n_clusters):
        self.steps = 0
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, 16), nn.ReLU(),
                             nn.Linear(16, n_clusters))

    def training_loss(self, model, v1, v2):
        p1, p2 = model(v1).softmax(1), model(v2).softmax(1)
        mean = p1.mean(0)
        loss = ((p1 - p2) ** 2).sum(1).mean() + (mean * mean.clamp_min(1e-8).log()).sum()
        self.steps += 1
        if 0 <= self.params.poison_at_step <= self.steps:
            loss = loss * float("nan")
        return {"loss": loss}

    def after_step(self, model, progress, outputs):
        time.sleep(float(os.environ.get("CB_TEST_STEP_SLEEP", "0")))

    def cluster_logits(self, model, x):
        return model(x)

    def embed(self, model, x):
        return model[:3](x)


METHODS = [Sleepy, Boom, Oom, NanFeatures, TinyDeep]


@hookimpl
def clusterbench_methods():
    return METHODS
'''

DATA = "synthetic[n=48,classes=3,size=8]"


# ---- helpers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "testmethods.py"
    path.write_text(PLUGIN)
    return path


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return subprocess_env(("kmeans", "synthetic", "files"), CB_TEST_LOG=str(tmp_path / "events.log"), **extra)


def cli(plugin: Path, results: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "clusterbench.cli", "--plugin", str(plugin), "run", "--datasets", DATA,
            "--results", str(results), "--device", "cpu", *args]


def start(cmd: list[str], tmp_path: Path, name: str, env: dict[str, str]) -> subprocess.Popen:
    out = open(tmp_path / f"{name}.out", "w")
    err = open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=tmp_path)


def finish(proc: subprocess.Popen, tmp_path: Path, name: str, timeout: float = 120) -> tuple[int, str, str]:
    rc = proc.wait(timeout=timeout)
    return rc, (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()


def wait_until(pred, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run exited (rc {proc.returncode}) before {what}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def events(tmp_path: Path) -> list[tuple[str, int]]:
    path = tmp_path / "events.log"
    if not path.exists():
        return []
    return [(ln.split()[0], int(ln.split()[1])) for ln in path.read_text().splitlines() if ln.strip()]


def records(results: Path) -> dict[tuple[str, int], dict]:
    """(method spec, seed) -> record, every record.json validated as ``report`` reads it."""
    out = {}
    for path in sorted(results.glob("runs/*/record.json")):
        rec = load_record(path)  # raises on a half-written or invalid record
        key = (rec["method_spec"], rec["seed"])
        assert key not in out, f"two records for {key}"
        out[key] = rec
    return out


def run_dir_of(results: Path, prefix: str) -> Path:
    (d,) = [p for p in results.glob("runs/*") if p.name.startswith(prefix)]
    return d


# ---- SIGKILL mid-grid, then the same command again -------------------------------------------
def test_sigkill_mid_grid_keeps_finished_runs_and_resumes(plugin, tmp_path):
    results = tmp_path / "res"
    cmd = cli(plugin, results, "--methods", "sleepy", "tinydeep", "tinydeep[poison_at_step=2]", "--seeds", "0", "1",
              "--budget", "epochs=12", "--eval-every", "3")

    # 1) killed in the middle of a deep run, after its first epoch checkpoint; `sleepy` seeds 0
    #    and 1 finished before it
    proc = start(cmd, tmp_path, "killed", child_env(tmp_path, CB_TEST_STEP_SLEEP="0.05"))
    wait_until(lambda: any(results.glob("runs/tinydeep--synthetic--s0--*/checkpoint.pt")), proc,
               "the deep run's first checkpoint")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    recs = records(results)  # every record on disk is whole and valid
    assert set(recs) == {("sleepy", 0), ("sleepy", 1)}
    assert all(r["status"] == "done" for r in recs.values())
    assert all((run_dir_of(results, f"sleepy--synthetic--s{s}") / "labels.npy").exists() for s in (0, 1))
    deep_dir = run_dir_of(results, "tinydeep--synthetic--s0")
    assert (deep_dir / "checkpoint.pt").exists()
    assert not (deep_dir / "record.json").exists()  # no record at all rather than half of one
    assert not list(results.rglob(".record.json.*.tmp"))
    kept = (run_dir_of(results, "sleepy--synthetic--s0") / "record.json").read_bytes()

    # 2) the same command once more: finished runs are skipped, the deep run resumes; the
    #    poisoned deep runs (NaN loss) are recorded as failed and the exit code says so
    proc = start(cmd, tmp_path, "rerun", child_env(tmp_path))
    rc, out, err = finish(proc, tmp_path, "rerun")
    assert rc == 1, err
    assert "skipped sleepy on synthetic seed 0" in err and "skipped sleepy on synthetic seed 1" in err
    recs = records(results)
    poisoned = {k: recs.pop(k) for k in [("tinydeep[poison_at_step=2]", 0), ("tinydeep[poison_at_step=2]", 1)]}
    assert set(recs) == {("sleepy", 0), ("sleepy", 1), ("tinydeep", 0), ("tinydeep", 1)}
    assert all(r["status"] == "done" for r in recs.values())
    for rec in poisoned.values():
        assert rec["status"] == "failed"
        assert rec["error"]["reason"].startswith("TrainingDiverged: loss became nan"), rec["error"]
        assert rec["stats"]["diverged_at_step"] >= 2
    assert "2 run(s) failed: tinydeep on synthetic seed 0: TrainingDiverged: loss became nan" in err
    assert (run_dir_of(results, "sleepy--synthetic--s0") / "record.json").read_bytes() == kept
    ev = events(tmp_path)
    assert ev.count(("start", 0)) == ev.count(("start", 1)) == 1  # sleepy ran once, in the first process
    deep = recs[("tinydeep", 0)]
    assert deep["stats"]["resumed_from_epoch"] >= 1
    epochs = [p["epoch"] for p in deep["curve"]]
    assert epochs == list(range(1, 13))  # every epoch once: none lost, none repeated
    assert deep["stats"]["steps"] == 12 * 3  # 48 images, batch 16
    assert "resumed_from_epoch" not in recs[("tinydeep", 1)]["stats"]
    assert not list(results.glob("runs/*/checkpoint.pt"))  # removed once a run is done
    # and the report reads it all back
    assert main(["report", "--results", str(results), "--format", "csv"]) == 0


# ---- two processes, one results directory -------------------------------------------------------
def test_two_processes_share_one_results_directory(plugin, tmp_path, capsys):
    results = tmp_path / "res"  # does not exist yet: both processes create it
    seeds = ["--seeds", "0", "1", "2", "3", "4"]
    env = child_env(tmp_path, CB_TEST_BARRIER="2")
    a = start(cli(plugin, results, "--methods", "sleepy[delay=0.3]", *seeds), tmp_path, "a", env)
    b = start(cli(plugin, results, "--methods", "sleepy[delay=0.3]", "kmeans[nredo=1]", *seeds), tmp_path, "b", env)
    rc_a, _, err_a = finish(a, tmp_path, "a")
    rc_b, _, err_b = finish(b, tmp_path, "b")
    assert rc_a == 0 and rc_b == 0, err_a + err_b
    recs = records(results)
    assert set(recs) == {(m, s) for m in ("sleepy[delay=0.3]", "kmeans[nredo=1]") for s in range(5)}
    assert all(r["status"] == "done" for r in recs.values())
    ev = events(tmp_path)
    assert sorted(s for e, s in ev if e == "start") == [0, 1, 2, 3, 4]  # no cell done twice
    assert sorted(s for e, s in ev if e == "end") == [0, 1, 2, 3, 4]
    both = err_a + err_b
    assert "busy    sleepy[delay=0.3]" in both  # the runs did overlap on a cell
    done = [ln for ln in both.splitlines() if ln.startswith("done    sleepy")]
    assert len(done) == 5
    assert not list(results.rglob("*.tmp")) and not list(results.rglob("record.replaced-*"))
    # a third run finds everything finished and does nothing
    os.environ["CB_TEST_LOG"] = str(tmp_path / "events.log")
    try:
        assert main(["--plugin", str(plugin), "run", "--methods", "sleepy[delay=0.3]", "kmeans[nredo=1]",
                     "--datasets", DATA, "--results", str(results), "--device", "cpu", *seeds]) == 0
    finally:
        del os.environ["CB_TEST_LOG"]
    assert [e for e in events(tmp_path) if e[0] != "loaded"] == [e for e in ev if e[0] != "loaded"]
    assert capsys.readouterr().err.count("skipped ") == 10


# ---- methods that fail -------------------------------------------------------------------------------
def test_failing_methods_are_recorded_and_the_grid_goes_on(plugin, tmp_path, capsys):
    results = tmp_path / "res"
    rc = main(["--plugin", str(plugin), "run", "--methods", "boom", "sleepy", "oom", "nanfeatures", "--datasets",
               DATA, "--seeds", "0", "1", "--results", str(results), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 1, err
    recs = records(results)
    assert recs[("sleepy", 0)]["status"] == recs[("sleepy", 1)]["status"] == "done"  # the grid went on
    reasons = {m: recs[(m, 0)]["error"]["reason"] for m in ("boom", "oom", "nanfeatures")}
    assert all(recs[(m, s)]["status"] == "failed" for m in reasons for s in (0, 1))
    assert reasons["boom"] == "RuntimeError: exploded on purpose"
    assert "exploded on purpose" in recs[("boom", 0)]["error"]["traceback"]
    assert reasons["oom"] == "out of memory" and recs[("oom", 0)]["error"]["type"] == "OutOfMemoryError"
    assert "NaN" in reasons["nanfeatures"]
    for m, reason in reasons.items():
        assert f"FAILED  {m} on synthetic seed 0: {reason}" in err
    assert "6 run(s) failed: boom on synthetic seed 0: RuntimeError: exploded on purpose; " in err
    assert not list(results.glob("runs/boom--*/labels.npy"))
    # the leaderboard holds the finished runs only and lists the failures below it
    assert "| sleepy " in out and "| boom " not in out and "| oom " not in out
    assert "6 failed run(s), not in the tables:" in out
    # failed cells are not "finished": the same command tries them again, and skips the rest
    assert main(["--plugin", str(plugin), "run", "--methods", "boom", "sleepy", "--datasets", DATA, "--seeds", "0",
                 "--results", str(results), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "FAILED  boom on synthetic seed 0" in err and "skipped sleepy on synthetic seed 0" in err


# ---- corrupt inputs -----------------------------------------------------------------------------------
def _arrays(n: int = 24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.arange(n) % 3


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _truncated(tmp_path: Path) -> str:
    x, y = _arrays()
    good = _write_npz(tmp_path / "full.npz", x=x, y=y).read_bytes()
    (tmp_path / "data.npz").write_bytes(good[: len(good) // 2])
    return "npz[path=data.npz]"


def _labels_out_of_range(tmp_path: Path) -> str:
    x, y = _arrays()
    _write_npz(tmp_path / "data.npz", x=x, y=y)
    return "npz[path=data.npz,n_classes=2]"


def _negative_labels(tmp_path: Path) -> str:
    x, y = _arrays()
    _write_npz(tmp_path / "data.npz", x=x, y=y - 1)
    return "npz[path=data.npz]"


def _channels_first(tmp_path: Path) -> str:
    x, y = _arrays()
    _write_npz(tmp_path / "data.npz", x=np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y=y)
    return "npz[path=data.npz]"


def _float_images(tmp_path: Path) -> str:
    x, y = _arrays()
    _write_npz(tmp_path / "data.npz", x=x.astype(np.float32), y=y)
    return "npz[path=data.npz]"


def _image_folder(tmp_path: Path, bad: str) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    if bad == "unreadable":
        (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    else:
        Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "dog" / "broken.png")
    return tmp_path / "imgs"


@pytest.mark.parametrize(
    "make,methods,fragments",
    [
        (_truncated, ["kmeans"], ["data.npz", "truncated or not an .npz file"]),
        (_labels_out_of_range, ["kmeans"], ["data.npz", "labels out of range [0, 2)", "max label 2"]),
        (_negative_labels, ["kmeans"], ["data.npz", "labels must be >= 0, found -1"]),
        (_channels_first, ["kmeans"], ["data.npz", "(24, 3, 8, 8), channels first"]),
        (_float_images, ["kmeans"], ["data.npz", "must be uint8", "float32"]),
        (lambda p: f"imagefolder[path={_image_folder(p, 'unreadable')}]", ["kmeans"],
         ["broken.png", "cannot decode image"]),
        (lambda p: f"imagefolder[path={_image_folder(p, 'size')}]", ["kmeans"],
         ["broken.png", "is 8x9", "size=N"]),
        (lambda p: (_write_npz(p / "data.npz", x=_arrays()[0], y=_arrays()[1]), "npz[path=data.npz]")[1],
         ["kmeans", "kmeans[n_clusters=30]"], ["npz[path=data.npz]", "24 images, fewer than K=30 clusters"]),
    ],
    ids=["truncated-npz", "labels-out-of-range", "negative-labels", "channels-first", "float-images",
         "unreadable-image", "image-of-another-size", "K-above-N"],
)
def test_corrupt_input_is_one_clear_error(tmp_path, monkeypatch, capsys, make, methods, fragments):
    monkeypatch.chdir(tmp_path)
    dataset = make(tmp_path)
    results = tmp_path / "res"
    rc = main(["run", "--methods", *methods, "--datasets", dataset, "--seeds", "0", "--results", str(results),
               "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2
    lines = error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("clusterbench: error:"), captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err
    assert not list(results.glob("runs/*/record.json"))  # nothing ran on bad data


def test_a_hand_edited_record_stops_the_report_naming_the_file(tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["run", "--methods", "kmeans[nredo=1]", "--datasets", DATA, "--seeds", "0", "1", "--results",
                 str(results), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    first, second = sorted(results.glob("runs/*/record.json"))
    rec = json.loads(second.read_text())
    rec["curve"] = "not a list"
    second.write_text(json.dumps(rec))
    out_dir = tmp_path / "out"
    assert main(["report", "--results", str(results), "--output-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert f"clusterbench: error: {second}: field 'curve' should be list, got str" in err
    assert not out_dir.exists()  # nothing half-written either
    old = json.loads(first.read_text())
    old.pop("schema_version")
    first.write_text(json.dumps(old))
    assert main(["report", "--results", str(results), "--format", "html"]) == 2
    err = capsys.readouterr().err
    assert f"{first}: record format version None is not supported" in err
