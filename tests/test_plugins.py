"""Plugin discovery: entry points, providers, conflicts, broken plugins, disabling."""

from __future__ import annotations

import types
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import clusterbench.plugins as plugins
from clusterbench import Dataset, ImageData, Method, hookimpl, param
from clusterbench.api import ConfigError
from clusterbench.cli import main
from clusterbench.errors import DataError, PluginError
from clusterbench.plugins import DISABLE_ENV, load_local_plugin, load_registry

BUILTIN_METHODS = {"kmeans": "clusterbench.methods.kmeans", "kmeans-pca": "clusterbench.methods.kmeans"}
BUILTIN_DATASETS = {"digits": "clusterbench.datasets.digits", "synthetic": "clusterbench.datasets.synthetic"}


def quiet_registry(extra=None):
    """load_registry without failing on warnings about other, unrelated plugins."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return load_registry(extra)


def make_method(name: str) -> type[Method]:
    class M(Method):
        description = f"test method {name}"

        @dataclass(frozen=True)
        class Params:
            k: int = param(2, "clusters")

        def fit(self, data, ctx):
            pass

        def predict(self, data):
            return np.zeros(len(data), dtype=np.int64)

    M.name = name
    M.__qualname__ = f"M_{name}"
    return M


def plugin_module(name: str, methods=(), datasets=None) -> types.ModuleType:
    mod = types.ModuleType(name)

    @hookimpl
    def clusterbench_methods():
        return list(methods)

    mod.clusterbench_methods = clusterbench_methods
    if datasets is not None:
        @hookimpl
        def clusterbench_datasets():
            return datasets

        mod.clusterbench_datasets = clusterbench_datasets
    return mod


def with_entry_points(monkeypatch, *extra: EntryPoint, keep_builtins: bool = True):
    real = plugins.entry_points

    def fake(**kwargs):
        eps = list(real(**kwargs)) if keep_builtins else []
        return eps + [ep for ep in extra if ep.group == kwargs.get("group")]

    monkeypatch.setattr(plugins, "entry_points", fake)


# ---- discovery ----------------------------------------------------------------------------
def test_builtins_are_found_through_entry_points_with_provider():
    reg = quiet_registry()
    for kind, table, expected in (("method", reg.methods, BUILTIN_METHODS),
                                  ("dataset", reg.datasets, BUILTIN_DATASETS)):
        for name, module in expected.items():
            assert name in table
            cls = table[name]
            assert cls.name == name and cls.__module__ == module
            assert reg.provider(kind, name) == f"clusterbench 0.1.0 ({module})"
    assert issubclass(reg.method("kmeans"), Method)
    assert issubclass(reg.dataset("digits"), Dataset)
    assert reg.provider("method", "no-such") == "?"


def test_nothing_is_found_without_entry_points(monkeypatch):
    with_entry_points(monkeypatch, keep_builtins=False)
    reg = load_registry()
    assert reg.methods == {} and reg.datasets == {}
    with pytest.raises(ConfigError, match=r"unknown method 'kmeans'.*known: none"):
        reg.method("kmeans")


def test_extra_plugin_is_registered_with_local_provider():
    mod = plugin_module("myplug", [make_method("mine")])
    reg = quiet_registry([("myplug", mod)])
    assert reg.method("mine").name == "mine"
    assert reg.provider("method", "mine") == "local (myplug)"
    assert "kmeans" in reg.methods  # the installed ones are still there


def test_local_plugin_file_named_like_an_installed_plugin(tmp_path):
    path = tmp_path / "kmeans.py"
    path.write_text(
        "from __future__ import annotations\n"  # string annotations: dataclasses need sys.modules
        "import numpy as np\n"
        "from dataclasses import dataclass\n"
        "from clusterbench import Method, hookimpl, param\n"
        "class Mine(Method):\n"
        "    name = 'mine'\n"
        "    description = 'a local experiment'\n"
        "    @dataclass(frozen=True)\n"
        "    class Params:\n"
        "        k: int = param(2, 'clusters')\n"
        "    def fit(self, data, ctx): pass\n"
        "    def predict(self, data): return np.zeros(len(data), dtype=np.int64)\n"
        "@hookimpl\n"
        "def clusterbench_methods():\n"
        "    return [Mine]\n"
    )
    reg = quiet_registry([load_local_plugin(str(path))])
    assert reg.method("mine").description == "a local experiment"
    assert reg.provider("method", "mine") == f"local ({path})"
    assert reg.provider("method", "kmeans") == "clusterbench 0.1.0 (clusterbench.methods.kmeans)"


def test_local_plugin_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_local_plugin(str(tmp_path / "nope.py"))


# ---- conflicts and bad hooks ----------------------------------------------------------------
def test_two_plugins_providing_the_same_method():
    a = plugin_module("plugA", [make_method("dup")])
    b = plugin_module("plugB", [make_method("dup")])
    with pytest.raises(PluginError) as info:
        quiet_registry([("plugA", a), ("plugB", b)])
    msg = str(info.value)
    assert "method 'dup'" in msg
    assert "local (plugA)" in msg and "local (plugB)" in msg
    assert DISABLE_ENV in msg


def test_a_plugin_shadowing_a_builtin_names_both():
    shadow = plugin_module("shadow", [make_method("kmeans")])
    with pytest.raises(PluginError) as info:
        quiet_registry([("shadow", shadow)])
    msg = str(info.value)
    assert "clusterbench 0.1.0 (clusterbench.methods.kmeans)" in msg and "local (shadow)" in msg


def test_the_same_class_from_two_plugins_is_not_a_conflict():
    cls = make_method("shared")
    reg = quiet_registry([("p1", plugin_module("p1", [cls])), ("p2", plugin_module("p2", [cls]))])
    assert reg.method("shared") is cls


def test_duplicate_dataset_names_conflict_too():
    class D(Dataset):
        name = "digits"
        description = "another digits"

        def load(self):
            raise NotImplementedError

    with pytest.raises(PluginError, match=r"dataset 'digits' is provided by both"):
        quiet_registry([("dd", plugin_module("dd", datasets=[D]))])


@pytest.mark.parametrize(
    "returned,fragment",
    [
        (["not a class"], "returned 'not a class' from clusterbench_methods(), not a Method subclass"),
        ([int], "not a Method subclass"),
        ([np.zeros(2)], "not a Method subclass"),
        (42, "returned 42"),
        ("kmeans", "not a Method subclass"),
    ],
)
def test_hook_returning_a_non_plugin_class(returned, fragment):
    mod = plugin_module("badplug", [])

    @hookimpl
    def clusterbench_methods():
        return returned

    mod.clusterbench_methods = clusterbench_methods
    reg = quiet_registry([("badplug", mod)])  # skipped with a warning; every other plugin still loads
    assert "kmeans" in reg.methods
    reasons = [v for k, v in reg.failed.items() if "badplug" in k]
    assert reasons and all(fragment in r or "not a Method subclass" in r for r in reasons), reasons
    assert any(fragment in r for r in reasons)


def test_dataset_returned_as_a_method_is_rejected():
    class D(Dataset):
        name = "dd"
        description = "d"

        def load(self):
            raise NotImplementedError

    reg = quiet_registry([("mix", plugin_module("mix", [D]))])
    assert "dd" not in reg.methods and any("not a Method subclass" in v for v in reg.failed.values())


def test_a_bare_class_instead_of_a_list_is_accepted():
    cls = make_method("bare")
    mod = plugin_module("bareplug", [])

    @hookimpl
    def clusterbench_methods():
        return cls

    mod.clusterbench_methods = clusterbench_methods
    assert quiet_registry([("bareplug", mod)]).method("bare") is cls


def test_method_without_a_name():
    cls = make_method("x")
    cls.name = ""
    reg = quiet_registry([("noname", plugin_module("noname", [cls]))])
    assert any("has no `name`" in v for v in reg.failed.values())


def test_hook_returning_none_is_fine():
    mod = plugin_module("empty", [])

    @hookimpl
    def clusterbench_methods():
        return None

    mod.clusterbench_methods = clusterbench_methods
    assert "kmeans" in quiet_registry([("empty", mod)]).methods


# ---- broken plugins -------------------------------------------------------------------------
def test_plugin_that_fails_to_import_is_reported_and_skipped(monkeypatch):
    with_entry_points(monkeypatch, EntryPoint("brokenplug", "cb_no_such_module_xyz", "clusterbench"))
    with pytest.warns(RuntimeWarning) as record:
        reg = load_registry()
    messages = [str(w.message) for w in record if "brokenplug" in str(w.message)]
    assert len(messages) == 1
    assert "failed to import" in messages[0] and "cb_no_such_module_xyz" in messages[0]
    assert "ModuleNotFoundError" in reg.failed["brokenplug"]
    # everything else still works
    assert set(BUILTIN_METHODS) <= set(reg.methods)
    assert set(BUILTIN_DATASETS) <= set(reg.datasets)
    assert reg.method("kmeans").name == "kmeans"


def test_plugin_raising_at_import_time(monkeypatch, tmp_path):
    (tmp_path / "cb_explodes.py").write_text("raise RuntimeError('no GPU driver here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with_entry_points(monkeypatch, EntryPoint("explodes", "cb_explodes", "clusterbench"))
    with pytest.warns(RuntimeWarning, match=r"'explodes'.*RuntimeError: no GPU driver here"):
        reg = load_registry()
    assert reg.failed["explodes"] == "RuntimeError: no GPU driver here"
    assert "kmeans" in reg.methods


def test_cli_list_names_the_broken_plugin(monkeypatch, capsys):
    with_entry_points(monkeypatch, EntryPoint("brokenplug", "cb_no_such_module_xyz", "clusterbench"))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "kmeans-pca" in out and "digits" in out
    assert "Plugins that failed to import" in out and "brokenplug (ModuleNotFoundError" in out


# ---- lookups ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,typo,suggestion",
    [("method", "kmean", "'kmeans'"), ("method", "kmeans_pca", "'kmeans-pca'"),
     ("dataset", "digit", "'digits'"), ("dataset", "synthetc", "'synthetic'")],
)
def test_unknown_name_suggests_close_ones(kind, typo, suggestion):
    reg = quiet_registry()
    with pytest.raises(ConfigError) as info:
        getattr(reg, kind)(typo)
    msg = str(info.value)
    assert msg.startswith(f"unknown {kind} {typo!r}; did you mean")
    assert suggestion in msg.split("(known:")[0]
    assert "\n" not in msg


def test_unknown_name_without_close_match_lists_known():
    reg = quiet_registry()
    with pytest.raises(ConfigError) as info:
        reg.method("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert "known:" in str(info.value) and "kmeans" in str(info.value)


# ---- disabling ----------------------------------------------------------------------------------
def test_disable_plugins_env(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, " kmeans , synthetic")
    reg = quiet_registry()
    assert "kmeans" not in reg.methods and "kmeans-pca" not in reg.methods
    assert "synthetic" not in reg.datasets
    assert "digits" in reg.datasets


def test_disabling_one_of_two_conflicting_plugins(monkeypatch, tmp_path):
    (tmp_path / "cb_other_kmeans.py").write_text(
        "from clusterbench import hookimpl\n"
        "from clusterbench.methods.kmeans import KMeansPixels\n"
        "class OtherKMeans(KMeansPixels):\n"
        "    description = 'another k-means'\n"
        "@hookimpl\n"
        "def clusterbench_methods():\n"
        "    return [OtherKMeans]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with_entry_points(monkeypatch, EntryPoint("otherkm", "cb_other_kmeans", "clusterbench"))
    with pytest.raises(PluginError, match="method 'kmeans' is provided by both"):
        quiet_registry()
    monkeypatch.setenv(DISABLE_ENV, "otherkm")
    assert quiet_registry().method("kmeans").description.startswith("k-means (faiss")
    monkeypatch.setenv(DISABLE_ENV, "kmeans")
    reg = quiet_registry()
    assert reg.method("kmeans").description == "another k-means"
    assert reg.provider("method", "kmeans") == "? (cb_other_kmeans)"


# ---- observer hooks ---------------------------------------------------------------------------
def test_observer_hooks_reach_plugins():
    seen = []
    mod = types.ModuleType("observer")

    @hookimpl
    def clusterbench_run_finished(record):
        seen.append(record["run_id"])

    @hookimpl
    def clusterbench_reported_results():
        return [{"method": "kmeans", "dataset": "cifar10", "metrics": {"acc": 0.229},
                 "protocol": "head", "citation": "CC Table 2"}]

    mod.clusterbench_run_finished = clusterbench_run_finished
    mod.clusterbench_reported_results = clusterbench_reported_results
    reg = quiet_registry([("observer", mod)])
    reg.notify_run_finished({"run_id": "x--y--s0--1"})
    assert seen == ["x--y--s0--1"]
    ours = {"method": "kmeans", "dataset": "cifar10", "metrics": {"acc": 0.229}, "protocol": "head",
            "citation": "CC Table 2"}
    rows = reg.reported_results()
    assert ours in rows  # built-in methods add their papers' rows beside it
    assert all({"method", "dataset", "metrics"} <= set(r) for r in rows)


def test_imagedata_from_builtin_datasets_is_valid():
    reg = quiet_registry()
    data = reg.dataset("synthetic")(n="12", classes="3", size="8").load()
    assert isinstance(data, ImageData) and len(data) == 12 and data.n_classes == 3
    assert data.x.dtype == np.uint8 and data.x.shape == (12, 8, 8, 3)
    with pytest.raises(ConfigError, match="takes no option"):
        reg.dataset("digits")(bogus="1")


# ---- from ``name[key=value]`` to an instance: the registry's references -------------------------
@pytest.mark.parametrize(
    "text,name,options",
    [
        ("kmeans", "kmeans", ()),
        (" kmeans-pca ", "kmeans-pca", ()),
        ("cc[preset=fast]", "cc", (("preset", "fast"),)),
        ("npz[path=a/b.npz, n = 5]", "npz", (("path", "a/b.npz"), ("n", "5"))),
        ("x[]", "x", ()),
        ("x[a=1,,b=]", "x", (("a", "1"), ("b", ""))),
        ("x[path=a=b]", "x", (("path", "a=b"),)),  # only the first '=' splits
    ],
)
def test_plugin_ref_parses_what_is_typed(text, name, options):
    ref = plugins.PluginRef.parse(text)
    assert (ref.name, ref.options) == (name, options)
    assert plugins.PluginRef.parse(str(ref)) == ref  # str() spells it back so it parses the same


@pytest.mark.parametrize("text,fragment", [("k means", "cannot parse 'k means'"), ("x[a]", "expected key=value"),
                                           ("x[=1]", "expected key=value"), ("x[a=1", "cannot parse")])
def test_plugin_ref_rejects_malformed_text(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        plugins.PluginRef.parse(text)


def test_one_spelling_of_a_reference():
    assert plugins.format_ref("cc", [("preset", "fast"), ("batch_size", "8")]) == "cc[preset=fast,batch_size=8]"
    assert plugins.format_ref("npz", {"path": "x.npz", "n": 3}) == "npz[n=3,path=x.npz]"  # a record's: sorted
    assert plugins.format_ref("digits", {}) == "digits" and plugins.format_options(()) == ""
    ref = plugins.PluginRef.of_record({"name": "npz", "options": {"path": "x.npz", "n": 3}, "io_options": {"a": 1}})
    assert ref == plugins.PluginRef("npz", (("n", "3"), ("path", "x.npz"))) and str(ref) == "npz[n=3,path=x.npz]"


def test_registry_method_refs_expand_all_and_check_names():
    reg = quiet_registry([("p", plugin_module("p", [make_method("zeta"), make_method("alpha")]))])
    assert [str(r) for r in reg.method_refs(["zeta[k=3]", "kmeans"])] == ["zeta[k=3]", "kmeans"]
    assert [r.name for r in reg.method_refs(["all"])] == sorted(reg.methods)
    with pytest.raises(ConfigError, match="unknown method 'zeat'; did you mean 'zeta'"):
        reg.method_refs(["zeta", "zeat"])


def test_registry_makes_methods_and_datasets_from_refs(tmp_path):
    reg = quiet_registry([("p", plugin_module("p", [make_method("zeta")]))])
    m = reg.make_method("zeta[k=5]")
    assert type(m).name == "zeta" and m.params.k == 5
    assert reg.make_method(plugins.PluginRef("zeta")).params.k == 2
    with pytest.raises(ConfigError, match="has no parameter 'q'"):
        reg.make_method("zeta[q=1]")
    ds = reg.make_dataset("synthetic[n=40,classes=4,size=4]", str(tmp_path))
    data = reg.load_data(ds)
    assert isinstance(data, ImageData) and len(data) == 40 and ds.root == tmp_path


def test_recorded_data_loader_checks_the_digest(tmp_path):
    reg = quiet_registry()
    data = reg.load_data(reg.make_dataset("synthetic[n=40,classes=4,size=4]"))
    rec = {"dataset": {**reg.make_dataset("synthetic[n=40,classes=4,size=4]").identity(), "digest": data.digest()}}
    load = reg.recorded_data_loader(None)
    assert load(rec).digest() == data.digest()
    with pytest.raises(DataError, match="has digest .* but the runs used 0123"):
        load({"dataset": {**rec["dataset"], "digest": "0123"}})
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load({"dataset": {"name": "nope", "options": {}}})


def test_a_grid_resolves_each_method_spec_once(tmp_path, monkeypatch):
    from clusterbench.budget import Budget
    from clusterbench.results.store import ResultsStore
    from clusterbench.runner import plan_grid
    from clusterbench.settings import EngineSettings

    cls = make_method("zeta")
    calls, fitted = [], []
    real = cls.resolve_params.__func__
    monkeypatch.setattr(cls, "resolve_params", classmethod(lambda c, *a, **k: calls.append(a) or real(c, *a, **k)))
    monkeypatch.setattr(cls, "fit", lambda self, data, ctx: fitted.append(self))
    reg = quiet_registry([("p", plugin_module("p", [cls]))])
    grid = plan_grid(reg, ["zeta[k=3]"], ["synthetic[n=30,classes=3,size=4]"])
    result = grid.run([0, 1, 2], Budget(), ResultsStore(tmp_path / "res"), EngineSettings())
    assert [o.status for o in result.outcomes] == ["done"] * 3
    assert len(calls) == 1  # parsed and checked once, not once per cell
    assert len({id(m) for m in fitted}) == 3 and {m.params.k for m in fitted} == {3}  # each cell its own instance
