"""Plugin discovery: entry points -> pluggy -> a registry of methods and datasets.

The built-in methods and datasets are found exactly as a third-party package's are,
through the ``clusterbench`` entry-point group.  We load each entry point ourselves
(rather than ``PluginManager.load_setuptools_entrypoints``) so that one plugin that
fails to import is reported with its name and the rest still load.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping, Sequence

import pluggy

from clusterbench import hookspecs
from clusterbench.api import PAPER_PRESETS, Dataset, ImageData, Method
from clusterbench.errors import ConfigError, DataError, PluginError

GROUP = "clusterbench"
DISABLE_ENV = "CLUSTERBENCH_DISABLE_PLUGINS"
_REF = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[(.*)\])?\s*$")


def format_options(options: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """``[k=v,...]`` (empty without options): a mapping (a record's) sorted, pairs as given (as typed)."""
    pairs = sorted(options.items()) if isinstance(options, Mapping) else list(options)
    return "[" + ",".join(f"{k}={v}" for k, v in pairs) + "]" if pairs else ""


def format_ref(name: str, options: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> str:
    """``name[k=v,...]``: the one spelling of a method or dataset choice, in messages, records and tables."""
    return name + format_options(options)


@dataclass(frozen=True)
class PluginRef:
    """A method or dataset chosen by name with options, ``name[key=value,...]`` as typed on the command line."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "PluginRef":
        m = _REF.match(text)
        if not m:
            raise ConfigError(f"cannot parse {text!r}: expected NAME or NAME[key=value,...]")
        options = []
        for part in (m.group(2) or "").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"cannot parse option {part!r} in {text!r}: expected key=value")
            options.append((key.strip(), value.strip()))
        return cls(m.group(1), tuple(options))

    @classmethod
    def of_record(cls, dataset: Mapping[str, Any]) -> "PluginRef":
        """The dataset a record was measured on (its ``dataset`` entry), IO options left out."""
        options = dataset.get("options") if isinstance(dataset.get("options"), dict) else {}
        return cls(str(dataset["name"]), tuple((str(k), str(v)) for k, v in sorted(options.items())))

    @property
    def opts(self) -> dict[str, str]:
        return dict(self.options)

    def __str__(self) -> str:
        return format_ref(self.name, self.options)


@dataclass
class Registry:
    """Every method and dataset class found, with the plugin that provided each."""

    methods: dict[str, type[Method]] = field(default_factory=dict)
    datasets: dict[str, type[Dataset]] = field(default_factory=dict)
    providers: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> provider
    failed: dict[str, str] = field(default_factory=dict)  # plugin -> error
    pm: pluggy.PluginManager | None = None

    def method(self, name: str) -> type[Method]:
        return _lookup("method", name, self.methods)

    def dataset(self, name: str) -> type[Dataset]:
        return _lookup("dataset", name, self.datasets)

    def find(self, name: str) -> tuple[str, type[Method] | type[Dataset]]:
        """("method" | "dataset", its class) by name, a method first; one line naming the closest
        names of both kinds otherwise."""
        if name in self.methods:
            return "method", self.methods[name]
        return "dataset", _lookup("method or dataset", name, {**self.methods, **self.datasets})

    def provider(self, kind: str, name: str) -> str:
        return self.providers.get((kind, name), "?")

    def reported_results(self) -> list[dict[str, Any]]:
        if self.pm is None:
            return []
        rows: list[dict[str, Any]] = []
        for impl in self.pm.hook.clusterbench_reported_results.get_hookimpls():
            try:
                rows.extend(impl.function() or [])
            except Exception as exc:  # noqa: BLE001 - the report goes on without that plugin's numbers
                warnings.warn(f"clusterbench plugin {impl.plugin_name!r}: clusterbench_reported_results raised "
                              f"{type(exc).__name__}: {exc}; its reported numbers are left out", RuntimeWarning,
                              stacklevel=2)
        return rows

    def notify_run_finished(self, record: dict[str, Any]) -> None:
        """Every observer, each on its own: one that raises is warned about, the others and the grid go on."""
        if self.pm is None:
            return
        for impl in self.pm.hook.clusterbench_run_finished.get_hookimpls():
            try:
                impl.function(record=record)
            except Exception as exc:  # noqa: BLE001 - an observer must not stop the grid
                warnings.warn(f"clusterbench plugin {impl.plugin_name!r}: clusterbench_run_finished raised "
                              f"{type(exc).__name__}: {exc}; the run's record is written, the grid goes on",
                              RuntimeWarning, stacklevel=2)

    # ---- from a name on the command line to a plugin instance ---------------------------
    def method_refs(self, names: Sequence[str]) -> list[PluginRef]:
        """``--methods``: each ``name[k=v]`` parsed and its name checked; ``all`` is every method."""
        refs: list[PluginRef] = []
        for text in names:
            if text == "all":
                refs.extend(PluginRef(n) for n in sorted(self.methods))
                continue
            ref = PluginRef.parse(text)
            self.method(ref.name)  # unknown name -> ConfigError with suggestions
            refs.append(ref)
        return refs

    def make_method(self, ref: PluginRef | str, dataset: str | None = None) -> Method:
        """The method with its parameters resolved (defaults, the ``dataset``'s recipe, ``preset=``,
        then the options)."""
        ref = PluginRef.parse(ref) if isinstance(ref, str) else ref
        cls = self.method(ref.name)
        opts = ref.opts
        preset = opts.pop("preset", None)
        recipe = cls.recipes.get(dataset) if dataset is not None else None
        return cls(cls.resolve_params(opts, preset=preset, dataset=dataset)).with_recipe(
            recipe.to_dict(dataset) if recipe is not None else None)

    def recipe_dataset(self, method: PluginRef, dataset: PluginRef) -> PluginRef:
        """``dataset`` with the options the method's recipe reads it with under the paper's
        settings (see :class:`clusterbench.Recipe`); the options given always win."""
        recipe = self.method(method.name).recipes.get(dataset.name)
        if recipe is None or not recipe.data or method.opts.get("preset") not in PAPER_PRESETS:
            return dataset
        given = dataset.opts
        # as a user types them (unlabelled=true), so the recipe's variant and the typed one are one cell
        extra = tuple((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in recipe.data.items()
                      if k not in given)
        return PluginRef(dataset.name, dataset.options + extra) if extra else dataset

    def make_dataset(self, ref: PluginRef | str, root: str | None = None) -> Dataset:
        ref = PluginRef.parse(ref) if isinstance(ref, str) else ref
        return self.dataset(ref.name)(root=root, **ref.opts)

    @staticmethod
    def load_data(ds: Dataset) -> ImageData:
        """``ds.load()``, checked to be :class:`ImageData`."""
        data = ds.load()
        if not isinstance(data, ImageData):
            raise DataError(f"dataset {ds.name!r} returned {type(data).__name__}, not ImageData")
        return data

    def recorded_data_loader(self, root: str | None) -> Callable[[Mapping[str, Any]], ImageData]:
        """``load(record)``: the data a record was measured on, reloaded and its digest checked
        (report figures).  Holds one dataset at a time; a failure is a :class:`DataError`, kept."""
        cache: dict[PluginRef, tuple[ImageData, str] | DataError] = {}

        def load(rec: Mapping[str, Any]) -> ImageData:
            ref = PluginRef.of_record(rec["dataset"])
            if ref not in cache:
                cache.clear()  # figures are drawn one dataset at a time
                cache[ref] = self._reload(ref, root)
            got = cache[ref]
            if isinstance(got, DataError):
                raise got
            data, digest = got
            want = rec["dataset"].get("digest")
            if want and digest != want:
                raise DataError(f"the data found for {ref} has digest {digest}, but the runs used "
                                f"{want} (other files, or another --data-root?)")
            return data

        return load

    def _reload(self, ref: PluginRef, root: str | None) -> tuple[ImageData, str] | DataError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = self.load_data(self.make_dataset(ref, root))
            return data, data.digest()
        except Exception as exc:  # noqa: BLE001 - the report shows it as a note
            return DataError(str(exc) if isinstance(exc, (ConfigError, DataError)) else f"{type(exc).__name__}: {exc}")


def _lookup(kind: str, name: str, table: dict[str, Any]) -> Any:
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(table)) or 'none'})")


def _provider_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    dist_name = f"{dist.name} {dist.version}" if dist is not None else "?"
    return f"{dist_name} ({ep.value})"


def build_plugin_manager(extra_plugins: list[tuple[str, Any]] | None = None) -> tuple[pluggy.PluginManager, dict[str, str], dict[str, str]]:
    """Load every entry point of the group (and ``extra_plugins``) into a plugin manager.

    Returns the manager, a map plugin name -> provider description, and the plugins that
    failed to import with their error.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = {s.strip() for s in os.environ.get(DISABLE_ENV, "").split(",") if s.strip()}
    providers: dict[str, str] = {}
    failed: dict[str, str] = {}
    seen: set[str] = set()
    for ep in entry_points(group=GROUP):
        key = f"{ep.name}={ep.value}"
        if ep.name in disabled or key in seen:
            continue
        seen.add(key)
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"clusterbench plugin {ep.name!r} from {_provider_name(ep)} failed to import "
                f"({type(exc).__name__}: {exc}); skipped",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        if pm.is_registered(plugin):
            continue
        pm.register(plugin, name=ep.name)
        providers[ep.name] = _provider_name(ep)
    for name, plugin in extra_plugins or []:
        _register_local(pm, name, plugin, providers)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:  # a misspelt hook name: say which plugin, no traceback
        raise PluginError("; ".join(str(exc).splitlines())) from None
    return pm, providers, failed


def _register_local(pm: pluggy.PluginManager, name: str, plugin: Any, providers: dict[str, str]) -> None:
    """A ``--plugin FILE`` module (or a test's), under a name no installed plugin has."""
    base, n = name, 1
    while pm.has_plugin(name):  # e.g. --plugin ./kmeans.py beside the installed `kmeans` plugin
        name, n = f"{base}-{n}", n + 1
    providers[name] = f"local ({getattr(plugin, '__file__', name)})"
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # e.g. a hook implementation with wrong arguments
        raise PluginError(f"plugin {providers[name]}: " + "; ".join(str(exc).splitlines())) from None


def _collect(pm: pluggy.PluginManager, hook_name: str, failed: dict[str, str]) -> list[tuple[str, Any]]:
    """(plugin name, class) for every class a hook returned, remembering who returned it.

    A hook that raises is one warning and an entry in ``failed``; the other plugins still load."""
    out = []
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        try:
            result = impl.function()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take `list` (or anything) down
            failed[impl.plugin_name] = f"{hook_name}() raised {type(exc).__name__}: {exc}"
            warnings.warn(f"clusterbench plugin {impl.plugin_name!r}: {failed[impl.plugin_name]}; skipped",
                          RuntimeWarning, stacklevel=2)
            continue
        if result is not None and (isinstance(result, type) or not hasattr(result, "__iter__")):
            result = [result]  # a bare class (or a non-list): checked like a list item below
        for cls in result or []:
            out.append((impl.plugin_name, cls))
    return out


def load_registry(extra_plugins: list[tuple[str, Any]] | None = None) -> Registry:
    """Discover all plugins and index their methods and datasets by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", RuntimeWarning)
        pm, providers, failed = build_plugin_manager(extra_plugins)
    reg = Registry(pm=pm, failed=failed)
    for kind, hook, base, table in (
        ("method", "clusterbench_methods", Method, reg.methods),
        ("dataset", "clusterbench_datasets", Dataset, reg.datasets),
    ):
        for plugin_name, cls in _collect(pm, hook, reg.failed):
            provider = providers.get(plugin_name, plugin_name)
            try:
                if not (isinstance(cls, type) and issubclass(cls, base)):
                    raise PluginError(f"returned {cls!r} from {hook}(), not a {base.__name__} subclass")
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(f"{cls.__qualname__} has no `name`")
                cls.check_class()
            except PluginError as exc:  # this class is skipped; every other plugin still works
                reg.failed[f"{provider}:{getattr(cls, 'name', None) or cls!r}"] = str(exc)
                warnings.warn(f"clusterbench plugin {provider}: {exc}; skipped", RuntimeWarning, stacklevel=2)
                continue
            if name in table and table[name] is not cls:
                raise PluginError(
                    f"{kind} {name!r} is provided by both {reg.providers[(kind, name)]} and {provider}; "
                    f"disable one with {DISABLE_ENV}=<plugin name>"
                )
            table[name] = cls
            reg.providers[(kind, name)] = provider
    return reg


def load_local_plugin(path: str) -> tuple[str, ModuleType]:
    """Import a plugin from a ``.py`` file (``--plugin FILE``), for unpackaged experiments.

    A file that fails to import (a syntax error, a missing module, an exception at import
    time) is a :class:`ConfigError` naming the file and the exception: the user's input is
    wrong, so one line and exit code 2, not a traceback.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"plugin file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"clusterbench_local_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import plugin file {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (string annotations) look the module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - anything the file raises is reported as one line
        del sys.modules[spec.name]
        raise ConfigError(f"plugin file {path!r} failed to import: {type(exc).__name__}: {exc}") from None
    return p.stem, module
