"""The whole grid is checked before anything is loaded, trained or written: one line per
problem, exit code 2, no results directory; the same cell asked twice runs once."""

from __future__ import annotations

import importlib.util
import os

import pytest

from clusterbench.cli import main
from clusterbench.validate import GridInvalid, GridRequest, validate_grid
from helpers import error_lines, records_in

TINY = "synthetic[n=30,classes=3,size=4]"


def _run(capsys, tmp_path, *args: str) -> tuple[int, list[str]]:
    res = tmp_path / "res"
    rc = main(["run", "--datasets", TINY, "--seeds", "0", "--results", str(res), "--quiet", *args])
    err = capsys.readouterr().err
    return rc, [ln for ln in error_lines(err) if ln.startswith("clusterbench: error:")]


def test_every_problem_of_the_grid_is_one_line_and_nothing_is_written(tmp_path, capsys):
    res = tmp_path / "res"
    rc = main(["run", "--methods", "cc[batch_size=0]", "cc[backbone=resnet19]", "cc[lr=-1]", "cc[preset=nope]",
               "kmeans[niter=0]", "kmeans[niter=x]", "nosuch", "--datasets", "synthetic[n=0]", "nodata",
               "--seeds", "0", "-1", "4294967296", "--device", "mps", "--eval-every", "-1",
               "--budget", "epochs=0", "--results", str(res)])
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert rc == 2 and not res.exists()
    expected = ["batch_size=0 must be >= 1", "backbone='resnet19' is not one of resnet18, resnet34, resnet50",
                "lr=-1.0 must be > 0", "no preset 'nope'", "niter=0 must be >= 1", "niter='x' is not a valid int",
                "unknown method 'nosuch'", "n=0 must be >= 1", "unknown dataset 'nodata'", "--seeds -1:",
                "--seeds 4294967296:", "--device mps: not a device", "--eval-every -1: must be >= 0",
                "bad budget"]
    for fragment in expected:
        assert sum(fragment in ln for ln in lines) == 1, (fragment, lines)
    assert len(lines) == len(expected) and all(ln.startswith("clusterbench: error: ") for ln in lines)
    assert "Traceback" not in err


@pytest.mark.parametrize("spec, fragment", [
    ("cc[batch_size=0]", "batch_size=0 must be >= 1"),
    ("tcc[lr=0]", "lr=0.0 must be > 0"),
    ("cueco[backbone=vit]", "backbone='vit' is not one of"),
    ("vtcc[weight_decay=-0.1]", "weight_decay=-0.1 must be >= 0"),
    ("cc[lr=nan]", "lr=nan must be finite"),
])
def test_deep_method_options_are_range_checked_whatever_the_plugin_declares(tmp_path, capsys, spec, fragment):
    rc, lines = _run(capsys, tmp_path, "--methods", spec)
    assert rc == 2 and len(lines) == 1 and fragment in lines[0], lines


def test_a_protocol_the_method_cannot_run_is_refused_when_the_method_is_named(tmp_path, capsys):
    rc, lines = _run(capsys, tmp_path, "--methods", "kmeans", "--protocols", "linear")
    assert rc == 2 and lines == ["clusterbench: error: method 'kmeans' cannot run protocol(s) linear (it supports head)"]
    with pytest.warns(UserWarning, match=r"does not support protocol\(s\) linear"):  # some of them: warned, run
        rc, lines = _run(capsys, tmp_path, "--methods", "kmeans", "--protocols", "head", "linear")
    assert rc == 0 and lines == []


def test_a_missing_package_is_found_before_training(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    rc, lines = _run(capsys, tmp_path, "--methods", "cc[preset=smoke]", "kmeans", "--protocols", "head", "kmeans",
                     "--device", "cpu")
    assert rc == 2 and not (tmp_path / "res").exists()
    assert len(lines) == 2, lines
    assert "protocol kmeans of 'cc[preset=smoke]' need(s) the 'faiss' module" in lines[0]
    assert "method 'kmeans' of 'kmeans' need(s) the 'faiss' module" in lines[1] and "pip install faiss-cpu" in lines[1]


def test_results_under_a_file_or_unwritable_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    rc = main(["run", "--methods", "kmeans", "--datasets", TINY, "--results", str(tmp_path / "file" / "res")])
    assert rc == 2 and error_lines(capsys.readouterr().err) == [
        f"clusterbench: error: --results {tmp_path / 'file' / 'res'}: cannot be created, {tmp_path / 'file'} is a file"]
    rc = main(["run", "--methods", "kmeans", "--datasets", TINY, "--results", str(tmp_path / "file")])
    assert rc == 2 and "exists and is not a directory" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    rc = main(["run", "--methods", "kmeans", "--datasets", TINY, "--results", str(ro / "res")])
    assert rc == 2 and f"cannot be created, {ro} is not writable" in capsys.readouterr().err
    assert not (ro / "res").exists()


def test_the_launcher_can_validate_a_parsed_grid():
    from clusterbench.plugins import load_registry

    reg = load_registry()
    validate_grid(reg, GridRequest(["kmeans"], ["digits"], seeds=[0, 1]))  # nothing wrong: no exception
    with pytest.raises(GridInvalid) as info:
        validate_grid(reg, GridRequest(["kmeans[nredo=0]"], ["digits"], seeds=[2**32]))
    assert len(info.value.problems) == 2


def test_the_same_cell_asked_twice_runs_once_even_with_force(tmp_path, capsys):
    res = tmp_path / "res"
    for _ in range(2):
        rc = main(["run", "--methods", "kmeans", "kmeans", "kmeans[nredo=10]", "--datasets", TINY, TINY,
                   "--seeds", "0", "0", "--results", str(res), "--force"])
        out, err = capsys.readouterr()
        assert rc == 0
        assert sum(ln.startswith("done ") for ln in err.splitlines()) == 1, err
        board = out.split("\n#### ", 1)[0]  # the leaderboard, not the cost table under it
        rows = [ln for ln in board.splitlines() if ln.startswith("| kmeans")]
        assert len(rows) == 1 and rows[0].rstrip(" |").endswith("1"), out  # one kmeans row, one seed
        assert "the same cell as an earlier one" in err
    assert len(records_in(res)) == 1


def test_report_figure_methods_must_not_be_negative(tmp_path, capsys):
    rc = main(["report", "--results", str(tmp_path), "--figure-methods", "-1"])
    assert rc == 2 and "--figure-methods -1: must be >= 0" in capsys.readouterr().err


def test_bench_without_cuda_says_what_run_says(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    msgs = []
    for cmd in (["bench", "--device", "cuda"], ["run", "--methods", "kmeans", "--device", "cuda"]):
        assert main(cmd) == 2
        msgs.append(error_lines(capsys.readouterr().err))
    assert msgs[0] == msgs[1] == ["clusterbench: error: --device cuda: no CUDA GPU is available"]
