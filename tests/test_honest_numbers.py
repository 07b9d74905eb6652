"""Numbers that would mislead: a stored-labels plugin's inference throughput, hand-edited metrics,
a table that silently leaves out cells another process runs, threads oversubscribing the CPUs,
compiled augmentation claimed on the CPU."""

from __future__ import annotations

import json

import pytest

from clusterbench.cli import main
from clusterbench.results.store import ResultsStore
from clusterbench.settings import EngineSettings
from helpers import error_lines, records_in

SMALL = "synthetic[n=120,classes=3,size=8]"

# the README tutorial's plugin, as a user copies it (it does not say whether it is transductive)
TUTORIAL = '''
from dataclasses import dataclass
import numpy as np
from clusterbench import Method, hookimpl, param

class Spectral(Method):
    name = "spectral"
    description = "spectral clustering on pixels"
    quick = True

    @dataclass(frozen=True)
    class Params:
        n_neighbors: int = param(10, "k of the k-NN graph", "von Luxburg 2007, sec. 8")

    def fit(self, data, ctx):
        from sklearn.cluster import SpectralClustering
        x = data.x.reshape(len(data), -1) / 255.0
        self.labels = SpectralClustering(data.n_classes, affinity="nearest_neighbors",
                                         n_neighbors=self.params.n_neighbors,
                                         random_state=ctx.seed).fit_predict(x)

    def predict(self, data):
        return self.labels

@hookimpl
def clusterbench_methods():
    return [Spectral]
'''


def test_the_tutorial_plugin_reports_no_inference_throughput(tmp_path, capsys):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(TUTORIAL)
    res = tmp_path / "res"
    assert main(["--plugin", str(plugin), "run", "--methods", "spectral", "--datasets", SMALL, "--seeds", "0",
                 "--results", str(res), "--quiet"]) == 0
    out = capsys.readouterr().out
    (rec,) = records_in(res)
    assert rec["cost"]["eval_images_per_s"] is None
    costs = out.split("cost per cell", 1)[1].splitlines()  # throughput lives in the cost table
    header = [c.strip() for c in next(ln for ln in costs if ln.startswith("| Method")).split("|")]
    row = [c.strip() for c in next(ln for ln in costs if ln.startswith("| spectral")).split("|")]
    assert dict(zip(header, row))["Eval img/s"] == "–" and dict(zip(header, row))["Device"] == "cpu"


@pytest.mark.parametrize("field, value, fragment", [
    ("acc", True, "protocols.head.acc should be a number, got True"),
    ("ari", 7.5, "protocols.head.ari=7.5 is outside [-1, 1]"),
    ("nmi", -0.1, "protocols.head.nmi=-0.1 is outside [0, 1]"),
    ("acc", "0.9", "protocols.head.acc should be a number"),
])
def test_hand_edited_metrics_are_refused_on_load(tmp_path, capsys, field, value, fragment):
    res = tmp_path / "res"
    assert main(["run", "--methods", "kmeans", "--datasets", SMALL, "--seeds", "0", "--results", str(res),
                 "--quiet"]) == 0
    path = next(res.glob("runs/*/record.json"))
    rec = json.loads(path.read_text())
    rec["protocols"]["head"][field] = value
    path.write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["report", "--results", str(res)]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], lines


def test_cells_running_in_another_process_are_named(tmp_path, capsys):
    res = tmp_path / "res"
    args = ["run", "--methods", "kmeans", "--datasets", SMALL, "--seeds", "0", "1", "--results", str(res), "--quiet"]
    assert main(args) == 0
    rid = next(r["run_id"] for r in records_in(res) if r["seed"] == 1)
    capsys.readouterr()
    with ResultsStore(res).lock(rid) as got:  # another process holds seed 1
        assert got
        assert main([*args, "--force"]) == 0
    err = capsys.readouterr().err
    assert ("1 cell(s) not in this table, still running in another process: kmeans on synthetic seed 1. "
            f"When they finish, `clusterbench report --results {res}` is the table of record.") in err


def test_threads_are_sized_to_the_cpus_per_worker(monkeypatch):
    import torch

    from clusterbench.evaluate.faiss_kmeans import available_cpus
    from clusterbench.threads import size_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert size_threads(workers=2) == max(1, available_cpus() // 2) == torch.get_num_threads()
        monkeypatch.setenv("CLUSTERBENCH_WORKERS", str(available_cpus() * 4))
        assert size_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert size_threads() is None  # the user's explicit choice stands
    finally:
        torch.set_num_threads(before)


def test_compiled_augmentation_is_never_claimed_on_the_cpu():
    assert EngineSettings(device="cpu", compile=True, compile_augment=True).augment_compiled is False
    assert EngineSettings(device="cuda", compile_augment=True).augment_compiled is True
    assert EngineSettings(device="cuda", compile=False, compile_augment=False).augment_compiled is False


def test_a_long_method_spec_wraps_and_the_legend_stays_off_the_curves(tmp_path, capsys, monkeypatch):
    from clusterbench.report import plots

    spec = "kmeans-pca[n_components=50,whiten=false,niter=100,nredo=10,n_clusters=0]"
    recs = [{"method": "kmeans-pca", "method_spec": spec + "x" * i, "seed": s,
             "curve": [{"epoch": e, "acc": 0.1 * e, "nmi": 0.05 * e} for e in range(1, 6)]}
            for i in range(3) for s in (0, 1)]
    figs = []
    monkeypatch.setattr(plots, "to_png", lambda fig: figs.append(fig) or b"png")
    assert plots.learning_curves(recs) == b"png"
    (fig,) = figs
    fig.draw_without_rendering()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert all("\n" in t.get_text() for t in legend.get_texts())  # wrapped, not one 80-character line

    res = tmp_path / "res"
    assert main(["run", "--methods", spec, "--datasets", SMALL, "--seeds", "0", "--results", str(res),
                 "--quiet"]) == 0
    out = tmp_path / "r.html"
    assert main(["report", "--results", str(res), "--html", "-o", str(out)]) == 0
    page = out.read_text()
    assert "td.t{white-space:normal;overflow-wrap:anywhere" in page
    assert '<div class="wide"><table>' in page and spec in page
