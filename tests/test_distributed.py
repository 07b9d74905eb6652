"""torchrun + DDP: one cell over several ranks gives the numbers of one process.

The core check (``test_ddp_step_equals_one_process``) trains every deep method of the registry
for two steps over 2 gloo processes and in one process on the same global batches (the
random draws fixed: see ``ddp_worker``), and compares loss, gradients, weights and buffers.
The rest: the data shards, the refusals, and ``torchrun`` end to end (1 and 2 processes).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from clusterbench.errors import ConfigError
from clusterbench.plugins import load_registry
from clusterbench.train.distributed import Distributed, torchrun_env

from helpers import subprocess_env

DEEP = sorted(name for name, cls in load_registry().methods.items() if cls.deep)
#: what each rank trains: every deep method's smoke preset, and switches that exchange rows or
#: keep per-step state of their own (TCC's shuffle-BN over the ranks, its budget-fraction noise)
REFS = {**{name: f"{name}[preset=smoke]" for name in DEEP},
        "tcc-switches": "tcc[preset=smoke,bn_splits=4,projector=mlp,assign_scale=10,gumbel_noise_fraction=0.5,"
                        "tau_cluster=0.2]"}
WORLD = 2


# ---- the shard of a step's batch ------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 4])
def test_the_ranks_shards_are_the_global_batch_in_order(world):
    batch = torch.randperm(32)[:16]
    shards = [Distributed(r, world).shard(batch) for r in range(world)]
    assert torch.equal(torch.cat(shards), batch)
    assert {len(s) for s in shards} == {16 // world}


def test_a_batch_that_does_not_split_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="batch size 10 does not split over 4 ranks"):
        Distributed(0, 4).local_batch(10)


def test_each_rank_and_epoch_draws_its_own_augmentations():
    seeds = {Distributed(r, 4).augment_seed(0, e) for r in range(4) for e in range(3)}
    assert len(seeds) == 12
    assert Distributed(1, 4).augment_seed(0, 2) == Distributed(1, 4).augment_seed(0, 2)


def test_torchrun_env_is_read_and_absent_outside(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == (3, 4, 1)


# ---- one DDP step = one process on the global batch -------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every deep method (and REFS' switches), 2 steps, trained over 2 gloo ranks and by one process."""
    import ddp_worker

    tmp = tmp_path_factory.mktemp("ddp")
    mp.start_processes(ddp_worker.worker, args=(WORLD, str(tmp), REFS), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a: torch.Tensor, b: torch.Tensor, what: str, scale: float = 1.0) -> None:
    """Equal to float64 rounding, float32 where a method computes in float32 (CueCo's centroid
    scores): relative to the tensor, and absolute to ``scale`` (a Linear's bias before a
    BatchNorm has a gradient of 0 up to rounding)."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", list(REFS))
def test_ddp_step_equals_one_process(trained, name):
    ranks = [t[name] for t in trained]
    single = next(t[name + "/single"] for t in trained if name + "/single" in t)
    assert [r["world_size"] for r in ranks] == [WORLD] * WORLD and single["world_size"] == 1
    # the ranks agree with each other exactly: one averaged gradient, one update, identical buffers
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), f"{name}: rank 0 and rank 1 differ in {k}"
    # and with one process on the same global batches, to float tolerance
    assert ranks[0]["loss"] == pytest.approx(single["loss"], rel=1e-6), f"{name}: loss"
    assert ranks[0]["grads"].keys() == single["grads"].keys()
    largest = max(float(g.abs().max()) for g in single["grads"].values())
    for k, g in single["grads"].items():
        _close(ranks[0]["grads"][k], g, f"{name}: gradient of {k}", largest)
    moved = 0
    for k, v in single["state"].items():
        if not v.is_floating_point():  # counters, queue pointers, flags
            assert torch.equal(ranks[0]["state"][k], v), f"{name}: {k} after the steps"
            continue
        _close(ranks[0]["state"][k], v, f"{name}: {k} after the steps", max(1.0, float(v.abs().max())))
        moved += int(not torch.equal(v, single["init"][k]))
    assert moved > len(single["state"]) // 2, f"{name}: the steps left most weights unchanged: nothing was tested"


# ---- torchrun end to end ------------------------------------------------------------------------
def _args(tmp_path, results: str) -> list[str]:
    """``clusterbench run`` of one tiny CC cell into ``tmp_path/results``."""
    return ["run", "--methods", "cc[preset=smoke]", "--datasets", "synthetic[n=32,size=8]", "--seeds", "0",
            "--budget", "steps=2", "--device", "cpu", "--protocols", "head", "--results", str(tmp_path / results),
            "--quiet"]


def _torchrun(tmp_path, results: str, nproc: int) -> subprocess.Popen:
    """The same run under ``torchrun --nproc-per-node nproc -m clusterbench``, started (not awaited)."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                             "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "-m", "clusterbench",
                             *_args(tmp_path, results)], env=subprocess_env(keep=("cc", "synthetic")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _record(tmp_path, results: str) -> dict:
    records = [json.loads(p.read_text()) for p in (tmp_path / results).rglob("record.json")]
    assert len(records) == 1
    return records[0]


@pytest.mark.slow
def test_torchrun_one_process_is_a_plain_run_and_two_processes_keep_the_run_id(tmp_path):
    # side by side, all with one OpenMP thread: a CPU reduction's float result depends on the thread count
    procs = {"one": _torchrun(tmp_path, "one", 1), "two": _torchrun(tmp_path, "two", 2),
             "plain": subprocess.Popen([sys.executable, "-m", "clusterbench", *_args(tmp_path, "plain")],
                                       env=subprocess_env(keep=("cc", "synthetic")), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)}
    for proc in procs.values():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    plain, one, two = (_record(tmp_path, r) for r in ("plain", "one", "two"))
    assert one["run_id"] == plain["run_id"] == two["run_id"]  # the world size is recorded, not hashed
    assert one["protocols"] == plain["protocols"] and one["curve"][-1]["loss"] == plain["curve"][-1]["loss"]
    assert (plain["engine"]["world_size"], one["engine"]["world_size"], two["engine"]["world_size"]) == (1, 1, 2)
    assert two["stats"]["world_size"] == 2 and two["status"] == "done"
    assert two["stats"]["steps"] == 2 and two["stats"]["images_seen"] == 32  # global steps and images
