"""The HTML report: one self-contained page (tables, figures as base64 PNG or JPEG, notes, failed runs).

Nothing is fetched from elsewhere, so the file can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html as _html
import time
from typing import TYPE_CHECKING, Sequence

from clusterbench.report.costs import Extra
from clusterbench.report.leaderboard import Leaderboard, Table

if TYPE_CHECKING:
    from clusterbench.report.figures import DatasetFigures

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
caption{caption-side:top;text-align:left;font-size:.95em;color:#444;padding:.3em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #999}td.t,th.t{text-align:left}
td.t{white-space:normal;overflow-wrap:anywhere;min-width:6em;max-width:24em}
.wide{overflow-x:auto;max-width:100%}
tr.reported td{color:#555;font-style:italic;background:#f6f6f2}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.notes{color:#8a4b00}.failed{color:#a00}
.meta{color:#666;font-size:.85em}
"""
TEXT_COLUMNS = {"Method", "Protocol", "Budget", "Source"}  # left-aligned; the rest are numbers
EXTRA_TEXT = {"Method", "Budget", "Cell", "Device"}


def html_table(table: Table) -> str:
    """One leaderboard as a ``<table>``: caption, bold best means, paper rows styled apart."""
    e = _html.escape
    cols = list(table.frame.columns)
    head = "".join(f'<th class="t">{e(c)}</th>' if c in TEXT_COLUMNS else f"<th>{e(c)}</th>" for c in cols)
    body = []
    for i in range(len(table.frame)):
        cells = []
        for c in cols:
            v = e(str(table.frame.at[i, c]))
            if c in table.best[i]:
                v = f"<b>{v}</b>"
            cells.append(f'<td class="t">{v}</td>' if c in TEXT_COLUMNS else f"<td>{v}</td>")
        cls = ' class="reported"' if table.reported[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    cites = ""
    if table.citations:
        cites = "<p class=\"meta\">" + "<br>".join(
            f"[{i}] {e(c)}" for i, c in enumerate(table.citations, 1)) + "</p>"
    if table.notes:
        cites += '<p class="meta provenance">' + "<br>".join(e(n) for n in table.notes) + "</p>"
    return (f'<div class="wide"><table><caption>{e(table.caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{cites}" + "".join(_extra_table(x) for x in table.extras))


def _extra_table(x: Extra) -> str:
    """A table under the leaderboard (equal GPU time, cost per cell): plain cells, its note as caption."""
    e = _html.escape
    cols = list(x.frame.columns)
    head = "".join(f'<th class="t">{e(c)}</th>' if c in EXTRA_TEXT else f"<th>{e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f'<td class="t">{e(str(v))}</td>' if c in EXTRA_TEXT else f"<td>{e(str(v))}</td>"
                                    for c, v in zip(cols, row)) + "</tr>"
                   for row in x.frame.itertuples(index=False))
    return (f'<div class="wide"><table><caption>{e(x.title)}: {e(x.note)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _figures(f: DatasetFigures) -> list[str]:
    e = _html.escape
    out = []
    for fig in f.figures:
        b64 = base64.b64encode(fig.image).decode()
        out.append(f'<figure id="{e(fig.key)}"><img alt="{e(fig.title)}" src="data:{fig.mime};base64,{b64}">'
                   f"<figcaption><b>{e(fig.title)}.</b> {e(fig.caption)}</figcaption></figure>")
    if f.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in f.notes) + "</ul>")
    return out


def render_html(board: Leaderboard, figures: Sequence[DatasetFigures] = (), notes: Sequence[str] = (), *,
                title: str = "clusterbench report", source: str = "") -> str:
    """The page: a section per dataset (its table, then its figures), then notes and failed runs."""
    e = _html.escape
    by_ds = {f.dataset: f for f in figures}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
           f'<p class="meta">{board.n_done} finished run(s)' + (f" from {e(source)}" if source else "")
           + f"; generated {e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</p>"]
    tables = board.tables
    if not tables:
        out.append("<p>No finished runs.</p>")
    tmap = {t.dataset: t for t in tables}
    datasets = [t.dataset for t in tables] + [d for d in by_ds if d not in tmap]
    for ds in datasets:
        out.append(f'<h2 id="{e(ds)}">{e(ds)}</h2>')
        if ds in tmap:
            out.append(html_table(tmap[ds]))
        if ds in by_ds:
            out += _figures(by_ds[ds])
    if notes:
        out.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if board.failed:
        out.append(f"<h2>Failed runs ({len(board.failed)})</h2><p>Not in the tables.</p>"
                   '<ul class="failed">' + "".join(f"<li>{e(x)}</li>" for x in board.failed) + "</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)
