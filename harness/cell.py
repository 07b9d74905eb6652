"""One (method, dataset, seed) cell of a grid: the one place a run gets its identity.

:meth:`Cell.identity` is what the run id hashes (everything that determines the result; a
parameter marked ``unhashed_default`` is left out while it holds its default, see
:func:`clusterbench.param`);
:meth:`Cell.record_header` is what the record says about the cell before it runs.  A
method the engine does not train (``deep = False``) ignores the budget and the engine
settings, so neither is part of its identity.  A linear-evaluation cell
(``train_split="train"``, see :mod:`clusterbench.evaluate.linear`) pretrains on the
training split only; its split and probe settings join the identity (only there, so the
run ids of the clustering cells are unchanged).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

from clusterbench.api import Dataset, ImageData, Method
from clusterbench.budget import Budget
from clusterbench.evaluate.linear import LinearProbe
from clusterbench.evaluate.protocols import check_protocols
from clusterbench.plugins import PluginRef
from clusterbench.results.schema import SCHEMA_VERSION
from clusterbench.results.store import make_run_id
from clusterbench.settings import EngineSettings


@dataclass(frozen=True, eq=False)
class Cell:
    """A method (its parameters resolved) on a dataset (its data digest known), with one seed.

    ``protocols`` are the ones that will run (see :meth:`of`), the first being primary.
    ``method`` is the instance this cell fits: one per cell, never shared.
    """

    method: Method
    ref: PluginRef  # the method as typed (``cc[preset=fast]``): the record's ``method_spec``
    dataset: Dataset
    digest: str
    seed: int
    budget: Budget
    settings: EngineSettings
    protocols: tuple[str, ...]
    train_split: str = "all"  # "train": a linear cell, pretrained on the training split only
    probe: LinearProbe | None = None  # the SGD linear probe's settings (linear cells)

    @classmethod
    def of(cls, method: Method, ref: PluginRef, dataset: Dataset, digest: str, seed: int, budget: Budget,
           settings: EngineSettings, protocols: Sequence[str] | None = None) -> "Cell":
        """A cell running the ``protocols`` requested that the method supports (all of its own if none)."""
        chosen = check_protocols(type(method), list(protocols) if protocols else None)
        return cls(method, ref, dataset, digest, seed, budget, settings, tuple(chosen))

    @property
    def deep(self) -> bool:
        return type(self.method).deep

    @property
    def device(self) -> str:
        """Where the cell runs: the engine's device for a deep method, the CPU otherwise."""
        return self.settings.device if self.deep else "cpu"

    def identity(self) -> dict[str, Any]:
        """What the run id hashes; a change to any of it is another cell."""
        cls = type(self.method)
        return {
            "schema": SCHEMA_VERSION,
            "method": cls.name,
            "method_version": cls.version,
            "params": self.method.identity_params(),
            "dataset": self.dataset.identity(),
            "dataset_digest": self.digest,
            "seed": self.seed,
            "budget": self.budget.to_dict() if self.deep else {},
            "protocols": list(self.protocols),
            "engine": self.settings.identity() if self.deep else {},
            **self._linear_identity(),
        }

    def _linear_identity(self) -> dict[str, Any]:
        if self.train_split == "all":
            return {}
        return {"train_split": self.train_split, "linear_probe": (self.probe or LinearProbe()).to_dict()}

    def fit_data(self, data: ImageData) -> ImageData:
        """The images ``fit`` may see: all of them, or the training split of a linear cell."""
        return data if self.train_split == "all" else data.subset(data.train_mask)

    @cached_property
    def run_id(self) -> str:
        return make_run_id(self.identity())

    def record_header(self, data: ImageData, provider: str) -> dict[str, Any]:
        """The record's fields known before the cell runs (``provider``: the plugin the method came from)."""
        cls = type(self.method)
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "method": cls.name,
            "method_version": cls.version,
            "method_provider": provider,
            "method_spec": str(self.ref),
            "paper": cls.paper,
            "method_provenance": cls.provenance,
            "method_provenance_note": cls.provenance_note,
            "params": self.method.params_dict(),
            **({"recipe": self.method.recipe} if self.method.recipe else {}),
            # the preset, what differs from the paper's setting, and the preset's provenance sentence
            "setting": cls.describe_setting(self.method.params, self.ref.opts.get("preset"), self.dataset.name),
            "dataset": {**self.dataset.identity(), "io_options": self.dataset.io_identity(), "digest": self.digest,
                        "n": len(data), "n_classes": data.n_classes, "image_size": data.image_size,
                        "channels": data.channels, **({"variant": data.variant} if data.variant else {}),
                        **({"n_unlabelled": data.n_unlabelled} if data.n_unlabelled else {})},
            "train_split": self.train_split,
            **({"linear_probe": self._linear_identity()["linear_probe"]} if self.train_split != "all" else {}),
            "seed": self.seed,
            "budget": self.budget.to_dict() if self.deep else {},
            "protocols_requested": list(self.protocols),
            "engine": {**self.settings.__dict__} if self.deep else {"device": "cpu"},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
