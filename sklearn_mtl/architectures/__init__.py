"""Sharing architectures: how the tasks share the layers below their heads.

Each class is a configuration (hyperparameters only, clonable) whose
``build`` method returns the torch module; see :mod:`._base` for the contract.
"""

from ._base import Architecture
from ._registry import ARCHITECTURES, resolve_architecture
from .cross_stitch import CrossStitch, CrossStitchModule
from .hard import HardSharing
from .mmoe import MMoE, MMoEModule
from .ple import PLE, PLEModule
from .soft import SoftSharing, SoftSharingModule

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "CrossStitch",
    "CrossStitchModule",
    "HardSharing",
    "MMoE",
    "MMoEModule",
    "PLE",
    "PLEModule",
    "SoftSharing",
    "SoftSharingModule",
    "resolve_architecture",
]
