"""The contract every sharing architecture follows.

An :class:`Architecture` holds hyperparameters only (a ``BaseEstimator``, so
it clones and sits in a search grid), declared in ``_parameter_constraints``
and validated once per fit. :meth:`Architecture.build` returns the
torch module that maps the input to the representation the task heads read:

* ``forward(X)`` with X float (B, n_features) returns either one shared
  representation (B, D) or one representation per task (B, T, D);
* the module has integer attribute ``out_features`` (D) and boolean
  ``per_task`` (True when it returns (B, T, D));
* it may define ``penalty()`` returning a scalar tensor that the engine adds to
  the training loss (soft parameter sharing uses this).

The heads (one per task) are not part of the architecture: the engine puts
them on top of whatever the architecture returns.
"""

from numbers import Integral

from sklearn.utils._param_validation import Interval

from .._params import Configuration, validate_constraints
from ._utils import LAYER_SIZES, check_layer_sizes, layer_sizes


class Architecture(Configuration):
    """Base class of the architecture configurations (hyperparameters only).

    Subclasses declare every constructor parameter in ``_parameter_constraints``
    (scikit-learn's ``sklearn.utils._param_validation`` constraints); the
    estimator validates them once per fit through
    :func:`~sklearn_mtl.architectures.resolve_architecture`.
    """

    #: Constraints of the arguments of :meth:`build` that come from the estimator
    #: and the data, checked by :meth:`_check_build_args`.
    _build_constraints = {
        "n_features": [Interval(Integral, 1, None, closed="left")],
        "n_tasks": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": LAYER_SIZES,
    }

    def _check_build_args(self, n_features, n_tasks, hidden_layer_sizes):
        """``(n_features, n_tasks, hidden_layer_sizes)`` as ``(int, int, tuple of
        ints)``, after checking them against ``_build_constraints``
        (``InvalidParameterError``, a ``ValueError``, naming the argument)."""
        caller = f"{type(self).__name__}.build"
        validate_constraints(self._build_constraints, {
            "n_features": n_features, "n_tasks": n_tasks,
            "hidden_layer_sizes": hidden_layer_sizes,
        }, caller)
        check_layer_sizes("hidden_layer_sizes", hidden_layer_sizes, caller)
        return int(n_features), int(n_tasks), layer_sizes(hidden_layer_sizes)

    def build(self, n_features, n_tasks, hidden_layer_sizes, activation, dropout):
        """Return the representation module (see the module docstring).

        ``hidden_layer_sizes`` (tuple of int), ``activation`` (name, see
        :func:`sklearn_mtl._modules.make_activation`) and ``dropout`` (float)
        are the estimator's parameters for the shared layers; each
        architecture decides how to use them (e.g. as the size of each tower
        or each expert). The hyperparameters are validated before
        (``resolve_architecture``); these arguments are checked here
        (:meth:`_check_build_args`).
        """
        raise NotImplementedError
