"""clusterbench: a plugin-based benchmark harness for deep image clustering.

Everything a plugin needs is importable from here, and plugins import nothing else: the
contract (``Method``, ``Dataset``, ``ImageData``, ``param``, ``hookimpl``), the errors, the
deep-method base (``DeepMethod``, ``AugmentSpec``) and the building blocks methods share.
The core imports no method or dataset by name: it finds them through the ``clusterbench``
entry-point group.  Names that need torch are imported on first use, so ``clusterbench
list`` stays fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from clusterbench.api import Dataset, ImageData, Method, Preset, Recipe, TrainStats, param
from clusterbench.budget import Budget
from clusterbench.context import RunContext
from clusterbench.errors import (
    ClusterbenchError,
    ConfigError,
    DataError,
    GraphUnavailable,
    PluginError,
    RecordError,
    TrainingDiverged,
)
from clusterbench.hookspecs import hookimpl
from clusterbench.results.io import atomic_save_npz, atomic_write_bytes
from clusterbench.settings import EngineSettings

try:
    __version__ = version("clusterbench")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

#: name -> module of the names imported on first use (they import torch or faiss)
_LAZY = {
    "DeepMethod": "clusterbench.train.deep",
    "DeepParams": "clusterbench.train.deep",
    "OptimizerChoice": "clusterbench.train.optim",
    "OptimizerParams": "clusterbench.train.optim",
    "build_optimizer": "clusterbench.train.optim",
    "lr_schedule": "clusterbench.train.optim",
    "Trained": "clusterbench.train.inference",
    "AugmentSpec": "clusterbench.train.augment",
    "ResNetBackbone": "clusterbench.train.backbones",
    "mlp": "clusterbench.train.backbones",
    "nt_xent": "clusterbench.train.losses",
    "neg_entropy_of_mean": "clusterbench.train.losses",
    "info_nce": "clusterbench.train.losses",
    "FeatureQueue": "clusterbench.train.queue",
    "gumbel_noise": "clusterbench.train.assign",
    "gumbel_softmax": "clusterbench.train.assign",
    "simplex_centres": "clusterbench.train.assign",
    "split_batchnorm": "clusterbench.train.splitbn",
    "shuffled_forward": "clusterbench.train.splitbn",
    "warmup_cosine": "clusterbench.train.schedule",
    "CCObjective": "clusterbench.train.objectives",
    "cc_loss": "clusterbench.train.objectives",
    "cc_cluster_loss": "clusterbench.train.objectives",
    "cc_augmentation": "clusterbench.train.objectives",
    "momentum_copy": "clusterbench.train.momentum",
    "ema_update": "clusterbench.train.momentum",
    "cosine_momentum": "clusterbench.train.momentum",
    "kmeans": "clusterbench.evaluate.faiss_kmeans",
    "available_cpus": "clusterbench.evaluate.faiss_kmeans",
    "run_grid": "clusterbench.launch.api",
    "load_results": "clusterbench.launch.api",
}

__all__ = [
    "AugmentSpec",
    "Budget",
    "CCObjective",
    "ClusterbenchError",
    "ConfigError",
    "DataError",
    "Dataset",
    "DeepMethod",
    "DeepParams",
    "EngineSettings",
    "FeatureQueue",
    "GraphUnavailable",
    "ImageData",
    "Method",
    "OptimizerChoice",
    "OptimizerParams",
    "PluginError",
    "Preset",
    "Recipe",
    "RecordError",
    "ResNetBackbone",
    "RunContext",
    "TrainStats",
    "Trained",
    "TrainingDiverged",
    "__version__",
    "atomic_save_npz",
    "atomic_write_bytes",
    "available_cpus",
    "build_optimizer",
    "cc_augmentation",
    "cc_cluster_loss",
    "cc_loss",
    "cosine_momentum",
    "ema_update",
    "gumbel_noise",
    "gumbel_softmax",
    "hookimpl",
    "info_nce",
    "kmeans",
    "load_results",
    "lr_schedule",
    "mlp",
    "momentum_copy",
    "neg_entropy_of_mean",
    "nt_xent",
    "param",
    "run_grid",
    "shuffled_forward",
    "simplex_centres",
    "split_batchnorm",
    "warmup_cosine",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clusterbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
