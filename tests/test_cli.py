"""The command line, end to end: list, info, run (resume, --force), report, bad input."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import pytest

from clusterbench.cli import main
from clusterbench.results.store import MARKER, ResultsStore
from helpers import copy_results, error_lines, mean_of, records_in, snapshot, subprocess_env, table_rows


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`clusterbench run` with no arguments, in a fresh working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("CLUSTERBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(["run"])
    return SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue(), cwd=cwd,
                           results=cwd / "clusterbench-results")


# ---- list / info ------------------------------------------------------------------------------
def test_list_shows_methods_and_datasets_with_providers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    methods, datasets = out.split("\nDatasets\n")
    assert methods.startswith("Methods\n")
    for name, provider in (("kmeans", "clusterbench.methods.kmeans"), ("kmeans-pca", "clusterbench.methods.kmeans")):
        line = next(ln for ln in methods.splitlines() if ln.split()[:1] == [name])
        assert line.rstrip().endswith(f"clusterbench 0.1.0 ({provider})")
        assert " head " in line
    digits = next(ln for ln in datasets.splitlines() if ln.startswith("digits "))
    assert " 10 " in digits and digits.rstrip().endswith("clusterbench 0.1.0 (clusterbench.datasets.digits)")
    assert any(ln.startswith("synthetic ") for ln in datasets.splitlines())


def test_list_one_kind(capsys):
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "Datasets" in out and "Methods" not in out and "digits" in out


def test_info_kmeans_pca(capsys):
    assert main(["info", "kmeans-pca"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kmeans-pca: k-means (faiss) on PCA-reduced pixels\n")
    assert "paper: Ding & He" in out
    assert "provider: clusterbench 0.1.0 (clusterbench.methods.kmeans)" in out
    assert "protocols: head" in out
    params = {ln.split()[0]: ln for ln in out.splitlines()[7:] if ln.strip() and not ln.startswith("-")}
    # its own parameters and the inherited ones, with defaults and where they come from
    assert set(params) >= {"n_clusters", "niter", "nredo", "n_components", "whiten"}
    assert params["n_components"].split()[1] == "50"
    assert params["whiten"].split()[1] == "False"
    assert params["nredo"].split()[1] == "10"
    assert params["niter"].rstrip().endswith("harness choice")


def test_info_unknown_method(capsys):
    assert main(["info", "kmeans-pc"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [next(ln for ln in err.splitlines() if ln.startswith("clusterbench: error:"))]
    assert "did you mean 'kmeans-pca'" in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: clusterbench" in capsys.readouterr().out


# ---- run ----------------------------------------------------------------------------------
def test_default_run_prints_the_leaderboard(default_run):
    assert default_run.rc == 0, default_run.err
    rows = table_rows(default_run.out, "digits")
    assert {"kmeans", "kmeans-pca"} <= set(rows)
    for name in ("kmeans", "kmeans-pca"):
        row = rows[name]
        assert row["Protocol"] == "head" and row["Budget"] == "-" and row["Seeds"] == "3"
        assert 0.75 <= mean_of(row["ACC"]) <= 0.83, row
        assert 0.70 <= mean_of(row["NMI"]) <= 0.78, row
        assert "±" in row["ACC"]
    assert "results: clusterbench-results/" in default_run.out
    done = [ln for ln in default_run.err.splitlines() if ln.startswith("done ")]
    assert len([ln for ln in done if " on digits seed " in ln and ln.split()[1] in ("kmeans", "kmeans-pca")]) == 6


def test_default_run_writes_one_record_per_cell(default_run):
    recs = [r for r in records_in(default_run.results) if r["method"] in ("kmeans", "kmeans-pca")]
    assert sorted((r["method"], r["seed"]) for r in recs) == [
        ("kmeans", 0), ("kmeans", 1), ("kmeans", 2), ("kmeans-pca", 0), ("kmeans-pca", 1), ("kmeans-pca", 2)]
    for r in recs:
        assert r["status"] == "done" and r["dataset"]["name"] == "digits" and r["dataset"]["n"] == 1797
        assert r["budget"] == {}  # not trained by the engine: the budget is not part of the cell
        assert 0.7 <= r["protocols"]["head"]["acc"] <= 0.9
        assert (default_run.results / "runs" / r["run_id"] / "labels.npy").is_file()
    assert (default_run.results / MARKER).is_file()


def test_rerun_skips_finished_cells(default_run, monkeypatch, capsys):
    before = snapshot(default_run.results)
    monkeypatch.chdir(default_run.cwd)
    assert main(["run"]) == 0
    captured = capsys.readouterr()
    assert snapshot(default_run.results) == before  # records untouched (content and mtime)
    skipped = [ln for ln in captured.err.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) >= 6 and all("finished earlier" in ln for ln in skipped)
    assert not [ln for ln in captured.err.splitlines() if ln.startswith("done ")]
    assert table_rows(captured.out, "digits") == table_rows(default_run.out, "digits")


def test_force_reruns_and_keeps_the_old_record(default_run, tmp_path, capsys):
    results = copy_results(default_run.results, tmp_path / "res")
    before = snapshot(results)
    args = ["run", "--methods", "kmeans", "--seeds", "0", "--results", str(results)]
    assert main(args) == 0
    assert "skipped kmeans on digits seed 0" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    err = capsys.readouterr().err
    assert any(ln.startswith("done    kmeans on digits seed 0: ACC") for ln in err.splitlines()), err
    (rec_path,) = [p for p in results.glob("runs/kmeans--digits--s0--*/record.json")]
    run_id = rec_path.parent.name
    aside = list(rec_path.parent.glob("record.replaced-*.json"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == before[f"runs/{run_id}/record.json"][1]
    assert json.loads(rec_path.read_text())["run_id"] == run_id
    after = snapshot(results)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {f"runs/{run_id}/record.json", f"runs/{run_id}/labels.npy"}
    assert f"runs/{run_id}/record.json" in changed


def test_run_a_grid_on_synthetic_data(tmp_path, capsys):
    results = tmp_path / "res"
    rc = main(["run", "--methods", "kmeans[niter=5,nredo=1]", "kmeans-pca[n_components=4]",
               "--datasets", "synthetic[n=90,classes=3,size=8]", "--seeds", "0", "1",
               "--results", str(results), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "synthetic")
    assert set(rows) == {"kmeans[niter=5,nredo=1]", "kmeans-pca[n_components=4]"}
    assert {r["Seeds"] for r in rows.values()} == {"2"}
    recs = records_in(results)
    assert len(recs) == 4
    assert {r["params"]["niter"] for r in recs if r["method"] == "kmeans"} == {5}
    assert {r["params"]["n_components"] for r in recs if r["method"] == "kmeans-pca"} == {4}


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--methods", "kmean"], "unknown method 'kmean'; did you mean 'kmeans'"),
        (["--datasets", "digitz"], "unknown dataset 'digitz'; did you mean 'digits'"),
        (["--budget", "epochs=abc"], "bad budget 'epochs=abc'"),
        (["--budget", "hours=2"], "bad budget 'hours=2'"),
        (["--budget", "steps=inf"], "bad budget 'steps=inf'"),
        (["--methods", "kmeans[niter=abc]"], "parameter niter='abc' is not a valid int"),
        (["--methods", "kmeans[bogus=1]"], "method 'kmeans' has no parameter 'bogus'"),
        (["--methods", "kmeans[preset=nope]"], "method 'kmeans' has no preset 'nope'"),
        (["--methods", "kmeans[niter]"], "expected key=value"),
        (["--methods", "k means"], "cannot parse 'k means'"),
        (["--datasets", "digits[bogus=1]"], "dataset 'digits' takes no option(s) ['bogus']"),
        (["--datasets", "synthetic[n=abc]"], "dataset 'synthetic': bad option value"),
        (["--datasets", "synthetic[n=5,classes=10]"], "fewer than K=10 clusters"),
        (["--protocols", "bogus"], "unknown protocol 'bogus'"),
    ],
)
def test_bad_run_input_is_one_line_and_exit_2(tmp_path, capsys, args, fragment):
    results = tmp_path / "res"
    rc = main(["run", "--seeds", "0", "--results", str(results), "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("clusterbench: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert not list(results.glob("runs/*/record.json"))  # nothing ran


def test_results_path_that_is_a_foreign_directory(tmp_path, capsys):
    foreign = tmp_path / "paper"
    foreign.mkdir()
    (foreign / "main.tex").write_text("precious")
    assert main(["run", "--methods", "kmeans", "--seeds", "0", "--results", str(foreign), "--quiet"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is not a clusterbench results directory" in lines[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["main.tex"]


def test_results_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "results"
    f.write_text("x")
    assert main(["run", "--methods", "kmeans", "--seeds", "0", "--results", str(f), "--quiet"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu(tmp_path, capsys):
    assert main(["run", "--device", "cuda", "--seeds", "0", "--results", str(tmp_path / "r"), "--quiet"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--seeds", "zero"])
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


# ---- report -----------------------------------------------------------------------------------
def test_report_markdown_marks_the_best(default_run, capsys):
    assert main(["report", "--results", str(default_run.results)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "digits")
    assert rows == table_rows(default_run.out, "digits")
    for col in ("ACC", "NMI", "ARI"):
        cells = [r[col] for r in rows.values()]
        bold = [c for c in cells if c.startswith("**") and c.endswith("**")]
        assert len(bold) == 1, cells
        assert mean_of(bold[0]) == max(mean_of(c) for c in cells)
        assert all("±" in c for c in cells)
    assert "mean ± std over seeds" in out


def test_report_latex(default_run, capsys):
    assert main(["report", "--results", str(default_run.results), "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert r"\begin{tabular}" in out and r"\toprule" in out and r"\end{table}" in out
    assert r"\caption{Clustering results on digits" in out
    assert out.count(r"\textbf{") >= 3  # the best ACC, NMI, ARI
    assert r"$\pm$" in out and "±" not in out.replace(r"$\pm$", "")
    leaderboard, cost = out.split(r"\end{table}")[:2]  # the leaderboard first, then the cost per cell
    for table in (leaderboard, cost):
        body = [ln for ln in table.splitlines() if ln.startswith("kmeans")]
        assert len(body) == 2 and all(ln.endswith(r"\\") for ln in body)  # one row per method
        assert all(ln.count("&") == body[0].count("&") for ln in body)


def test_report_csv(default_run, capsys):
    assert main(["report", "--results", str(default_run.results), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert set(rows[0]) >= {"dataset", "method", "protocol", "budget", "acc_mean", "acc_std", "nmi_mean",
                            "nmi_std", "ari_mean", "ari_std", "wall_seconds_mean", "seeds"}
    recs = records_in(default_run.results)
    for method in ("kmeans", "kmeans-pca"):
        (row,) = [r for r in rows if r["method"] == method]
        accs = [r["protocols"]["head"]["acc"] for r in recs if r["method"] == method]
        assert row["dataset"] == "digits" and row["protocol"] == "head" and row["seeds"] == "3"
        assert float(row["acc_mean"]) == pytest.approx(statistics.mean(accs), rel=1e-5)
        assert float(row["acc_std"]) == pytest.approx(statistics.stdev(accs), rel=1e-4, abs=1e-6)


def test_report_to_a_file(default_run, tmp_path, capsys):
    target = tmp_path / "table.tex"
    assert main(["report", "--results", str(default_run.results), "--format", "latex", "-o", str(target)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote {target}" in captured.err
    assert r"\begin{tabular}" in target.read_text()


def test_report_ignores_failed_runs(default_run, tmp_path, capsys):
    results = copy_results(default_run.results, tmp_path / "res")
    rec = records_in(results)[0]
    failed = {**rec, "status": "failed", "seed": 7, "run_id": rec["run_id"] + "x", "error": {"reason": "boom"}}
    failed.pop("protocols")
    (results / "runs" / failed["run_id"]).mkdir()
    (results / "runs" / failed["run_id"] / "record.json").write_text(json.dumps(failed))
    assert main(["report", "--results", str(results)]) == 0
    assert table_rows(capsys.readouterr().out, "digits") == table_rows(default_run.out, "digits")


def test_report_on_an_empty_store(tmp_path, capsys):
    ResultsStore(tmp_path / "r")
    assert main(["report", "--results", str(tmp_path / "r")]) == 0  # a store with no runs
    assert "No finished runs." in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["foreign", "empty", "missing", "file"])
def test_report_on_something_that_is_not_a_results_dir(tmp_path, capsys, kind):
    path = tmp_path / "x"
    if kind == "foreign":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("hello")
    assert main(["report", "--results", str(path)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("clusterbench: error:") and str(path) in lines[0]
    assert not (path / MARKER).exists()  # report never turns a directory into a results store
    if kind == "missing":
        assert not path.exists()


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (lambda t: t[: len(t) // 2], "not valid JSON"),
        (lambda t: t.replace('"schema_version": 1', '"schema_version": 0'), "record format version 0"),
        (lambda t: json.dumps({**json.loads(t), "seed": "zero"}), "field 'seed' should be int"),
        (lambda t: json.dumps({**json.loads(t), "protocols": {"head": {"acc": 79.1}}}), "outside [0, 1]"),
    ],
)
def test_report_names_a_broken_record(default_run, tmp_path, capsys, edit, fragment):
    results = copy_results(default_run.results, tmp_path / "res")
    victim = sorted(results.glob("runs/*/record.json"))[1]
    victim.write_text(edit(victim.read_text()))
    assert main(["report", "--results", str(results)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"clusterbench: error: {victim}:")
    assert fragment in lines[0]


# ---- a real process ---------------------------------------------------------------------------
def test_subprocess_bad_method_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "clusterbench.cli", "run", "--methods", "kmean",
                           "--device", "cpu", "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "unknown method 'kmean'; did you mean 'kmeans'" in lines[0], proc.stderr


def test_subprocess_report_and_list(default_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "clusterbench.cli", "report", "--results",
                           str(default_run.results), "--format", "csv"],
                          capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dataset,method,protocol,budget,")
    assert "digits,kmeans-pca,head,-," in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "clusterbench.cli", "list"], capture_output=True, text=True,
                          cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "kmeans-pca" in proc.stdout and "synthetic" in proc.stdout


LOCAL_PLUGIN = '''\
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clusterbench import Method, hookimpl, param


class Stripes(Method):
    name = "stripes"
    description = "a local experiment: cluster = index modulo K"

    @dataclass(frozen=True)
    class Params:
        k: int = param(3, "clusters")

    def fit(self, data, ctx) -> None:
        pass

    def predict(self, data) -> np.ndarray:
        return np.arange(len(data)) % self.params.k


@hookimpl
def clusterbench_methods():
    return [Stripes]
'''


def test_plugin_file_option(tmp_path, capsys):
    # named like an installed plugin on purpose: a local file must not clash with it
    path = tmp_path / "kmeans.py"
    path.write_text(LOCAL_PLUGIN)
    assert main(["--plugin", str(path), "list", "methods"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("stripes "))
    assert line.rstrip().endswith(f"local ({path})")
    results = tmp_path / "res"
    assert main(["--plugin", str(path), "run", "--methods", "stripes[k=2]", "--datasets",
                 "synthetic[n=30,classes=3,size=4]", "--seeds", "0", "--results", str(results), "--quiet"]) == 0
    (rec,) = records_in(results)
    assert rec["status"] == "done" and rec["method_spec"] == "stripes[k=2]" and rec["params"] == {"k": 2}
    assert rec["method_provider"] == f"local ({path})"
    assert rec["protocols"]["head"]["n_clusters"] == 2


def test_info_dataset_shows_its_options(capsys):
    assert main(["info", "cifar100-20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cifar100-20: CIFAR-100 with its 20 superclasses")
    assert "classes: 20\n" in out
    options = {ln.split()[0] for ln in out.splitlines()[5:] if ln.strip() and not ln.startswith("-")}
    assert options == {"split", "download", "variant"}  # no path=: an image folder holds fine classes
    assert main(["info", "cifar10"]) == 0
    assert "\npath " in capsys.readouterr().out


def test_info_unknown_name_suggests_methods_and_datasets(capsys):
    assert main(["info", "cifar-10"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [next(ln for ln in err.splitlines() if ln.startswith("clusterbench: error:"))]
    assert "unknown method or dataset 'cifar-10'; did you mean 'cifar10'" in err
