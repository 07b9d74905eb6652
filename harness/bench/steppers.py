"""The training step with the two entry points only ``clusterbench bench`` needs.

The engine steps on image indices (:meth:`TrainStep.step_on_indices`); the bench also times
the same step on views made elsewhere: by the PIL pipeline (``step_on_views``, eager) and
on one fixed pair of tensors, the model-only ceiling (``step_on_static_views``, graphed
when graphs are on).
"""

from __future__ import annotations

import torch

from clusterbench.train.step import Terms, TrainStep


class BenchStep(TrainStep):
    """:class:`TrainStep` plus steps on ready-made views."""

    def step_on_views(self, v1: torch.Tensor, v2: torch.Tensor, progress: float) -> Terms:
        """An eager step on ready-made views (the PIL pipeline)."""
        return self._step(progress, lambda: self._optimise(v1, v2))

    def step_on_static_views(self, v1: torch.Tensor, v2: torch.Tensor, progress: float) -> Terms:
        """A step on the same view tensors every call (the model-only ceiling), graphed when
        graphs are on."""
        return self._step(progress, lambda: self._optimise(v1, v2), "fixed",
                          lambda: self._optimise(v1, v2, cache=False))
