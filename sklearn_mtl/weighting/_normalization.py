"""Former home of the loss normalisation, now :mod:`sklearn_mtl._normalization`.

Re-exported for ``sklearn_mtl._estimators``, which still imports it from here;
remove once that import names the new module.
"""

from .._normalization import (
    NORMALIZATIONS,
    RUNNING_MEAN_MOMENTUM,
    LossNormalization,
    check_normalization,
)

__all__ = ["NORMALIZATIONS", "RUNNING_MEAN_MOMENTUM", "LossNormalization", "check_normalization"]
