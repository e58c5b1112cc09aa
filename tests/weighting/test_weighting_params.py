"""Declared hyperparameter constraints of every strategy, checked once by the resolver."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_mtl.weighting import (
    DWA,
    FAMO,
    RLW,
    WEIGHTINGS,
    CAGrad,
    MGDAUB,
    PCGrad,
    ValidationTrend,
    resolve_weighting,
)
from tests._param_checks import check_declared_constraints


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_parameter_is_declared_and_checked(name):
    check_declared_constraints(WEIGHTINGS[name], resolve_weighting)


@pytest.mark.parametrize("weighting, param", [
    (CAGrad(c=-0.1), "c"),
    (CAGrad(rescale=3), "rescale"),
    (CAGrad(rescale=1.0), "rescale"),
    (DWA(temperature=0), "temperature"),
    (DWA(temperature=float("inf")), "temperature"),
    (FAMO(eps=float("nan")), "eps"),
    (FAMO(weight_decay=-1e-3), "weight_decay"),
    (ValidationTrend(window=1.5), "window"),
    (ValidationTrend(window=0), "window"),
    (MGDAUB(normalization="L2"), "normalization"),
    (RLW(random_state="0"), "random_state"),
    (PCGrad(random_state=False), "random_state"),
])
def test_invalid_values_name_the_parameter(weighting, param):
    with pytest.raises(InvalidParameterError, match=f"The '{param}' parameter of "
                                                    f"{type(weighting).__name__} must be"):
        resolve_weighting(weighting)


@pytest.mark.parametrize("weighting", [
    CAGrad(c=0, rescale=np.int64(2)), DWA(temperature=1), FAMO(weight_decay=0),
    ValidationTrend(window=np.int32(3)), RLW(random_state=np.random.default_rng(0)),
    PCGrad(random_state=np.random.RandomState(0)), MGDAUB(normalization="loss+"),
])
def test_valid_values_pass(weighting):
    assert resolve_weighting(weighting) is weighting


def test_names_resolve_to_validated_defaults():
    for name, cls in WEIGHTINGS.items():
        assert type(resolve_weighting(name)) is cls
