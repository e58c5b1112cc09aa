"""Architecture names and their lookup."""

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


def resolve_architecture(architecture):
    """The :class:`Architecture` an estimator parameter designates.

    Parameters
    ----------
    architecture : str or Architecture
        A key of :data:`ARCHITECTURES` (a fresh instance with default
        hyperparameters is returned) or an ``Architecture`` instance
        (returned as is; the estimator clones it when it clones itself).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    TypeError
        For anything else (including an Architecture class not instantiated).
    """
    if isinstance(architecture, Architecture):
        return architecture
    if isinstance(architecture, str):
        try:
            return ARCHITECTURES[architecture]()
        except KeyError:
            valid = ", ".join(repr(name) for name in ARCHITECTURES)
            raise ValueError(
                f"Unknown architecture {architecture!r}; valid names are {valid}, "
                "or pass an Architecture instance."
            ) from None
    hint = ""
    if isinstance(architecture, type) and issubclass(architecture, Architecture):
        hint = f" (did you mean {architecture.__name__}()?)"
    raise TypeError(
        "architecture must be a name or an Architecture instance, got "
        f"{type(architecture).__name__}: {architecture!r}{hint}."
    )
