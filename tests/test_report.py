"""``clusterbench report``: leaderboards in four formats, paper rows, figures, the HTML page.

A small results store is made once through ``clusterbench run`` with a local plugin file:
``curvy`` behaves like a deep method for the report (it logs a per-epoch learning curve and
training throughput as the engine does) and its plugin reports "paper" numbers through the
``clusterbench_reported_results`` hook; ``boom`` always fails.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from clusterbench.cli import main

PLUGIN = r'''
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clusterbench import Method, TrainStats, hookimpl, param


class Curvy(Method):
    name = "curvy"
    description = "test: labels from the data's own order, with an engine-like learning curve"
    deep = True  # trained under the run's budget, as far as records go
    provenance = "paper-text"  # its paper rows get a Δ (test_provenance.py covers the others)

    @dataclass(frozen=True)
    class Params:
        speed: float = param(1000.0, "pretend training images/s")
        quality: float = param(0.8, "fraction of images labelled by their true cluster")

    def fit(self, data, ctx):
        rng = np.random.default_rng(ctx.seed)
        # fit never sees labels; this test method cheats by reloading the (synthetic) data it runs on
        from clusterbench.datasets.synthetic import Synthetic

        truth = Synthetic(n=60, classes=3, size=8).load().y
        k = data.n_classes
        perm = rng.permutation(k)  # cluster ids are not class ids: the report must match them
        good = rng.random(len(data)) < self.params.quality
        self._labels = np.where(good, perm[truth], rng.integers(0, k, len(data)))
        epochs = int(ctx.budget.epochs or 3)
        for e in range(1, epochs + 1):
            f = e / epochs
            lab = np.where(rng.random(len(data)) < f, self._labels, rng.integers(0, k, len(data)))
            m = ctx.evaluate(lab)
            ctx.log_point(epoch=e, step=4 * e, images=e * len(data), train_seconds=e * len(data) / self.params.speed,
                          loss=1.0 / e, images_per_s=self.params.speed, acc=m["acc"], nmi=m["nmi"], ari=m["ari"])
        return TrainStats(train_seconds=epochs * len(data) / self.params.speed, images_seen=epochs * len(data))

    def predict(self, data):
        return self._labels


class Boom(Curvy):
    name = "boom"
    description = "test: always fails"

    def fit(self, data, ctx):
        raise RuntimeError("exploded on purpose")


@hookimpl
def clusterbench_methods():
    return [Curvy, Boom]


@hookimpl
def clusterbench_reported_results():
    return [
        {"method": "curvy", "dataset": "synthetic", "protocol": "head", "citation": "Doe et al., Curvy, 2099, Table 1",
         "metrics": {"acc": 0.99, "nmi": 0.95}},
        {"method": "kmeans", "dataset": "synthetic", "protocol": "kmeans", "citation": "other protocol",
         "metrics": {"acc": 0.5}},
        {"method": "curvy", "dataset": "cifar10", "protocol": "head", "citation": "not run here", "metrics": {"acc": 0.9}},
        {"method": "kmeans", "dataset": "synthetic", "protocol": "head", "citation": "Roe 2098, in percent",
         "metrics": {"acc": 79.0}},
    ]
'''

DATA = "synthetic[n=60,classes=3,size=8]"
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A results store: kmeans, curvy (two settings) and a failing method, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("report")
    plugin = root / "curvy_plugin.py"
    plugin.write_text(PLUGIN)
    results = root / "res"
    rc = main(["--plugin", str(plugin), "run", "--methods", "kmeans[nredo=1]", "curvy", "curvy[speed=500,quality=0.6]",
               "boom", "--datasets", DATA, "--seeds", "0", "1", "--budget", "epochs=4", "--results", str(results),
               "--device", "cpu", "--quiet"])
    assert rc == 1  # boom failed
    return root, plugin, results


def report(capsys, plugin: Path, results: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["--plugin", str(plugin), "report", "--results", str(results), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def table_rows(markdown: str, dataset: str) -> list[dict[str, str]]:
    # the leaderboard only: up to the next dataset or the tables under it (#### ...)
    section = markdown.split(f"### {dataset}\n", 1)[1].split("\n### ", 1)[0].split("\n#### ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def means(results: Path) -> dict[str, float]:
    """method spec -> mean ACC over seeds, from the records themselves."""
    accs: dict[str, list[float]] = {}
    for p in results.glob("runs/*/record.json"):
        rec = json.loads(p.read_text())
        if rec["status"] == "done":
            accs.setdefault(rec["method_spec"], []).append(rec["protocols"]["head"]["acc"])
    return {k: float(np.mean(v)) for k, v in accs.items()}


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG)
    return struct.unpack(">II", data[16:24])


# ---- leaderboards ------------------------------------------------------------------------------
def test_markdown_with_paper_rows(store, capsys):
    _, plugin, results = store
    with pytest.warns(UserWarning, match=r"kmeans on synthetic \(Roe 2098, in percent\): acc=79.0 is not a "
                                         r"fraction in \[0, 1\]; skipped"):  # named, never shown as if right
        rc, out, err = report(capsys, plugin, results, "--paper")
    assert rc == 0, err
    rows = table_rows(out, "synthetic")
    methods = [r["Method"] for r in rows]
    # the paper's row sits right under the measured row it matches; nothing else matched
    assert methods.index("*curvy (reported)*") == methods.index("curvy") + 1
    assert [m for m in methods if "reported" in m] == ["*curvy (reported)*"]
    rep = rows[methods.index("*curvy (reported)*")]
    acc = means(results)
    assert rep["ACC"] == f"0.990 (Δ {acc['curvy'] - 0.99:+.3f})"
    assert rep["NMI"].startswith("0.950 (Δ -") and rep["ARI"] == "–"
    assert rep["Budget"] == "paper" and rep["Seeds"] == "–" and rep["Source"] == "reported [1]"
    assert "[1] Doe et al., Curvy, 2099, Table 1" in out
    # bold marks the best *measured* mean, even though the paper's number is higher
    measured = [r for r in rows if r["Source"] == "measured"]
    bold = [r for r in measured if r["ACC"].startswith("**")]
    assert len(bold) == 1 and float(bold[0]["ACC"].strip("*").split("±")[0]) == pytest.approx(
        max(acc.values()), abs=5e-4)
    assert not any("**" in v for v in rep.values())
    # the caption says how the numbers were measured
    assert "Evaluation protocol: head (the method's own cluster assignment)." in out
    assert "Training budget: epochs=4 for every deep method; shallow baselines (budget -)" in out
    assert "Δ = measured mean − reported" in out
    # the failed runs are listed under the tables, never in them
    assert "boom" not in methods
    assert "2 failed run(s), not in the tables:" in out and "RuntimeError: exploded on purpose" in out


def test_markdown_without_paper_has_no_paper_rows(store, capsys):
    _, plugin, results = store
    rc, out, _ = report(capsys, plugin, results)
    assert rc == 0
    rows = table_rows(out, "synthetic")
    assert {r["Method"] for r in rows} == {"kmeans[nredo=1]", "curvy", "curvy[speed=500,quality=0.6]"}
    assert "Source" not in rows[0] and "reported" not in out
    assert all(r["Seeds"] == "2" and "±" in r["ACC"] for r in rows)


def test_latex_with_paper_rows(store, capsys):
    _, plugin, results = store
    rc, out, _ = report(capsys, plugin, results, "--format", "latex", "--paper")
    assert rc == 0
    assert r"\caption{Clustering results on synthetic (mean $\pm$ std over seeds" in out
    assert "Training budget: epochs=4" in out and r"$\Delta$ = measured mean - reported" in out
    line = next(ln for ln in out.splitlines() if ln.startswith(r"\textit{curvy (reported)}"))
    assert r"\textit{0.990 ($\Delta$ " in line and line.endswith(r"\\")
    assert r"{\footnotesize [1] Doe et al., Curvy, 2099, Table 1}" in out
    for table in out.split(r"\end{table}")[:-1]:  # the leaderboard and the tables under it
        body = [ln for ln in table.splitlines() if ln.endswith(r"\\") and "&" in ln]
        assert len({ln.count("&") for ln in body}) == 1  # every row has every column
    assert out.count(r"\textbf{") >= 3 and "±" not in out and "Δ" not in out


def test_csv_with_paper_rows(store, capsys):
    _, plugin, results = store
    rc, out, _ = report(capsys, plugin, results, "--format", "csv", "--paper")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    (rep,) = [r for r in rows if r["source"] == "reported"]
    assert rep["method"] == "curvy" and rep["dataset"] == "synthetic" and rep["budget"] == "paper"
    assert float(rep["acc_mean"]) == 0.99 and rep["citation"] == "Doe et al., Curvy, 2099, Table 1"
    measured = {r["method"]: r for r in rows if r["source"] == "measured"}
    assert float(measured["curvy"]["acc_mean"]) == pytest.approx(means(results)["curvy"], rel=1e-5)


# ---- the HTML report and --output-dir -------------------------------------------------------------
@pytest.fixture(scope="module")
def output_dir(store):
    root, plugin, results = store
    out = root / "site"
    assert main(["--plugin", str(plugin), "report", "--results", str(results), "--paper", "--figure-methods", "2",
                 "--output-dir", str(out)]) == 0
    return out


def test_output_dir_writes_every_format(store, output_dir, capsys):
    _, plugin, results = store
    assert sorted(p.name for p in output_dir.iterdir()) == ["LEADERBOARD.md", "figures", "leaderboard.csv",
                                                            "leaderboard.tex", "report.html"]
    for fmt, name in (("markdown", "LEADERBOARD.md"), ("latex", "leaderboard.tex"), ("csv", "leaderboard.csv")):
        rc, out, _ = report(capsys, plugin, results, "--format", fmt, "--paper")
        assert rc == 0 and out == (output_dir / name).read_text() + "\n", name


def test_output_dir_replaces_a_figure_kept_in_another_format(store, tmp_path):
    _, plugin, results = store
    figs = tmp_path / "site" / "figures"
    figs.mkdir(parents=True)
    (figs / "synthetic-samples-curvy.png").write_bytes(b"an older report's PNG")  # before grids were JPEG
    (figs / "notes.txt").write_text("not a figure: kept")
    (figs / "synthetic-samples-curvy.pdf").write_text("a user's export of it: kept")
    assert main(["--plugin", str(plugin), "report", "--results", str(results), "--figure-methods", "1",
                 "--output-dir", str(tmp_path / "site")]) == 0
    assert (figs / "synthetic-samples-curvy.jpg").read_bytes().startswith(b"\xff\xd8")
    assert not (figs / "synthetic-samples-curvy.png").exists()
    assert (figs / "notes.txt").exists() and (figs / "synthetic-samples-curvy.pdf").exists()


def test_html_report_is_one_self_contained_file(output_dir):
    html = (output_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.findall(r'(?:src|href)="(?!data:)', html)  # nothing fetched from elsewhere
    found = re.findall(r'<figure id="([^"]+)"><img alt="[^"]*" src="data:image/(png|jpeg);base64,([^"]+)"', html)
    figures = {key: b64 for key, _, b64 in found}
    assert {key for key, mime, _ in found if mime == "jpeg"} == {k for k in figures if "-samples-" in k}
    expected = {"synthetic-curves-epochs", "synthetic-curves-seconds", "synthetic-throughput",
                "synthetic-confusion-curvy", "synthetic-samples-curvy",  # the two best methods (--figure-methods 2)
                "synthetic-confusion-curvy_speed_500_quality_0.6_", "synthetic-samples-curvy_speed_500_quality_0.6_"}
    assert set(figures) == expected
    from PIL import Image

    for key, b64 in figures.items():
        data = base64.b64decode(b64)
        ext = "jpg" if "-samples-" in key else "png"  # photos as JPEG: a quarter of the PNG's size
        w, h = png_size(data) if ext == "png" else Image.open(io.BytesIO(data)).size
        assert 300 < w < 2000 and 200 < h < 2000, (key, w, h)
        assert (output_dir / "figures" / f"{key}.{ext}").read_bytes() == data  # the same figure, as a file
    assert sorted(p.name for p in (output_dir / "figures").iterdir()) == sorted(
        f"{k}.{'jpg' if '-samples-' in k else 'png'}" for k in figures)
    # the figures show something: not a blank canvas
    for key in ("synthetic-confusion-curvy.png", "synthetic-samples-curvy.jpg", "synthetic-curves-epochs.png"):
        img = np.asarray(Image.open(output_dir / "figures" / key).convert("L"), dtype=float)
        assert img.std() > 20, key
    # the table: bold best, the paper's row marked, the failed runs listed
    assert html.count("<b>") >= 3 and '<tr class="reported"><td class="t">curvy (reported)</td>' in html
    assert "Failed runs (2)" in html and "boom on synthetic seed 0: RuntimeError: exploded on purpose" in html
    assert "Evaluation protocol: head" in html


def test_confusion_matrix_is_in_matched_order():
    from clusterbench.report.plots import match_clusters

    y = np.repeat(np.arange(4), 5)
    pred = np.array([2, 3, 0, 1])[y]  # a perfect clustering under other names
    pred[0] = 1  # one class-0 image in class 3's cluster
    m = match_clusters(y, pred, 4)
    assert m.order == [2, 3, 0, 1] and m.match == {2: 0, 3: 1, 0: 2, 1: 3}
    assert m.acc == pytest.approx(19 / 20)
    assert m.counts.trace() == 19 and m.counts[0, 3] == 1
    # more clusters than classes: the unmatched ones come last
    m = match_clusters(y, np.where(np.arange(20) % 5 == 0, 9, pred), 4)
    assert m.order[-1] == 9 and 9 not in m.match and m.counts.shape == (4, 5)


# ---- figures that need the data -------------------------------------------------------------------
@pytest.fixture
def npz_store(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8), np.arange(30) % 3
    np.savez(tmp_path / "data.npz", x=x, y=y)
    results = tmp_path / "res"
    assert main(["run", "--methods", "kmeans[nredo=1]", "--datasets", f"npz[path={tmp_path / 'data.npz'}]",
                 "--seeds", "0", "--results", str(results), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path, results


def html_of(capsys, results: Path, *args: str) -> tuple[str, str]:
    assert main(["report", "--results", str(results), "--html", *args]) == 0
    out, err = capsys.readouterr()
    return out, err


def test_figures_from_a_reloaded_dataset(npz_store, capsys):
    _, results = npz_store
    html, err = html_of(capsys, results)
    assert 'id="npz-confusion-kmeans_nredo_1_"' in html and 'id="npz-samples-kmeans_nredo_1_"' in html
    assert "could not be loaded" not in html and "note" not in err


@pytest.mark.parametrize("damage,fragment", [
    ("delete", "data.npz not found"),
    ("replace", "but the runs used"),
    ("labels", "labels.npy"),
])
def test_figures_that_need_the_data_are_skipped_with_a_note(npz_store, capsys, damage, fragment):
    tmp_path, results = npz_store
    if damage == "delete":
        (tmp_path / "data.npz").unlink()
    elif damage == "replace":  # other data under the same name
        np.savez(tmp_path / "data.npz", x=np.zeros((30, 8, 8, 1), np.uint8), y=np.arange(30) % 3)
    else:
        next(results.glob("runs/*/labels.npy")).write_bytes(b"garbage")
    html, err = html_of(capsys, results)
    assert 'id="npz-throughput"' in html  # the figures that need no data are still there
    assert "npz-confusion" not in html and "npz-samples" not in html
    notes = re.findall(r"<li>([^<]*)</li>", html)
    assert any(fragment in n and "skipped" in n for n in notes), notes
    assert "clusterbench: note: " in err and fragment in err


def test_runs_on_different_data_of_one_name_are_never_averaged(tmp_path, capsys):
    results = tmp_path / "res"
    for n in (30, 36):
        assert main(["run", "--methods", "kmeans[nredo=1]", "--datasets", f"synthetic[n={n},classes=3,size=8]",
                     "--seeds", "0", "--results", str(results), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "### synthetic[classes=3,n=30,size=8]" in out and "### synthetic[classes=3,n=36,size=8]" in out
    assert [r["Seeds"] for r in table_rows(out, "synthetic[classes=3,n=30,size=8]")] == ["1"]


def test_one_seed_shows_a_bare_mean_not_a_zero_spread(tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["run", "--methods", "kmeans[nredo=1]", "--datasets", "digits", "--seeds", "0", "--results",
                 str(results), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", "--results", str(results)]) == 0
    row = table_rows(capsys.readouterr().out, "digits")[0]
    assert row["Seeds"] == "1" and "±" not in row["ACC"] and float(row["ACC"].strip("*")) > 0.5


# ---- aggregate once, render many ------------------------------------------------------------------
def count_aggregations(monkeypatch) -> list[int]:
    """Count calls of the one aggregation every report goes through."""
    import clusterbench.report.leaderboard as lb

    calls: list[int] = []
    real = lb.aggregate

    def counted(df):
        calls.append(len(df))
        return real(df)

    monkeypatch.setattr(lb, "aggregate", counted)
    return calls


def test_output_dir_aggregates_once(store, tmp_path, monkeypatch, capsys):
    _, plugin, results = store
    calls = count_aggregations(monkeypatch)
    with pytest.warns(UserWarning, match="Roe 2098"):
        assert main(["--plugin", str(plugin), "report", "--results", str(results), "--paper", "--figure-methods",
                     "1", "--output-dir", str(tmp_path / "site")]) == 0
    capsys.readouterr()
    assert len(calls) == 1, f"{len(calls)} aggregations for one report (markdown, latex, csv, html, figures)"


def test_one_leaderboard_feeds_every_format_and_the_figures(store, monkeypatch):
    from clusterbench.report.figures import build_figures
    from clusterbench.report.leaderboard import build_leaderboard
    from clusterbench.report.render import FORMATS, render
    from clusterbench.results.store import ResultsStore

    _, _, results = store
    rs = ResultsStore(results, create=False)
    records = list(rs.iter_records())
    calls = count_aggregations(monkeypatch)
    board = build_leaderboard(records, reported=[])
    figures = build_figures(board, rs.load_labels, None)
    texts = {fmt: render(board, fmt, figures=figures) for fmt in FORMATS}
    assert len(calls) == 1
    assert [t.dataset for t in board.tables] == ["synthetic"] and len(board.failed) == 2
    assert {f.dataset for f in figures} == {"synthetic"} and "(no dataset loader)" in figures[0].notes[0]
    # the same text as building the leaderboard inside render, format by format
    for fmt in ("markdown", "latex", "csv"):
        assert texts[fmt] == render(records, fmt, reported=[]), fmt
    with pytest.raises(TypeError, match="build_leaderboard"):
        render(board, "markdown", reported=[])


# ---- plots get labels only through the store ------------------------------------------------------
def test_figures_read_labels_only_through_the_store(npz_store):
    from clusterbench.errors import RecordError
    from clusterbench.report.figures import build_figures
    from clusterbench.report.leaderboard import build_leaderboard
    from clusterbench.results.store import ResultsStore

    tmp_path, results = npz_store
    rs = ResultsStore(results, create=False)
    (rec,) = rs.iter_records()
    data = np.load(tmp_path / "data.npz")
    loader = type("Data", (), {"x": data["x"], "y": data["y"], "n_classes": 3, "class_names": (),
                               "__len__": lambda self: 30})
    asked = []

    def labels(r, n):
        asked.append((r["run_id"], n))
        return rs.load_labels(r, n)

    board = build_leaderboard([rec])
    (figs,) = build_figures(board, labels, lambda r: loader())
    assert asked == [(rec["run_id"], 30)] and any(f.key.startswith("npz-confusion") for f in figs.figures)
    # valid .npy, other labels: the store's sha256 check is what skips the figures, with its reason
    np.save(rs.run_dir(rec["run_id"]) / "labels.npy", np.zeros(30, dtype=np.int64))
    with pytest.raises(RecordError) as why:
        rs.load_labels(rec, 30)
    (figs,) = build_figures(board, labels, lambda r: loader())
    assert not any("confusion" in f.key or "samples" in f.key for f in figs.figures)
    assert figs.notes == [f"kmeans[nredo=1] on npz: confusion matrix and sample grid skipped: {why.value}"]
    assert "is not the labels this record was written with" in str(why.value)


def test_no_label_reading_outside_the_store():
    import clusterbench.report as report

    for path in Path(report.__file__).parent.glob("*.py"):
        text = path.read_text()
        for needle in ("hashlib", "np.load", "read_bytes", "linear_sum_assignment"):
            assert needle not in text, f"{path.name} uses {needle}: labels come from the store, matching from metrics"


def test_match_clusters_is_the_metrics_matching():
    from clusterbench.evaluate.metrics import cluster_acc
    from clusterbench.report.plots import match_clusters

    rng = np.random.default_rng(0)
    for n_classes, n_clusters in ((3, 3), (5, 3), (3, 6), (6, 6)):
        y = rng.integers(0, n_classes, 50)
        y[: n_classes - 1] = np.arange(n_classes - 1)  # the last class may be empty: still a row
        pred = np.where(rng.random(50) < 0.7, (y * 3 + 1) % n_clusters, rng.integers(0, n_clusters, 50)) * 10
        m = match_clusters(y, pred, n_classes)
        assert m.acc == pytest.approx(cluster_acc(y, pred))
        assert m.counts.shape == (n_classes, len(np.unique(pred))) and m.counts.sum() == 50
        assert sum(m.counts[t, j] for j, c in enumerate(m.order) for t in [m.match.get(c)] if t is not None) \
            == round(m.acc * 50)
        assert sorted(m.order) == sorted(int(c) for c in np.unique(pred))


# ---- one formatter of each kind ----------------------------------------------------------------------
def test_formatters():
    from clusterbench.report import fmt

    assert fmt.mean_std(0.81234, 0.0041) == "0.812 ± 0.004" and fmt.mean_std(0.5, float("nan")) == "0.500"
    assert fmt.mean_std(None, None) == "–" == fmt.cost(float("nan"))
    assert fmt.cost(12345.6) == "12,346" and fmt.cost(4.25) == "4.2"
    assert [fmt.human(v) for v in (1234, 45678, 7.1e8, 2e9)] == ["1,234", "45.7k", "710.0M", "2.0G"]
    assert fmt.safe_name("curvy[speed=500,quality=0.6]") == "curvy_speed_500_quality_0.6_"
    assert fmt.budget_text({"seconds": 60, "epochs": 4}) == "epochs=4,seconds=60" and fmt.budget_text({}) == "-"
