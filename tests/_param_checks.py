"""Declared-constraint checks shared by the strategy and architecture tests, after
scikit-learn's ``check_param_validation``."""

import pytest
from sklearn.utils._param_validation import (
    InvalidParameterError,
    generate_invalid_param_val,
    make_constraint,
)


class BadType:
    """A value of a type no constraint admits."""


def invalid_values(constraints):
    """A value of no valid type, a bool, and one value per constraint that breaks it
    while satisfying none of the others (as scikit-learn generates them)."""
    values = [BadType(), True]
    made = [make_constraint(c) for c in constraints]
    for constraint in made:
        try:
            bad = generate_invalid_param_val(constraint)
        except NotImplementedError:
            continue
        if not any(c.is_satisfied_by(bad) for c in made):
            values.append(bad)
    return values


def check_declared_constraints(cls, resolve):
    """Every ``__init__`` parameter of ``cls`` has a constraint, the defaults pass,
    and an invalid value of each raises ``InvalidParameterError`` naming it."""
    config = cls()
    params = config.get_params(deep=False)
    assert set(params) == set(cls._parameter_constraints), cls.__name__
    assert resolve(config) is config
    for name in params:
        match = rf"The '{name}' parameter of {cls.__name__} must be .* Got .* instead\."
        for bad in invalid_values(cls._parameter_constraints[name]):
            with pytest.raises(InvalidParameterError, match=match):
                resolve(cls(**{name: bad}))
