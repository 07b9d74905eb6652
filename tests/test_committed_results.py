"""The project's published leaderboard is data: rebuilt from the committed records alone, it is
byte for byte the committed results/LEADERBOARD.md (regenerate with the command in
results/README.md whenever records are added)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from clusterbench import Budget, EngineSettings
from clusterbench.cell import Cell
from clusterbench.cli import main
from clusterbench.evaluate.linear import LinearProbe
from clusterbench.plugins import PluginRef, load_registry

RESULTS = Path(__file__).resolve().parents[1] / "results"
RECORDS = sorted((RESULTS / "runs").glob("*/record.json"))


@pytest.mark.skipif(not (RESULTS / "LEADERBOARD.md").is_file(), reason="no committed leaderboard")
def test_the_committed_leaderboard_is_rebuilt_from_the_committed_records(tmp_path):
    out = tmp_path / "LEADERBOARD.md"
    assert main(["report", "--results", str(RESULTS), "--paper", "--output", str(out)]) == 0
    assert out.read_text() == (RESULTS / "LEADERBOARD.md").read_text()


@pytest.mark.parametrize("path", RECORDS, ids=[p.parent.name for p in RECORDS])
def test_each_committed_record_is_still_the_cell_its_grid_plans(path):
    """A parameter added to a method after these runs must not change their run ids (it is
    ``unhashed_default`` at a default equal to the code they ran), or the grid would run them again
    and the leaderboard would stop saying which records it rests on."""
    rec = json.loads(path.read_text())
    reg = load_registry()
    ref = PluginRef.parse(rec["method_spec"])
    method = reg.make_method(ref, dataset=rec["dataset"]["name"])
    dataset = reg.make_dataset(PluginRef.of_record(rec["dataset"]))
    engine = {k: v for k, v in rec["engine"].items() if k in ("device", "precision", "compile")}  # shallow: device
    cell = Cell.of(method, ref, dataset, rec["dataset"]["digest"], rec["seed"], Budget(**rec["budget"]),
                   EngineSettings(**engine), rec["protocols_requested"])
    if rec.get("train_split", "all") != "all":  # a linear cell: pretrained on the split, with its probe
        probe = {k: tuple(v) if isinstance(v, list) else v for k, v in rec["linear_probe"].items()}
        cell = replace(cell, train_split=rec["train_split"], probe=LinearProbe(**probe))
        assert cell.probe == LinearProbe(), "the grid plans the default probe: a changed default re-runs it"
    assert cell.run_id == rec["run_id"] == path.parent.name
