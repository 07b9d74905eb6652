"""Scaling out (issue 14): workers, submitit's local launcher, grid files, shards, merge, status.

One small grid (k-means and CC's smoke preset for 2 steps on tiny synthetic data, plus a
method that always fails, 2 seeds) is run once sequentially; every other way of running it
must give the same records: same run ids, statuses, metrics and labels.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import error_lines, records_in, subprocess_env

from clusterbench.cli import main

BOOM = '''
from dataclasses import dataclass
from clusterbench import Method, hookimpl

class Boom(Method):
    name = "boom"
    description = "always fails (tests)"
    @dataclass(frozen=True)
    class Params:
        pass
    def fit(self, data, ctx):
        raise RuntimeError("boom on purpose")
    def predict(self, data):
        raise AssertionError

@hookimpl
def clusterbench_methods():
    return [Boom]
'''

GRID = ["--methods", "kmeans", "cc[preset=smoke]", "boom", "--datasets", "synthetic[n=64,size=16]",
        "--seeds", "0", "1", "--budget", "steps=2", "--device", "cpu"]


def same_result(rec: dict) -> tuple:
    """What must not depend on how a cell was run."""
    return (rec["run_id"], rec["status"], rec.get("method_spec"), json.dumps(rec.get("protocols"), sort_keys=True),
            (rec.get("labels") or {}).get("sha256"), (rec.get("error") or {}).get("reason"))


def results_of(path: Path) -> list[tuple]:
    return sorted(same_result(r) for r in records_in(path))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment worker processes inherit: these plugins only, one thread, a private cache."""
    root = tmp_path_factory.mktemp("launch")
    (root / "boom_plugin.py").write_text(BOOM)
    saved = dict(os.environ)
    os.environ.update(subprocess_env(keep=("kmeans", "cc", "synthetic", "digits"),
                                     CLUSTERBENCH_CACHE=str(root / "cache")))
    yield root
    os.environ.clear()
    os.environ.update(saved)


def run(env: Path, *args: str) -> int:
    os.environ["CLUSTERBENCH_DISABLE_PLUGINS"] = subprocess_env(keep=("kmeans", "cc", "synthetic", "digits"))[
        "CLUSTERBENCH_DISABLE_PLUGINS"]  # the autouse fixture clears it per test
    return main(["--plugin", str(env / "boom_plugin.py"), "run", *args, "--quiet"])


@pytest.fixture(scope="module")
def sequential(env):
    assert run(env, *GRID, "--results", str(env / "seq")) == 1  # boom failed, the grid went on
    res = results_of(env / "seq")
    assert [r[1] for r in res].count("done") == 4 and [r[1] for r in res].count("failed") == 2
    return res


def test_two_workers_give_the_sequential_records(env, sequential, capsys):
    assert run(env, *GRID, "--results", str(env / "w2"), "--workers", "2") == 1
    assert results_of(env / "w2") == sequential
    assert "2 run(s) failed" in capsys.readouterr().err


def test_launcher_local_gives_the_sequential_records(env, sequential):
    assert run(env, *GRID, "--results", str(env / "local"), "--launcher", "local") == 1
    assert results_of(env / "local") == sequential
    assert list((env / "local" / ".submitit").iterdir())  # it went through submitit


def test_launcher_local_with_two_tasks_per_node_trains_each_cell_with_ddp(env, sequential):
    """--slurm-tasks-per-node 2 through submitit's local executor: two gloo ranks per job, the same cells."""
    res = env / "ddp"
    assert run(env, *GRID, "--results", str(res), "--launcher", "local", "--slurm-tasks-per-node", "2") == 1
    recs = {r["run_id"]: r for r in records_in(res)}
    assert sorted(recs) == sorted(r[0] for r in sequential)  # the run ids do not depend on the ranks
    cc = [r for r in recs.values() if r["method"] == "cc"]
    assert len(cc) == 2 and all(r["status"] == "done" and r["engine"]["world_size"] == 2 for r in cc)
    assert all(r["stats"]["steps"] == 2 and r["stats"]["batch_size"] == 16 for r in cc)  # the global batch
    kmeans = [r for r in recs.values() if r["method"] == "kmeans"]
    assert {same_result(r) for r in kmeans} <= set(sequential)  # not deep: rank 0 alone, as sequential


def test_a_grid_file_is_the_command_line_and_is_recorded(env, sequential, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [kmeans, {cc: {preset: smoke}}, boom]\ndatasets: ['synthetic[n=64,size=16]']\n"
                    "seeds: [0, 1]\nbudget: {steps: 2}\nengine: {device: cpu}\n")
    assert run(env, "--grid", str(grid), "--results", str(tmp_path / "g")) == 1
    assert results_of(tmp_path / "g") == sequential
    recs = records_in(tmp_path / "g")
    assert all(r["grid"]["content"] == grid.read_text() and len(r["grid"]["sha256"]) == 64 for r in recs)
    toml = tmp_path / "grid.toml"
    toml.write_text('methods = ["kmeans"]\ndatasets = ["synthetic[n=64,size=16]"]\nseeds = [0]\n')
    assert run(env, "--grid", str(toml), "--results", str(tmp_path / "g")) == 0  # finished: skipped


def test_a_grid_file_and_the_same_flag_on_the_command_line_is_refused(env, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [kmeans]\nseeds: [0]\n")
    assert run(env, "--grid", str(grid), "--seeds", "3", "--results", str(tmp_path / "r")) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"clusterbench: error: --seeds is given both on the command line and in --grid {grid}; keep one"]
    grid.write_text("methods: [kmeans]\nsedes: [0]\n")
    assert run(env, "--grid", str(grid), "--results", str(tmp_path / "r")) == 2
    assert "unknown key 'sedes'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_shards_split_the_grid_and_merge_joins_them(env, sequential, tmp_path, capsys):
    for i in (1, 2):
        run(env, *GRID, "--results", str(tmp_path / f"s{i}"), "--shard", f"{i}/2")
    one, two = results_of(tmp_path / "s1"), results_of(tmp_path / "s2")
    assert len(one) == len(two) == 3 and not {r[0] for r in one} & {r[0] for r in two}
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "-o", str(tmp_path / "all")]) == 0
    assert results_of(tmp_path / "all") == sequential
    # a copy of one run id with other metrics: refused, nothing written
    rec_path = next((tmp_path / "s2").glob("runs/kmeans*/record.json"))
    (tmp_path / "s3" / "runs" / rec_path.parent.name).mkdir(parents=True)
    (tmp_path / "s3" / ".clusterbench-results").write_text((tmp_path / "s2" / ".clusterbench-results").read_text())
    rec = json.loads(rec_path.read_text())
    rec["protocols"]["head"]["nmi"] = rec["protocols"]["head"]["nmi"] / 2
    (tmp_path / "s3" / "runs" / rec_path.parent.name / "record.json").write_text(json.dumps(rec))
    (tmp_path / "s3" / "runs" / rec_path.parent.name / "labels.npy").write_bytes(
        (rec_path.parent / "labels.npy").read_bytes())
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s2"), str(tmp_path / "s3"), "-o", str(tmp_path / "bad")]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"clusterbench: error: run {rec_path.parent.name} differs between {tmp_path / 's2'} and {tmp_path / 's3'} "
        "(other metrics or labels); merge refused, nothing written"]
    assert not (tmp_path / "bad").exists()


def test_merge_compares_label_values_not_bytes(env, tmp_path, capsys):
    """A record written before labels were stored narrow (int32) and the same run written now (int8)
    are one result; other label values are not."""
    run(env, "--methods", "kmeans", "--datasets", "synthetic[n=64,size=16]", "--seeds", "0",
        "--results", str(tmp_path / "new"))
    (run_dir,) = (tmp_path / "new" / "runs").iterdir()
    assert np.load(run_dir / "labels.npy").dtype == np.int8

    def copy_with(name, labels):
        old = tmp_path / name / "runs" / run_dir.name
        old.mkdir(parents=True)
        (tmp_path / name / ".clusterbench-results").write_text((tmp_path / "new" / ".clusterbench-results").read_text())
        np.save(old / "labels.npy", labels.astype(np.int32))
        rec = json.loads((run_dir / "record.json").read_text())
        rec["labels"]["sha256"] = hashlib.sha256((old / "labels.npy").read_bytes()).hexdigest()
        (old / "record.json").write_text(json.dumps(rec))

    labels = np.load(run_dir / "labels.npy")
    copy_with("old", labels)
    assert main(["merge", str(tmp_path / "old"), str(tmp_path / "new"), "-o", str(tmp_path / "all")]) == 0
    assert [r[:4] for r in results_of(tmp_path / "all")] == [r[:4] for r in results_of(tmp_path / "new")]  # the first copy
    copy_with("other", (labels + 1) % 3)
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "other"), str(tmp_path / "new"), "-o", str(tmp_path / "bad")]) == 2
    assert "differs between" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_status_shows_each_cell_and_run_fills_in_what_is_missing(env, tmp_path, capsys):
    grid = ["--methods", "kmeans", "boom", "--datasets", "synthetic[n=64,size=16]", "--seeds", "0", "1", "2"]
    res = tmp_path / "r"
    run(env, *grid[:-1], "--results", str(res), "--shard", "1/2")  # seeds 0 1: cells 0 and 2 of 6
    capsys.readouterr()
    assert main(["--plugin", str(env / "boom_plugin.py"), "status", *grid, "--results", str(res)]) == 0
    out = capsys.readouterr().out
    assert "6 cells: 1 finished, 0 running, 1 failed, 4 pending" in out, out
    assert "boom on purpose" in out
    # a cell another process holds (lock + heartbeat) is running, with its job and progress
    pending = [ln.split()[-1] for ln in out.splitlines() if ln.startswith("pending")]
    d = res / "runs" / pending[0]
    d.mkdir(parents=True, exist_ok=True)
    (d / "heartbeat.json").write_text(json.dumps({"job": "123_4", "progress": 0.5, "message": "epoch 3"}))
    with open(d / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["--plugin", str(env / "boom_plugin.py"), "status", *grid, "--results", str(res)]) == 0
        out = capsys.readouterr().out
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    assert "job 123_4: 50% epoch 3" in out and "1 running" in out
    assert run(env, *grid, "--results", str(res)) == 1  # the rest; boom fails again
    assert main(["--plugin", str(env / "boom_plugin.py"), "status", *grid, "--results", str(res)]) == 0
    assert "6 cells: 3 finished, 0 running, 3 failed, 0 pending" in capsys.readouterr().out


def test_status_before_anything_ran_is_every_cell_pending(env, tmp_path, capsys):
    grid = ["--methods", "kmeans", "--datasets", "synthetic[n=64,size=16]", "--seeds", "0", "1"]
    assert main(["status", *grid, "--results", str(tmp_path / "not-yet")]) == 0
    assert "2 cells: 0 finished, 0 running, 0 failed, 2 pending" in capsys.readouterr().out
    assert not (tmp_path / "not-yet").exists()  # status writes nothing


def test_bad_shard_and_gpus_are_one_line_errors(env, tmp_path, capsys):
    for flags, msg in ((["--shard", "3/2"], "--shard 3/2: expected I/N with 1 <= I <= N, e.g. --shard 1/4"),
                       (["--gpus", "0"], "--gpus 0: the run is on the CPU (--device cpu)"),
                       (["--workers", "0"], "--workers 0: expected at least 1")):
        assert run(env, "--methods", "kmeans", "--datasets", "synthetic[n=64,size=16]", "--device", "cpu",
                   "--results", str(tmp_path / "r"), *flags) == 2
        assert error_lines(capsys.readouterr().err) == [f"clusterbench: error: {msg}"]


def test_run_grid_and_load_results(env, tmp_path):
    import clusterbench
    os.environ["CLUSTERBENCH_DISABLE_PLUGINS"] = subprocess_env(keep=("kmeans", "synthetic"))[
        "CLUSTERBENCH_DISABLE_PLUGINS"]
    result = clusterbench.run_grid(["kmeans"], ["synthetic[n=64,size=16]"], seeds=[0, 1], results=tmp_path)
    assert [o.status for o in result.outcomes] == ["done", "done"]
    df = clusterbench.load_results(tmp_path)
    assert list(df["seed"]) == [0, 1] and set(df["protocol"]) == {"head"} and df["acc"].between(0, 1).all()
    assert list(df["run_id"]) == sorted(o.run_id for o in result.outcomes)
    from clusterbench.results.store import ResultsStore
    empty = clusterbench.load_results(ResultsStore(tmp_path / "empty").root)  # a store with no records yet
    assert empty.empty and {"method_spec", "dataset", "protocol", "acc"} <= set(empty.columns)  # groupby works
    with pytest.raises(clusterbench.ConfigError, match="unknown option 'sedes'"):
        clusterbench.run_grid(["kmeans"], sedes=[0])


def test_slurm_parameters_from_the_flags():
    """What `--launcher slurm` asks sbatch for (no SLURM here: the executor's parameters are the contract)."""
    import argparse

    from clusterbench.launch.submit import slurm_parameters

    base = dict(slurm_time=90, slurm_gpus_per_task=1, slurm_cpus_per_task=8, slurm_array_parallelism=16,
                slurm_partition="gpu", slurm_mem="32G", slurm_opt=["account=proj", "constraint=h100"])
    one = slurm_parameters(argparse.Namespace(**base, slurm_tasks_per_node=1))
    assert one == {"time": 90, "gpus_per_task": 1, "cpus_per_task": 8, "array_parallelism": 16,
                   "ntasks_per_node": 1, "partition": "gpu", "mem": "32G", "job_name": "clusterbench",
                   "additional_parameters": {"account": "proj", "constraint": "h100"}}
    four = slurm_parameters(argparse.Namespace(**base, slurm_tasks_per_node=4))
    # four ranks share the node's GPUs (rank r on cuda:r), not one bound GPU each
    assert four["ntasks_per_node"] == 4 and four["gpus_per_node"] == 4 and "gpus_per_task" not in four
    with pytest.raises(Exception, match="--slurm-opt account: expected KEY=VALUE"):
        slurm_parameters(argparse.Namespace(**{**base, "slurm_opt": ["account"]}, slurm_tasks_per_node=1))


def test_a_machine_without_a_gpu_plans_the_cells_a_gpu_runs(env, tmp_path, capsys):
    """`status --device cuda` (and SLURM's GPU tasks) on a CPU-only machine name the run ids a GPU
    writes (bf16, compiled): a login node or laptop sees which GPU cells are finished."""
    from clusterbench.cli import build_parser
    from clusterbench.launch.cli import grid_spec
    from clusterbench.settings import EngineSettings

    grid = ["--methods", "cc[preset=smoke]", "--datasets", "synthetic[n=64,size=16]", "--seeds", "0",
            "--budget", "steps=2", "--results", str(tmp_path / "r")]
    ids = {}
    for device in ("cuda", "cpu"):
        assert main(["status", *grid, "--device", device]) == 0
        ids[device] = [ln.split()[-1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("pending")]
    args = build_parser().parse_args(["status", *grid, "--device", "cpu"])
    _, planned, (cell,) = grid_spec(args, args.func.args[0])
    gpu = EngineSettings(device="cuda", precision="bf16", compile=True)
    want = planned.grid.cell(cell.key, planned.dataset(cell.key.dataset)[1], planned.budget, gpu)[1].run_id
    assert ids["cuda"] == [want] and ids["cpu"] == [cell.run_id] != [want]
    # `run --launcher slurm` with GPU tasks plans (to skip what is finished) and sends the same cells
    args = build_parser().parse_args(["run", *grid, "--launcher", "slurm", "--slurm-gpus-per-task", "1"])
    spec, _, (slurm_cell,) = grid_spec(args, args.func.args[0])
    assert slurm_cell.run_id == want and spec.values["compile"] is True and spec.values["device"] == "cuda"
    assert main(["run", *grid, "--device", "cuda"]) == 2  # a run still needs the GPU it names
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_status_where_the_data_is_not_readable_takes_the_digest_from_the_records(tmp_path, capsys):
    import numpy as np
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8), y=np.arange(40) % 4)
    grid = ["--methods", "kmeans", "--datasets", f"npz[path={data}]", "--results", str(tmp_path / "r")]
    assert main(["run", *grid, "--seeds", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", *grid, "--seeds", "0", "1"]) == 0
    with_data = capsys.readouterr().out
    data.rename(tmp_path / "elsewhere.npz")  # a login node without the data
    assert main(["status", *grid, "--seeds", "0", "1"]) == 0
    out, err = capsys.readouterr()
    assert out == with_data and "2 cells: 1 finished, 0 running, 0 failed, 1 pending" in out
    assert "not readable here" in err and "run ids from the digest its records give" in err
    # a check made after the load (K above the number of images) is not a missing dataset
    (tmp_path / "elsewhere.npz").rename(data)
    bad = ["--methods", "kmeans[n_clusters=50]", *grid[2:]]
    assert main(["status", *bad, "--seeds", "0"]) == 2
    assert "fewer than K=50 clusters" in capsys.readouterr().err
    data.rename(tmp_path / "elsewhere.npz")
    # no records to read the digest from: the load's one-line error stands
    assert main(["status", *grid[:-1], str(tmp_path / "nothing-yet"), "--seeds", "0"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("clusterbench: error: ") and "d.npz" in lines[0], lines
