"""What a plain scikit-learn scorer (``scoring='accuracy'``) may score.

A scorer from a metric name, or ``make_scorer`` of a scikit-learn metric,
hands ``y`` and ``predict``'s (or ``predict_proba``'s) answer to the metric
as one target. That is meaningful for a multi-task estimator exactly when it
is an ordinary scikit-learn estimator: one task, fitted from a 1-D y without
missing labels, scored with a metric of the task's kind. Anything else (several
tasks, missing labels, a metric of the other kind) makes the metric fail or
compute a number that means nothing.

A failing scorer is no error in scikit-learn's searches: ``_score`` in
``sklearn/model_selection/_validation.py`` catches every exception, warns and
records ``error_score`` (NaN), and the search still ranks the candidates and
refits a "best" one. Only failed *fits* stop a search (``All the N fits
failed``). So the estimator checks the scorer where it can act on it:

* **at fit time, inside a cross-validation step** -- ``fit`` looks up the
  call stack for scikit-learn's ``_fit_and_score`` (used by every search,
  ``cross_validate``, ``cross_val_score``, ``learning_curve`` and
  ``validation_curve``), ``_permutation_test_score`` or
  ``_incremental_fit_estimator``, reads the ``scorer`` (and the full ``y``)
  that step will use on this very estimator (alone or as a Pipeline's last
  step), and refuses a plain scorer that cannot be meaningful with a
  ValueError before training. Every fit fails the same way, so the search
  raises, with this message in its report. ``validation_curve`` records
  failed fits as NaN without a word, so under it the message is also issued
  as a warning. A plain scorer that passes these rules is then tried once on
  the training rows after training: if it fails there (a binary-only metric
  on a multiclass task, say), it would fail on every held-out fold too.
* **when such a scorer calls the estimator** (``classes_``, ``predict``,
  ``predict_proba``; directly, in ``permutation_importance``, ...) -- the same
  rules, read from scikit-learn's ``_Scorer._score`` frame, give the same
  error instead of a TypeError deep inside a metric.

Both look-ups read private scikit-learn frames (function names and their
``estimator``, ``scorer``, ``y``, ``y_true`` arguments, unchanged across the
supported range 1.6 to 1.9 pinned in ``pyproject.toml``); if a later version
renames them, the checks find nothing and scikit-learn's own behaviour is
back, which ``tests/test_plain_scorers.py`` would report. The package's own
scorers (:mod:`sklearn_mtl.metrics`) are never refused; a ``make_scorer`` of
the user's own function only when scikit-learn's scorer machinery itself
cannot read the estimator (a ``MultiTaskClassifier`` fitted on a Y with
columns has ``classes_`` per task).
"""

import functools
import sys
import warnings

from sklearn.base import is_classifier
from sklearn.metrics import get_scorer, get_scorer_names
from sklearn.metrics._scorer import _MultimetricScorer, _Scorer
from sklearn.pipeline import Pipeline

from ._tasks import missing_mask, read_targets

#: scikit-learn's functions that fit an estimator and then score it with ``scorer``.
_CV_STEPS = frozenset({"_fit_and_score", "_permutation_test_score",
                       "_incremental_fit_estimator"})
_CV_MODULE = "sklearn.model_selection._validation"
#: Callers of those steps that record a failed fit as NaN without raising or warning.
_SWALLOWING = frozenset({"validation_curve"})
_SCORER_MODULE = "sklearn.metrics._scorer"
_MAX_DEPTH = 80
_CONTAINERS = {"frame": "DataFrame", "array": "2-D array", "dict": "dict"}


# ---------------------------------------------------------------------------
# Which scorers are plain, and what they measure


def _metric_function(scorer):
    func = scorer._score_func
    while isinstance(func, functools.partial):
        func = func.func
    return func


def uses_sklearn_metric(scorer):
    """Whether ``scorer`` is scikit-learn's scorer of one of scikit-learn's metrics (what a
    metric name gives): a plain scorer."""
    module = getattr(_metric_function(scorer), "__module__", None) or ""
    return module.startswith("sklearn.metrics")


def _family(scorer):
    """'regression' or 'classification': the kind of target the metric is for."""
    module = getattr(_metric_function(scorer), "__module__", None) or ""
    return "regression" if module.startswith("sklearn.metrics._regression") else "classification"


def sklearn_scorers(scoring):
    """[(key, scorer)] of scikit-learn's ``_Scorer`` objects in a scorer or multi-metric
    scorer (plain ones and ``make_scorer`` of the user's functions; key None for one)."""
    if isinstance(scoring, _MultimetricScorer):
        scoring = scoring._scorers
    if isinstance(scoring, dict):
        found = [(key, s) for key, s in scoring.items() if isinstance(s, _Scorer)]
        if len(scoring) == 1:  # cross_val_score's {'score': scorer}: no key to show
            found = [(None, s) for _, s in found]
        return found
    return [(None, scoring)] if isinstance(scoring, _Scorer) else []


def _same_scorer(a, b):
    try:
        return (type(a) is type(b) and a._score_func is b._score_func and a._sign == b._sign
                and a._response_method == b._response_method and a._kwargs == b._kwargs)
    except Exception:  # kwargs that do not compare (arrays)
        return False


def scorer_name(scorer):
    """The scikit-learn scorer name that gives ``scorer``, or None (a make_scorer)."""
    for name in get_scorer_names():
        if _same_scorer(get_scorer(name), scorer):
            return name
    return None


def _describe(key, scorer):
    name = scorer_name(scorer)
    shown = repr(name) if name is not None else repr(scorer)
    return (f"scoring={shown}" if key is None else f"scoring[{key!r}]={shown}"), name


# ---------------------------------------------------------------------------
# The rules


def _has_missing(y):
    try:
        _, columns, _, _ = read_targets(y)
    except Exception:  # not readable as targets: scikit-learn's metric will say so
        return False
    return any(missing_mask(column).any() for column in columns)


def _suggestion(name, family, task):
    metric = repr(name) if name is not None else "<the same scorer>"
    by_kind = f"{{{family!r}: {metric}}}"
    return (f"sklearn_mtl.make_task_scorers(estimator, Y, metrics={by_kind}) (one score per "
            f"task, a dict for scoring= with refit=<task>), make_task_scorer({task!r}, "
            f"{metric}) (one task) or make_mean_task_scorer({by_kind}) (the mean over tasks, "
            "one number); these score each task on its observed labels only")


def problem(model, key, scorer, *, n_columns, container, tasks, y):
    """Why scikit-learn's ``scorer`` cannot score ``model`` on ``y`` meaningfully, or None.

    ``n_columns``: the columns of Y (auxiliary tasks included); ``container``: Y's
    form ('vector' for a 1-D y); ``tasks``: the fitted (or about to be fitted)
    tasks that ``predict`` answers for. A scorer of the user's own function is
    only checked for what scikit-learn's scorer machinery itself needs.
    """
    label, name = _describe(key, scorer)
    estimator = type(model).__name__
    names = [t.name for t in tasks]
    if not uses_sklearn_metric(scorer):
        if is_classifier(model) and container != "vector":
            return (f"{estimator} cannot be scored with {label}: scikit-learn's scorers read "
                    f"a classifier's classes_ as one array of labels, and this estimator, "
                    f"fitted on a Y with columns (a {_CONTAINERS.get(container, container)}), "
                    f"has them per task. Wrap the metric function in "
                    f"sklearn_mtl.make_task_scorer(task, metric) for one task of {names!r}, "
                    "or fit it on a 1-D y.")
        return None
    family = _family(scorer)
    fitting = [t.name for t in tasks if (family == "classification") == t.is_classifier]
    first = (fitting or names or ["<task>"])[0]
    if n_columns > 1 or len(tasks) != 1:
        return (f"{estimator} cannot be scored with {label}: a scikit-learn scorer compares y "
                f"with the prediction as one target, and this estimator has {n_columns} "
                f"target columns (tasks {names!r}); it can neither tell the tasks apart nor "
                f"skip their missing labels, so every score would be an error or NaN. Use "
                f"{_suggestion(name, family, first)}.")
    task = tasks[0]
    if _has_missing(y):
        return (f"{estimator} cannot be scored with {label}: y has missing labels, and a "
                "scikit-learn scorer scores every row (its metric fails on NaN). Use "
                f"{_suggestion(name, family, task.name)}.")
    kind = "classification" if task.is_classifier else "regression"
    if family != kind:
        examples = ("'accuracy', 'balanced_accuracy', 'roc_auc', 'neg_log_loss'"
                    if kind == "classification" else
                    "'r2', 'neg_mean_absolute_error', 'neg_root_mean_squared_error'")
        return (f"{estimator} cannot be scored with {label}: it is a {family} metric and task "
                f"{task.name!r} is a {kind} task ({task.kind}). Use a {kind} metric such as "
                f"{examples}; sklearn_mtl.make_task_scorer(task, metric) and "
                "make_task_scorers(estimator, Y, metrics={kind: metric}) pick a metric per "
                "task.")
    metric = repr(name) if name else "<metric>"
    if scorer._response_method != "predict" and not is_classifier(model):
        return (f"{estimator} cannot be scored with {label}: the metric reads predicted "
                f"probabilities, which scikit-learn's scorers take only from a scikit-learn "
                f"classifier, and {estimator} is none (its tasks may mix kinds). Fit "
                f"MultiTaskClassifier on this classification y, or use "
                f"sklearn_mtl.make_task_scorer({task.name!r}, {metric}).")
    if is_classifier(model) and container != "vector":
        return (f"{estimator} cannot be scored with {label}: it was fitted on a Y with columns "
                f"(a {_CONTAINERS.get(container, container)}), so its classes_ and "
                "predict_proba are per task, which scikit-learn's scorers cannot read. Fit it "
                "on a 1-D y (a Series or 1-D array) to use it as an ordinary classifier, or "
                f"use {_suggestion(name, family, task.name)}.")
    return None


# ---------------------------------------------------------------------------
# Finding the scorer on the call stack


def _ends_in(estimator, model):
    """Whether ``estimator`` is ``model`` or a Pipeline (of Pipelines) ending in it."""
    for _ in range(20):
        if estimator is model:
            return True
        if not isinstance(estimator, Pipeline):
            return False
        estimator = estimator.steps[-1][1]
    return False


def _cv_step(model):
    """(scorer, full y, swallowed) of the scikit-learn cross-validation step fitting
    ``model``, or None; ``swallowed``: the step runs under a function that keeps going
    when every fit fails (validation_curve), so only a warning can reach the user."""
    frame = sys._getframe(2)
    try:
        for _ in range(_MAX_DEPTH):
            if frame is None:
                return None
            if frame.f_globals.get("__name__") == _CV_MODULE:
                if frame.f_code.co_name not in _CV_STEPS:
                    return None  # another helper (cross_val_predict's): no scorer of ours
                local = frame.f_locals
                if not _ends_in(local.get("estimator"), model):
                    return None  # the step fits something that contains this estimator
                step = local.get("scorer"), local.get("y")
                break
            frame = frame.f_back
        else:
            return None
        swallowed = False
        for _ in range(_MAX_DEPTH):
            frame = frame.f_back
            if frame is None:
                break
            if frame.f_globals.get("__name__") == _CV_MODULE and \
                    frame.f_code.co_name in _SWALLOWING:
                swallowed = True
                break
        return (*step, swallowed)
    finally:
        del frame


def _calling_scorer(model):
    """(scorer, y_true) of the scikit-learn ``_Scorer`` calling ``model``, or None."""
    frame = sys._getframe(2)
    try:
        for _ in range(_MAX_DEPTH):
            if frame is None:
                return None
            if frame.f_code.co_name == "_score" and \
                    frame.f_globals.get("__name__") == _SCORER_MODULE:
                local = frame.f_locals
                scorer = local.get("self")
                if not isinstance(scorer, _Scorer) or \
                        not _ends_in(local.get("estimator"), model):
                    return None
                return scorer, local.get("y_true")
            frame = frame.f_back
        return None
    finally:
        del frame


# ---------------------------------------------------------------------------
# The checks the estimator calls


class FitCheck:
    """The plain scorers a cross-validation step will use on this fit.

    Built at the start of ``fit`` (after the tasks are known): raises when one
    cannot score these tasks. :meth:`trial` runs the remaining ones once on
    the training rows after training.
    """

    def __init__(self, model, tasks, n_columns, container, y, step=None):
        self.scorers = []
        self.swallowed = False
        # ``step``: (scorer, full y) given by a caller that scores the fit itself.
        step = _cv_step(model) if step is None else (*step, False)
        if step is None:
            return
        scoring, full_y, swallowed = step
        predicted = [t for t in tasks if not t.auxiliary]
        for key, scorer in sklearn_scorers(scoring):
            message = problem(model, key, scorer, n_columns=n_columns, container=container,
                              tasks=predicted, y=y if full_y is None else full_y)
            if message is not None:
                if swallowed:
                    warnings.warn(message, UserWarning, stacklevel=3)
                raise ValueError(message)
            if uses_sklearn_metric(scorer):
                self.scorers.append((key, scorer))
        self.swallowed = swallowed

    def trial(self, model, X, y):
        """Each remaining plain scorer on the training rows; a failure is refused."""
        for key, scorer in self.scorers:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scorer(model, X, y)
            except Exception as exc:
                label, name = _describe(key, scorer)
                task = model.task_names_[0]
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                message = (
                    f"{type(model).__name__} cannot be scored with {label}: it fails on the "
                    f"estimator's own training rows ({type(exc).__name__}: {detail}), so every "
                    "held-out score would be NaN. Choose a metric that fits the task (for a "
                    "multiclass task e.g. 'roc_auc_ovr', 'f1_macro'), or use "
                    f"make_task_scorer({task!r}, {repr(name) if name else '<metric>'}, "
                    "**options) with the metric's options.")
                if self.swallowed:
                    warnings.warn(message, UserWarning, stacklevel=3)
                raise ValueError(message) from None


def check_scorer_call(model):
    """Refuse, with the rules' message, a plain scikit-learn scorer calling ``model``."""
    found = _calling_scorer(model)
    if found is None:
        return
    scorer, y_true = found
    predicted = [t for t in model.tasks_ if not t.auxiliary]
    message = problem(model, None, scorer, n_columns=len(model.tasks_),
                      container=model.target_format_.container, tasks=predicted, y=y_true)
    if message is not None:
        raise ValueError(message)
