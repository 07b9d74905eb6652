"""Figures for reports: learning curves, throughput, confusion matrices, sample grids.

Every function returns PNG bytes (or ``None`` when there is nothing to draw).  Figures
are drawn with matplotlib's object-oriented API on the Agg canvas: no pyplot, no global
backend switch, no display needed.

- :func:`learning_curves` -- ACC and NMI against epochs or training seconds, one colour
  per method, one line per seed, from the per-epoch ``curve`` of each record;
- :func:`throughput_bars` -- training and inference images/s per method (mean ± std);
- :func:`confusion_figure` -- the class x cluster matrix after Hungarian matching,
  matched clusters on the diagonal;
- :func:`sample_grid` -- a row of random images per predicted cluster, framed green when
  the image's class is the class the cluster was matched to, red otherwise.

:func:`dataset_figures` puts these together for one dataset of a results store; the
confusion matrix and the sample grid need the images and labels, which records do not
hold: the dataset is reloaded through the plugin registry and must have the digest the
runs recorded, or those two figures are skipped with a note.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

DPI = 110
GREEN = np.array([40, 160, 60], dtype=np.uint8)
RED = np.array([215, 40, 40], dtype=np.uint8)


@dataclass
class FigureOut:
    """One rendered figure: a file-safe key, a title, a caption and the PNG bytes."""

    key: str
    title: str
    caption: str
    png: bytes


@dataclass
class DatasetFigures:
    dataset: str
    figures: list[FigureOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- matplotlib plumbing ---------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _wrap(text: str, width: int = 60) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


# ---- learning curves -----------------------------------------------------------------------
def curve_runs(records: Sequence[dict[str, Any]], x: str,
               label: Callable[[dict[str, Any]], str]) -> dict[str, list[tuple[int, list, list, list]]]:
    """label -> [(seed, xs, acc, nmi)] over the curve points that carry ACC/NMI."""
    series: dict[str, list[tuple[int, list, list, list]]] = {}
    for rec in records:
        curve = rec.get("curve")
        if not isinstance(curve, list):
            continue
        pts = [p for p in curve if isinstance(p, dict) and isinstance(p.get("acc"), (int, float))
               and isinstance(p.get(x), (int, float))]
        if not pts:
            continue
        pts.sort(key=lambda p: p[x])
        series.setdefault(label(rec), []).append((
            rec.get("seed", 0), [p[x] for p in pts], [p["acc"] for p in pts],
            [p.get("nmi", math.nan) if isinstance(p.get("nmi"), (int, float)) else math.nan for p in pts]))
    return series


def learning_curves(records: Sequence[dict[str, Any]], x: str = "epoch", *,
                    label: Callable[[dict[str, Any]], str] = lambda r: r.get("method_spec") or r["method"],
                    title: str = "", xlabel: str | None = None) -> bytes | None:
    """ACC and NMI (two panels) against ``x`` (``epoch`` or ``train_seconds``); None if no curve."""
    series = curve_runs(records, x, label)
    if not series:
        return None
    fig = _figure(10, 3.8)
    ax_acc, ax_nmi = fig.subplots(1, 2, sharex=True)
    for color, (name, runs) in zip(_colors(len(series)), sorted(series.items())):
        for j, (seed, xs, acc, nmi) in enumerate(sorted(runs, key=lambda r: r[0])):
            kw = dict(color=color, lw=1.3, alpha=0.9, marker="o", ms=3)
            seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
            ax_acc.plot(xs, acc, label=f"{name} ({seeds})" if j == 0 else None, **kw)
            ax_nmi.plot(xs, nmi, **kw)
    for ax, metric, col in ((ax_acc, "ACC", 2), (ax_nmi, "NMI", 3)):
        ax.set_ylabel(metric)
        ax.set_xlabel(xlabel or {"epoch": "epoch", "train_seconds": "training seconds"}.get(x, x))
        ax.grid(alpha=0.3)
        if x == "epoch":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        values = [v for runs in series.values() for run in runs for v in run[col] if math.isfinite(v)]
        lo = min(values) if values else 0.0
        ax.set_ylim(max(0.0, min(lo, 1.0) - 0.05), 1.0)
    ax_acc.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return to_png(fig)


# ---- throughput ----------------------------------------------------------------------------
def throughput_bars(rows: Sequence[tuple[str, float | None, float | None, float | None, float | None]],
                    title: str = "") -> bytes | None:
    """Horizontal bars: (label, train mean, train std, eval mean, eval std) images/s."""
    rows = [r for r in rows if _num(r[1]) or _num(r[3])]
    if not rows:
        return None
    panels = [(1, "training images/s"), (3, "inference images/s")]
    panels = [(i, t) for i, t in panels if any(_num(r[i]) for r in rows)]
    fig = _figure(4.2 * len(panels) + 1.5, 0.45 * len(rows) + 1.4)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    ys = np.arange(len(rows))
    colors = _colors(len(rows))
    for ax, (i, name) in zip(axes, panels):
        vals = np.array([r[i] if _num(r[i]) else 0.0 for r in rows], dtype=float)
        errs = np.array([r[i + 1] if _num(r[i + 1]) else 0.0 for r in rows], dtype=float)
        from matplotlib.ticker import EngFormatter

        errs = np.minimum(errs, vals)  # a bar's error bar never reaches below 0
        ax.barh(ys, vals, xerr=errs, color=colors, alpha=0.85, capsize=3, error_kw={"lw": 1})
        pos = vals[vals > 0]
        log = len(pos) > 0 and pos.max() / pos.min() > 50
        if log:
            ax.set_xscale("log")
        for y, v, err in zip(ys, vals, errs):
            ax.text(v + err if v > 0 else (pos.min() if log else 0), y, f"  {_human(v)}" if v > 0 else "  n/a",
                    va="center", fontsize=8)
        ax.set_xlabel(name)
        if len(pos):
            ax.set_xlim((pos.min() / 3 if log else 0), ((vals + errs).max() * (4 if log else 1.3)))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [r[0] for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=11)
    return to_png(fig)


def _human(v: float) -> str:
    """1234 -> 1,234; 45678 -> 45.7k; 7.1e8 -> 710.8M."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if v >= div:
            return f"{v / (1e3 if unit == 'k' else div):,.1f}{unit}"
    return f"{v:,.0f}"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# ---- confusion matrix and samples ----------------------------------------------------------------
@dataclass
class Matching:
    """Clusters put in class order: ``order[j]`` is the cluster shown in column j."""

    counts: np.ndarray  # (n_classes, n_shown_clusters): counts[t, j] = #(class t, cluster order[j])
    order: list[int]  # cluster ids, matched ones first (in class order), then the unmatched
    match: dict[int, int]  # cluster id -> class it was matched to
    acc: float


def match_clusters(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> Matching:
    from scipy.optimize import linear_sum_assignment

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    k = max(int(n_classes), int(y_true.max()) + 1)
    clusters = np.unique(y_pred)
    inv = np.searchsorted(clusters, y_pred)
    m = np.zeros((k, len(clusters)), dtype=np.int64)
    np.add.at(m, (y_true, inv), 1)
    rows, cols = linear_sum_assignment(m, maximize=True)
    match = {int(clusters[c]): int(t) for t, c in zip(rows, cols)}
    matched = [int(clusters[c]) for _, c in sorted(zip(rows, cols))]
    rest = sorted((int(c) for c in clusters if int(c) not in match), key=lambda c: -int((y_pred == c).sum()))
    order = matched + rest
    col_of = {int(c): i for i, c in enumerate(clusters)}
    counts = m[:, [col_of[c] for c in order]]
    return Matching(counts, order, match, float(m[rows, cols].sum() / len(y_true)))


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                     class_names: Sequence[str] = (), title: str = "") -> bytes:
    """Rows: true classes; columns: clusters, each under the class it was matched to."""
    mt = match_clusters(y_true, y_pred, n_classes)
    counts = mt.counts
    k, c = counts.shape
    names = list(class_names) if len(class_names) == k else [str(i) for i in range(k)]
    frac = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    side = min(9.0, 2.2 + 0.42 * max(k, c))
    fig = _figure(max(6.0, side + 1.2), max(4.8, side))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    if max(k, c) <= 15:
        for t in range(k):
            for j in range(c):
                if counts[t, j]:
                    ax.text(j, t, str(counts[t, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[t, j] > 0.55 else "black")
    if max(k, c) <= 30:
        ax.set_yticks(range(k), names, fontsize=8)
        xt = [f"{cl}→{names[mt.match[cl]]}" if cl in mt.match else f"{cl} (unmatched)" for cl in mt.order]
        ax.set_xticks(range(c), xt, fontsize=7, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_ylabel("true class")
    ax.set_xlabel("predicted cluster → matched class")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the class")
    ax.set_title(f"{_wrap(title)}\nACC {mt.acc:.3f} after Hungarian matching" if title
                 else f"ACC {mt.acc:.3f} after Hungarian matching", fontsize=10)
    return to_png(fig)


def _tile(img: np.ndarray, scale: int, color: np.ndarray, border: int) -> np.ndarray:
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    h, w = img.shape[:2]
    out = np.empty((h + 2 * border, w + 2 * border, 3), dtype=np.uint8)
    out[:] = color
    out[border:border + h, border:border + w] = img
    return out


def sample_grid(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                class_names: Sequence[str] = (), *, per_cluster: int = 10, max_clusters: int = 10,
                seed: int = 0, title: str = "") -> bytes:
    """A row of random images per predicted cluster (the largest ``max_clusters``).

    Frames: green where the image's true class is the cluster's matched class, red otherwise.
    """
    mt = match_clusters(y_true, y_pred, n_classes)
    k = mt.counts.shape[0]
    names = list(class_names) if len(class_names) == k else [str(i) for i in range(k)]
    sizes = {c: int((y_pred == c).sum()) for c in mt.order}
    shown = sorted(mt.order, key=lambda c: -sizes[c])[:max_clusters]
    shown = [c for c in mt.order if c in shown]  # back in class order
    rng = np.random.default_rng(seed)
    h = x.shape[1]
    scale = max(1, 40 // h)
    border = max(2, (h * scale) // 16)
    tile = h * scale + 2 * border
    gap = 3
    mosaic = np.full((len(shown) * (tile + gap), per_cluster * (tile + gap), 3), 255, dtype=np.uint8)
    labels = []
    for r, c in enumerate(shown):
        idx = np.flatnonzero(y_pred == c)
        pick = rng.choice(idx, size=min(per_cluster, len(idx)), replace=False)
        cls = mt.match.get(c)
        for j, i in enumerate(sorted(pick)):
            color = GREEN if cls is not None and y_true[i] == cls else RED
            y0, x0 = r * (tile + gap), j * (tile + gap)
            mosaic[y0:y0 + tile, x0:x0 + tile] = _tile(x[i], scale, color, border)
        purity = float((y_true[idx] == cls).mean()) if cls is not None else 0.0
        labels.append(f"cluster {c} → {names[cls] if cls is not None else '(unmatched)'}\n"
                      f"n={len(idx)}, {purity:.0%} match")
    width = 2.0 + per_cluster * 0.75
    fig = _figure(width, 0.75 * len(shown) + 0.8)
    ax = fig.subplots()
    ax.imshow(mosaic, interpolation="antialiased")  # nearest when enlarging, smoothed when shrinking
    ax.set_yticks([r * (tile + gap) + tile / 2 for r in range(len(shown))], labels, fontsize=7)
    ax.set_xticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    more = f" ({len(shown)} of {len(mt.order)} clusters, the largest)" if len(shown) < len(mt.order) else ""
    ax.set_title((_wrap(title, 90) + "\n" if title else "") + f"random samples per predicted cluster{more}; "
                 "green: class = matched class, red: not", fontsize=9)
    return to_png(fig)


# ---- one dataset of a results store ---------------------------------------------------------------
def _acc(rec: dict[str, Any]) -> float | None:
    proto = rec.get("primary_protocol") or next(iter(rec.get("protocols") or {}), None)
    v = (rec.get("protocols") or {}).get(proto, {}).get("acc") if proto else None
    return float(v) if isinstance(v, (int, float)) else None


def representative_runs(records: Sequence[dict[str, Any]], group: Callable[[dict[str, Any]], str],
                        limit: int) -> list[tuple[str, dict[str, Any], int]]:
    """(group label, the run with the median ACC of its group, seeds in the group), best groups first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if _acc(rec) is not None:
            groups.setdefault(group(rec), []).append(rec)
    ranked = sorted(groups.items(), key=lambda kv: -float(np.mean([_acc(r) for r in kv[1]])))
    out = []
    for label, recs in ranked[:limit]:
        recs = sorted(recs, key=lambda r: (_acc(r), r.get("seed", 0)))
        out.append((label, recs[(len(recs) - 1) // 2], len(recs)))
    return out


def _device_of(records: Sequence[dict[str, Any]]) -> tuple[str, bool]:
    """The device(s) the runs trained on, and whether all of them were GPUs."""
    names, gpus = set(), True
    for rec in records:
        env = rec.get("env") if isinstance(rec.get("env"), dict) else {}
        gpus = gpus and bool(env.get("gpu"))
        names.add(str(env.get("gpu") or (f"CPU ({env['cpu']})" if env.get("cpu") else "CPU")))
    return ", ".join(sorted(names)), gpus and bool(names)


def dataset_figures(
    dataset: str,
    records: Sequence[dict[str, Any]],
    throughput: Sequence[tuple[str, float | None, float | None, float | None, float | None]],
    *,
    load_data: Callable[[dict[str, Any]], Any] | None,
    run_dir: Callable[[dict[str, Any]], Path],
    label: Callable[[dict[str, Any]], str],
    max_methods: int = 4,
) -> DatasetFigures:
    """Every figure for one dataset's finished records.

    ``load_data(rec)`` returns the record's :class:`ImageData` (digest checked) or raises
    with the reason; ``None`` skips the figures that need the data.
    """
    out = DatasetFigures(dataset)
    key = _safe(dataset)
    deep = [r for r in records if r.get("curve")]
    png = learning_curves(deep, "epoch", label=label, title=f"{dataset}: learning curves")
    if png:
        out.figures.append(FigureOut(f"{key}-curves-epochs", f"{dataset}: ACC and NMI against epochs",
                                     "Cheap in-training evaluation (the method's head) every few epochs; "
                                     "one line per seed.", png))
    device, gpu = _device_of(deep)
    unit = "GPU-seconds" if gpu else "seconds"
    png = learning_curves(deep, "train_seconds", label=label, title=f"{dataset}: learning curves",
                          xlabel=f"training {unit} ({device})" if device else None)
    if png:
        out.figures.append(FigureOut(f"{key}-curves-seconds", f"{dataset}: ACC and NMI against training time",
                                     f"Training {unit}, evaluation excluded; device: {device}.", png))
    png = throughput_bars(throughput, title=f"{dataset}: throughput")
    if png:
        out.figures.append(FigureOut(f"{key}-throughput", f"{dataset}: throughput",
                                     "Mean ± std over seeds. Training images/s of a deep method counts images "
                                     "(two augmented views each); a shallow baseline's is images / fit time.", png))
    if load_data is None:
        out.notes.append(f"{dataset}: confusion matrices and sample grids not drawn (no dataset loader).")
        return out
    for name, rec, n_seeds in representative_runs(records, label, max_methods):
        try:
            data = load_data(rec)
        except Exception as exc:  # noqa: BLE001 - any reason to skip is reported, not raised
            out.notes.append(f"{dataset}: confusion matrix and sample grid skipped: the dataset could not be "
                             f"loaded ({exc})")
            break
        path = run_dir(rec) / "labels.npy"
        try:
            raw = path.read_bytes()
            pred = np.load(io.BytesIO(raw), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            out.notes.append(f"{name} on {dataset}: confusion matrix and sample grid skipped: cannot read "
                             f"{path} ({type(exc).__name__}: {exc})")
            continue
        want = rec["labels"].get("sha256") if isinstance(rec.get("labels"), dict) else None
        if want is not None and hashlib.sha256(raw).hexdigest() != want:
            out.notes.append(f"{name} on {dataset}: confusion matrix and sample grid skipped: {path} is not the "
                             "labels this record was written with (an interrupted rerun? run it again)")
            continue
        if pred.shape != (len(data),) or not np.issubdtype(pred.dtype, np.integer):
            out.notes.append(f"{name} on {dataset}: confusion matrix and sample grid skipped: {path} holds "
                             f"{pred.dtype} {pred.shape}, expected {len(data)} integer labels")
            continue
        seed = rec.get("seed", 0)
        which = f"seed {seed}" + (f", the median ACC of {n_seeds} seeds" if n_seeds > 1 else "")
        proto = rec.get("primary_protocol") or "head"
        title = f"{name} on {dataset} ({which}, protocol {proto})"
        out.figures.append(FigureOut(f"{key}-confusion-{_safe(name)}", f"{dataset}: confusion matrix of {name}",
                                     f"{which}; rows: true classes; columns: predicted clusters, each placed "
                                     "under the class the Hungarian matching assigned it.",
                                     confusion_figure(data.y, pred, data.n_classes, data.class_names, title)))
        out.figures.append(FigureOut(f"{key}-samples-{_safe(name)}", f"{dataset}: samples per cluster of {name}",
                                     f"{which}; random images of each predicted cluster.",
                                     sample_grid(data.x, data.y, pred, data.n_classes, data.class_names,
                                                 seed=0, title=title)))
    return out
