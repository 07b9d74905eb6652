"""Leaderboards: finished records -> mean ± std over seeds, one table per dataset.

Rows are (method, evaluation protocol, budget); a row never mixes protocols or budgets.
Failed runs never enter an aggregate.  The best mean of each metric column is marked.
With ``reported`` (the numbers papers report, from the ``clusterbench_reported_results``
hook), a row of the paper's numbers follows the measured row it matches (method base name,
dataset name, protocol), marked as reported, with its citation and the gap.

Formats: markdown, latex (booktabs), csv (the aggregate), html (one self-contained page
with the figures of :mod:`clusterbench.report.plots` embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import html as _html
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

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
FORMATS = ("markdown", "latex", "csv", "html")
PROTOCOL_DOC = {
    "head": "the method's own cluster assignment",
    "kmeans": "k-means on the method's features",
    "linear only": "linear probe only",
}


def _budget_str(budget: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(budget.items())) or "-"


def base_method(spec: str) -> str:
    """``cc[preset=fast]`` -> ``cc``: the name paper numbers are matched on."""
    return str(spec).split("[", 1)[0].strip()


def _options_str(ds: dict[str, Any]) -> str:
    opts = ds.get("options") or {}
    if not isinstance(opts, dict) or not opts:
        return ""
    return "[" + ",".join(f"{k}={v}" for k, v in sorted(opts.items())) + "]"


def _dataset_labels(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(name, options, digest) -> the table a record goes to.

    The dataset's name, unless records of that name were measured on different data
    (other options, other files): then the options (and the data digest) tell them apart,
    so different data never share one mean.
    """
    by_name: dict[str, set[tuple[str, str]]] = {}
    for rec in records:
        ds = rec["dataset"]
        by_name.setdefault(ds["name"], set()).add((_options_str(ds), str(ds.get("digest", ""))))
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


def _variant(rec: dict[str, Any]) -> tuple[str, str, str]:
    eng = rec.get("engine") if isinstance(rec.get("engine"), dict) else {}
    return (str(rec.get("method_version", "")), str(eng.get("precision", "")) if rec.get("budget") else "",
            "compile" if eng.get("compile") else "")


def method_labels(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """run_id -> the method's row label: its spec, plus the version / precision / compile
    setting where runs of one spec differ in them (so they are never averaged together)."""
    groups: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
    labels = _dataset_labels(records)
    key = {}
    for rec in records:
        ds = rec["dataset"]
        k = (labels[(ds["name"], _options_str(ds), str(ds.get("digest", "")))],
             str(rec.get("method_spec", rec["method"])))
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


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (finished run, protocol): the long table every report is built from."""
    done = [rec for rec in records if rec.get("status") == "done"]
    ds_labels = _dataset_labels(done)
    m_labels = method_labels(done)
    rows = []
    for rec in done:
        protocols = rec.get("protocols", {})
        linear = protocols.get("linear", {}).get("accuracy")
        cluster_protocols = [p for p in protocols if p != "linear"] or ["linear"]
        ds = rec["dataset"]
        for proto in cluster_protocols:
            m = protocols.get(proto, {})
            cost = rec.get("cost") or {}
            env = rec.get("env") or {}
            rows.append({
                "dataset": ds_labels[(ds["name"], _options_str(ds), str(ds.get("digest", "")))],
                "method": m_labels[rec["run_id"]],
                "protocol": proto if proto != "linear" else "linear only",
                "budget": _budget_str(rec.get("budget", {})),
                "seed": rec["seed"],
                "acc": m.get("acc"),
                "nmi": m.get("nmi"),
                "ari": m.get("ari"),
                "linear": linear,
                **{k: cost.get(k) for k, _ in COSTS},
                "device": env.get("gpu") or env.get("device"),
                "run_id": rec["run_id"],
                "dataset_name": ds["name"],
                "method_name": rec["method"],
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
    # one seed has no spread: std stays NaN and the table shows the bare mean, not "± 0.000"
    std = g[values].std(ddof=1) if len(df) else mean * 0
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["seeds"] = g["seed"].nunique()
    extra = [c for c in ("dataset_name", "method_name") if c in df.columns]
    if extra:
        out = out.join(g[extra].first())
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


# ---- numbers reported by papers ----------------------------------------------------------------
def reported_index(reported: Iterable[dict[str, Any]] | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(method, dataset, protocol) -> {citation, metrics}; malformed entries are skipped with a warning."""
    index: dict[tuple[str, str, str], dict[str, Any]] = {}
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


# ---- the table model every format renders ----------------------------------------------------
@dataclass
class Table:
    """One dataset's leaderboard: display strings plus what each format needs to mark."""

    dataset: str
    frame: pd.DataFrame  # display strings, no markup
    best: list[set[str]]  # per row: the columns where this row holds the best mean
    reported: list[bool]  # per row: a paper's number, not a measurement
    caption: str  # plain text (the evaluation protocol, the budget, what is marked)
    citations: list[str] = field(default_factory=list)  # [1], [2], ... of the reported rows


def _caption(dataset: str, sub: pd.DataFrame, has_reported: bool, linear: bool) -> str:
    protos = list(dict.fromkeys(sub["protocol"]))
    budgets = list(dict.fromkeys(b for b in sub["budget"] if b != "-"))
    seeds = sorted(set(int(s) for s in sub["seeds"]))
    seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    parts = [f"mean ± std over seeds ({seed_text} per row); best mean per column in bold."]
    parts.append(("Evaluation protocol: " if len(protos) == 1 else "Evaluation protocols: ")
                 + "; ".join(f"{p} ({PROTOCOL_DOC.get(p, p)})" for p in protos) + ".")
    if linear:
        parts.append("Linear acc: linear-probe accuracy on frozen features (train split → test split).")
    if budgets:
        parts.append(("Training budget: " if len(budgets) == 1 else "Training budgets: ") + ", ".join(budgets)
                     + (" for every deep method" if len(budgets) == 1 else " (see the Budget column)")
                     + ("; shallow baselines (budget -) have no training loop." if "-" in set(sub["budget"])
                        else "."))
    else:
        parts.append("Training budget: none (shallow baselines, no training loop).")
    if has_reported:
        parts.append("Rows marked 'reported' are the paper's numbers (its own budget and setting, no std); "
                     "Δ = measured mean − reported.")
    return " ".join(parts)


def build_tables(agg: pd.DataFrame, reported: Iterable[dict[str, Any]] | None = None) -> list[Table]:
    """One :class:`Table` per dataset, measured rows by ACC, a paper's row under its match."""
    tables: list[Table] = []
    if agg.empty:
        return tables
    index = reported_index(reported)
    for dataset, sub in agg.groupby("dataset", sort=True):
        sub = sub.sort_values(["acc_mean", "linear_mean"], ascending=False, na_position="last")
        shown = [(key, title, higher) for key, title, higher in METRICS if not sub[f"{key}_mean"].isna().all()]
        rows: list[dict[str, str]] = []
        best: list[set[str]] = []
        is_rep: list[bool] = []
        citations: list[str] = []
        used: set[tuple[str, str, str]] = set()
        bests = {key: (sub[f"{key}_mean"].max() if higher else sub[f"{key}_mean"].min()) for key, _, higher in shown}
        for _, r in sub.iterrows():
            row = {"Method": r["method"], "Protocol": r["protocol"], "Budget": r["budget"]}
            marks = set()
            for key, title, _ in shown:
                mean = r[f"{key}_mean"]
                row[title] = _fmt(mean, r[f"{key}_std"])
                if not (isinstance(mean, float) and math.isnan(mean)) and mean == bests[key]:
                    marks.add(title)
            for key, title in COSTS:
                row[title] = _cost_fmt(r[f"{key}_mean"])
            row["Seeds"] = str(int(r["seeds"]))
            if index:
                row["Source"] = "measured"
            rows.append(row)
            best.append(marks)
            is_rep.append(False)
            name = r.get("method_name") if isinstance(r.get("method_name"), str) else base_method(r["method"])
            ds_name = r.get("dataset_name") if isinstance(r.get("dataset_name"), str) else dataset
            key = (base_method(name), ds_name, r["protocol"])
            if key in index and key not in used:
                used.add(key)
                entry = index[key]
                if entry["citation"] not in citations:
                    citations.append(entry["citation"])
                rep = {"Method": f"{key[0]} (reported)", "Protocol": key[2], "Budget": "paper"}
                for mkey, title, _ in shown:
                    v = entry["metrics"].get(mkey)
                    mean = r[f"{mkey}_mean"]
                    if v is None:
                        rep[title] = "–"
                    elif isinstance(mean, float) and math.isnan(mean):
                        rep[title] = f"{v:.3f}"
                    else:
                        rep[title] = f"{v:.3f} (Δ {mean - v:+.3f})"
                for _, title in COSTS:
                    rep[title] = "–"
                rep["Seeds"] = "–"
                rep["Source"] = f"reported [{citations.index(entry['citation']) + 1}]"
                rows.append(rep)
                best.append(set())
                is_rep.append(True)
        frame = pd.DataFrame(rows, columns=list(rows[0]))
        if not citations and "Source" in frame.columns:  # no paper numbers for this dataset
            frame = frame.drop(columns="Source")
        caption = _caption(str(dataset), sub, bool(citations), "Linear acc" in frame.columns)
        tables.append(Table(str(dataset), frame, best, is_rep, caption, citations))
    return tables


def _marked(table: Table, bold: Callable[[str], str], reported: Callable[[str], str] = lambda s: s) -> pd.DataFrame:
    frame = table.frame.copy()
    for i in range(len(frame)):
        for col in table.best[i]:
            frame.at[i, col] = bold(frame.at[i, col])
        if table.reported[i]:
            frame.at[i, "Method"] = reported(frame.at[i, "Method"])
    return frame


def leaderboard_tables(agg: pd.DataFrame, fmt: str = "markdown",
                       reported: Iterable[dict[str, Any]] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(dataset, display table) pairs with the best mean per metric column marked."""
    bold = {"markdown": lambda s: f"**{s}**", "latex": lambda s: f"\\textbf{{{s}}}"}.get(fmt, lambda s: s)
    return [(t.dataset, _marked(t, bold)) for t in build_tables(agg, reported)]


def failed_runs(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per failed run: what, where, why (failed runs never enter a table)."""
    out = []
    for rec in records:
        if rec.get("status") == "failed":
            reason = (rec.get("error") or {}).get("reason", "no reason recorded") \
                if isinstance(rec.get("error"), dict) else "no reason recorded"
            out.append(f"{rec.get('method_spec', rec['method'])} on {rec['dataset']['name']} seed {rec['seed']}: "
                       f"{reason} ({rec['run_id']})")
    return out


def render(records: Iterable[dict[str, Any]], fmt: str = "markdown", *,
           reported: Iterable[dict[str, Any]] | None = None,
           figures: Sequence[Any] | None = None, notes: Sequence[str] = (),
           title: str = "clusterbench report", source: str = "") -> str:
    """The leaderboard in one of FORMATS.

    ``reported``: paper numbers (``Registry.reported_results()``) to show beside the
    measured rows.  ``figures`` (:class:`clusterbench.report.plots.DatasetFigures`) and ``notes``
    are embedded by the html format only.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    records = list(records)
    df = records_to_frame(records)
    failed = failed_runs(records)
    agg = aggregate(df)
    tables = build_tables(agg, reported) if not df.empty else []
    if fmt == "html":
        return render_html(tables, figures or [], list(notes), failed, title=title, source=source,
                           n_done=sum(1 for r in records if r.get("status") == "done"))
    if df.empty:
        return "No finished runs.\n" + _failed_note(failed, fmt)
    if fmt == "csv":
        return _csv(agg, reported)
    parts = []
    for t in tables:
        if fmt == "markdown":
            text = (f"### {t.dataset}\n\n{t.caption}\n\n"
                    + _marked(t, lambda s: f"**{s}**", lambda s: f"*{s}*").to_markdown(
                        index=False, disable_numparse=True) + "\n")
            if t.citations:
                text += "\n" + "\n".join(f"[{i}] {c}  " for i, c in enumerate(t.citations, 1)) + "\n"
            parts.append(text)
        else:
            parts.append(_latex_table(t))
    return "\n".join(parts) + _failed_note(failed, fmt)


def _failed_note(failed: list[str], fmt: str) -> str:
    if not failed or fmt == "csv":
        return ""
    if fmt == "latex":
        return "% failed runs (not in the tables):\n" + "".join(f"%   {f}\n" for f in failed)
    return (f"\n{len(failed)} failed run(s), not in the tables:\n\n" + "".join(f"- {f}\n" for f in failed))


def _csv(agg: pd.DataFrame, reported: Iterable[dict[str, Any]] | None) -> str:
    out = agg.drop(columns=[c for c in ("dataset_name", "method_name") if c in agg.columns])
    index = reported_index(reported) if reported is not None else {}
    if reported is not None:
        out = out.assign(source="measured", citation="")
        extra = []
        for _, r in agg.iterrows():
            key = (base_method(r.get("method_name") or r["method"]), r.get("dataset_name") or r["dataset"],
                   r["protocol"])
            if key in index and key not in {(e["_key"]) for e in extra}:
                entry = index[key]
                extra.append({"_key": key, "dataset": r["dataset"], "method": key[0], "protocol": key[2],
                              "budget": "paper", **{f"{k}_mean": v for k, v in entry["metrics"].items()},
                              "source": "reported", "citation": entry["citation"]})
        if extra:
            out = pd.concat([out, pd.DataFrame(extra).drop(columns="_key")], ignore_index=True)
    return out.to_csv(index=False, float_format="%.6g")


# ---- LaTeX -----------------------------------------------------------------------------------------
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "{": r"\{", "}": r"\}",
          "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$", "±": r"$\pm$",
          "→": r"$\to$", "–": "--", "−": "-"}


def _latex_escape(s: str) -> str:
    return "".join(_LATEX.get(c, c) for c in s)


def _latex_table(table: Table) -> str:
    frame = table.frame
    cols = list(frame.columns)
    n_text = 3
    align = "l" * n_text + "".join("l" if c == "Source" else "r" for c in cols[n_text:])
    caption = _latex_escape(table.caption)
    lines = [
        r"\begin{table}[t]", r"\centering",
        rf"\caption{{Clustering results on {_latex_escape(table.dataset)} ({caption})}}",
        r"\begin{tabular}{" + align + "}", r"\toprule",
        " & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule",
    ]
    for i in range(len(frame)):
        cells = []
        for c in cols:
            v = _latex_escape(str(frame.at[i, c]))
            if c in table.best[i]:
                v = rf"\textbf{{{v}}}"
            if table.reported[i]:
                v = rf"\textit{{{v}}}"
            cells.append(v)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.citations:
        lines.append(r"\par\smallskip{\footnotesize " + "; ".join(
            f"[{i}] {_latex_escape(c)}" for i, c in enumerate(table.citations, 1)) + "}")
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


# ---- HTML ------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
caption{caption-side:top;text-align:left;font-size:.95em;color:#444;padding:.3em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #999}td.t,th.t{text-align:left}
tr.reported td{color:#555;font-style:italic;background:#f6f6f2}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.notes{color:#8a4b00}.failed{color:#a00}
.meta{color:#666;font-size:.85em}
"""


def _html_table(table: Table) -> str:
    e = _html.escape
    cols = list(table.frame.columns)
    text_cols = {"Method", "Protocol", "Budget", "Source"}
    head = "".join(f'<th class="t">{e(c)}</th>' if c in text_cols else f"<th>{e(c)}</th>" for c in cols)
    body = []
    for i in range(len(table.frame)):
        cells = []
        for c in cols:
            v = e(str(table.frame.at[i, c]))
            if c in table.best[i]:
                v = f"<b>{v}</b>"
            cells.append(f'<td class="t">{v}</td>' if c in text_cols else f"<td>{v}</td>")
        cls = ' class="reported"' if table.reported[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cites = ""
    if table.citations:
        cites = "<p class=\"meta\">" + "<br>".join(
            f"[{i}] {e(c)}" for i, c in enumerate(table.citations, 1)) + "</p>"
    return (f"<table><caption>{e(table.caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{cites}")


def render_html(tables: Sequence[Table], figures: Sequence[Any], notes: list[str], failed: list[str], *,
                title: str = "clusterbench report", source: str = "", n_done: int = 0) -> str:
    """One self-contained page: tables, figures as base64 PNG, notes, failed runs."""
    e = _html.escape
    by_ds = {f.dataset: f for f in figures}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
           f'<p class="meta">{n_done} finished run(s)' + (f" from {e(source)}" if source else "")
           + f"; generated {e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</p>"]
    if not tables:
        out.append("<p>No finished runs.</p>")
    datasets = [t.dataset for t in tables] + [d for d in by_ds if d not in {t.dataset for t in tables}]
    tmap = {t.dataset: t for t in tables}
    for ds in datasets:
        out.append(f'<h2 id="{e(ds)}">{e(ds)}</h2>')
        if ds in tmap:
            out.append(_html_table(tmap[ds]))
        f = by_ds.get(ds)
        if f is None:
            continue
        for fig in f.figures:
            b64 = base64.b64encode(fig.png).decode()
            out.append(f'<figure id="{e(fig.key)}"><img alt="{e(fig.title)}" src="data:image/png;base64,{b64}">'
                       f"<figcaption><b>{e(fig.title)}.</b> {e(fig.caption)}</figcaption></figure>")
        if f.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in f.notes) + "</ul>")
    if notes:
        out.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if failed:
        out.append(f"<h2>Failed runs ({len(failed)})</h2><p>Not in the tables.</p>"
                   '<ul class="failed">' + "".join(f"<li>{e(x)}</li>" for x in failed) + "</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ---- figures for a results store -----------------------------------------------------------------
def build_figures(records: Sequence[dict[str, Any]], run_dir: Callable[[dict[str, Any]], Any],
                  load_data: Callable[[dict[str, Any]], Any] | None, *, max_methods: int = 4) -> list[Any]:
    """:class:`clusterbench.report.plots.DatasetFigures` for every table of the report."""
    from clusterbench.report.plots import dataset_figures

    done = [r for r in records if r.get("status") == "done"]
    if not done:
        return []
    ds_labels = _dataset_labels(done)
    m_labels = method_labels(done)
    df = records_to_frame(done)
    agg = aggregate(df)
    out = []
    by_ds: dict[str, list[dict[str, Any]]] = {}
    for rec in done:
        ds = rec["dataset"]
        by_ds.setdefault(ds_labels[(ds["name"], _options_str(ds), str(ds.get("digest", "")))], []).append(rec)
    multi_budget = {d: len({_budget_str(r.get("budget", {})) for r in recs if r.get("budget")}) > 1
                    for d, recs in by_ds.items()}

    for dataset in sorted(by_ds):
        recs = by_ds[dataset]

        def label(rec: dict[str, Any], _d: str = dataset) -> str:
            name = m_labels[rec["run_id"]]
            return f"{name} @ {_budget_str(rec.get('budget', {}))}" if multi_budget[_d] else name

        sub = agg[agg["dataset"] == dataset]
        primary = sub.sort_values("protocol").drop_duplicates(["method", "budget"])  # one bar per method
        throughput = [((f"{r['method']} @ {r['budget']}" if multi_budget[dataset] else r["method"]),
                       _finite(r["train_images_per_s_mean"]), _finite(r["train_images_per_s_std"]),
                       _finite(r["eval_images_per_s_mean"]), _finite(r["eval_images_per_s_std"]))
                      for _, r in primary.sort_values("acc_mean", ascending=False).iterrows()]
        out.append(dataset_figures(dataset, recs, throughput, load_data=load_data, run_dir=run_dir, label=label,
                                   max_methods=max_methods))
    return out


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
