"""Loss-weighting strategies for multi-task training.

Each strategy is a :class:`Weighting` (hyperparameters only, clonable)
whose ``build`` returns a :class:`WeightingState` (a torch module) used
during one fit; see :mod:`sklearn_mtl.weighting._base` for the contract.
The engine's side (per-task gradients and the routed shared update, the
estimator's ``loss_normalization``) lives beside the engine, in
:mod:`sklearn_mtl._gradients` and :mod:`sklearn_mtl._normalization`.
"""

from ._base import Weighting, WeightingState
from ._registry import WEIGHTINGS, resolve_weighting
from .alternating import Alternating
from .cagrad import CAGrad
from .dwa import DWA
from .famo import FAMO
from .gradnorm import GradNorm
from .imtl import IMTL
from .mgda import MGDA, MGDAUB
from .pcgrad import PCGrad
from .rlw import RLW
from .static import Static
from .uncertainty import Uncertainty
from .upgrad import UPGrad
from .validation_trend import ValidationTrend

__all__ = [
    "DWA",
    "FAMO",
    "IMTL",
    "MGDA",
    "MGDAUB",
    "RLW",
    "WEIGHTINGS",
    "Alternating",
    "CAGrad",
    "GradNorm",
    "PCGrad",
    "Static",
    "UPGrad",
    "Uncertainty",
    "ValidationTrend",
    "Weighting",
    "WeightingState",
    "resolve_weighting",
]
