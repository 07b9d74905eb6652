"""A broken plugin, an observer that raises, sys.exit() in fit, a store that fills up, a closed
pipe: one line (or a failed cell) naming what broke, never a traceback; the rest goes on."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from clusterbench.cli import main
from clusterbench.results.store import ResultsStore
from helpers import error_lines, records_in, subprocess_env

TINY = "synthetic[n=120,classes=3,size=8]"

RAISING_HOOK = '''
from clusterbench import hookimpl

@hookimpl
def clusterbench_methods():
    raise RuntimeError("hook exploded")

@hookimpl
def clusterbench_datasets():
    raise KeyError("datasets exploded")
'''

OBSERVER = '''
from clusterbench import hookimpl

@hookimpl
def clusterbench_run_finished(record):
    raise RuntimeError("observer exploded")
'''

EXITS = '''
import sys
from dataclasses import dataclass
from clusterbench import Method, hookimpl, param

class Exits(Method):
    name = "exits"
    description = "test: sys.exit() in fit"

    @dataclass(frozen=True)
    class Params:
        k: int = param(2, "unused")

    def fit(self, data, ctx):
        sys.exit(3)

    def predict(self, data):
        raise AssertionError("never reached")

@hookimpl
def clusterbench_methods():
    return [Exits]
'''


def _plugin(tmp_path, name, source) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return str(path)


def test_a_hook_that_raises_is_a_warning_and_list_still_works(tmp_path, capsys):
    with pytest.warns(RuntimeWarning) as warned:
        rc = main(["--plugin", _plugin(tmp_path, "raising", RAISING_HOOK), "list"])
    out, err = capsys.readouterr()
    assert rc == 0 and "kmeans" in out and "digits" in out and "Traceback" not in err
    said = [str(w.message) for w in warned]
    assert any("'raising': clusterbench_methods() raised RuntimeError: hook exploded" in m for m in said), said
    assert any("clusterbench_datasets() raised KeyError" in m for m in said), said
    assert "Plugins that failed to import: raising (clusterbench_datasets() raised KeyError" in out


def test_an_observer_that_raises_does_not_stop_the_grid(tmp_path, capsys):
    res = tmp_path / "res"
    with pytest.warns(RuntimeWarning, match="clusterbench_run_finished raised RuntimeError: observer exploded"):
        rc = main(["--plugin", _plugin(tmp_path, "observer", OBSERVER), "run", "--methods", "kmeans",
                   "--datasets", TINY, "--seeds", "0", "1", "--results", str(res)])
    err = capsys.readouterr().err
    assert rc == 0 and [r["status"] for r in records_in(res)] == ["done", "done"]
    assert "Traceback" not in err


def test_sys_exit_in_fit_fails_that_cell_only(tmp_path, capsys):
    res = tmp_path / "res"
    rc = main(["--plugin", _plugin(tmp_path, "exits", EXITS), "run", "--methods", "exits", "kmeans",
               "--datasets", TINY, "--seeds", "0", "--results", str(res), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    by_method = {r["method"]: r for r in records_in(res)}
    assert by_method["exits"]["status"] == "failed" and by_method["exits"]["error"]["reason"] == "SystemExit: 3"
    assert by_method["kmeans"]["status"] == "done"
    assert "1 run(s) failed: exits on synthetic seed 0: SystemExit: 3" in err


def test_a_store_that_fills_up_half_way_is_one_line_and_keeps_finished_records(tmp_path, capsys, monkeypatch):
    res = tmp_path / "res"
    real, calls = ResultsStore.write_record, []

    def write_record(self, rid, record, labels=None):
        calls.append(rid)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.run_dir(rid) / "record.json"))
        return real(self, rid, record, labels=labels)

    monkeypatch.setattr(ResultsStore, "write_record", write_record)
    rc = main(["run", "--methods", "kmeans", "--datasets", TINY, "--seeds", "0", "1", "--results", str(res),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and len(error_lines(err)) == 1, err
    assert error_lines(err)[0].startswith("clusterbench: error: No space left on device (") and "record.json" in err
    assert [r["status"] for r in records_in(res)] == ["done"]


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    env = subprocess_env()
    res = tmp_path / "res"
    subprocess.run([sys.executable, "-m", "clusterbench.cli", "run", "--methods", "kmeans", "--datasets", TINY,
                    "--seeds", "0", "1", "2", "--results", str(res), "--quiet"], env=env, check=True,
                   capture_output=True)
    for cmd in (["report", "--results", str(res), "--format", "csv"], ["list"]):
        # `clusterbench ... | head`: the reader is gone before clusterbench writes (`true` reads nothing)
        shell = f"{sys.executable} -m clusterbench.cli {' '.join(cmd)} | true"
        proc = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], env=env, capture_output=True, text=True)
        assert proc.stderr == "" and proc.returncode == 141, (proc.returncode, proc.stderr)


def test_data_too_large_for_memory_is_one_line(tmp_path, capsys):
    rc = main(["run", "--methods", "kmeans", "--datasets", "synthetic[n=30,size=10000000]", "--seeds", "0",
               "--results", str(tmp_path / "res"), "--quiet"])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("clusterbench: error: out of memory (Unable to allocate")


OOM = '''
from dataclasses import dataclass
import torch
from clusterbench import Method, hookimpl, param

class Hungry(Method):
    name = "hungry"
    description = "test: out of memory in fit"

    @dataclass(frozen=True)
    class Params:
        k: int = param(2, "unused")

    def fit(self, data, ctx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 GiB")

    def predict(self, data):
        raise AssertionError("never reached")

@hookimpl
def clusterbench_methods():
    return [Hungry]
'''


def test_out_of_memory_in_training_fails_that_cell_and_the_grid_goes_on(tmp_path, capsys):
    res = tmp_path / "res"
    rc = main(["--plugin", _plugin(tmp_path, "hungry", OOM), "run", "--methods", "hungry", "kmeans",
               "--datasets", TINY, "--seeds", "0", "1", "--results", str(res), "--quiet"])
    by = {(r["method"], r["seed"]): r for r in records_in(res)}
    assert rc == 1 and len(by) == 4
    assert all(by[("hungry", s)]["error"]["reason"] == "out of memory" for s in (0, 1))
    assert all(by[("kmeans", s)]["status"] == "done" for s in (0, 1))
    assert "Traceback" not in capsys.readouterr().err
