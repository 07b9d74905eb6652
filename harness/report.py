"""Leaderboards: finished records -> mean ± std over seeds, one table per dataset.

Rows are (method, evaluation protocol, budget); a row never mixes protocols or budgets.
Failed runs never enter an aggregate.  The best mean of each metric column is marked.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

METRICS = [  # (record key, column title, higher is better)
    ("acc", "ACC", True),
    ("nmi", "NMI", True),
    ("ari", "ARI", True),
    ("linear", "Linear acc", True),
]
COSTS = [
    ("train_images_per_s", "Train img/s"),
    ("eval_images_per_s", "Eval img/s"),
    ("wall_seconds", "Wall s"),
]
FORMATS = ("markdown", "latex", "csv")


def _budget_str(budget: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(budget.items())) or "-"


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (finished run, protocol): the long table every report is built from."""
    rows = []
    for rec in records:
        if rec.get("status") != "done":
            continue
        protocols = rec.get("protocols", {})
        linear = protocols.get("linear", {}).get("accuracy")
        cluster_protocols = [p for p in protocols if p != "linear"] or ["linear"]
        for proto in cluster_protocols:
            m = protocols.get(proto, {})
            cost = rec.get("cost", {})
            rows.append({
                "dataset": rec["dataset"]["name"],
                "method": rec.get("method_spec", rec["method"]),
                "protocol": proto if proto != "linear" else "linear only",
                "budget": _budget_str(rec.get("budget", {})),
                "seed": rec["seed"],
                "acc": m.get("acc"),
                "nmi": m.get("nmi"),
                "ari": m.get("ari"),
                "linear": linear,
                **{k: cost.get(k) for k, _ in COSTS},
                "device": (rec.get("env") or {}).get("gpu") or (rec.get("env") or {}).get("device"),
                "run_id": rec["run_id"],
            })
    return pd.DataFrame(rows)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds for each (dataset, method, protocol, budget)."""
    if df.empty:
        return df
    keys = ["dataset", "method", "protocol", "budget"]
    values = [k for k, _, _ in METRICS] + [k for k, _ in COSTS]
    g = df.groupby(keys, sort=True, dropna=False)
    mean = g[values].mean()
    std = g[values].std(ddof=1).fillna(0.0) if len(df) else mean * 0
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["seeds"] = g["seed"].nunique()
    return out.reset_index()


def _fmt(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    s = f"{mean * scale:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {std * scale:.{digits}f}"
    return s


def _cost_fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def leaderboard_tables(agg: pd.DataFrame, fmt: str = "markdown") -> list[tuple[str, pd.DataFrame]]:
    """(dataset, display table) pairs with the best mean per metric column marked."""
    tables = []
    if agg.empty:
        return tables
    bold = {"markdown": lambda s: f"**{s}**", "latex": lambda s: f"\\textbf{{{s}}}"}.get(fmt, lambda s: s)
    for dataset, sub in agg.groupby("dataset", sort=True):
        sub = sub.sort_values(["acc_mean", "linear_mean"], ascending=False, na_position="last")
        disp = pd.DataFrame({"Method": sub["method"], "Protocol": sub["protocol"], "Budget": sub["budget"]})
        for key, title, higher in METRICS:
            col = sub[f"{key}_mean"]
            if col.isna().all():
                continue
            best = col.max() if higher else col.min()
            cells = []
            for mean, std in zip(col, sub[f"{key}_std"]):
                text = _fmt(mean, std)
                cells.append(bold(text) if mean == best and not math.isnan(mean) else text)
            disp[title] = cells
        for key, title in COSTS:
            disp[title] = [_cost_fmt(v) for v in sub[f"{key}_mean"]]
        disp["Seeds"] = sub["seeds"].to_numpy()
        tables.append((dataset, disp.reset_index(drop=True)))
    return tables


def render(records: Iterable[dict[str, Any]], fmt: str = "markdown") -> str:
    """The leaderboard in one of FORMATS."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    df = records_to_frame(records)
    if df.empty:
        return "No finished runs.\n"
    agg = aggregate(df)
    if fmt == "csv":
        return agg.to_csv(index=False, float_format="%.6g")
    parts = []
    for dataset, table in leaderboard_tables(agg, fmt):
        if fmt == "markdown":
            parts.append(f"### {dataset}\n\nmean ± std over seeds; best mean per column in bold.\n\n"
                         + table.to_markdown(index=False, disable_numparse=True) + "\n")
        else:
            parts.append(_latex_table(dataset, table))
    return "\n".join(parts)


def _latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        s = s.replace(a, b)
    return s


def _latex_table(dataset: str, table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = [
        r"\begin{table}[t]", r"\centering",
        rf"\caption{{Clustering results on {_latex_escape(dataset)} (mean $\pm$ std over seeds; best in bold).}}",
        r"\begin{tabular}{" + "l" * 3 + "r" * (len(cols) - 3) + "}", r"\toprule",
        " & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule",
    ]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = str(row[c])
            v = v.replace("±", r"$\pm$") if "textbf" in v else _latex_escape(v).replace("±", r"$\pm$")
            cells.append(v.replace("–", "--"))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
