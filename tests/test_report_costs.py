"""The tables under each leaderboard: head ACC at equal GPU time, and what each cell cost."""

from __future__ import annotations

import pytest

from clusterbench.report.costs import acc_at, cost_table, equal_time_table
from test_report import report, store, table_rows  # noqa: F401  (the shared results store fixture)

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def rec(seed: int, points: list[tuple[float, float | None]], *, world: int = 1, linear: bool = False,
        **cost) -> dict:
    """A record with a learning curve of (train_seconds, acc or None) points."""
    return {"run_id": f"r{seed}{world}{linear}", "seed": seed, "budget": {"epochs": 3},
            "engine": {"world_size": world},  # where the runner records it
            "protocols": {"linear": {"accuracy": 0.5}} if linear else {"head": {"acc": 0.1}},
            "curve": [{"epoch": i + 1, "train_seconds": t, **({"acc": a} if a is not None else {})}
                      for i, (t, a) in enumerate(points)],
            "cost": {"train_seconds": points[-1][0], **cost}, "env": {"device": "cpu"}}


def test_acc_at_is_the_last_point_evaluated_by_then_and_none_past_the_end():
    r = rec(0, [(30, 0.2), (60, None), (90, 0.4), (120, 0.5)])
    assert acc_at(r, 59) == 0.2          # no interpolation towards 0.4
    assert acc_at(r, 60) == 0.2          # the point at 60 s has no ACC: the one before holds
    assert acc_at(r, 95) == 0.4
    assert acc_at(r, 120) == 0.5
    assert acc_at(r, 121) is None        # it stopped training before that mark
    assert acc_at(rec(0, [(90, 0.4)]), 60) is None  # trained past 60 s but nothing evaluated by then
    # two GPUs: 45 s of training is 90 GPU-seconds
    assert acc_at(rec(0, [(30, 0.2), (45, 0.4)], world=2), 90) == 0.4


def test_equal_time_table_means_over_seeds_and_skips_linear_cells():
    recs = [rec(0, [(60, 0.2), (120, 0.4)]), rec(1, [(60, 0.3), (150, 0.6)]),
            rec(2, [(60, 0.9)], linear=True)]
    method_of = {r["run_id"]: "m" for r in recs}
    t = equal_time_table(recs, method_of, minutes=(1, 2, 2.5))
    assert list(t["Method"]) == ["m"] and t.at[0, "Seeds"] == "2"
    assert t.at[0, "ACC @ 1 GPU-min"] == "0.250 ± 0.071"
    assert t.at[0, "ACC @ 2 GPU-min"] == "0.350 ± 0.071"   # seed 1 by 120 s: its point at 60 s
    assert t.at[0, "ACC @ 2.5 GPU-min"] == "–"    # seed 0 stopped at 2 minutes: not averaged over seed 1 alone
    assert t.at[0, "Curve ACC at end"] == "0.500 ± 0.141"


def test_cost_table_keeps_linear_cells_apart_and_counts_gpus():
    recs = [rec(0, [(60, 0.2)], wall_seconds=120, setup_seconds=30.0, gpu_peak_mb=1000.0),
            rec(1, [(60, 0.2)], wall_seconds=180, setup_seconds=50.0, gpu_peak_mb=1200.0),
            rec(0, [(60, 0.2)], linear=True, world=2, wall_seconds=60)]
    t = cost_table(recs, {r["run_id"]: "m" for r in recs})
    rows = {r["Cell"]: r for r in t.to_dict("records")}
    assert rows["train+test"]["Minutes"] == "2.5" and rows["train+test"]["Setup s"] == "40.0"
    assert rows["train+test"]["Peak GPU MB"] == "1,100" and rows["train+test"]["Seeds"] == "2"
    assert rows["train (linear)"]["Minutes"] == "2.0"     # 1 minute on 2 GPUs
    assert rows["train (linear)"]["Setup s"] == "–"       # an older record: not measured


def test_report_shows_both_tables_under_the_leaderboard(store, capsys):
    _, plugin, results = store
    # curvy's pretend clock: 60 images at 1000 img/s = 0.06 s an epoch; kmeans has no curve
    rc, out, _ = report(capsys, plugin, results, "--equal-time", "0.001", "0.01")
    assert rc == 0
    section = out.split("#### synthetic: equal gpu time\n", 1)[1].split("#### ", 1)[0]
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
            for ln in section.splitlines() if ln.startswith("| curvy")}
    assert set(rows) == {"curvy", "curvy[speed=500,quality=0.6]"}
    slow = rows["curvy[speed=500,quality=0.6]"]
    assert rows["curvy"][2] != "–" and slow[2] == "–"  # at 0.06 s curvy has its first point, the slow one none yet
    assert rows["curvy"][3] == slow[3] == "–"          # at 0.6 s both had stopped (0.24 s and 0.48 s)
    costs = out.split("#### synthetic: cost per cell")[1]
    crow = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
            for ln in costs.splitlines() if ln.startswith("| ")}
    head = crow["Method"]
    km = dict(zip(head, crow["kmeans[nredo=1]"]))  # no training loop: a CPU row with – for training columns
    assert km["Device"] == "cpu" and km["Setup s"] == km["Train s"] == km["Train img/s"] == "–"
    assert km["Minutes"] != "–" and dict(zip(head, crow["curvy"]))["Train img/s"] != "–"
    assert not {"Train img/s", "Wall s"} & set(table_rows(out, "synthetic")[0])  # costs live in one table
    assert {r["Method"] for r in table_rows(out, "synthetic")} >= {"curvy", "kmeans[nredo=1]"}  # leaderboard intact
    for fmt, marker in (("latex", r"\caption{Equal GPU time on synthetic"), ("html", "<caption>Cost per cell: ")):
        rc, out, _ = report(capsys, plugin, results, "--format", fmt)
        assert rc == 0 and marker in out


def test_equal_time_marks_must_be_positive(store, capsys):
    _, plugin, results = store
    rc, _, err = report(capsys, plugin, results, "--equal-time", "0")
    assert rc == 2 and "bad --equal-time 0" in err
