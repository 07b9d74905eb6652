"""Which figures a report gets, fed from the leaderboard and the results store.

Per dataset table: learning curves (against epochs and training time), throughput bars,
and, for the best few methods, a confusion matrix and a sample grid.  Those two need the
images and the predicted labels, which records do not hold: the dataset is reloaded by
``load_data`` (which checks its digest) and the labels come from ``labels``, normally
:meth:`clusterbench.results.store.ResultsStore.load_labels`, the one place labels are
verified.  Whatever is missing or wrong skips those figures with a note, never the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from clusterbench.errors import RecordError
from clusterbench.report.fmt import budget_text, finite, safe_name
from clusterbench.report.leaderboard import Leaderboard
from clusterbench.report.plots import confusion_figure, learning_curves, sample_grid, throughput_bars

Labels = Callable[[dict[str, Any], int | None], np.ndarray]  # (record, n) -> verified labels, or RecordError
Throughput = tuple[str, float | None, float | None, float | None, float | None]  # label, train ± std, eval ± std


#: the formats a figure is written in: file suffix -> MIME type
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


@dataclass
class FigureOut:
    """One rendered figure: a file-safe key, a title, a caption and the image's bytes (PNG or JPEG)."""

    key: str
    title: str
    caption: str
    image: bytes

    @property
    def ext(self) -> str:
        """The file suffix its bytes call for: ``jpg`` for JPEG (sample grids), else ``png``."""
        return "jpg" if self.image.startswith(b"\xff\xd8") else "png"

    @property
    def mime(self) -> str:
        return IMAGE_TYPES[self.ext]


@dataclass
class DatasetFigures:
    """The figures of one dataset table, and notes on the ones that could not be drawn."""

    dataset: str
    figures: list[FigureOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _curves_and_throughput(out: DatasetFigures, records: Sequence[dict[str, Any]],
                           throughput: Sequence[Throughput], label: Callable[[dict[str, Any]], str]) -> None:
    dataset, key = out.dataset, safe_name(out.dataset)
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


def dataset_figures(
    dataset: str,
    records: Sequence[dict[str, Any]],
    throughput: Sequence[Throughput],
    *,
    load_data: Callable[[dict[str, Any]], Any] | None,
    labels: Labels,
    label: Callable[[dict[str, Any]], str],
    max_methods: int = 4,
) -> DatasetFigures:
    """Every figure for one dataset's finished records.

    ``load_data(rec)`` returns the record's :class:`ImageData` (digest checked) or raises
    with the reason; ``None`` skips the figures that need the data.  ``labels(rec, n)``
    returns the record's verified labels or raises :class:`RecordError` with the reason.
    """
    out = DatasetFigures(dataset)
    _curves_and_throughput(out, records, throughput, label)
    if load_data is None:
        out.notes.append(f"{dataset}: confusion matrices and sample grids not drawn (no dataset loader).")
        return out
    key = safe_name(dataset)
    for name, rec, n_seeds in representative_runs(records, label, max_methods):
        try:
            data = load_data(rec)
        except Exception as exc:  # noqa: BLE001 - any reason to skip is reported, not raised
            out.notes.append(f"{dataset}: confusion matrix and sample grid skipped: the dataset could not be "
                             f"loaded ({exc})")
            break
        try:
            pred = labels(rec, len(data))
        except RecordError as exc:
            out.notes.append(f"{name} on {dataset}: confusion matrix and sample grid skipped: {exc}")
            continue
        seed = rec.get("seed", 0)
        which = f"seed {seed}" + (f", the median ACC of {n_seeds} seeds" if n_seeds > 1 else "")
        proto = rec.get("primary_protocol") or "head"
        title = f"{name} on {dataset} ({which}, protocol {proto})"
        out.figures.append(FigureOut(f"{key}-confusion-{safe_name(name)}", f"{dataset}: confusion matrix of {name}",
                                     f"{which}; rows: true classes; columns: predicted clusters, each placed "
                                     "under the class the Hungarian matching assigned it.",
                                     confusion_figure(data.y, pred, data.n_classes, data.class_names, title)))
        out.figures.append(FigureOut(f"{key}-samples-{safe_name(name)}", f"{dataset}: samples per cluster of {name}",
                                     f"{which}; random images of each predicted cluster.",
                                     sample_grid(data.x, data.y, pred, data.n_classes, data.class_names,
                                                 seed=0, title=title)))
    return out


def build_figures(board: Leaderboard, labels: Labels, load_data: Callable[[dict[str, Any]], Any] | None, *,
                  max_methods: int = 4) -> list[DatasetFigures]:
    """:class:`DatasetFigures` for every table of ``board``, from its labels and aggregate.

    ``labels``: ``store.load_labels``; ``load_data``: rec -> its dataset (or None: no
    confusion matrices or sample grids).
    """
    if not board.done:
        return []
    by_ds = board.runs_by_dataset()
    out = []
    for dataset in sorted(by_ds):
        recs = by_ds[dataset]
        multi_budget = len({budget_text(r.get("budget", {})) for r in recs if r.get("budget")}) > 1

        def label(rec: dict[str, Any], _multi: bool = multi_budget) -> str:
            name = board.method_of[rec["run_id"]]
            return f"{name} @ {budget_text(rec.get('budget', {}))}" if _multi else name

        sub = board.agg[board.agg["dataset"] == dataset]
        primary = sub.sort_values("protocol").drop_duplicates(["method", "budget"])  # one bar per method
        throughput = [((f"{r['method']} @ {r['budget']}" if multi_budget else r["method"]),
                       finite(r["train_images_per_s_mean"]), finite(r["train_images_per_s_std"]),
                       finite(r["eval_images_per_s_mean"]), finite(r["eval_images_per_s_std"]))
                      for _, r in primary.sort_values("acc_mean", ascending=False).iterrows()]
        out.append(dataset_figures(dataset, recs, throughput, load_data=load_data, labels=labels, label=label,
                                   max_methods=max_methods))
    return out
