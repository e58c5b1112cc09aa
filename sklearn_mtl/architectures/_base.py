"""The contract every sharing architecture follows.

An :class:`Architecture` holds hyperparameters only (a ``BaseEstimator``, so
it clones and sits in a search grid). :meth:`Architecture.build` returns the
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

from sklearn.base import BaseEstimator


class Architecture(BaseEstimator):
    """Base class of the architecture configurations (hyperparameters only)."""

    def build(self, n_features, n_tasks, hidden_layer_sizes, activation, dropout):
        """Return the representation module (see the module docstring).

        ``hidden_layer_sizes`` (tuple of int), ``activation`` (name, see
        :func:`sklearn_mtl._modules.make_activation`) and ``dropout`` (float)
        are the estimator's parameters for the shared layers; each
        architecture decides how to use them (e.g. as the size of each tower
        or each expert).
        """
        raise NotImplementedError
