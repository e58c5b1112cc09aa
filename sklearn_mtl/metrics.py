"""Scorers for model selection on multi-task estimators.

scikit-learn's scorers see one target; a multi-task estimator predicts many,
in a DataFrame, a dict, a 2-D array or (one task) a 1-D array. The scorers
here pick one task out of ``y`` and out of the predictions, drop the rows
where that task's label is missing, and apply a scikit-learn metric:

* :func:`make_task_scorer` -- one task, one metric (``'roc_auc'``,
  ``'neg_mean_absolute_error'``, any scikit-learn scorer name, or a metric
  function as in ``make_scorer``);
* :func:`make_task_scorers` -- a dict task -> scorer for every task of an
  estimator, ready for ``GridSearchCV(scoring=..., refit=<task>)`` and
  ``cross_validate``;
* :func:`make_mean_task_scorer` -- one number: the mean over tasks of each
  task's score, signs as in scikit-learn (``neg_*`` metrics negated), for a
  single-metric ``scoring=``;
* :func:`task_report` -- a table of held-out metrics, one row per task.

The first three are scorers in scikit-learn's sense: callables ``scorer(estimator, X,
y)`` that also work inside ``GridSearchCV``, ``RandomizedSearchCV``,
``HalvingRandomSearchCV``, ``cross_validate`` and ``permutation_importance``,
on the estimator alone or at the end of a Pipeline, and take
``set_score_request(sample_weight=True)`` under metadata routing.

A plain metric name (``scoring='accuracy'``) is scikit-learn's own scorer: it
scores an estimator with one task, fitted from a 1-D y without missing
labels, as any scikit-learn classifier or regressor; for anything else
(several tasks, missing labels, a metric of the other kind) the estimator
refuses it with a ValueError that names the scorers here (see
:mod:`sklearn_mtl._scorer_guard`), in searches and cross-validation at fit
time, so that no search ranks candidates on NaN scores.
"""

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    get_scorer,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

# The base class of scikit-learn's own scorers: subclassing it makes these scorers
# first-class in GridSearchCV's multi-metric scoring, in check_scoring and in metadata
# routing (set_score_request). It is private but has kept this interface from 1.4 to
# 1.9 (the supported range is pinned in pyproject.toml).
from sklearn.metrics._scorer import _BaseScorer
from sklearn.pipeline import Pipeline

from ._scoring import DEFAULT_METRICS, default_metric, target_columns, task_score
from ._task_params import resolve_task_params
from ._tasks import find_task, fit_tasks, missing_mask, read_targets
from ._validation import as_sizes

__all__ = ["make_mean_task_scorer", "make_task_scorer", "make_task_scorers", "task_report"]


def _default_score(y_true, y_pred, *, sample_weight=None):
    """R² for a regression task, accuracy for a classification task."""


def _mean_score(y_true, y_pred, *, sample_weight=None):
    """The mean over tasks of each task's signed score."""


# ---------------------------------------------------------------------------
# Finding the multi-task estimator and one task's values


def _multitask_estimator(estimator, fitted=True):
    """The multi-task estimator inside ``estimator`` (itself, a Pipeline's last step,
    a search's best estimator), or None."""
    for _ in range(20):
        if hasattr(estimator, "_allowed_kinds") and (not fitted or hasattr(estimator, "tasks_")):
            return estimator
        if isinstance(estimator, Pipeline):
            estimator = estimator.steps[-1][1]
        elif fitted and hasattr(estimator, "best_estimator_"):
            estimator = estimator.best_estimator_
        elif not fitted and hasattr(estimator, "estimator"):
            estimator = estimator.estimator
        else:
            return None
    return None


def _fitted_multitask(estimator):
    found = _multitask_estimator(estimator)
    if found is None:
        raise ValueError(
            f"Cannot find a fitted multi-task estimator (MultiTaskRegressorClassifier, "
            f"MultiTaskRegressor, MultiTaskClassifier) in {type(estimator).__name__}: the "
            "sklearn_mtl scorers need one, alone, at the end of a Pipeline or inside a "
            "fitted search."
        )
    return found


def _task_name(model, task):
    """The task a scorer names: a task label first, else a position among the tasks."""
    names = model.task_names_
    name = find_task(task, names)
    if name is not None:
        return name
    if isinstance(task, (int, np.integer)) and not isinstance(task, (bool, np.bool_)):
        if not -len(names) <= task < len(names):
            raise ValueError(f"Task position {task} is out of range for the tasks {names!r}.")
        return names[task]
    raise ValueError(f"Unknown task {task!r}; the estimator's tasks are {names!r}.")


def _select(output, name, names):
    """One task's part of a prediction in any of the estimators' forms."""
    if isinstance(output, pd.DataFrame):
        return output[name].to_numpy()
    if isinstance(output, dict):
        return np.asarray(output[name])
    position = names.index(name)
    if isinstance(output, list):  # predict_proba of a 2-D array y: one entry per column
        return np.asarray(output[position])
    output = np.asarray(output)
    if len(names) == 1:
        return output  # a single task: the output is that task's
    return output[:, position]  # predict of a 2-D array y


def _response(estimator, method, X):
    if isinstance(method, (list, tuple)):
        # scikit-learn's ('decision_function', 'predict_proba') for ranking metrics:
        # the first the estimator has (ours have predict_proba).
        for candidate in method:
            if hasattr(estimator, candidate):
                return candidate, getattr(estimator, candidate)(X)
        raise AttributeError(f"{type(estimator).__name__} has none of the methods {method}.")
    return method, getattr(estimator, method)(X)


# ---------------------------------------------------------------------------
# The metric a scorer applies


def _resolve_metric(metric, greater_is_better, response_method, kwargs):
    """(score_func, sign, kwargs, response_method) for a metric name, scorer or function."""
    if isinstance(metric, str):
        try:
            scorer = get_scorer(metric)
        except ValueError:
            raise ValueError(
                f"{metric!r} is not a scikit-learn scorer name; use one of "
                "sklearn.metrics.get_scorer_names() (e.g. 'accuracy', 'roc_auc', 'r2', "
                "'neg_mean_absolute_error') or pass a metric function."
            ) from None
        metric = scorer
    if isinstance(metric, _BaseScorer):
        # A scorer name or make_scorer(...): its function, sign, options and method.
        return (metric._score_func, metric._sign, {**metric._kwargs, **kwargs},
                response_method or metric._response_method)
    if callable(metric):
        return metric, (1 if greater_is_better else -1), dict(kwargs), response_method or "predict"
    raise TypeError(
        f"metric must be a scikit-learn scorer name, a scorer or a metric function "
        f"score(y_true, y_pred); got {metric!r}."
    )


def _metric_name(metric):
    if metric is None:
        return "default"
    if isinstance(metric, str):
        return metric
    return getattr(metric, "__name__", type(metric).__name__)


class _TaskScorer(_BaseScorer):
    """One task, one metric: see :func:`make_task_scorer`."""

    def __init__(self, task, metric, greater_is_better, response_method, kwargs):
        self.task = task
        self.metric = metric
        self._greater_is_better = greater_is_better
        self._user_response_method = response_method
        self._user_kwargs = dict(kwargs)
        if metric is None:
            func, sign, kw, method = _default_score, 1, dict(kwargs), "predict"
        else:
            func, sign, kw, method = _resolve_metric(metric, greater_is_better,
                                                     response_method, kwargs)
        super().__init__(func, sign, kw, method)

    def __repr__(self):
        args = [repr(self.task)]
        if self.metric is not None:
            args.append(repr(self.metric) if isinstance(self.metric, str)
                        else _metric_name(self.metric))
        if not self._greater_is_better:
            args.append("greater_is_better=False")
        if self._user_response_method is not None:
            args.append(f"response_method={self._user_response_method!r}")
        args += [f"{k}={v!r}" for k, v in self._user_kwargs.items()]
        return f"make_task_scorer({', '.join(args)})"

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        # method_caller (scikit-learn's prediction cache) assumes one target; the
        # estimator is called directly instead.
        self._warn_overlap(
            message=("There is an overlap between set kwargs of this scorer instance and "
                     "passed metadata. Please pass them either as kwargs to "
                     "make_task_scorer or metadata, but not both."),
            kwargs=kwargs,
        )
        model = _fitted_multitask(estimator)
        name = _task_name(model, self.task)
        task = next(t for t in model.tasks_ if t.name == name)
        if self.metric is None:
            func, sign, options, method = _resolve_metric(default_metric(task), True, None,
                                                          self._kwargs)
        else:
            func, sign, options, method = (self._score_func, self._sign, self._kwargs,
                                           self._response_method)
        if not task.is_classifier and method != "predict":
            raise ValueError(
                f"Task '{name}' is a regression task; a metric on predicted probabilities "
                f"({_metric_name(self.metric)}) does not apply to it."
            )
        truth = target_columns(model, y_true)[name]
        method, output = _response(estimator, method, X)
        predicted = _select(output, name, model.task_names_)
        return sign * task_score(func, task, truth, predicted, method, {**options, **kwargs})


def make_task_scorer(task, metric=None, *, greater_is_better=True, response_method=None,
                     **kwargs):
    """A scorer of one task of a multi-task estimator.

    Parameters
    ----------
    task : str or int
        The task's name (a column of the DataFrame y, a key of the dict y, a name
        of ``tasks=[...]``, or ``'task_<j>'`` for column j of an array y), or its
        position among the estimator's tasks.
    metric : str, scorer or callable, default=None
        A scikit-learn scorer name (``'roc_auc'``, ``'neg_log_loss'``, ``'r2'``,
        ``'neg_mean_absolute_error'``, ...: sign and prediction method as in
        scikit-learn), a scorer from ``make_scorer``, or a metric function
        ``score(y_true, y_pred, **kwargs)``. None: R² for a regression task,
        accuracy for a classification task (as the estimators' ``score``).
    greater_is_better : bool, default=True
        For a metric function: False negates it (a loss), as in ``make_scorer``.
    response_method : {'predict', 'predict_proba'}, default=None
        For a metric function: what it is given (default 'predict'). For a binary
        task ``predict_proba`` gives the positive class's probability (the second
        class of ``classes_``, or ``pos_label``); for a multiclass task the whole
        matrix, and ``labels=classes_`` when the metric takes ``labels``.
    **kwargs
        Passed to the metric (e.g. ``average='macro'``, ``multi_class='ovr'``).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None)``: the metric on the rows of
        y where the task has a label (NaN if none has). The estimator may be a
        Pipeline ending in a multi-task estimator.

    Examples
    --------
    >>> scoring = {"disease_auc": make_task_scorer("disease", "roc_auc"),
    ...            "stay_mae": make_task_scorer("stay_days", "neg_mean_absolute_error")}
    >>> # GridSearchCV(model, grid, scoring=scoring, refit="disease_auc")
    """
    return _TaskScorer(task, metric, greater_is_better, response_method, kwargs)


def _tasks_and_kinds(estimator, y):
    """[(task, kind)] of the fitted estimator, or inferred from y as fit would."""
    model = _multitask_estimator(estimator)
    if model is not None:
        return [(t.name, t.kind) for t in model.tasks_ if not t.auxiliary]
    model = _multitask_estimator(estimator, fitted=False)
    if model is None:
        raise ValueError(
            f"Cannot find a multi-task estimator in {type(estimator).__name__}."
        )
    if y is None:
        raise ValueError(
            "The estimator is not fitted: pass y (the targets it will be fitted on) so "
            "that the tasks and their kinds are known."
        )
    task_names = list(model.tasks) if isinstance(model.tasks, (list, tuple)) else None
    names, columns, dtypes, _ = read_targets(y, task_names)
    params = resolve_task_params(model, names, len(as_sizes("hidden_layer_sizes",
                                                            model.hidden_layer_sizes)))
    tasks = fit_tasks(names, columns, dtypes, params.kinds, {})
    return [(t.name, t.kind) for t in tasks if t.name not in params.auxiliary]


def _metrics_for(name, kind, metrics):
    if metrics is None:
        chosen = None
    elif isinstance(metrics, dict):
        general = "classification" if kind != "regression" else "regression"
        chosen = metrics.get(name, metrics.get(kind, metrics.get(general)))
    else:
        chosen = metrics  # one metric (or list) for every task
    if chosen is None:
        chosen = DEFAULT_METRICS["classification" if kind != "regression" else "regression"]
    return list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]


def make_task_scorers(estimator, y=None, *, metrics=None):
    """A dict of scorers, one per task (and metric), for ``scoring=`` in searches.

    Parameters
    ----------
    estimator : estimator
        A multi-task estimator or a Pipeline ending in one (or a search over one),
        fitted or not. When it is not fitted, ``y`` gives the tasks.
    y : DataFrame, dict or array, default=None
        The targets the estimator will be fitted on, when it is not fitted yet;
        task kinds are read from them as ``fit`` would.
    metrics : None, metric, list, or dict, default=None
        None: R² for regression tasks and accuracy for classification tasks. A
        dict maps a task name, or a kind ('regression', 'classification',
        'binary', 'multiclass'), to a metric or a list of metrics (names as in
        :func:`make_task_scorer`); a task name wins over its kind, a missing
        entry falls back to the default. A single metric or list applies to
        every task.

    Returns
    -------
    dict
        ``{task: scorer}``, or ``{f"{task}_{metric}": scorer}`` for tasks given
        several metrics. In ``GridSearchCV`` the keys become the
        ``mean_test_<key>`` columns of ``cv_results_`` and valid ``refit`` values.
    """
    scorers = {}
    for name, kind in _tasks_and_kinds(estimator, y):
        chosen = _metrics_for(name, kind, metrics)
        for metric in chosen:
            key = name if len(chosen) == 1 else f"{name}_{_metric_name(metric)}"
            scorers[key] = make_task_scorer(name, metric)
    return scorers


class _MeanTaskScorer(_BaseScorer):
    """The mean of per-task scores: see :func:`make_mean_task_scorer`."""

    def __init__(self, metrics):
        self.metrics = metrics
        super().__init__(_mean_score, 1, {}, "predict")

    def __repr__(self):
        return f"make_mean_task_scorer({'' if self.metrics is None else repr(self.metrics)})"

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        model = _fitted_multitask(estimator)
        scores = []
        for t in model.tasks_:
            if t.auxiliary:
                continue
            for metric in _metrics_for(t.name, t.kind, self.metrics):
                score = make_task_scorer(t.name, metric)._score(
                    method_caller, estimator, X, y_true, **kwargs)
                if not np.isnan(score):
                    scores.append(score)
        return float(np.mean(scores)) if scores else float("nan")


def make_mean_task_scorer(metrics=None):
    """One number for ``scoring=``: the mean over tasks of each task's score.

    Each task's score is signed as scikit-learn signs it (``neg_*`` metrics are
    negated, so greater is better throughout) and computed on the rows where
    the task has a label; tasks without any label in the fold are left out.
    With the default metrics (R² and accuracy) this is the estimators'
    ``score``. Mixing metrics of different scales (say MAE in grams with
    accuracy) weighs the larger scale more: prefer scale-free metrics here.

    Parameters
    ----------
    metrics : None, metric, list or dict, default=None
        As in :func:`make_task_scorers`.
    """
    return _MeanTaskScorer(metrics)


# ---------------------------------------------------------------------------
# Per-task report

#: (column, metric, prediction method, options) of each kind's report columns.
_REGRESSION_REPORT = [
    ("r2", r2_score, "predict", {}),
    ("mae", mean_absolute_error, "predict", {}),
    ("rmse", root_mean_squared_error, "predict", {}),
]
_CLASSIFICATION_REPORT = [
    ("accuracy", accuracy_score, "predict", {}),
    ("balanced_accuracy", balanced_accuracy_score, "predict", {}),
    ("log_loss", log_loss, "predict_proba", {}),
    # Classes absent from both the labels and the predictions of these rows are
    # left out of the mean rather than counted as an F1 of 0.
    ("macro_f1", f1_score, "predict", {"average": "macro", "zero_division": np.nan}),
]
_BINARY_REPORT = [("roc_auc", roc_auc_score, "predict_proba", {})]
_REPORT_COLUMNS = ["kind", "n_observed"] + [c for c, *_ in _REGRESSION_REPORT
                                            + _CLASSIFICATION_REPORT + _BINARY_REPORT]


def _report_metrics(task):
    if not task.is_classifier:
        return _REGRESSION_REPORT
    return _CLASSIFICATION_REPORT + (_BINARY_REPORT if task.kind == "binary" else [])


def task_report(estimator, X, Y, *, sample_weight=None):
    """Held-out metrics of every task, one row per task, on its observed labels.

    Parameters
    ----------
    estimator : estimator
        A fitted multi-task estimator, a Pipeline ending in one, or a fitted
        search over either (its ``best_estimator_`` is reported). Its
        ``predict`` (and ``predict_proba``, for classification tasks) is called
        once on X.
    X : array-like of shape (n_samples, n_features)
        The rows to score, as the estimator takes them.
    Y : DataFrame, dict, or array of shape (n_samples, n_tasks) or (n_samples,)
        The true labels, in the form the estimator was fitted on (a superset of
        its task columns is fine). Missing labels are left out of their task's
        metrics only.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights passed to every metric (``n_observed`` counts rows, not
        weights).

    Returns
    -------
    report : DataFrame
        Index: the task labels as given in Y (name ``'task'``). Columns:
        ``kind`` ('regression', 'binary', 'multiclass'), ``n_observed`` (rows
        with a label), then ``r2``, ``mae``, ``rmse`` for regression tasks and
        ``accuracy``, ``balanced_accuracy``, ``log_loss``, ``macro_f1`` (mean
        F1 over the classes present in the labels or the predictions) and
        ``roc_auc`` (binary tasks; the second class of ``classes_`` is the
        positive one) for classification tasks. A metric that does not apply
        to a task's kind is NaN; so is every metric of a task without an
        observed label here (``n_observed`` 0), and one that cannot be
        computed on these rows (``roc_auc`` when the labels hold one class),
        with a warning saying why.

    Examples
    --------
    >>> report = task_report(model, X_test, Y_test)  # doctest: +SKIP
    >>> report.loc["species", "accuracy"]  # doctest: +SKIP
    """
    model = _fitted_multitask(estimator)
    truth = target_columns(model, Y)
    tasks = model._predicted_tasks()
    names = model.task_names_
    predicted = estimator.predict(X)
    proba = (estimator.predict_proba(X) if any(t.is_classifier for t in tasks) else None)
    options = {} if sample_weight is None else {
        "sample_weight": np.asarray(sample_weight, dtype=float)}
    rows = []
    for task in tasks:
        column = truth[task.name]
        outputs = {"predict": _select(predicted, task.name, names)}
        if task.is_classifier:
            outputs["predict_proba"] = _select(proba, task.name, names)
        if len(column) != len(outputs["predict"]):
            raise ValueError(f"X has {len(outputs['predict'])} rows but Y[{task.name!r}] has "
                             f"{len(column)}; task_report needs one label row per row of X.")
        row = dict.fromkeys(_REPORT_COLUMNS, np.nan)
        row["kind"] = task.kind
        row["n_observed"] = int((~missing_mask(column)).sum())
        for key, func, method, extra in _report_metrics(task):
            try:
                row[key] = task_score(func, task, column, outputs[method], method,
                                      {**extra, **options})
            except ValueError as exc:
                warnings.warn(f"task_report: {key} of task {task.name!r} is NaN: {exc}",
                              UserWarning, stacklevel=2)
        rows.append(row)
    report = pd.DataFrame(rows, columns=_REPORT_COLUMNS,
                          index=pd.Index(names, name="task", tupleize_cols=False))
    return report.astype({"n_observed": int})
