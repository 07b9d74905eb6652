"""What ``clusterbench run`` shows while a grid runs: a tqdm bar over cells, one line per cell (stderr)."""

from __future__ import annotations

import sys
from typing import Any, Callable

from clusterbench.runner import CellOutcome


class Reporter:
    """A :class:`clusterbench.runner.GridObserver` for a terminal; ``quiet`` says nothing."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def start(self, total: int) -> None:
        if self.quiet:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True,
                        disable=None, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}<{remaining}]")

    def note(self, msg: str) -> None:
        if not self.quiet:
            (self.bar.write if self.bar else print)(msg, file=sys.stderr)

    def cell_progress(self, label: str) -> Callable[[float, str], None]:
        def update(frac: float, msg: str) -> None:
            if self.bar is not None:
                self.bar.set_postfix_str(f"{label}: {frac:4.0%} {msg}", refresh=True)
        return update

    def cell_done(self, label: str, outcome: CellOutcome) -> None:
        if self.quiet:
            return
        self.note(outcome_line(label, outcome))
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def outcome_line(label: str, outcome: CellOutcome) -> str:
    """``done    kmeans on digits seed 0: ACC 0.789 ...``: one cell's result in one line."""
    if outcome.status == "done":
        rec = outcome.record or {}
        m = rec.get("protocols", {}).get(rec.get("primary_protocol", "head"), {})
        nan = float("nan")
        return (f"done    {label}: ACC {m.get('acc', nan):.3f} NMI {m.get('nmi', nan):.3f} "
                f"ARI {m.get('ari', nan):.3f} ({rec.get('cost', {}).get('wall_seconds', 0):.1f}s)")
    if outcome.status == "skipped" and outcome.reason:
        return f"skipped {label}: {outcome.reason}"
    if outcome.status == "skipped":
        return f"skipped {label}: finished earlier ({outcome.run_id}; --force reruns it)"
    if outcome.status == "busy":
        return f"busy    {label}: {outcome.reason}"
    return f"FAILED  {label}: {outcome.reason}"
