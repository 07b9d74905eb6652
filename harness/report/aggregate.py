"""From records to numbers: row labels, the long frame, mean ± std over seeds.

Labels keep apart what must never share a mean: runs of one dataset name measured on
other data (options, files) go to different tables, and runs of one method spec that
differ in version, precision or compile setting get different rows.  Failed runs never
enter the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

from clusterbench.report.fmt import budget_text, options_text

METRICS = [  # (record key, column title, higher is better)
    ("acc", "ACC", True),
    ("nmi", "NMI", True),
    ("ari", "ARI", True),
    ("linear", "Linear acc", True),
    ("linear_logreg", "Linear acc (logreg)", True),
]
LINEAR = {"linear": "linear", "linear-logreg": "linear_logreg"}  # record protocol -> frame column
COSTS = [  # the clock itself (train s, setup s) is in the cost-per-cell table (report/costs.py)
    ("train_images_per_s", "Train img/s"),
    ("eval_images_per_s", "Eval img/s"),
    ("wall_seconds", "Wall s"),
]
KEYS = ["dataset", "method", "protocol", "budget"]  # one aggregate row per combination


def _data_key(rec: dict[str, Any]) -> tuple[str, str, str]:
    ds = rec["dataset"]
    return ds["name"], options_text(ds), str(ds.get("digest", ""))


def _dataset_labels(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(name, options, digest) -> the table a record goes to.

    The dataset's name, unless records of that name were measured on different data
    (other options, other files): then the options (and the data digest) tell them apart,
    so different data never share one mean.
    """
    by_name: dict[str, set[tuple[str, str]]] = {}
    for rec in records:
        name, opts, digest = _data_key(rec)
        by_name.setdefault(name, set()).add((opts, digest))
    out = {}
    for name, variants in by_name.items():
        for opts, digest in variants:
            label = name
            if len(variants) > 1:
                label = name + opts
                if sum(1 for o, _ in variants if o == opts) > 1:
                    label += f" (data {digest[:8]})"
            out[(name, opts, digest)] = label
    return out


def dataset_labels(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """run_id -> the dataset table the record goes to."""
    labels = _dataset_labels(records)
    return {rec["run_id"]: labels[_data_key(rec)] for rec in records}


def _variant(rec: dict[str, Any]) -> tuple[str, str, str]:
    eng = rec.get("engine") if isinstance(rec.get("engine"), dict) else {}
    return (str(rec.get("method_version", "")), str(eng.get("precision", "")) if rec.get("budget") else "",
            "compile" if eng.get("compile") else "")


def method_labels(records: Sequence[dict[str, Any]], datasets: dict[str, str] | None = None) -> dict[str, str]:
    """run_id -> the method's row label: its spec, plus the version / precision / compile
    setting where runs of one spec differ in them (so they are never averaged together).

    ``datasets`` is :func:`dataset_labels` of the same records, when already computed.
    """
    datasets = dataset_labels(records) if datasets is None else datasets
    groups: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
    key = {}
    for rec in records:
        k = (datasets[rec["run_id"]], str(rec.get("method_spec", rec["method"])))
        key[rec["run_id"]] = k
        groups.setdefault(k, set()).add(_variant(rec))
    out = {}
    for rec in records:
        k = key[rec["run_id"]]
        label = k[1]
        variants = groups[k]
        if len(variants) > 1:
            v = _variant(rec)
            parts = [f"v{v[0]}" if len({x[0] for x in variants}) > 1 else "",
                     v[1] if len({x[1] for x in variants}) > 1 else "",
                     (v[2] or "eager") if len({x[2] for x in variants}) > 1 else ""]
            label += " (" + ", ".join(p for p in parts if p) + ")"
        out[rec["run_id"]] = label
    return out


@dataclass(frozen=True)
class RunLabels:
    """Where each finished run is shown: its table (dataset) and its row (method)."""

    dataset: dict[str, str]  # run_id -> dataset label
    method: dict[str, str]  # run_id -> method label


def label_runs(done: Sequence[dict[str, Any]]) -> RunLabels:
    """Both labels of every finished run, each computed once."""
    datasets = dataset_labels(done)
    return RunLabels(datasets, method_labels(done, datasets))


def finished(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose numbers enter tables: done, and partial (their protocols that succeeded)."""
    return [rec for rec in records if rec.get("status") in ("done", "partial")]


def records_to_frame(records: Iterable[dict[str, Any]], labels: RunLabels | None = None) -> pd.DataFrame:
    """One row per (finished run, protocol): the long table every report is built from.

    ``labels``: :func:`label_runs` of the finished records, when already computed.
    """
    done = finished(records)
    labels = label_runs(done) if labels is None else labels
    rows = []
    for rec in done:
        protocols = rec.get("protocols", {})
        linear = {col: (protocols.get(p) or {}).get("accuracy") for p, col in LINEAR.items()}
        cluster_protocols = [p for p in protocols if p not in LINEAR] or ["linear"]
        for proto in cluster_protocols:
            m = protocols.get(proto, {})
            cost = rec.get("cost") or {}
            env = rec.get("env") or {}
            rows.append({
                "dataset": labels.dataset[rec["run_id"]],
                "method": labels.method[rec["run_id"]],
                "protocol": proto,
                "budget": budget_text(rec.get("budget", {})),
                "seed": rec["seed"],
                "acc": m.get("acc"),
                "nmi": m.get("nmi"),
                "ari": m.get("ari"),
                **linear,
                # a linear number measured in a clustering cell (older records): its pretraining saw the test split
                "linear_leaky": proto != "linear" and linear["linear"] is not None,
                **{k: cost.get(k) for k, _ in COSTS},
                "device": env.get("gpu") or env.get("device"),
                "run_id": rec["run_id"],
                "dataset_name": rec["dataset"]["name"],
                "method_name": rec["method"],
                "provenance": rec.get("method_provenance") or "unknown",  # older records: not recorded
                "variant": rec["dataset"].get("variant") or "",
            })
    return pd.DataFrame(rows)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds for each (dataset, method, protocol, budget)."""
    if df.empty:
        return df
    values = [k for k, _, _ in METRICS] + [k for k, _ in COSTS]
    g = df.groupby(KEYS, sort=True, dropna=False)
    mean = g[values].mean()
    # one seed has no spread: std stays NaN and the table shows the bare mean, not "± 0.000"
    std = g[values].std(ddof=1) if len(df) else mean * 0
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["seeds"] = g["seed"].nunique()
    extra = [c for c in ("dataset_name", "method_name", "provenance", "variant") if c in df.columns]
    if extra:
        out = out.join(g[extra].first())
    if "linear_leaky" in df.columns:
        out = out.join(g["linear_leaky"].any())
    return out.reset_index()


def failed_runs(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per failed run: what, where, why (failed runs never enter a table)."""
    out = []
    for rec in records:
        if rec.get("status") == "failed":
            reason = (rec.get("error") or {}).get("reason", "no reason recorded") \
                if isinstance(rec.get("error"), dict) else "no reason recorded"
            out.append(f"{rec.get('method_spec', rec['method'])} on {rec['dataset']['name']} seed {rec['seed']}: "
                       f"{reason} ({rec['run_id']})")
        elif rec.get("status") == "partial":  # in the tables with the protocols that succeeded
            for proto, why in (rec.get("protocol_errors") or {}).items():
                out.append(f"{rec.get('method_spec', rec['method'])} on {rec['dataset']['name']} seed "
                           f"{rec['seed']}: protocol {proto} failed: {why} ({rec['run_id']})")
    return out
