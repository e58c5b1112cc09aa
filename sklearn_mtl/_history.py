"""The training history as fitted attributes, in scikit-learn's MLP style.

The estimators read these from the skorch history of the fit (``net_.history``),
so they follow ``partial_fit`` and ``warm_start`` without a second copy:

* ``loss_curve_``: the training loss per epoch (list), ``validation_loss_curve_``
  the validation loss (None without validation data), ``n_iter_`` the epochs run;
* ``task_loss_curves_``, ``task_validation_curves_``, ``task_validation_scores_``:
  DataFrames with one column per task, indexed by epoch (1, 2, ...);
* ``task_affinity_``: what a :class:`~sklearn_mtl.callbacks.TaskAffinity`
  callback recorded.
"""

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted


def task_frame(history, names, key):
    """DataFrame (epoch x task) of the history entries ``<key>_<task>``, or None when no
    epoch has any of them."""
    rows = [[row.get(f"{key}_{name}", np.nan) for name in names] for row in history]
    values = np.asarray(rows, dtype=float).reshape(len(rows), len(names))
    if not len(values) or np.isnan(values).all():
        return None
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    return pd.DataFrame(values, index=pd.Index(epochs, name="epoch"),
                        columns=pd.Index(list(names), name="task", tupleize_cols=False))


def curve(history, key):
    """The per-epoch values of ``key`` as a list of floats, or None when absent."""
    values = [row.get(key) for row in history]
    if not values or all(v is None for v in values):
        return None
    return [float("nan") if v is None else float(v) for v in values]


class TrainingHistoryMixin:
    """Fitted attributes read from the skorch history (see the module docstring)."""

    def _fit_history(self):
        check_is_fitted(self)
        return self.net_.history

    @property
    def n_iter_(self):
        """Epochs run (over all ``fit``/``partial_fit`` calls that continued this model)."""
        return len(self._fit_history())

    @property
    def loss_curve_(self):
        """Training loss (the combined, weighted loss) of each epoch, as a list."""
        return curve(self._fit_history(), "train_loss") or []

    @property
    def validation_loss_curve_(self):
        """Validation loss of each epoch (list), or None when there was no validation data
        (``validation_fraction`` and ``early_stopping`` unset)."""
        return curve(self._fit_history(), "valid_loss")

    @property
    def task_loss_curves_(self):
        """DataFrame (epoch x task): each task's mean training loss over its labelled rows."""
        frame = task_frame(self._fit_history(), self.net_.task_names, "train_loss")
        if frame is None:
            return pd.DataFrame(columns=pd.Index(list(self.net_.task_names), name="task",
                                                 tupleize_cols=False), dtype=float)
        return frame

    @property
    def task_validation_curves_(self):
        """DataFrame (epoch x task) of the validation losses, or None without validation."""
        return task_frame(self._fit_history(), self.net_.task_names, "valid_loss")

    @property
    def task_validation_scores_(self):
        """DataFrame (epoch x task) of the validation accuracy (classification) or R²
        (regression) over the labelled validation rows, or None without validation."""
        return task_frame(self._fit_history(), self.net_.task_names, "valid_score")

    @property
    def task_affinity_(self):
        """The task affinity (DataFrame, rows: source task, columns: target task) recorded
        by a :class:`sklearn_mtl.callbacks.TaskAffinity` in ``callbacks``."""
        from .callbacks import TaskAffinity

        check_is_fitted(self)
        found = [cb for _, cb in self.net_.callbacks_ if isinstance(cb, TaskAffinity)]
        if not found:
            raise AttributeError(
                f"This {type(self).__name__} was fitted without a TaskAffinity callback, so "
                "it has no task_affinity_: fit it with "
                "callbacks=[sklearn_mtl.callbacks.TaskAffinity()], or call "
                "sklearn_mtl.inspection.task_affinity(estimator, X, Y).")
        return found[0].affinity_
