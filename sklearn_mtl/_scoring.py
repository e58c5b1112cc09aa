"""Masked per-task scoring: a metric applied to the rows where a task has a label.

One home for what ``score_tasks``, ``score`` and the scorers of
:mod:`sklearn_mtl.metrics` share: finding a task's column in the user's y,
reading its labels as ``fit`` read them, dropping missing labels, and
calling a scikit-learn metric.
"""

from inspect import signature

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, r2_score

from ._tasks import find_task, observed_targets, read_targets

#: The metric of each kind when none is named: those of the estimators' ``score``.
DEFAULT_METRICS = {"regression": "r2", "classification": "accuracy"}
_DEFAULT_FUNCTIONS = {"r2": r2_score, "accuracy": accuracy_score}


def default_metric(task):
    """The default metric's name for a task (R² or accuracy)."""
    return DEFAULT_METRICS["classification" if task.is_classifier else "regression"]


def target_columns(model, y):
    """dict task -> 1-D column of the user's y, for the tasks ``model`` predicts."""
    names = model.task_names_
    every = [t.name for t in model.tasks_]
    if not isinstance(y, (pd.DataFrame, dict)) and np.ndim(y) == 1 and len(names) == 1:
        # A single task: a 1-D y is that task whatever its (Series) name.
        _, columns, _, _ = read_targets(y)
        return {names[0]: columns[0]}
    if not isinstance(y, (pd.DataFrame, dict)) and np.ndim(y) == 2:
        width = np.shape(y)[1]
        # An array y holds either every fitted column or only the predicted ones.
        y_names = every if width == len(every) and width != len(names) else names
        found, columns, _, _ = read_targets(y, y_names)
    else:
        found, columns, _, _ = read_targets(y)
    by_name = {}
    for label, column in zip(found, columns):
        name = find_task(label, names)
        if name is not None:
            by_name[name] = column
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"y lacks the task column(s) {missing!r} the model was fitted on; it "
                         f"has {found!r}.")
    return by_name


def task_score(func, task, truth, predicted, method="predict", options=None):
    """``func(y_true, y_pred, **options)`` on the rows where the task has a label (NaN
    when there is none, or all their sample weights are 0)."""
    observed, y_true = observed_targets(task, truth)
    options = dict(options or {})
    weights = options.pop("sample_weight", None)
    if weights is not None:
        weights = np.asarray(weights, dtype=float)[observed]
        options["sample_weight"] = weights
    if not observed.any() or (weights is not None and not weights.sum() > 0):
        return float("nan")
    y_pred = np.asarray(predicted)[observed]
    if task.is_classifier:
        classes = task.classes_
        parameters = signature(func).parameters
        if method == "predict_proba":
            if y_pred.ndim == 2 and y_pred.shape[1] == 2:
                # Binary: the positive class's column, as scikit-learn's scorers do.
                pos_label = options.get("pos_label", classes[1])
                if pos_label not in list(classes):
                    raise ValueError(f"pos_label={pos_label!r} is not a class of task "
                                     f"{task.name!r} (classes: {classes.tolist()}).")
                y_pred = y_pred[:, list(classes).index(pos_label)]
                if "pos_label" in options and "pos_label" not in parameters:
                    # A metric without pos_label (roc_auc_score) takes the greater label as
                    # positive: hand it the chosen class as 1, the others as 0.
                    y_true = (y_true == options.pop("pos_label")).astype(int)
                    classes = np.array([0, 1])
            if "labels" in parameters and "labels" not in options:
                # A fold may lack a class; the model still knows all of them.
                options["labels"] = classes
    try:
        return float(func(y_true, y_pred, **options))
    except (TypeError, ValueError) as exc:
        kind = "classification" if task.is_classifier else "regression"
        raise ValueError(f"{getattr(func, '__name__', func)} cannot score task {task.name!r}, "
                         f"a {kind} task ({task.kind}): {exc}") from None


def score_tasks(model, predictions, y, sample_weight=None):
    """dict task -> default score (R² or accuracy) of decoded ``predictions``."""
    truth = target_columns(model, y)
    scores = {}
    for task in model._predicted_tasks():
        column = truth[task.name]
        if len(column) != len(predictions[task.name]):
            raise ValueError(f"X has {len(predictions[task.name])} rows but y[{task.name!r}] "
                             f"has {len(column)}.")
        options = {} if sample_weight is None else {"sample_weight": sample_weight}
        func = _DEFAULT_FUNCTIONS[default_metric(task)]
        scores[task.name] = task_score(func, task, column, predictions[task.name],
                                       options=options)
    return scores
