"""Names of the built-in strategies and the resolver the estimators use."""

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


def resolve_weighting(weighting):
    """Return a :class:`Weighting` instance for a name or an instance.

    A name (see ``WEIGHTINGS``) builds the strategy with its default
    hyperparameters; an instance is returned as is (the caller clones it).
    Unknown names raise ``ValueError`` listing the valid names; any other
    type (including a class rather than an instance) raises ``TypeError``.
    """
    if isinstance(weighting, Weighting):
        return weighting
    if isinstance(weighting, str):
        try:
            return WEIGHTINGS[weighting]()
        except KeyError:
            raise ValueError(
                f"Unknown weighting {weighting!r}; valid names are {sorted(WEIGHTINGS)}, "
                "or pass a Weighting instance."
            ) from None
    if isinstance(weighting, type) and issubclass(weighting, Weighting):
        raise TypeError(
            f"weighting must be an instance, e.g. {weighting.__name__}(), not the class itself."
        )
    raise TypeError(
        f"weighting must be a name in {sorted(WEIGHTINGS)} or a Weighting instance; "
        f"got {type(weighting).__name__}."
    )
