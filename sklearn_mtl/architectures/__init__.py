"""Sharing architectures: how the tasks share the layers below their heads.

Each class is a configuration (hyperparameters only, clonable, validated by
:func:`resolve_architecture`) whose ``build`` method returns the torch
module; see :mod:`._base` for the contract.
"""

from . import _registry
from ._base import Architecture
from ._registry import *  # noqa: F403  (every class of ARCHITECTURES, and resolve_architecture)
from .cross_stitch import CrossStitchModule
from .mmoe import MMoEModule
from .ple import PLEModule
from .soft import SoftSharingModule

__all__ = [
    "Architecture",
    "CrossStitchModule",
    "MMoEModule",
    "PLEModule",
    "SoftSharingModule",
    *_registry.__all__,
]
