"""A leaderboard table as LaTeX (booktabs): escaped text, bold best means, italic paper rows."""

from __future__ import annotations

from clusterbench.report.costs import Extra
from clusterbench.report.leaderboard import Table

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "{": r"\{", "}": r"\}",
          "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$", "±": r"$\pm$",
          "→": r"$\to$", "–": "--", "−": "-",
          "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}"}


def latex_escape(s: str) -> str:
    """Plain text (with the report's ±, Δ, →, –) as LaTeX that compiles without extra packages."""
    return "".join(_LATEX.get(c, c) for c in s)


def latex_table(table: Table) -> str:
    """One ``table`` float: caption, header, a row per measured (or reported) result, citations."""
    frame = table.frame
    cols = list(frame.columns)
    n_text = 3
    align = "l" * n_text + "".join("l" if c == "Source" else "r" for c in cols[n_text:])
    caption = latex_escape(table.caption)
    lines = [
        r"\begin{table}[t]", r"\centering",
        rf"\caption{{Clustering results on {latex_escape(table.dataset)} ({caption})}}",
        r"\begin{tabular}{" + align + "}", r"\toprule",
        " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule",
    ]
    for i in range(len(frame)):
        cells = []
        for c in cols:
            v = latex_escape(str(frame.at[i, c]))
            if c in table.best[i]:
                v = rf"\textbf{{{v}}}"
            if table.reported[i]:
                v = rf"\textit{{{v}}}"
            cells.append(v)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.citations:
        lines.append(r"\par\smallskip{\footnotesize " + "; ".join(
            f"[{i}] {latex_escape(c)}" for i, c in enumerate(table.citations, 1)) + "}")
    if table.notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(latex_escape(n) for n in table.notes) + "}")
    lines += [r"\end{table}", ""]
    for x in table.extras:
        lines += _extra_table(table.dataset, x)
    return "\n".join(lines)


def _extra_table(dataset: str, x: Extra) -> list[str]:
    """A table under the leaderboard (equal GPU time, cost per cell) as its own float."""
    cols = list(x.frame.columns)
    n_text = sum(c in ("Method", "Budget", "Cell", "Device") for c in cols)
    return [r"\begin{table}[t]", r"\centering",
            rf"\caption{{{latex_escape(x.title)} on {latex_escape(dataset)} ({latex_escape(x.note)})}}",
            r"\begin{tabular}{" + "l" * n_text + "r" * (len(cols) - n_text) + "}", r"\toprule",
            " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule",
            *(" & ".join(latex_escape(str(v)) for v in row) + r" \\" for row in x.frame.itertuples(index=False)),
            r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def failed_note(failed: list[str]) -> str:
    """Failed runs as LaTeX comments: kept out of the document, visible in the source."""
    if not failed:
        return ""
    return "% failed runs (not in the tables):\n" + "".join(f"%   {f}\n" for f in failed)
