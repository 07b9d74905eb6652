"""The project's published leaderboard is data: rebuilt from the committed records alone, it is
byte for byte the committed results/LEADERBOARD.md (regenerate with the command in
results/README.md whenever records are added)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterbench.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.skipif(not (RESULTS / "LEADERBOARD.md").is_file(), reason="no committed leaderboard")
def test_the_committed_leaderboard_is_rebuilt_from_the_committed_records(tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    assert main(["report", "--results", str(RESULTS), "--paper", "--output", str(out)]) == 0
    assert out.read_text() == (RESULTS / "LEADERBOARD.md").read_text()
