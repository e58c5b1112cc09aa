"""The built-in strategies by name, and the resolver the estimators use.

This is the one list of the strategies: the package namespace and its
``__all__`` are built from :data:`WEIGHTINGS`.
"""

from .._params import resolve
from ._base import Weighting
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

#: Name -> strategy class; a name builds the class with its defaults.
WEIGHTINGS = {
    "static": Static,
    "uncertainty": Uncertainty,
    "dwa": DWA,
    "rlw": RLW,
    "famo": FAMO,
    "validation_trend": ValidationTrend,
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "mgda_ub": MGDAUB,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "imtl": IMTL,
    "upgrad": UPGrad,
    "alternating": Alternating,
}

__all__ = ["WEIGHTINGS", "resolve_weighting", *(cls.__name__ for cls in WEIGHTINGS.values())]


def resolve_weighting(weighting):
    """The validated :class:`Weighting` an estimator's ``weighting`` designates.

    The one entry point of the estimator, called at the start of ``fit``. A
    name (see :data:`WEIGHTINGS`) builds the strategy with its default
    hyperparameters; an instance is returned as is (the caller clones it).
    Its hyperparameters are then checked against their declared constraints
    (``InvalidParameterError``, a ``ValueError``, naming the parameter).
    Unknown names raise ``ValueError`` listing the valid names; any other
    type (including a class rather than an instance) raises ``TypeError``.
    """
    return resolve(weighting, WEIGHTINGS, Weighting, "weighting")
