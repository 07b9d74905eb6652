"""`clusterbench bench` on the CPU: the figures it writes hang together, and its parts do what they say."""

from __future__ import annotations

import json
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch

from clusterbench.bench.steps import PILTwoViews, _pil_transform, bench_kmeans, float32_mode, synthetic_features
from clusterbench.cli import _compile_default, main
from clusterbench.train.augment import AugmentSpec
from clusterbench.settings import EngineSettings
from clusterbench.train.engine import TrainStep
from clusterbench.methods.cc import CC

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
    for key in ("model_only", "harness", "pil", "model_only_eager", "harness_eager"):
        assert step[key] > 0, key
    assert step["efficiency"] == pytest.approx(step["harness"] / step["model_only"])
    assert step["speedup"] == pytest.approx(step["harness"] / step["pil"])
    # no GPU: no TF32 column, no graphs, and compile off by default on the CPU
    assert step["pil_tf32"] is None and step["cuda_graphs"].startswith("off") and step["compiled"] == "off"
    assert res["settings"]["compile"] is False
    assert res["metrics_seconds"] > 0
    syn, trained = res["kmeans"]["synthetic"], res["kmeans"]["trained"]
    assert (syn["n"], syn["dim"], syn["k"]) == (1500, 512, 10)
    assert trained["n"] == 64 and trained["k"] >= 2 and "cc trained 2 steps" in trained["features"]
    for name in ("faiss_blas", "faiss_direct", "faiss_sampled"):
        assert syn[f"{name}_speedup"] == pytest.approx(syn["sklearn_seconds"] / syn[f"{name}_seconds"])


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
    ds = PILTwoViews(x, _pil_transform(AugmentSpec(), 24))
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
    step = TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu", compile=True))
    assert step.compile_status == "on"
    v = torch.rand(4, 3, 16, 16)
    with pytest.warns(UserWarning, match="torch.compile of the cc model failed"):
        terms = step(v, v.flip(3), 0.0)
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
