"""The plugin contract, checked over the registry (as timm's tests run over ``list_models()``).

Every registered method and dataset is tested here by name, so a new plugin, first-party or
installed from another package, is tested without a test of its own:

- a method: ``check_class``; its ``smoke`` preset resolves; ``fit`` on tiny synthetic data
  given without labels; ``predict`` gives (N,) integers in [0, K); ``features`` gives (N, D)
  finite floats when the method declares the ``kmeans``/``linear`` protocols; through
  ``clusterbench run`` a record that validates, with every protocol scored and labels that
  load through the store; the same seed run twice gives the same labels.  A deep method's
  ``Params`` has the fields the engine reads and its ``training_loss`` returns ``"loss"``.
- a dataset: with no root (and with an empty one) and default options it loads valid
  ``ImageData`` or fails with a one-line ``ConfigError``/``DataError`` naming itself or the
  path, and never touches the network.

The checks are plain functions (``check_*``), so the tests at the bottom can run them over a
plugin written to a file, and over broken plugins to show that each check can fail.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from clusterbench import Budget, ConfigError, DataError, Dataset, EngineSettings, ImageData, PluginError, RunContext
from clusterbench.cli import main
from clusterbench.datasets.synthetic import make_synthetic
from clusterbench.plugins import load_local_plugin, load_registry
from clusterbench.results.schema import validate_record
from clusterbench.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a broken third-party plugin is reported elsewhere
    REG = load_registry()

#: tiny data for every method (48 images of 16 px, 4 classes) and a budget of two steps
N, K, SIZE = 48, 4, 16
DATA_SPEC = f"synthetic[n={N},size={SIZE},classes={K}]"
STEPS = 2
#: the fields the engine and the runner read from a deep method's ``Params``
DEEP_FIELDS = ("batch_size", "lr", "weight_decay", "image_size", "n_clusters")
SCORED = {"head": ("acc", "nmi", "ari"), "kmeans": ("acc", "nmi", "ari"), "linear": ("accuracy",)}


def tiny_data() -> ImageData:
    """The images ``DATA_SPEC`` names (same generator, same seed)."""
    return make_synthetic(N, K, SIZE, 3, 0.15, 0)


def smoke(cls):
    return cls(cls.resolve_params({}, preset="smoke"))


def n_clusters(method, data: ImageData) -> int:
    return int(getattr(method.params, "n_clusters", 0) or data.n_classes)


# ---- the checks: plain functions, run over the registry below and over plugin files -------
def check_method_class(cls) -> None:
    """Registration check, the ``smoke`` preset, and for a deep method the engine's fields."""
    cls.check_class()
    assert "smoke" in cls.presets, f"method {cls.name!r} has no `smoke` preset (tiny, CPU seconds)"
    params = cls.resolve_params({}, preset="smoke")
    assert isinstance(params, cls.Params)
    assert cls(params).params is params
    assert cls.protocols and set(cls.protocols) <= set(SCORED), f"{cls.name}: protocols {cls.protocols}"
    if cls.deep:
        names = {f.name for f in dataclasses.fields(cls.Params)}
        missing = [f for f in DEEP_FIELDS if f not in names]
        assert not missing, f"deep method {cls.name!r}: Params lacks {missing} (the engine reads them)"
        for f in ("batch_size", "image_size", "n_clusters"):
            assert isinstance(getattr(params, f), int) and not isinstance(getattr(params, f), bool), f
        assert params.batch_size > 0 and params.lr > 0 and params.weight_decay >= 0


def check_training_loss(cls) -> None:
    """A deep method's ``training_loss`` on one batch of two views: a dict with a finite scalar ``"loss"``
    that has a gradient."""
    import torch

    method = smoke(cls)
    data = tiny_data()
    size = method.model_input_size(data)
    torch.manual_seed(0)
    model = method.build_model(data.channels, size, n_clusters(method, data))
    model.train()
    b = min(int(method.params.batch_size), N)
    v1, v2 = torch.randn(2, b, data.channels, size, size).unbind(0)
    terms = method.training_loss(model, v1, v2)
    assert isinstance(terms, dict) and "loss" in terms, f"{cls.name}: training_loss gave {type(terms).__name__} " \
                                                         f"{sorted(terms) if isinstance(terms, dict) else ''}"
    loss = terms["loss"]
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and torch.isfinite(loss), f"{cls.name}: loss {loss!r}"
    assert loss.requires_grad, f"{cls.name}: the loss has no gradient"
    for k, v in terms.items():  # scalar terms go on the learning curve; other tensors only reach after_step
        assert isinstance(v, torch.Tensor), f"{cls.name}: training_loss output {k!r} is not a tensor"


def check_fit_predict_features(cls, tmp_path: Path) -> None:
    """Fit on unlabelled data (``y`` None, as the harness hands it); predict and features on it."""
    method = smoke(cls)
    data = tiny_data()
    unlabelled = data.without_labels()
    assert unlabelled.y is None
    k = n_clusters(method, data)

    def evaluate(labels):  # what the harness's learning curve does: the method only sees the scores
        labels = np.asarray(labels)
        assert labels.shape == (N,) and np.issubdtype(labels.dtype, np.integer)
        return {"acc": 0.0, "nmi": 0.0, "ari": 0.0, "n_clusters": int(len(np.unique(labels)))}

    ctx = RunContext(seed=0, budget=Budget.parse(f"steps={STEPS}"), settings=EngineSettings(device="cpu"),
                     run_dir=tmp_path, evaluate=evaluate)
    try:
        method.fit(unlabelled, ctx)
    except Exception as exc:
        raise AssertionError(f"{cls.name}: fit on unlabelled data failed: {type(exc).__name__}: {exc}") from exc
    labels = np.asarray(method.predict(unlabelled))
    assert labels.shape == (N,), f"{cls.name}: predict gave shape {labels.shape}, expected ({N},)"
    assert np.issubdtype(labels.dtype, np.integer), f"{cls.name}: predict gave {labels.dtype}, not integers"
    assert labels.min() >= 0 and labels.max() < k, \
        f"{cls.name}: labels {labels.min()}..{labels.max()} outside [0, {k})"
    feats = method.features(unlabelled)
    if {"kmeans", "linear"} & set(cls.protocols):
        assert feats is not None, f"{cls.name} declares {cls.protocols} but features() gave None"
    if feats is not None:
        feats = np.asarray(feats)
        assert feats.ndim == 2 and feats.shape[0] == N and feats.shape[1] > 0, \
            f"{cls.name}: features of shape {feats.shape}, expected ({N}, D)"
        assert np.issubdtype(feats.dtype, np.floating), f"{cls.name}: features are {feats.dtype}, not floats"
        assert np.isfinite(feats).all(), f"{cls.name}: features are not all finite"


def run_cli(cls, results: Path, plugin_args: tuple[str, ...] = ()) -> dict:
    """``clusterbench run`` of the method's smoke preset on the tiny data, every protocol it declares;
    its records by train split: ``all`` (the clustering cell), ``train`` (the linear cell, if any)."""
    rc = main([*plugin_args, "run", "--methods", f"{cls.name}[preset=smoke]", "--datasets", DATA_SPEC, "--seeds",
               "0", "--budget", f"steps={STEPS}", "--device", "cpu", "--results", str(results), "--quiet",
               "--protocols", *cls.protocols, "--linear", "epochs=2"])
    assert rc == 0, f"clusterbench run of {cls.name} exited {rc}"
    records = {r["train_split"]: r for r in ResultsStore(results, create=False).iter_records()}
    expected = {"all"} if set(cls.protocols) <= {"head", "kmeans"} else {"train"} if \
        set(cls.protocols) <= {"linear", "linear-logreg"} else {"all", "train"}
    assert set(records) == expected, f"expected cells {sorted(expected)}, found {sorted(records)}"
    return records


def check_record(cls, rec: dict, results: Path) -> np.ndarray | None:
    """The record validates, is finished, scores every protocol in range; its labels load
    (a linear cell has none: it pretrained on the training split, ``trained_on`` says so)."""
    source = str(results / "runs" / rec["run_id"] / "record.json")
    assert validate_record(rec, source) is not None
    assert rec["status"] == "done", f"{cls.name}: status {rec['status']!r} ({(rec.get('error') or {}).get('reason')})"
    assert rec["method"] == cls.name and rec["seed"] == 0 and rec["dataset"]["name"] == "synthetic"
    linear = rec["train_split"] == "train"
    wanted = [p for p in cls.protocols if (p in ("linear", "linear-logreg")) == linear]
    assert rec["protocols_requested"] == wanted
    assert set(rec["protocols"]) == set(wanted), f"{cls.name}: scored {sorted(rec['protocols'])}"
    assert rec["method_provenance"] == cls.provenance
    for proto, metrics in rec["protocols"].items():
        for key in SCORED[proto]:
            value = metrics[key]
            assert isinstance(value, (int, float)) and math.isfinite(value), f"{cls.name}: {proto}.{key}={value!r}"
            lo = -1.0 if key == "ari" else 0.0
            assert lo <= value <= 1.0, f"{cls.name}: {proto}.{key}={value} out of range"
    if cls.deep:  # trained under the run's budget
        assert rec["stats"]["steps"] == STEPS, f"{cls.name}: {rec['stats'].get('steps')} steps, budget {STEPS}"
    if linear:
        assert all(m["trained_on"] == "train" for m in rec["protocols"].values())
        assert rec["stats"]["images_seen"] <= STEPS * 2 * N  # never the test images' epochs
        return None
    labels = ResultsStore(results, create=False).load_labels(rec, N)
    assert labels.shape == (N,) and np.issubdtype(labels.dtype, np.integer)
    k = int(rec["params"].get("n_clusters") or K)
    assert labels.min() >= 0 and labels.max() < k
    return labels


def check_cli_record_and_seeded_rerun(cls, tmp_path: Path, plugin_args: tuple[str, ...] = ()) -> None:
    """Two runs of the same cell into two results directories: same run id, same labels, same scores."""
    runs_a = run_cli(cls, tmp_path / "a", plugin_args)
    runs_b = run_cli(cls, tmp_path / "b", plugin_args)
    for split, rec_a in runs_a.items():
        rec_b = runs_b[split]
        labels_a = check_record(cls, rec_a, tmp_path / "a")
        labels_b = check_record(cls, rec_b, tmp_path / "b")
        assert rec_a["run_id"] == rec_b["run_id"]
        if labels_a is not None:
            np.testing.assert_array_equal(labels_a, labels_b, err_msg=f"{cls.name}: same seed, different labels")
        for proto, metrics in rec_a["protocols"].items():
            assert rec_b["protocols"][proto] == pytest.approx(metrics), f"{cls.name}: {proto} differs between reruns"


def check_method_contract(cls, tmp_path: Path, plugin_args: tuple[str, ...] = ()) -> None:
    check_method_class(cls)
    if cls.deep:
        check_training_loss(cls)
    check_fit_predict_features(cls, tmp_path / "direct")
    check_cli_record_and_seeded_rerun(cls, tmp_path / "cli", plugin_args)


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Every way a dataset could download raises, and is remembered (a caught attempt still fails)."""
    attempts: list[str] = []

    def refuse(what):
        def fail(*args, **kwargs):
            attempts.append(f"{what}{args[:1]}")
            raise NetworkUsed(f"{what} called: datasets must not download unless asked")
        return fail

    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", refuse("urllib.request.urlopen"))
    monkeypatch.setattr(urllib.request, "urlretrieve", refuse("urllib.request.urlretrieve"))
    try:
        import torchvision.datasets.utils as tv_utils
    except ImportError:  # pragma: no cover - torchvision is a dependency
        tv_utils = None
    if tv_utils is not None:
        for fn in ("download_url", "download_and_extract_archive", "download_file_from_google_drive"):
            if hasattr(tv_utils, fn):
                monkeypatch.setattr(tv_utils, fn, refuse(f"torchvision.datasets.utils.{fn}"))
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"socket.connect({address!r})")
            raise NetworkUsed(f"socket.connect({address!r}): datasets must not download unless asked")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def check_dataset_contract(cls, root: Path | None, attempts: list[str]) -> None:
    """Default options: valid ImageData, or a one-line ConfigError/DataError naming the dataset or the path."""
    cls.check_class()
    try:
        data = cls(root=root).load()
    except (ConfigError, DataError) as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, f"{cls.name}: the error is not one line: {msg!r}"
        assert cls.name in msg or (root is not None and str(root) in msg), \
            f"{cls.name}: the error names neither the dataset nor the path: {msg!r}"
    except Exception as exc:
        raise AssertionError(f"{cls.name}: load() raised {type(exc).__name__} ({exc}); only a one-line "
                             "ConfigError or DataError may say the data is not there") from exc
    else:
        assert isinstance(data, ImageData), f"{cls.name}: load() gave {type(data).__name__}, not ImageData"
        assert data.y is not None and len(data) > 0
        assert data.y.shape == (len(data),) and 0 <= data.y.min() and data.y.max() < data.n_classes
        for attr in ("n_classes", "image_size", "channels"):
            declared = getattr(cls, attr, None)
            if declared is not None:
                assert getattr(data, attr) == declared, f"{cls.name}: {attr} {getattr(data, attr)} != {declared}"
        assert len(data.digest()) == 16
    assert not attempts, f"{cls.name} tried to download: {attempts}"


# ---- over the registry ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REG.methods))
def test_method_class_contract(name):
    cls = REG.methods[name]
    check_method_class(cls)
    if cls.deep:
        check_training_loss(cls)


@pytest.mark.parametrize("name", sorted(REG.methods))
def test_method_fits_without_labels_and_predicts(name, tmp_path):
    check_fit_predict_features(REG.methods[name], tmp_path)


@pytest.mark.parametrize("name", sorted(REG.methods))
def test_method_record_validates_and_same_seed_same_labels(name, tmp_path):
    check_cli_record_and_seeded_rerun(REG.methods[name], tmp_path)


@pytest.mark.parametrize("name", sorted(REG.datasets))
def test_dataset_without_root(name, no_network):
    check_dataset_contract(REG.datasets[name], None, no_network)


@pytest.mark.parametrize("name", sorted(REG.datasets))
def test_dataset_with_an_empty_root(name, tmp_path, no_network):
    check_dataset_contract(REG.datasets[name], tmp_path, no_network)


def test_the_registry_is_not_empty():
    """The parametrised tests above would pass vacuously over an empty registry."""
    assert {"kmeans", "cc"} <= set(REG.methods) and any(c.deep for c in REG.methods.values())
    assert {"synthetic", "digits"} <= set(REG.datasets)
    assert not REG.failed, f"plugins that failed to load: {REG.failed}"


def test_the_no_network_guard_catches_a_download(no_network):
    import urllib.request

    with pytest.raises(NetworkUsed):
        urllib.request.urlopen("https://example.invalid/data.tar.gz")
    with pytest.raises(NetworkUsed):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    assert len(no_network) == 2


def test_the_contract_catches_a_deep_method_without_loss_or_engine_fields():
    base = REG.methods["cc"]

    class NoLoss(base):
        name = "no-loss-probe"

        def training_loss(self, model, v1, v2):
            return {"total": super().training_loss(model, v1, v2)["loss"]}

    with pytest.raises(AssertionError, match="training_loss gave dict"):
        check_training_loss(NoLoss)

    @dataclasses.dataclass(frozen=True)
    class NoLr:  # every other field the engine reads, with the smoke preset's values
        backbone: str = "resnet18"
        small_stem: bool = True
        feature_dim: int = 16
        batch_size: int = 16
        weight_decay: float = 0.0
        image_size: int = 0
        n_clusters: int = 0

    NoLoss.Params, NoLoss.presets = NoLr, {"smoke": {}}
    with pytest.raises((AssertionError, PluginError), match="lacks.*lr"):
        check_method_class(NoLoss)


def _probe_dataset(body):
    class Probe(Dataset):
        name = "probe-set"
        description = "a dataset that breaks one rule"

        def load(self):
            return body(self)

    return Probe


def _downloads(ds):
    import urllib.request

    try:
        urllib.request.urlopen("https://example.invalid/probe.tar.gz")
    except Exception as exc:  # swallowed: the guard still remembers the attempt
        raise DataError(f"dataset {ds.name!r}: download failed ({exc})") from None


def _raise(exc):
    def body(ds):
        raise exc
    return body


@pytest.mark.parametrize("body, stage", [
    (_downloads, "tried to download"),
    (_raise(DataError("dataset 'probe-set': no files\nlooked in /nowhere")), "not one line"),
    (_raise(DataError("no files found")), "names neither"),
    (_raise(FileNotFoundError("probe.bin")), "only a one-line ConfigError or DataError"),
    (lambda ds: {"x": np.zeros((2, 4, 4, 3), np.uint8)}, "not ImageData"),
], ids=["downloads", "two-lines", "anonymous", "traceback", "not-imagedata"])
def test_the_contract_catches_a_broken_dataset(body, stage, no_network):
    with pytest.raises(AssertionError, match=stage):
        check_dataset_contract(_probe_dataset(body), None, no_network)


# ---- a plugin in a new file, with no test of its own ---------------------------------------
PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from clusterbench import Method, hookimpl, param


class NearestCentre(Method):
    name = "{name}"
    description = "assigns each image to the nearest of K random images (a contract-test probe)"
    protocols = ("head", "kmeans", "linear")
    presets = {{"smoke": {{"grid": 2}}}}

    @dataclass(frozen=True)
    class Params:
        n_clusters: int = param(0, "K; 0 = the dataset's number of classes")
        grid: int = param(4, "features: mean colour of grid x grid cells")

    def fit(self, data, ctx):
        k = self.params.n_clusters or data.n_classes
        {fit_body}

    def pooled(self, data):
        g = self.params.grid
        n, h, w, c = data.x.shape
        x = data.x[:, : h // g * g, : w // g * g].reshape(n, g, h // g, g, w // g, c)
        return x.mean(axis=(2, 4)).reshape(n, -1).astype(np.float32) / 255

    def features(self, data):
        return {features}

    def predict(self, data):
        d = ((self.pooled(data)[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return {predict}


@hookimpl
def clusterbench_methods():
    return [NearestCentre]
'''
GOOD = dict(fit_body="assert data.y is None, 'fit was given the labels'; "
                     "self.centres = self.pooled(data)[np.random.default_rng(ctx.seed).choice(len(data), k, "
                     "replace=False)]",
            features="self.pooled(data)",
            predict="d.argmin(1).astype(np.int64)")


def write_plugin(tmp_path: Path, name: str, **changes: str) -> Path:
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(textwrap.dedent(PLUGIN.format(name=name, **{**GOOD, **changes})))
    return path


def test_a_method_in_a_new_file_is_held_to_the_contract(tmp_path):
    path = write_plugin(tmp_path, "contract-probe")
    reg = load_registry([load_local_plugin(str(path))])
    assert "contract-probe" in reg.methods and "contract-probe" not in REG.methods
    assert reg.provider("method", "contract-probe").startswith("local")
    check_method_contract(reg.methods["contract-probe"], tmp_path, ("--plugin", str(path)))


BROKEN = {  # what is wrong: (the change to the probe plugin, what the contract says)
    "reads-the-labels": ({"fit_body": "k = int(data.y.max()) + 1; self.centres = self.pooled(data)[:k]"},
                         "fit on unlabelled data failed"),
    "float-labels": ({"predict": "d.argmin(1).astype(np.float32)"}, "not integers"),
    "labels-out-of-range": ({"predict": "d.argmin(1).astype(np.int64) + len(self.centres)"}, "outside"),
    "no-features": ({"features": "None"}, "features\\(\\) gave None"),
    "nan-features": ({"features": "self.pooled(data) * np.nan"}, "not all finite"),
    "unseeded": ({"fit_body": "self.centres = self.pooled(data)[np.random.default_rng().choice(len(data), k, "
                              "replace=False)]"}, "same seed, different labels"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_the_contract_catches_a_broken_method(tmp_path, broken):
    """Each check can fail: a method that breaks one rule is stopped by it."""
    changes, stage = BROKEN[broken]
    path = write_plugin(tmp_path, "broken-probe", **changes)
    cls = load_registry([load_local_plugin(str(path))]).methods["broken-probe"]
    with pytest.raises(AssertionError, match=stage):
        check_method_contract(cls, tmp_path, ("--plugin", str(path)))


def test_a_malformed_plugin_class_is_reported_and_skipped(tmp_path):
    path = tmp_path / "half_broken.py"
    path.write_text(textwrap.dedent(PLUGIN.format(name="good-probe", **GOOD)) + textwrap.dedent('''
        class NoDescription(NearestCentre):
            name = "no-description"
            description = None


        @hookimpl
        def clusterbench_methods():
            return [NearestCentre, NoDescription]
        '''))
    with pytest.warns(RuntimeWarning, match="no-description.*description") as seen:
        reg = load_registry([load_local_plugin(str(path))])
    assert len([w for w in seen if "no-description" in str(w.message)]) == 1
    assert "no-description" not in reg.methods and "good-probe" in reg.methods
    assert set(REG.methods) | {"good-probe"} == set(reg.methods)  # every other plugin still registered
    assert any("no-description" in key for key in reg.failed)

    # as a user sees it: `clusterbench list` works and says why the class was skipped, in one line
    proc = subprocess.run([sys.executable, "-m", "clusterbench.cli", "--plugin", str(path), "list", "methods"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.split("Plugins that failed")[0]
    assert "good-probe" in listed and "no-description" not in listed
    lines = [line for line in proc.stderr.splitlines() if "no-description" in line]
    assert len(lines) == 1 and lines[0].startswith("clusterbench: warning:") and "description" in lines[0], \
        proc.stderr
