"""Leaderboards as text: :func:`render` is the one entry point, for every format.

Formats: markdown, latex (booktabs, :mod:`~clusterbench.report.latex`), csv (the
aggregate), html (one self-contained page with the figures embedded,
:mod:`~clusterbench.report.html`).  Each renders a
:class:`~clusterbench.report.leaderboard.Leaderboard`: pass one built by
:func:`~clusterbench.report.leaderboard.build_leaderboard` to write several formats from
one aggregation; pass records and it is built for this call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pandas as pd

from clusterbench.report.html import render_html
from clusterbench.report.latex import failed_note as latex_failed_note
from clusterbench.report.latex import latex_table
from clusterbench.report.leaderboard import Leaderboard, Table, build_leaderboard

if TYPE_CHECKING:
    from clusterbench.report.figures import DatasetFigures

FORMATS = ("markdown", "latex", "csv", "html")


def render(records: Iterable[dict[str, Any]] | Leaderboard, fmt: str = "markdown", *,
           reported: Sequence[dict[str, Any]] | None = None,
           figures: Sequence[DatasetFigures] | None = None, notes: Sequence[str] = (),
           title: str = "clusterbench report", source: str = "") -> str:
    """The leaderboard in one of FORMATS.

    ``records``: the records, or a :class:`Leaderboard` already built from them (then the
    paper numbers were given to ``build_leaderboard`` and ``reported`` must be None).
    ``reported``: paper numbers (``Registry.reported_results()``) to show beside the
    measured rows.  ``figures`` (:class:`clusterbench.report.figures.DatasetFigures`) and
    ``notes`` are embedded by the html format only.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if isinstance(records, Leaderboard):
        if reported is not None:
            raise TypeError("render(leaderboard, ...): give the reported numbers to build_leaderboard instead")
        board = records
    else:
        board = build_leaderboard(records, reported)
    if fmt == "html":
        return render_html(board, figures or [], list(notes), title=title, source=source)
    if board.empty:
        return "No finished runs.\n" + _failed_note(board.failed, fmt)
    if fmt == "csv":
        return render_csv(board)
    table = markdown_table if fmt == "markdown" else latex_table
    return "\n".join(table(t) for t in board.tables) + _failed_note(board.failed, fmt)


def markdown_table(t: Table) -> str:
    """A dataset's section: heading, caption, the table (best mean bold, paper rows italic), citations."""
    frame = t.frame.copy()
    for i in range(len(frame)):
        for col in t.best[i]:
            frame.at[i, col] = f"**{frame.at[i, col]}**"
        if t.reported[i]:
            frame.at[i, "Method"] = f"*{frame.at[i, 'Method']}*"
    text = f"### {t.dataset}\n\n{t.caption}\n\n" + frame.to_markdown(index=False, disable_numparse=True) + "\n"
    if t.citations:
        text += "\n" + "\n".join(f"[{i}] {c}  " for i, c in enumerate(t.citations, 1)) + "\n"
    if t.notes:
        text += "\n" + "\n".join(f"{n}  " for n in t.notes) + "\n"
    for x in t.extras:
        text += f"\n#### {t.dataset}: {x.title.lower()}\n\n{x.note}\n\n" + x.frame.to_markdown(
            index=False, disable_numparse=True) + "\n"
    return text


def render_csv(board: Leaderboard) -> str:
    """The aggregate, one row per (dataset, method, protocol, budget); with paper numbers asked
    for, a source and a citation column and a row per matched paper result."""
    agg = board.agg
    out = agg.drop(columns=[c for c in ("dataset_name", "method_name") if c in agg.columns])
    if board.paper is not None:
        out = out.assign(source="measured", citation="")
        if board.paper_rows:
            out = pd.concat([out, pd.DataFrame(board.paper_rows)], ignore_index=True)
    return out.to_csv(index=False, float_format="%.6g")


def _failed_note(failed: list[str], fmt: str) -> str:
    if not failed or fmt == "csv":
        return ""
    if fmt == "latex":
        return latex_failed_note(failed)
    return f"\n{len(failed)} failed run(s), not in the tables:\n\n" + "".join(f"- {f}\n" for f in failed)
