"""The contract between the harness and its plugins.

A *dataset* plugin yields uint8 NHWC images with integer labels; a *method* plugin turns
images into cluster labels (and, optionally, features).  Everything a method or dataset
declares here is data the harness can list, record and hash, so a run can be reproduced
from its record alone.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from clusterbench.errors import ConfigError, DataError, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from clusterbench.context import RunContext

#: How faithfully a method follows its paper (``Method.provenance``), strongest first.
#: ``unspecified``: the plugin does not say (a third-party default); reports treat it like a
#: reconstruction (marked, no reproduction gap), so an undeclared method never looks like a reproduction.
PROVENANCE = ("official-code", "paper-text", "reconstruction", "unspecified")
#: The provenances whose numbers may be compared with the paper's (a reproduction gap Δ).
FAITHFUL = ("official-code", "paper-text")

__all__ = [
    "PROVENANCE",
    "FAITHFUL",
    "ImageData",
    "Dataset",
    "Method",
    "param",
    "Preset",
    "Recipe",
    "TrainStats",
]


#: The presets under which a recipe's ``data`` options apply: the paper's own settings.
PAPER_PRESETS = (None, "paper")


@dataclass(frozen=True)
class Recipe:
    """How a method's official code changes its recipe for one dataset (``Method.recipes``).

    ``params`` override the method's defaults on that dataset (a preset and the user's
    options still win over them); ``data`` are dataset options the official code reads the
    data with (e.g. ImageNet-10 at full size, not pre-shrunk), applied under the paper's
    settings (no preset or ``preset=paper``) unless the user gave them; ``source`` says
    where it comes from (official file:line).
    """

    params: Mapping[str, Any]
    source: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, dataset: str) -> dict[str, Any]:
        return {"dataset": dataset, "params": dict(self.params), "data": dict(self.data), "source": self.source}


class Preset(dict):
    """A preset's parameter values (``Method.presets``), with where they come from.

    A plain mapping of parameter values (a plain ``dict`` is a preset too) plus
    ``provenance``: one sentence saying which of its settings are the paper's and which the
    harness's.  Every record of a run under the preset carries the sentence
    (``record["setting"]["provenance"]``) and ``clusterbench info`` prints it, so a
    harness-chosen recipe never reads as the paper's setting.
    """

    def __init__(self, values: Mapping[str, Any] | None = None, provenance: str = "") -> None:
        super().__init__(values or {})
        self.provenance = provenance


def param(default: Any, doc: str, source: str | None = None, *, minimum: float | None = None,
          above: float | None = None, below: float | None = None, choices: tuple[Any, ...] | None = None,
          unhashed_default: bool = False) -> Any:
    """A hyper-parameter or dataset-option field: its default, what it means, where the value comes from.

    ``source`` cites the paper (section/table) so a method reads like its paper; ``None``
    means the paper is silent and the value is the harness's choice (say why in ``doc``).
    ``minimum`` (value >= it), ``above`` (value > it), ``below`` (value < it) and ``choices``
    are checked when a dataset's options or a method's parameters are resolved, so a bad value
    is one line before anything is loaded or trained.

    ``unhashed_default``: a method parameter added after runs were recorded, whose default is
    exactly what the code did before it existed, is left out of the run id while it holds that
    default (it is still in the record's ``params``), so those finished runs stay finished.
    """
    metadata: dict[str, Any] = {"doc": doc, "source": source}
    if minimum is not None:
        metadata["minimum"] = minimum
    if above is not None:
        metadata["above"] = above
    if below is not None:
        metadata["below"] = below
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if unhashed_default:
        metadata["unhashed_default"] = True
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ImageData:
    """Images and labels as the harness hands them to methods.

    ``x`` is uint8 of shape (N, H, W, C); ``y`` int64 of shape (N,), values in
    ``[0, n_classes)``, or None in the copy a method's ``fit`` receives
    (:meth:`without_labels`): methods never see the labels.  ``train_mask`` marks the samples of the dataset's training split
    (used by the linear-probe protocol); clustering itself uses every sample, as the
    clustering papers do.

    ``unlabelled`` holds extra images that have no labels at all (STL-10's 100,000
    ``unlabeled_X.bin`` images, read when asked): a method may train on them (the engine's
    unlabelled pass, :meth:`DeepMethod.unlabelled_loss`), but they are never predicted nor
    evaluated, and ``len()`` counts only ``x``.  They change what is trained, so the digest
    covers them (data without them keeps its digest).
    """

    x: np.ndarray
    y: np.ndarray | None
    n_classes: int
    name: str
    class_names: tuple[str, ...] = ()
    train_mask: np.ndarray | None = None
    variant: str | None = None  # how the data differs from the original files ("JPEG re-encode"); None: it does not
    unlabelled: np.ndarray | None = None  # uint8 (M, H, W, C) images without labels: trained on, never evaluated

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            raise DataError(
                f"dataset {self.name!r}: images must be uint8 of shape (N, H, W, C), "
                f"got {getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}"
            )
        if x.shape[-1] not in (1, 3):
            raise DataError(f"dataset {self.name!r}: images must have 1 or 3 channels, got shape {x.shape}")
        if self.train_mask is not None and (self.train_mask.shape != (len(x),) or self.train_mask.dtype != bool):
            raise DataError(f"dataset {self.name!r}: train_mask must be bool with one entry per image")
        u = self.unlabelled
        if u is not None and (not isinstance(u, np.ndarray) or u.dtype != np.uint8 or u.shape[1:] != x.shape[1:]):
            raise DataError(f"dataset {self.name!r}: unlabelled images must be uint8 of the labelled images' "
                            f"shape {x.shape[1:]}, got {getattr(u, 'dtype', type(u))} {getattr(u, 'shape', '')}")
        if y is None:
            return  # the unlabelled view handed to ``Method.fit``
        if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"dataset {self.name!r}: labels must be a 1-D array with one label per image "
                f"({len(x)} images, labels of shape {getattr(y, 'shape', None)})"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"dataset {self.name!r}: labels must be integers, got {y.dtype}")
        if len(y) == 0:
            raise DataError(f"dataset {self.name!r} is empty")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise DataError(
                f"dataset {self.name!r}: labels out of range [0, {self.n_classes}): "
                f"min {int(y.min())}, max {int(y.max())}"
            )

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_size(self) -> int:
        return int(self.x.shape[1])

    @property
    def channels(self) -> int:
        return int(self.x.shape[3])

    def digest(self) -> str:
        """sha256 of images and labels: identifies the exact data a number was measured on."""
        h = hashlib.sha256()
        h.update(str(self.x.shape).encode())
        h.update(np.ascontiguousarray(self.x).data)
        if self.y is None:
            raise DataError(f"dataset {self.name!r}: the unlabelled view has no digest")
        h.update(np.ascontiguousarray(self.y.astype(np.int64)).data)
        if self.unlabelled is not None:  # trained on, so part of the identity (absent: the digest as before)
            h.update(f"unlabelled {self.unlabelled.shape}".encode())
            h.update(np.ascontiguousarray(self.unlabelled).data)
        return h.hexdigest()[:16]

    @property
    def n_unlabelled(self) -> int:
        return 0 if self.unlabelled is None else len(self.unlabelled)

    def subset(self, idx: np.ndarray) -> "ImageData":
        """The labelled images ``idx`` (the unlabelled ones, in no split, are kept whole)."""
        mask = None if self.train_mask is None else self.train_mask[idx]
        y = None if self.y is None else self.y[idx]
        return dataclasses.replace(self, x=self.x[idx], y=y, train_mask=mask)

    def without_labels(self) -> "ImageData":
        """The same images with ``y`` None: what ``Method.fit`` receives."""
        return dataclasses.replace(self, y=None)


@dataclass(frozen=True)
class TrainStats:
    """What ``Method.fit`` did, as the record's ``cost`` and ``stats`` report it.

    ``train_seconds`` is the training clock (what a ``minutes=`` budget counts);
    ``setup_seconds`` is one-off work outside it (compilation, graph capture), and
    ``setup_images`` the images of any warm-up steps timed as setup (so the training rate,
    ``(images_seen - setup_images) / train_seconds``, excludes them).  ``details``
    holds what the engine chose (batch size, CUDA graphs on/off, ...), recorded as is.
    """

    train_seconds: float
    images_seen: int
    setup_seconds: float = 0.0
    setup_images: int = 0
    epochs: float | None = None
    steps: int | None = None
    resumed_from_epoch: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "details" and v is not None}
        return {**out, **dict(self.details)}

    @property
    def train_images_per_s(self) -> float | None:
        """The training rate on the clock: setup (and the warm-up steps' images) excluded."""
        timed = self.images_seen - self.setup_images
        return timed / self.train_seconds if self.train_seconds > 0 else None


class Dataset(abc.ABC):
    """A dataset plugin.  Subclasses set the class attributes and implement :meth:`load`.

    Options (a file path, a split) are declared as ``Options``, a frozen dataclass whose
    fields are made with :func:`param` (bool, int, float or str, optionally ``| None``),
    as methods declare ``Params``.  They are given on the command line as
    ``name[key=value,...]``, or as keyword arguments of the constructor; the data root
    comes from ``--data-root``.  :meth:`load` reads them typed from ``self.opts``.
    """

    @dataclass(frozen=True)
    class Options:
        """No options."""

    name: ClassVar[str]
    description: ClassVar[str]
    n_classes: ClassVar[int | None] = None  # None: known only after loading (npz, image folder)
    # Options that say how to obtain the data, never which data (``download=true``): recorded
    # with a run but left out of its id, so asking to download does not make a second cell.
    # The data digest is part of the id anyway, so different bytes still get a different id.
    io_options: ClassVar[tuple[str, ...]] = ("download",)

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.options = dict(options)  # as given: what the run id hashes (defaults are not added)
        self.opts = self.resolve_options(options)

    @classmethod
    def check_class(cls) -> None:
        """Raise :class:`PluginError` (one line) if this class breaks the dataset contract."""
        _check_plugin_class(cls, "dataset", ("description",))
        options = getattr(cls, "Options", None)
        if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
            raise PluginError(f"dataset {cls.name!r} ({cls.__qualname__}): `Options` must be a dataclass")
        try:
            options()
            for hint in typing.get_type_hints(options).values():
                _option_kind(hint)
        except (TypeError, NameError) as exc:
            raise PluginError(f"dataset {cls.name!r}: every field of `Options` needs a default and a bool, "
                              f"int, float or str type ({exc})") from None

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Names of the ``name[key=value]`` options this dataset accepts: the fields of ``Options``."""
        return tuple(f.name for f in dataclasses.fields(cls.Options))

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> Any:
        """``Options`` from the given values (strings are parsed to the field's type), checked.

        Unknown, malformed and out-of-range options raise :class:`ConfigError` (one line),
        before any data is read.
        """
        unknown = set(given) - set(cls.option_names())
        if unknown:
            raise ConfigError(
                f"dataset {cls.name!r} takes no option(s) {sorted(unknown)}; "
                f"it takes {sorted(cls.option_names()) or 'none'}"
            )
        hints = typing.get_type_hints(cls.Options)
        return cls.Options(**{f.name: _option_value(cls.name, f, hints[f.name], given[f.name])
                              for f in dataclasses.fields(cls.Options) if f.name in given})

    @abc.abstractmethod
    def load(self) -> ImageData:
        """Read the data (never downloading unless the user asked) and return it."""

    def identity(self) -> dict[str, Any]:
        """What identifies this dataset in a run id: its name and the options that choose the data.

        Not the root, and not :attr:`io_options` (see :meth:`io_identity`).
        """
        return {"name": self.name, "options": {k: str(v) for k, v in sorted(self.options.items())
                                               if k not in self.io_options}}

    def io_identity(self) -> dict[str, str]:
        """The :attr:`io_options` given (e.g. ``{"download": "true"}``): recorded, not hashed."""
        return {k: str(v) for k, v in sorted(self.options.items()) if k in self.io_options}


class Method(abc.ABC):
    """A clustering method plugin.

    Subclasses set ``name``, ``description``, ``Params`` (a frozen dataclass whose fields
    are made with :func:`param`), and implement :meth:`fit` and :meth:`predict`.
    ``features`` is optional: a method that provides it can be evaluated with the
    harness's ``kmeans`` and ``linear`` protocols too.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    version: ClassVar[str] = "1"  # bump to invalidate finished runs of older code
    paper: ClassVar[str | None] = None  # citation shown in reports
    # How faithfully the plugin follows the paper (one of PROVENANCE) and one sentence saying on what.
    provenance: ClassVar[str] = "unspecified"
    provenance_note: ClassVar[str] = ""
    Params: ClassVar[type]
    #: name -> parameter values; a :class:`Preset` also says where they come from (recorded with each run)
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: dataset name -> the official per-dataset changes to the defaults (see :class:`Recipe`)
    recipes: ClassVar[Mapping[str, Recipe]] = {}
    protocols: ClassVar[tuple[str, ...]] = ("head",)  # evaluation protocols this method supports
    quick: ClassVar[bool] = False  # True: runs on a CPU in seconds, part of the default `run`
    deep: ClassVar[bool] = False  # True: trained by the harness engine under the run's budget
    # True: predict() returns the labels fit() computed, so no inference throughput is reported.  The
    # default is the safe one (a plugin that stores its labels in fit would report billions of images/s);
    # a method whose predict does real work on new images sets it False (every DeepMethod does).
    transductive: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()  # modules fit/predict import (checked before a grid starts)

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else self.Params()
        #: the per-dataset recipe its params were resolved with (``Recipe.to_dict``), recorded with the run
        self.recipe: dict[str, Any] | None = None

    def with_recipe(self, recipe: dict[str, Any] | None) -> "Method":
        self.recipe = recipe
        return self

    @classmethod
    def check_class(cls) -> None:
        """Raise :class:`PluginError` (one line) if this class breaks the method contract:
        checked when the plugin registers, so a malformed plugin never reaches a cell."""
        _check_plugin_class(cls, "method", ("description",))
        if cls.provenance not in PROVENANCE or not isinstance(cls.provenance_note, str):
            raise PluginError(f"method {cls.name!r}: provenance {cls.provenance!r} is not one of "
                              f"{', '.join(PROVENANCE)} (with provenance_note, one sentence, a str)")
        params = getattr(cls, "Params", None)
        if not (isinstance(params, type) and dataclasses.is_dataclass(params)):
            raise PluginError(f"method {cls.name!r} ({cls.__qualname__}) has no `Params` dataclass")
        try:
            params()
        except TypeError as exc:
            raise PluginError(f"method {cls.name!r}: every field of `Params` needs a default ({exc})") from None

    # ---- hyper-parameters ------------------------------------------------------------
    @classmethod
    def param_fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls.Params))

    @classmethod
    def resolve_params(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None,
                       dataset: str | None = None) -> Any:
        """Defaults, then the ``dataset``'s recipe (:attr:`recipes`), then the preset, then explicit
        overrides (strings are parsed to the field's type)."""
        return cls._resolve(overrides, preset, dataset)

    @classmethod
    def _resolve(cls, overrides: Mapping[str, Any] | None, preset: str | None, dataset: str | None) -> Any:
        """:meth:`resolve_params`' work (the harness's own resolutions, e.g. the paper setting a
        record is compared with, call it directly: a spec is still parsed once per grid)."""
        values: dict[str, Any] = dict(cls.recipes[dataset].params) if dataset in cls.recipes else {}
        if preset is not None:
            if preset not in cls.presets:
                raise ConfigError(
                    f"method {cls.name!r} has no preset {preset!r}; presets: {sorted(cls.presets) or 'none'}"
                )
            values.update(cls.presets[preset])
        values.update(overrides or {})
        fields = {f.name: f for f in cls.param_fields()}
        out = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(
                    f"method {cls.name!r} has no parameter {key!r}; parameters: {', '.join(sorted(fields))}"
                )
            out[key] = _coerce(cls.name, key, value, fields[key].default)
            problem = range_problem(out[key], fields[key].metadata, cls.param_limits().get(key, {}))
            if problem:
                raise ConfigError(f"method {cls.name!r}: parameter {key}={out[key]!r} {problem}")
        return cls.Params(**out)

    @classmethod
    def param_limits(cls) -> dict[str, dict[str, Any]]:
        """Range limits (``minimum``/``above``/``choices``) the harness puts on some parameters
        whatever the plugin's own ``param`` says (the engine's fields of a deep method)."""
        return {}

    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def identity_params(self) -> dict[str, Any]:
        """The parameters the run id hashes: all of them but those marked ``unhashed_default``
        that hold their default (see :func:`param`)."""
        values = self.params_dict()
        for f in self.param_fields():
            if f.metadata.get("unhashed_default") and values.get(f.name) == f.default:
                del values[f.name]
        return values

    @classmethod
    def describe_setting(cls, params: Any, preset: str | None, dataset: str | None) -> dict[str, Any]:
        """How a run's parameters stand to the paper's setting, for its record.

        ``paper`` is true only when every parameter equals what the paper settings resolve to
        on ``dataset`` (the defaults, its recipe and ``preset=paper``); ``changed`` lists each
        parameter that differs as ``{"paper": ..., "run": ...}``, however it was set (a preset
        or an option); ``provenance`` is the :class:`Preset`'s sentence, if it has one.
        """
        paper = dataclasses.asdict(cls._resolve({}, "paper" if "paper" in cls.presets else None, dataset))
        run = dataclasses.asdict(params)
        changed = {k: {"paper": paper.get(k), "run": v} for k, v in run.items() if paper.get(k) != v}
        return {"preset": preset, "paper": not changed, "changed": changed,
                "provenance": getattr(cls.presets.get(preset) if preset else None, "provenance", "")}

    # ---- the work ----------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, data: ImageData, ctx: "RunContext") -> TrainStats | None:
        """Learn from the images: ``data.y`` is None, labels are never given to the method.

        Return :class:`TrainStats` to report the training clock and images seen; None
        means the whole ``fit`` counts as training time, over one pass of the data."""

    @abc.abstractmethod
    def predict(self, data: ImageData) -> np.ndarray:
        """Cluster labels for every image (the ``head`` protocol): int array of shape (N,)."""

    def features(self, data: ImageData) -> np.ndarray | None:
        """Optional float features of shape (N, D) for the ``kmeans`` and ``linear`` protocols."""
        return None


def _check_plugin_class(cls: type, kind: str, attributes: tuple[str, ...]) -> None:
    for attr in attributes:
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise PluginError(f"{kind} {cls.name!r} ({cls.__qualname__}) has no `{attr}`")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise PluginError(f"{kind} {cls.name!r} ({cls.__qualname__}) does not implement {', '.join(missing)}")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_text(value: str, kind: type) -> Any:
    """A command-line string as ``kind`` (bool, int, float or str); ValueError if it is not one."""
    if kind is bool:
        low = value.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(value)
    if kind is int or kind is float:
        return kind(value)
    return value


def range_problem(value: Any, *limits: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under ``minimum``/``above``/``below``/``choices`` limits (None: nothing)."""
    for lim in limits:
        choices = lim.get("choices")
        if choices is not None and value not in choices:
            return f"is not one of {', '.join(map(str, choices))}"
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            continue
        bounded = any(lim.get(k) is not None for k in ("minimum", "above", "below"))
        if bounded and not math.isfinite(value):
            return "must be finite"
        if lim.get("minimum") is not None and not value >= lim["minimum"]:
            return f"must be >= {lim['minimum']}"
        if lim.get("above") is not None and not value > lim["above"]:
            return f"must be > {lim['above']}"
        if lim.get("below") is not None and not value < lim["below"]:
            return f"must be < {lim['below']}"
    return None


def _coerce(method: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, (bool, int, float)):
            return _parse_text(value, type(default))
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) if default else v for v in value.split(":"))
    except ValueError:
        raise ConfigError(
            f"method {method!r}: parameter {key}={value!r} is not a valid {type(default).__name__}"
        ) from None
    return value


_KIND_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
_PY_KINDS = {bool: bool, int: numbers.Integral, float: numbers.Real, str: str}  # Python values each accepts


def _option_kind(hint: Any) -> tuple[type, bool]:
    """(bool|int|float|str, whether None is allowed) of an ``Options`` field's annotation."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) != 1 or kinds[0] not in _KIND_WORDS:
        raise TypeError(f"unsupported option type {hint!r}")
    return kinds[0], len(kinds) < len(args)


def _option_value(dataset: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """One option, parsed and checked against its field; ConfigError naming dataset, key and value."""
    kind, optional = _option_kind(hint)
    bad = f"dataset {dataset!r}: bad option value: {f.name}={value!r}"
    if value is None and optional:
        return None
    if kind is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    try:
        if isinstance(value, str):
            value = _parse_text(value, kind)
        elif isinstance(value, _PY_KINDS[kind]) and (kind is bool) == isinstance(value, bool):
            value = kind(value)
        else:
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{bad} is not {_KIND_WORDS[kind]}") from None
    choices = f.metadata.get("choices")
    if choices is not None:
        value = {str(c).lower(): c for c in choices}.get(str(value).lower(), value)
        if value not in choices:
            raise ConfigError(f"{bad}; choose one of {', '.join(map(str, choices))}")
    minimum = f.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"dataset {dataset!r}: bad option value: {f.name}={value} must be >= {minimum}")
    return value
