"""`clusterbench bench` on the CPU: the figures it writes hang together, and its parts do what they say."""

from __future__ import annotations

import json
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch

from clusterbench import AugmentSpec, EngineSettings
from clusterbench.bench.kmeans_bench import bench_kmeans, synthetic_features
from clusterbench.bench.pil import PILTwoViews, float32_mode, pil_transform
from clusterbench.bench.steppers import BenchStep
from clusterbench.bench.timing import timed
from clusterbench.cli import _compile_default, main
from clusterbench.methods.cc import CC
from clusterbench.methods.vtcc import VTCC
from clusterbench.train.augment import blur_kernel_size
from clusterbench.train.deep import augment_policy
from clusterbench.train.step import TrainStep

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.mark.slow
def test_bench_command_writes_consistent_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--methods", "cc[preset=fast]", "--dataset", "synthetic[n=64,size=16]", "--image-sizes", "16",
               "--batch-sizes", "8", "--steps", "3", "--warmup", "1", "--workers", "0", "--device", "cpu",
               "--kmeans", "--kmeans-n", "1500", "--kmeans-train-steps", "2", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "2/3 fp32" in printed and "k-means on 1500 x 512 synthetic features" in printed
    res = json.loads(out.read_text())
    (step,) = res["steps"]
    assert (step["method"], step["image_size"], step["batch_size"]) == ("cc", 16, 8)
    # every path's rate is the batch over its median seconds per step, with the spread recorded
    for key in ("model_only", "harness", "pil", "model_only_eager", "harness_eager"):
        t = step["timings"][key]
        assert t["calls"] >= 1 and 0 <= t["iqr_s"] < 10 * t["median_s"], key
        assert step[key] == pytest.approx(8 / t["median_s"]), key
    # and the printed row shows the JSON's figures, in the header's columns
    row = next(line.split() for line in printed.splitlines() if line.startswith("cc[preset=fast]"))
    assert row[1:3] == ["16", "8"] and row[7] == f"{step['pil']:,.0f}" and row[6] == f"{step['harness']:,.0f}"
    assert float(row[10]) == pytest.approx(round(step['efficiency'], 2))  # tabulate prints 1.00 as 1
    # no GPU: no TF32 column, no graphs, and compile off by default on the CPU
    assert step["pil_tf32"] is None and step["cuda_graphs"].startswith("off") and step["compiled"] == "off"
    assert res["settings"]["compile"] is False
    assert res["metrics_seconds"] > 0
    syn, trained = res["kmeans"]["synthetic"], res["kmeans"]["trained"]
    assert (syn["n"], syn["dim"], syn["k"]) == (1500, 512, 10)
    assert trained["n"] == 64 and trained["k"] >= 2 and "cc trained 2 steps" in trained["features"]
    for name in ("faiss_blas", "faiss_direct", "faiss_sampled"):
        assert syn[f"{name}_seconds"] > 0 and f"{syn[name + '_speedup']:.1f}x" in printed
    assert syn["faiss_blas_agreement"] == pytest.approx(1.0)  # same start, same iterations: same partition


def test_kmeans_comparison_same_start_same_partition():
    feats, y = synthetic_features(n=3000, dim=32, k=5, noise=0.3, seed=1)
    ev = bench_kmeans(feats, y, k=5, niter=10, nredo=2)
    # both faiss paths compute the same Lloyd iterations as scikit-learn from the same start
    assert ev["faiss_blas_agreement"] == pytest.approx(1.0)
    assert ev["faiss_direct_agreement"] == pytest.approx(1.0)
    assert ev["faiss_blas_acc"] == pytest.approx(ev["sklearn_acc"])
    assert 0 < ev["faiss_sampled_acc"] <= 1 and ev["used_faiss_acc"] > 0.9  # well separated clusters


def test_pil_views_ship_a_shared_memory_handle_not_the_images():
    x = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    ds = PILTwoViews(x, pil_transform(AugmentSpec(), 24))
    # what a spawned DataLoader worker receives: a handle to shared memory, not 900 KB of pixels
    assert len(ForkingPickler.dumps(ds)) < x.nbytes / 20
    a, b = ds[3]
    assert a.shape == b.shape == (3, 24, 24) and a.dtype == torch.float32
    assert not torch.equal(a, b)  # two independent random views
    assert np.array_equal(ds.x[3].numpy(), x[3])


def test_float32_mode_sets_both_switches_and_restores_them():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with float32_mode(tf32=False):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        with float32_mode(tf32=True):
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        assert torch.backends.cudnn.allow_tf32 is False
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_compile_defaults_to_the_gpu_only():
    assert _compile_default(None, "cpu") is False
    assert _compile_default(None, "cuda:1") is True
    assert _compile_default(False, "cuda") is False and _compile_default(True, "cpu") is True


def _cc() -> CC:
    return CC(CC.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 4}))


def test_compile_status_says_off_on_or_why_not():
    m = _cc()
    model = m.build_model(3, 16, 3)
    opt = m.configure_optimizer(model)
    assert TrainStep(m, model, opt, EngineSettings(device="cpu")).compile_status == "off"
    assert TrainStep(m, model, opt, EngineSettings(device="cpu", compile=True)).compile_status == "on"
    m.compile_model = False
    assert TrainStep(m, model, opt, EngineSettings(device="cpu", compile=True)).compile_status == \
        "off: method 'cc' opts out"


def test_a_model_that_fails_to_compile_runs_eagerly_and_says_so():
    from torch._dynamo.exc import TorchDynamoException

    class Uncompilable(CC):
        def training_loss(self, model, v1, v2):
            if model is not self.raw:
                raise TorchDynamoException("cannot trace this op")
            return super().training_loss(model, v1, v2)

    m = Uncompilable(_cc().params)
    model = m.build_model(3, 16, 3)
    m.raw = model
    step = BenchStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu", compile=True))
    assert step.compile_status == "on"
    v = torch.rand(4, 3, 16, 16)
    with pytest.warns(UserWarning, match="torch.compile of the cc model failed"):
        terms = step.step_on_views(v, v.flip(3), 0.0)
    assert torch.isfinite(terms["loss"]) and step.compile_status.startswith("off: compile failed (")
    assert step.step_model is model


def test_faiss_distance_path_switches_and_restores():
    import faiss

    from clusterbench.evaluate.faiss_kmeans import faiss_distance_path

    before = faiss.cvar.distance_compute_blas_threshold
    with faiss_distance_path("direct"):
        assert faiss.cvar.distance_compute_blas_threshold > 10**6
        with faiss_distance_path("blas"):
            assert faiss.cvar.distance_compute_blas_threshold == 20
    assert faiss.cvar.distance_compute_blas_threshold == before
    with pytest.raises(ValueError, match="'blas' or 'direct'"):
        with faiss_distance_path("gpu"):
            pass


def test_gpu_records_say_whether_fp32_ran_as_tf32(monkeypatch):
    from types import SimpleNamespace

    from clusterbench.results.envinfo import device_info

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(name="Fake GPU",
                                                                                        total_memory=2**34))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90000)
    with float32_mode(tf32=False):
        info = device_info("cuda")
    assert info["gpu"] == "Fake GPU" and info["tf32_convolutions"] is False and info["tf32_matmul"] is False
    with float32_mode(tf32=True):
        assert device_info("cuda:0")["tf32_convolutions"] is True
    assert "tf32_convolutions" not in device_info("cpu")


def test_pil_baseline_applies_every_op_of_the_policy():
    """The PIL path does the GPU path's work: solarisation and blur included (VTCC has both)."""
    import torchvision.transforms as T

    m = VTCC(VTCC.resolve_params({"image_size": 0}))
    spec = augment_policy(m, None)[1]  # VTCC's second view: the one that is solarised
    ops = pil_transform(spec, 96).transforms
    kinds = [type(op) for op in ops]
    assert kinds == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.RandomApply, T.RandomGrayscale, T.RandomApply,
                     T.RandomSolarize, T.ToTensor, T.Normalize]
    blur = ops[4].transforms[0]
    assert blur.kernel_size == (blur_kernel_size(96, 2.0),) * 2 == (17, 17) and ops[4].p == spec.blur_p == 1.0
    assert ops[5].p == spec.solarize_p == 0.2 and ops[5].threshold == 128
    assert tuple(ops[7].mean) == VTCC.input_mean and tuple(ops[7].std) == VTCC.input_std
    plain = [type(op) for op in pil_transform(AugmentSpec(), 32).transforms]
    assert T.RandomSolarize not in plain and T.Normalize not in plain and plain.count(T.RandomApply) == 1


def test_timed_reports_median_and_spread_of_the_calls():
    import time

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    t = timed(fn, steps=5, warmup=2, device=torch.device("cpu"))
    assert 0.0015 < t.median_s < 0.05 and t.iqr_s >= 0
    assert t.calls >= 4 and len(calls) >= 2 + t.calls  # warm-up calls are not timed


def test_bench_step_on_static_views_trains_the_model():
    m = _cc()
    model = m.build_model(3, 16, 3)
    before = [p.clone() for p in model.parameters()]
    step = BenchStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))
    v = torch.rand(4, 3, 16, 16)
    terms = step.step_on_static_views(v, v.flip(3), 0.5)
    assert torch.isfinite(terms["loss"]) and not terms["loss"].requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
