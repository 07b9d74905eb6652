"""``run --workers N``'s worker processes (issue 14): Ctrl-C stops them all and loses nothing
finished; workers that cannot start stop the grid with one line saying why.

A real ``clusterbench`` subprocess in its own process group runs a method whose fit is quick
for seed 0 and sleeps for the others; once seed 0's record is written the parent gets SIGINT.
The process group tells whether any worker (or multiprocessing helper) outlived the parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import error_lines, subprocess_env

from clusterbench.cli import main
from clusterbench.results.store import ResultsStore

SLEEPY = '''
import os, time
from dataclasses import dataclass
import numpy as np
from clusterbench import Method, hookimpl

class Sleepy(Method):
    name = "sleepy"
    description = "fit is quick for seed 0 and slow for the others (tests)"
    @dataclass(frozen=True)
    class Params:
        pass
    def fit(self, data, ctx):
        # which worker fitted which seed: one empty file "SEED-PID" per fit
        open(os.path.join(os.environ["CB_SLEEPY_FITS"], f"{ctx.seed}-{os.getpid()}"), "w").close()
        time.sleep(0.2 if ctx.seed == 0 else float(os.environ.get("CB_SLEEPY_SECONDS", "30")))
        self._n = len(data)
    def predict(self, data):
        return np.arange(len(data)) % data.n_classes

@hookimpl
def clusterbench_methods():
    return [Sleepy]
'''


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_members(pgid: int) -> list[str]:
    """``pid state cmdline`` of each process still in the group (for the failure message)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out.append(f"{stat.parent.name} {fields[0]} {cmd}")
    return out


def fits(d: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for p in d.iterdir():
        seed, pid = p.name.split("-")
        out.setdefault(int(seed), set()).add(int(pid))
    return out


def seeds_recorded(results: Path) -> set[int]:
    return {r["seed"] for r in ResultsStore(results, create=False).iter_records()} if results.exists() else set()


def wait_for(what: str, ready, proc: subprocess.Popen, deadline: float) -> None:
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_ctrl_c_stops_every_worker_and_keeps_what_finished(tmp_path, monkeypatch):
    plugin = tmp_path / "sleepy_plugin.py"
    plugin.write_text(SLEEPY)
    results, first, second = tmp_path / "r", tmp_path / "fits1", tmp_path / "fits2"
    first.mkdir(), second.mkdir()
    argv = ["--plugin", str(plugin), "run", "--methods", "sleepy", "--datasets", "synthetic[n=60,classes=3,size=8]",
            "--seeds", "0", "1", "2", "3", "--device", "cpu", "--workers", "2", "--results", str(results), "--quiet"]
    env = subprocess_env(keep=("synthetic",), CB_SLEEPY_FITS=str(first))
    proc = subprocess.Popen([sys.executable, "-m", "clusterbench", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        wait_for("seed 0 never finished", lambda: 0 in seeds_recorded(results), proc, deadline)
        wait_for("the second worker never started a cell", lambda: len(fits(first)) >= 2, proc, deadline)
        os.kill(proc.pid, signal.SIGINT)  # the parent only: the workers must be ended by it
        start = time.monotonic()
        _, err = proc.communicate(timeout=15)
        took = time.monotonic() - start
        deadline = time.monotonic() + 5  # orphaned helpers (the resource tracker) go soon after the parent
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_alive(proc.pid), f"still running after Ctrl-C: {group_members(proc.pid)}"
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    err = err.decode()
    assert took < 8, f"the parent took {took:.1f} s to stop"
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "interrupted; finished runs are kept" in err
    store = ResultsStore(results, create=False)
    recs = list(store.iter_records(strict=True))  # every record on disk is valid
    assert [r["seed"] for r in recs] == [0], "an interrupted cell left a record"
    assert recs[0]["status"] == "done" and store.finished(recs[0]["run_id"]) is not None
    seed0 = store.record_path(recs[0]["run_id"]).read_bytes()

    # the same command again, quick fits this time (in this process: no second interpreter start)
    for key, value in {**env, "CB_SLEEPY_FITS": str(second), "CB_SLEEPY_SECONDS": "0"}.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 0
    assert sorted(fits(second)) == [1, 2, 3]  # seed 0 was not fitted again
    assert store.record_path(recs[0]["run_id"]).read_bytes() == seed0
    recs = list(store.iter_records(strict=True))
    assert sorted(r["seed"] for r in recs) == [0, 1, 2, 3] and all(r["status"] == "done" for r in recs)


WORKERS_CANNOT_IMPORT = '''
import multiprocessing
if multiprocessing.parent_process() is not None:  # imports in the launching process, not in a worker
    raise ImportError("No module named 'only_on_the_login_node'")
'''


def test_workers_that_cannot_start_stop_the_grid_with_why(tmp_path, monkeypatch, capsys):
    plugin = tmp_path / "login_node_plugin.py"
    plugin.write_text(WORKERS_CANNOT_IMPORT)
    for key, value in subprocess_env(keep=("kmeans", "synthetic")).items():
        monkeypatch.setenv(key, value)
    assert main(["--plugin", str(plugin), "run", "--methods", "kmeans", "--datasets", "synthetic[n=60,size=8]",
                 "--seeds", "0", "1", "--device", "cpu", "--workers", "2", "--results", str(tmp_path / "r")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"clusterbench: error: the worker processes could not start: ConfigError: plugin file {str(plugin)!r} "
        "failed to import: ImportError: No module named 'only_on_the_login_node'; finished runs are kept"]
    assert not list((tmp_path / "r").glob("runs/*/record.json"))


def test_run_grid_with_workers_in_a_script_without_main_guard_says_so(tmp_path):
    script = tmp_path / "campaign.py"
    script.write_text("import clusterbench\n"
                      "clusterbench.run_grid(['kmeans'], ['synthetic[n=60,size=8]'], seeds=[0, 1], workers=1, "
                      f"device='cpu', results={str(tmp_path / 'r')!r})\n")
    out = subprocess.run([sys.executable, str(script)], env=subprocess_env(keep=("kmeans", "synthetic")),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("clusterbench.errors.WorkersDidNotStart: the worker processes could not start: "), last
    assert "`if __name__ == \"__main__\":`" in last and "BrokenProcessPool" not in out.stderr
    assert not list((tmp_path / "r").glob("runs/*/record.json"))
