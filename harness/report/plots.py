"""Figures for reports: learning curves, throughput, confusion matrices, sample grids.

Every function returns PNG bytes (JPEG for :func:`sample_grid`, whose photos PNG stores at 4x the
size) or ``None`` when there is nothing to draw.  Figures
are drawn with matplotlib's object-oriented API on the Agg canvas: no pyplot, no global
backend switch, no display needed.

- :func:`learning_curves` -- ACC and NMI against epochs or training seconds, one colour
  per method, one line per seed, from the per-epoch ``curve`` of each record;
- :func:`throughput_bars` -- training and inference images/s per method (mean ± std);
- :func:`confusion_figure` -- the class x cluster matrix after Hungarian matching,
  matched clusters on the diagonal;
- :func:`sample_grid` -- a row of random images per predicted cluster, framed green when
  the image's class is the class the cluster was matched to, red otherwise.

:mod:`clusterbench.report.figures` decides which of these a report gets and feeds them
from the leaderboard and the results store.  Matching clusters to classes is
:func:`clusterbench.evaluate.metrics.hungarian_match`, the same matching ACC is scored with.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from clusterbench.evaluate.metrics import hungarian_match
from clusterbench.report.fmt import human

DPI = 110
GREEN = np.array([40, 160, 60], dtype=np.uint8)
RED = np.array([215, 40, 40], dtype=np.uint8)


# ---- matplotlib plumbing ---------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(fig) -> bytes:
    return _save(fig, "png", metadata={"Software": None})


def to_jpeg(fig, quality: int = 90) -> bytes:
    """For figures of photos: a third of the PNG's size, which the committed reports carry.  No chroma
    subsampling (4:4:4), so the 2-px red/green frames that carry a sample grid's meaning stay sharp."""
    return _save(fig, "jpeg", pil_kwargs={"quality": quality, "optimize": True, "subsampling": 0})


def _save(fig, fmt: str, **kwargs: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _wrap(text: str, width: int = 60) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


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
            ax_acc.plot(xs, acc, label=_wrap(f"{name} ({seeds})", 45) if j == 0 else None, **kw)
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
    # below both panels, never over the curves; long method specs wrap (constrained layout makes room)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside lower center", ncol=min(3, len(series)),
               fontsize=8, frameon=False)
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
            ax.text(v + err if v > 0 else (pos.min() if log else 0), y, f"  {human(v)}" if v > 0 else "  n/a",
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
    """The Hungarian matching of :mod:`clusterbench.evaluate.metrics`, laid out for display:
    every class a row (0..n_classes-1, empty ones too), clusters in matched-class order."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    m, rows, cols = hungarian_match(y_true, y_pred)  # m: (cluster, class) over the ids present
    clusters, classes = np.unique(y_pred), np.unique(y_true)
    counts = np.zeros((max(int(n_classes), int(classes[-1]) + 1), len(clusters)), dtype=np.int64)
    counts[classes] = m.T
    match = {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}
    matched = sorted(match, key=match.__getitem__)
    rest = sorted((int(c) for c in clusters if int(c) not in match), key=lambda c: -int((y_pred == c).sum()))
    order = matched + rest
    col_of = {int(c): i for i, c in enumerate(clusters)}
    return Matching(counts[:, [col_of[c] for c in order]], order, match, float(m[rows, cols].sum() / len(y_true)))


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
    return to_jpeg(fig)
