"""Provenance (issue 12.2): declared, checked, recorded, listed, and marked in every report format.

A plugin file with two quick methods, one that follows official code and one that is a
reconstruction, both with paper numbers: the reconstruction's row carries a mark and a
footnote, and its paper number is "reported for the original method" with no Δ.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import pytest

from clusterbench import Method, PluginError
from clusterbench.cli import main
from helpers import table_rows

PLUGIN = '''
from dataclasses import dataclass
import numpy as np
from clusterbench import Method, hookimpl


class Faithful(Method):
    name = "faithful"
    description = "test: follows its official code"
    provenance = "official-code"
    provenance_note = "checked against the authors' code"

    @dataclass(frozen=True)
    class Params:
        pass

    def fit(self, data, ctx):
        self._n = len(data)

    def predict(self, data):
        return np.arange(len(data)) % data.n_classes


class Recon(Faithful):
    name = "recon"
    description = "test: a reconstruction"
    provenance = "reconstruction"
    provenance_note = "nothing readable"


@hookimpl
def clusterbench_methods():
    return [Faithful, Recon]


@hookimpl
def clusterbench_reported_results():
    return [{"method": m, "dataset": "synthetic", "protocol": "head", "citation": f"{m} paper",
             "metrics": {"acc": 0.9}} for m in ("faithful", "recon")]
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    plugin = root / "prov_plugin.py"
    plugin.write_text(PLUGIN)
    results = root / "res"
    assert main(["--plugin", str(plugin), "run", "--methods", "faithful", "recon", "--datasets",
                 "synthetic[n=40,classes=4,size=8]", "--seeds", "0", "--results", str(results), "--quiet"]) == 0
    return plugin, results


def report(capsys, plugin, results, *args):
    assert main(["--plugin", str(plugin), "report", "--results", str(results), "--paper", *args]) == 0
    return capsys.readouterr().out


def test_check_class_rejects_an_unknown_provenance():
    class Bad(Method):
        name, description, provenance = "bad", "test", "copied-from-a-blog"

        @dataclass(frozen=True)
        class Params:
            pass

        def fit(self, data, ctx): ...
        def predict(self, data): ...

    with pytest.raises(PluginError, match="provenance 'copied-from-a-blog' is not one of official-code, paper-text, "
                                          "reconstruction, unspecified"):
        Bad.check_class()
    Bad.provenance = Method.provenance  # a plugin that says nothing: allowed, and reported as undeclared
    assert Bad.provenance == "unspecified"
    Bad.check_class()


def test_builtin_methods_declare_their_provenance(capsys):
    from clusterbench.plugins import load_registry

    reg = load_registry([])
    got = {n: reg.methods[n].provenance for n in ("cc", "vtcc", "tcc", "cueco", "kmeans", "kmeans-pca")}
    assert got == {"cc": "official-code", "vtcc": "official-code", "tcc": "reconstruction",
                   "cueco": "reconstruction", "kmeans": "paper-text", "kmeans-pca": "paper-text"}
    assert all(reg.methods[n].provenance_note for n in got)
    assert main(["info", "tcc"]) == 0
    out = capsys.readouterr().out
    assert "\nprovenance: reconstruction (paper body unreadable; preset paper follows the first author's" in out
    assert "ymcidence/OperationVerdandi@f70a1cc util/config.py:12" in out  # a default with its file:line
    assert main(["info", "cueco"]) == 0
    assert "\nprovenance: reconstruction (abstract only (no method section, no code)" in capsys.readouterr().out
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "provenance" in out.splitlines()[1]
    assert next(ln for ln in out.splitlines() if ln.startswith("cc ")).count("official-code") == 1


def test_markdown_marks_reconstructions_and_gives_them_no_delta(runs, capsys):
    plugin, results = runs
    recs = [json.loads(p.read_text()) for p in results.glob("runs/*/record.json")]
    assert {r["method"]: r["method_provenance"] for r in recs} == {"faithful": "official-code",
                                                                   "recon": "reconstruction"}
    out = report(capsys, plugin, results)
    rows = table_rows(out, "synthetic")
    assert "faithful" in rows and "recon †" in rows
    assert rows["*faithful (reported)*"]["ACC"].startswith("0.900 (Δ ")
    rep = rows["*recon (reported for the original method)*"]
    assert rep["ACC"] == "0.900" and rep["Source"].startswith("reported for the original method")
    assert "† reconstruction: neither the paper's method section nor official code was readable" in out


def test_latex_csv_html_carry_the_mark(runs, capsys):
    plugin, results = runs
    tex = report(capsys, plugin, results, "--format", "latex")
    assert r"recon \textsuperscript{\dag}" in tex and "†" not in tex
    line = next(ln for ln in tex.splitlines() if ln.startswith(r"\textit{recon (reported for the original"))
    assert "Delta" not in line
    rows = list(csv.DictReader(io.StringIO(report(capsys, plugin, results, "--format", "csv"))))
    prov = {(r["method"], r["source"]): r["provenance"] for r in rows}
    assert prov[("recon", "measured")] == "reconstruction" and prov[("faithful", "measured")] == "official-code"
    assert prov[("recon", "reported for the original method")] == "reconstruction"
    html = report(capsys, plugin, results, "--format", "html")
    assert "<td class=\"t\">recon †</td>" in html and "† reconstruction:" in html


def test_older_records_without_provenance_are_unknown(runs, capsys, tmp_path):
    plugin, results = runs
    old = tmp_path / "old"
    for p in [*results.glob("runs/*/*"), *results.glob(".clusterbench*")]:
        dest = old / p.relative_to(results)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if p.name == "record.json":
            rec = json.loads(p.read_text())
            rec.pop("method_provenance", None)
            dest.write_text(json.dumps(rec))
        else:
            dest.write_bytes(p.read_bytes())
    out = report(capsys, plugin, old)
    rows = table_rows(out, "synthetic")
    assert "faithful ‡" in rows and rows["*faithful (reported for the original method)*"]["ACC"] == "0.900"
    assert "‡ provenance unknown: an older record" in out
