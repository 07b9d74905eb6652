"""The leaderboard: everything a report shows, computed once and rendered many times.

:func:`build_leaderboard` turns records into one :class:`Leaderboard`: the per-dataset
:class:`Table` (rows as display strings, which cells hold the best mean, which rows are a
paper's numbers, the caption, the citations), the aggregate frame, the failed runs and
the labels of every run.  Markdown, LaTeX, CSV, HTML (:mod:`clusterbench.report.render`)
and the figures (:mod:`clusterbench.report.figures`) all read this object, so one
``clusterbench report`` aggregates once however many outputs it writes.

Rows are (method, evaluation protocol, budget); a row never mixes protocols or budgets.
With ``reported`` (the numbers papers report, from the ``clusterbench_reported_results``
hook), a row of the paper's numbers follows the measured row it matches (method base name,
dataset name, protocol), marked as reported, with its citation and the gap Δ, which is
shown only where the plugin follows the paper's official code or text
(:data:`~clusterbench.api.FAITHFUL`).  A reconstruction's row (and one whose provenance is
undeclared or, in an older record, unknown) carries a mark and a footnote, and the paper's
number beside it is "reported for the original method", with no Δ.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from clusterbench.api import FAITHFUL
from clusterbench.report.aggregate import (COSTS, METRICS, aggregate, failed_runs, finished, label_runs,
                                           records_to_frame)
from clusterbench.report.costs import DEFAULT_MINUTES, Extra, check_marks, extras_for
from clusterbench.report.fmt import mean_std

__all__ = ["Leaderboard", "Table", "build_leaderboard", "build_tables", "reported_index", "base_method",
           "records_to_frame", "aggregate", "failed_runs", "METRICS", "COSTS", "PROTOCOL_DOC", "MARKS", "provenance_of"]

PROTOCOL_DOC = {
    "head": "the method's own cluster assignment",
    "kmeans": "k-means on the method's features",
    "linear": "linear evaluation: pretrained on the training split only, a linear classifier on its frozen "
              "features of the training split, top-1 on the test split",
}
#: the mark a measured row's method gets, and its footnote, by provenance (faithful ones get none)
MARKS = {
    "reconstruction": ("†", "† reconstruction: neither the paper's method section nor official code was readable; "
                            "the plugin is built from the closest sources there are (see its provenance in "
                            "clusterbench info), not a reproduction of the paper's method."),
    "unspecified": ("‡", "‡ provenance not declared by the plugin: treated as a reconstruction (no Δ)."),
    "unknown": ("‡", "‡ provenance unknown: an older record that does not say how faithfully the plugin follows "
                     "its paper; treated as a reconstruction (no Δ)."),
}
PaperIndex = dict[tuple[str, str, str], dict[str, Any]]  # (method, dataset, protocol) -> citation, metrics


def base_method(spec: str) -> str:
    """``cc[preset=fast]`` -> ``cc``: the name paper numbers are matched on."""
    return str(spec).split("[", 1)[0].strip()


def reported_index(reported: Iterable[dict[str, Any]] | None) -> PaperIndex:
    """(method, dataset, protocol) -> {citation, metrics}; malformed entries are skipped with a warning."""
    index: PaperIndex = {}
    for row in reported or []:
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("method", "dataset")) \
                or not isinstance(row.get("metrics"), dict):
            warnings.warn(f"reported result {row!r} needs method, dataset (strings) and metrics (a dict); skipped")
            continue
        citation = str(row.get("citation") or "paper")
        metrics = {}
        for k, v in row["metrics"].items():
            k = "linear" if k == "accuracy" else k
            if k not in {m for m, _, _ in METRICS}:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                warnings.warn(f"reported result {row['method']} on {row['dataset']} ({citation}): {k}={v!r} is not "
                              f"a fraction in [0, 1]; skipped")
                continue
            metrics[k] = float(v)
        if not metrics:
            continue
        key = (base_method(row["method"]), row["dataset"], str(row.get("protocol") or "head"))
        index.setdefault(key, {"citation": citation, "metrics": metrics})
    return index


@dataclass
class Table:
    """One dataset's leaderboard: display strings plus what each format needs to mark."""

    dataset: str
    frame: pd.DataFrame  # display strings, no markup
    best: list[set[str]]  # per row: the columns where this row holds the best mean
    reported: list[bool]  # per row: a paper's number, not a measurement
    caption: str  # plain text (the evaluation protocol, the budget, what is marked)
    citations: list[str] = field(default_factory=list)  # [1], [2], ... of the reported rows
    notes: list[str] = field(default_factory=list)  # footnotes of the marks on method names (†, ‡)
    extras: list[Extra] = field(default_factory=list)  # the tables under it: equal GPU time, cost per cell


def _caption(sub: pd.DataFrame, has_reported: bool, linear: bool, dataset: str) -> str:
    protos = list(dict.fromkeys(sub["protocol"]))
    budgets = list(dict.fromkeys(b for b in sub["budget"] if b != "-"))
    seeds = sorted(set(int(s) for s in sub["seeds"]))
    seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    parts = [f"mean ± std over seeds ({seed_text} per row); best mean per column in bold."]
    variants = sorted({v for v in sub.get("variant", pd.Series(dtype=str)).dropna() if v})
    if variants:
        name = sub["dataset_name"].iloc[0] if "dataset_name" in sub.columns else dataset
        parts.append(f"Data: {'; '.join(f'{name} ({v})' for v in variants)}, not the original files.")
    parts.append(("Evaluation protocol: " if len(protos) == 1 else "Evaluation protocols: ")
                 + "; ".join(f"{p} ({PROTOCOL_DOC.get(p, p)})" for p in protos) + ".")
    if linear:
        parts.append("Linear acc: linear-probe accuracy on frozen features (train split → test split).")
        if "linear_leaky" in sub.columns and sub["linear_leaky"].fillna(False).astype(bool).any():
            parts.append("Linear acc in a head/kmeans row comes from an older record whose pretraining also saw "
                         "the test images (unlabelled).")
    if budgets:
        parts.append(("Training budget: " if len(budgets) == 1 else "Training budgets: ") + ", ".join(budgets)
                     + (" for every deep method" if len(budgets) == 1 else " (see the Budget column)")
                     + ("; shallow baselines (budget -) have no training loop." if "-" in set(sub["budget"])
                        else "."))
    else:
        parts.append("Training budget: none (shallow baselines, no training loop).")
    if has_reported:
        parts.append("Rows marked 'reported' are the paper's numbers (its own budget and setting, no std); "
                     "Δ = measured mean − reported, shown only where the plugin follows the paper's official "
                     "code or text.")
    return " ".join(parts)


def _paper_key(r: pd.Series, dataset: str) -> tuple[str, str, str]:
    """The (method, dataset, protocol) an aggregate row is matched to paper numbers on."""
    name = r.get("method_name") if isinstance(r.get("method_name"), str) else base_method(r["method"])
    ds_name = r.get("dataset_name") if isinstance(r.get("dataset_name"), str) else dataset
    return base_method(name), ds_name, r["protocol"]


def provenance_of(r: pd.Series) -> str:
    """A row's provenance; ``unknown`` where the records did not say (older records)."""
    p = r.get("provenance")
    return p if isinstance(p, str) and p else "unknown"


def _paper_row(key: tuple[str, str, str], entry: dict[str, Any], r: pd.Series,
               shown: list[tuple[str, str, bool]], ref: int) -> dict[str, str]:
    faithful = provenance_of(r) in FAITHFUL
    what = "reported" if faithful else "reported for the original method"
    rep = {"Method": f"{key[0]} ({what})", "Protocol": key[2], "Budget": "paper"}
    for mkey, title, _ in shown:
        v = entry["metrics"].get(mkey)
        mean = r[f"{mkey}_mean"]
        if v is None:
            rep[title] = "–"
        elif not faithful or (isinstance(mean, float) and math.isnan(mean)):
            rep[title] = f"{v:.3f}"
        else:
            rep[title] = f"{v:.3f} (Δ {mean - v:+.3f})"
    rep["Seeds"] = "–"
    rep["Source"] = f"{what} [{ref}]"
    return rep


def _table(dataset: str, sub: pd.DataFrame, index: PaperIndex) -> Table:
    sub = sub.sort_values(["acc_mean", "linear_mean"], ascending=False, na_position="last")
    shown = [(key, title, higher) for key, title, higher in METRICS if not sub[f"{key}_mean"].isna().all()]
    rows: list[dict[str, str]] = []
    best: list[set[str]] = []
    is_rep: list[bool] = []
    citations: list[str] = []
    used: set[tuple[str, str, str]] = set()
    notes: list[str] = []
    bests = {key: (sub[f"{key}_mean"].max() if higher else sub[f"{key}_mean"].min()) for key, _, higher in shown}
    for _, r in sub.iterrows():
        mark, note = MARKS.get(provenance_of(r), ("", ""))
        if note and note not in notes:
            notes.append(note)
        row = {"Method": f"{r['method']} {mark}".strip(), "Protocol": r["protocol"], "Budget": r["budget"]}
        marks = set()
        for key, title, _ in shown:
            mean = r[f"{key}_mean"]
            row[title] = mean_std(mean, r[f"{key}_std"])
            if not (isinstance(mean, float) and math.isnan(mean)) and mean == bests[key]:
                marks.add(title)
        row["Seeds"] = str(int(r["seeds"]))
        if index:
            row["Source"] = "measured"
        rows.append(row)
        best.append(marks)
        is_rep.append(False)
        key = _paper_key(r, dataset)
        if key in index and key not in used:
            used.add(key)
            entry = index[key]
            if entry["citation"] not in citations:
                citations.append(entry["citation"])
            rows.append(_paper_row(key, entry, r, shown, citations.index(entry["citation"]) + 1))
            best.append(set())
            is_rep.append(True)
    frame = pd.DataFrame(rows, columns=list(rows[0]))
    if not citations and "Source" in frame.columns:  # no paper numbers for this dataset
        frame = frame.drop(columns="Source")
    caption = _caption(sub, bool(citations), any(c.startswith("Linear acc") for c in frame.columns), dataset)
    return Table(dataset, frame, best, is_rep, caption, citations, notes)


def build_tables(agg: pd.DataFrame, index: PaperIndex | None = None) -> list[Table]:
    """One :class:`Table` per dataset, measured rows by ACC, a paper's row under its match."""
    if agg.empty:
        return []
    return [_table(str(dataset), sub, index or {}) for dataset, sub in agg.groupby("dataset", sort=True)]


def _csv_paper_rows(agg: pd.DataFrame, index: PaperIndex) -> list[dict[str, Any]]:
    """The paper entries that match a measured aggregate row, once each, as CSV rows."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _, r in agg.iterrows():
        key = (base_method(r.get("method_name") or r["method"]), r.get("dataset_name") or r["dataset"],
               r["protocol"])
        if key in index and key not in out:
            entry = index[key]
            faithful = provenance_of(r) in FAITHFUL
            out[key] = {"dataset": r["dataset"], "method": key[0], "protocol": key[2], "budget": "paper",
                        **{f"{k}_mean": v for k, v in entry["metrics"].items()},
                        "source": "reported" if faithful else "reported for the original method",
                        "citation": entry["citation"], "provenance": provenance_of(r)}
    return list(out.values())


@dataclass(frozen=True)
class Leaderboard:
    """One report's numbers, built once by :func:`build_leaderboard`; every format reads it."""

    records: list[dict[str, Any]]  # every record given, finished or failed
    done: list[dict[str, Any]]  # the finished ones, the only ones in tables and figures
    dataset_of: dict[str, str]  # run_id -> the table (dataset label) a finished run is in
    method_of: dict[str, str]  # run_id -> its row (method label)
    frame: pd.DataFrame  # one row per (finished run, protocol)
    agg: pd.DataFrame  # mean ± std per (dataset, method, protocol, budget)
    tables: list[Table]  # one per dataset, in dataset order
    failed: list[str]  # one line per failed run
    paper: PaperIndex | None  # the paper numbers asked for (None: not asked, no source column)
    paper_rows: list[dict[str, Any]] = field(default_factory=list)  # matched paper numbers, CSV rows

    @property
    def n_done(self) -> int:
        return len(self.done)

    @property
    def empty(self) -> bool:
        """No finished run: every format says so."""
        return self.frame.empty

    def runs_by_dataset(self) -> dict[str, list[dict[str, Any]]]:
        """dataset label -> its finished records, in record order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for rec in self.done:
            out.setdefault(self.dataset_of[rec["run_id"]], []).append(rec)
        return out


def build_leaderboard(records: Iterable[dict[str, Any]],
                      reported: Sequence[dict[str, Any]] | None = None, *,
                      equal_time: Sequence[float] = DEFAULT_MINUTES) -> Leaderboard:
    """Label, aggregate and tabulate ``records`` once; ``reported``: paper numbers to show beside them;
    ``equal_time``: the GPU-minute marks of the equal-time table under each leaderboard."""
    check_marks(equal_time)
    records = list(records)
    done = finished(records)
    labels = label_runs(done)
    frame = records_to_frame(done, labels)
    agg = aggregate(frame)
    paper = reported_index(reported) if reported is not None else None
    tables = build_tables(agg, paper) if not frame.empty else []
    paper_rows = _csv_paper_rows(agg, paper) if paper and not frame.empty else []
    board = Leaderboard(records, done, labels.dataset, labels.method, frame, agg, tables, failed_runs(records),
                        paper, paper_rows)
    by_dataset = board.runs_by_dataset()
    for t in tables:
        t.extras = extras_for(by_dataset.get(t.dataset, []), labels.method, equal_time)
    return board
