"""A leaderboard table as LaTeX (booktabs): escaped text, bold best means, italic paper rows."""

from __future__ import annotations

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
    return "\n".join(lines)


def failed_note(failed: list[str]) -> str:
    """Failed runs as LaTeX comments: kept out of the document, visible in the source."""
    if not failed:
        return ""
    return "% failed runs (not in the tables):\n" + "".join(f"%   {f}\n" for f in failed)
