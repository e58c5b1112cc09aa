"""Architecture names and their lookup.

This is the one list of the architectures: the package namespace and its
``__all__`` are built from :data:`ARCHITECTURES`.
"""

from .._params import resolve
from ._base import Architecture
from .cross_stitch import CrossStitch
from .hard import HardSharing
from .mmoe import MMoE
from .ple import PLE
from .soft import SoftSharing

#: Name -> configuration class; a name builds the class with its defaults.
ARCHITECTURES = {
    "hard": HardSharing,
    "soft": SoftSharing,
    "cross_stitch": CrossStitch,
    "mmoe": MMoE,
    "ple": PLE,
}

__all__ = ["ARCHITECTURES", "resolve_architecture",
           *(cls.__name__ for cls in ARCHITECTURES.values())]


def resolve_architecture(architecture):
    """The validated :class:`Architecture` an estimator parameter designates.

    The one entry point of the estimator, called at the start of ``fit``.

    Parameters
    ----------
    architecture : str or Architecture
        A key of :data:`ARCHITECTURES` (a fresh instance with default
        hyperparameters is returned) or an ``Architecture`` instance
        (returned as is; the estimator clones it when it clones itself).
        Its hyperparameters are then checked against their declared
        constraints.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid names), or
        ``InvalidParameterError`` (a ``ValueError``) naming an invalid
        hyperparameter.
    TypeError
        For anything else (including an Architecture class not instantiated).
    """
    return resolve(architecture, ARCHITECTURES, Architecture, "architecture")
