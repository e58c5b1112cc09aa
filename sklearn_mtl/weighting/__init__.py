"""Loss-weighting strategies for multi-task training.

Each strategy is a :class:`Weighting` (hyperparameters only, clonable,
validated by :func:`resolve_weighting`) whose ``build`` returns a
:class:`WeightingState` (a torch module) used during one fit; its
``combine`` returns a :class:`Step` each training step. See
:mod:`sklearn_mtl.weighting._base` for the contract. The engine's side (per-task
gradients and the routed shared update, loss normalisation) lives beside the
engine, in :mod:`sklearn_mtl._gradients` and :mod:`sklearn_mtl._normalization`.
"""

from . import _registry
from ._base import Step, Weighting, WeightingState
from ._registry import *  # noqa: F403  (every strategy of WEIGHTINGS, and resolve_weighting)

__all__ = ["Step", "Weighting", "WeightingState", *_registry.__all__]
