"""Declared parameter validation of the estimators and their configurations.

A configuration holds hyperparameters only and declares them, as a
scikit-learn estimator does, in ``_parameter_constraints`` (see
:mod:`sklearn.utils._param_validation`). It is validated once, when the
estimator resolves its ``weighting`` or ``architecture`` parameter at the
start of ``fit`` (:func:`resolve`); nothing is checked per training step.

Two rules go beyond scikit-learn's, so that no check is lost in the move
from hand-written ones:

* a bool is never a number: ``True`` does not satisfy an ``Interval`` or an
  ``Options`` of numbers (scikit-learn accepts it there, as ``bool`` is an
  ``int``), only an explicit ``"boolean"`` or ``bool`` constraint;
* a configuration may define ``_check_params`` for rules that involve several
  parameters or the entries of a sequence, raising
  :class:`~sklearn.utils._param_validation.InvalidParameterError`.
"""

from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import (
    InvalidParameterError,
    make_constraint,
    validate_parameter_constraints,
)


def _admits_bool(constraints):
    for constraint in constraints:
        if isinstance(constraint, str) and constraint in ("boolean", "verbose"):
            return True
        if constraint is bool or constraint is object:
            return True
    return False


def _describe(constraints):
    """The constraints as scikit-learn words them in its messages."""
    shown = [str(c) for c in map(make_constraint, constraints) if not c.hidden]
    if len(shown) == 1:
        return shown[0]
    return f"{', '.join(shown[:-1])} or {shown[-1]}"


def validate_constraints(constraints, params, caller_name):
    """scikit-learn's ``validate_parameter_constraints`` plus the bool rule above."""
    validate_parameter_constraints(constraints, params, caller_name)
    for name, value in params.items():
        declared = constraints.get(name)
        if isinstance(value, bool) and declared not in (None, "no_validation") \
                and not _admits_bool(declared):
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller_name} must be {_describe(declared)}. "
                f"Got {value!r} instead."
            )


class Configuration(BaseEstimator):
    """Base of the strategy and architecture configurations (hyperparameters only).

    Subclasses declare every constructor parameter in ``_parameter_constraints``.
    """

    _parameter_constraints: dict = {}

    def _validate_params(self):
        """Check every parameter against its declared constraints (and
        ``_check_params``); raises ``InvalidParameterError``, a ``ValueError``
        and ``TypeError``, naming the parameter."""
        validate_constraints(self._parameter_constraints, self.get_params(deep=False),
                             type(self).__name__)
        self._check_params()

    def _check_params(self):
        """Rules the per-parameter constraints cannot state; none by default."""


def resolve(value, registry, base, parameter):
    """The validated configuration an estimator parameter designates.

    A name (a key of ``registry``) gives a fresh instance with default
    hyperparameters; an instance of ``base`` is returned as is (the estimator
    clones it when it clones itself). Either way ``_validate_params`` runs.
    Unknown names raise ``ValueError`` listing the valid names; anything else
    (a class rather than an instance included) raises ``TypeError``.
    """
    article = "an" if base.__name__[0] in "AEIOU" else "a"
    expected = f"a name or {article} {base.__name__} instance"
    if isinstance(value, base):
        config = value
    elif isinstance(value, str):
        try:
            config = registry[value]()
        except KeyError:
            valid = ", ".join(repr(name) for name in registry)
            raise ValueError(
                f"Unknown {parameter} {value!r}; valid names are {valid}, "
                f"or pass {article} {base.__name__} instance."
            ) from None
    else:
        hint = ""
        if isinstance(value, type) and issubclass(value, base):
            hint = f" (did you mean {value.__name__}()?)"
        raise TypeError(
            f"{parameter} must be {expected}, got {type(value).__name__}: {value!r}{hint}."
        )
    config._validate_params()
    return config
