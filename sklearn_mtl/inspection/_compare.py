"""Does multi-task learning help here? One network for all tasks against one per task.

For every fold of a cross-validation the estimator (a clone) is fitted once on
all tasks and once more on each task alone, with the same hyperparameters and
the same training budget (epochs, batch size, optimiser, seed), the way a
single-task model would be trained: on the fold's rows where that task has a
label. Every task is scored on the fold's held-out rows where it has a label.
The per-fold differences (multi-task minus single-task) get a confidence
interval from the corrected resampled t-test of Nadeau & Bengio (2003).

Why that interval. The K differences of one task are not independent: any
two training sets of a K-fold split share (K-2)/(K-1) of their rows, so the
fold scores move together and the spread of the differences understates the
uncertainty of their mean; the plain t-interval on K differences is too
narrow and declares too many differences significant (Dietterich 1998;
Nadeau & Bengio 2003). Nadeau & Bengio's correction replaces the variance
factor 1/J of the mean of J resampled differences by ``1/J + n_test/n_train``,
which accounts for the overlap (for K-fold, n_test/n_train = 1/(K-1)); with
J - 1 degrees of freedom. Bouckaert & Frank (2004) found such corrected
tests to keep their nominal error rate where the uncorrected ones exceed it.
The price is power: with 5 folds the mean difference must exceed about 1.9
standard deviations of the fold differences. It is still an approximation
(the correlation it assumes is a heuristic), so the verdict is a guide, not
a proof.
"""

from numbers import Integral, Real

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats
from sklearn.base import clone
from sklearn.model_selection import KFold
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.validation import _num_samples

from .._scoring import DEFAULT_METRICS, target_columns, task_score
from .._task_params import resolve_task_params
from .._tasks import find_task, fit_tasks, missing_mask, read_targets
from .._validation import as_sizes
from ..metrics import _multitask_estimator, _resolve_metric, _select
from ._utils import final_step

__all__ = ["compare_single_task"]

VERDICTS = ("helps", "hurts", "no clear difference")
INTERVAL = "corrected resampled t-interval (Nadeau & Bengio 2003) on the per-fold differences"
_KIND_KEYS = ("regression", "classification", "binary", "multiclass")


# ---------------------------------------------------------------------------
# Tasks, metrics and folds


def _tasks(model, Y):
    """[(name, kind)] of every task a fit on Y trains, and the set of auxiliary ones."""
    task_names = list(model.tasks) if isinstance(model.tasks, (list, tuple)) else None
    names, columns, dtypes, _ = read_targets(Y, task_names)
    params = resolve_task_params(model, names, len(as_sizes("hidden_layer_sizes",
                                                            model.hidden_layer_sizes)))
    tasks = fit_tasks(names, columns, dtypes, params.kinds, {})
    return [(t.name, t.kind) for t in tasks], set(params.auxiliary)


def _metric_for(name, kind, scoring, names):
    """The metric (name, scorer or function) of one task."""
    general = "regression" if kind == "regression" else "classification"
    if scoring is None:
        return DEFAULT_METRICS[general]
    if not isinstance(scoring, dict):
        return scoring
    for key, value in scoring.items():
        if find_task(key, names) == name:
            return value
    return scoring.get(kind, scoring.get(general, DEFAULT_METRICS[general]))


def _resolve_scoring(scoring, tasks):
    """dict task -> (func, sign, options, method, label), checked before any fit."""
    names = [name for name, _ in tasks]
    if isinstance(scoring, dict):
        unknown = [k for k in scoring if find_task(k, names) is None and k not in _KIND_KEYS]
        if unknown:
            raise ValueError(f"scoring names unknown task(s) {unknown!r}; the tasks are "
                             f"{names!r} (a key may also be a kind: {list(_KIND_KEYS)}).")
    elif scoring is not None and not (isinstance(scoring, str) or callable(scoring)):
        raise TypeError(f"scoring must be None, a metric name (e.g. 'r2', 'roc_auc'), a "
                        f"scorer, or a dict task -> metric; got {scoring!r}.")
    resolved = {}
    for name, kind in tasks:
        metric = _metric_for(name, kind, scoring, names)
        if isinstance(metric, (list, tuple)):
            raise TypeError(f"scoring gives task {name!r} several metrics {metric!r}; "
                            "compare_single_task takes one metric per task.")
        func, sign, options, method = _resolve_metric(metric, True, None, {})
        if kind == "regression" and method != "predict":
            raise ValueError(f"scoring gives the regression task {name!r} the metric "
                             f"{metric!r}, which needs predicted probabilities.")
        if isinstance(metric, str):
            label = metric
        else:  # a scorer (its metric function's name) or a metric function
            label = getattr(getattr(metric, "_score_func", metric), "__name__",
                            type(metric).__name__)
        resolved[name] = (func, sign, options, method, label)
    return resolved


def _splits(cv, X, Y, rng):
    n = _num_samples(X)
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv={cv} folds: cross-validation needs at least 2.")
        if cv > n:
            raise ValueError(f"cv={cv} folds but X has only {n} rows.")
        splitter = KFold(int(cv), shuffle=True, random_state=rng.randint(np.iinfo(np.int32).max))
        return list(splitter.split(np.zeros((n, 1))))
    if isinstance(cv, (str, bytes, bool)):
        raise TypeError(f"cv must be a number of folds, a scikit-learn splitter or an "
                        f"iterable of (train, test) index arrays; got {cv!r}.")
    if hasattr(cv, "split"):
        y = Y if np.ndim(Y) == 1 and not isinstance(Y, dict) else None
        return list(cv.split(X, y))
    try:
        splits = [(np.asarray(train), np.asarray(test)) for train, test in cv]
    except (TypeError, ValueError):
        raise TypeError(f"cv must be a number of folds, a scikit-learn splitter or an "
                        f"iterable of (train, test) index arrays; got {cv!r}.") from None
    if not splits:
        raise ValueError("cv gave no (train, test) split.")
    return splits


# ---------------------------------------------------------------------------
# One task alone


def _restricted(value, name, names):
    """A task-keyed dict restricted to ``name`` (keys as the user wrote them), or None."""
    kept = {k: v for k, v in value.items() if find_task(k, names) == name}
    return kept or None


def _class_weight_for(class_weight, name, tasks):
    names = [n for n, _ in tasks]
    if class_weight is None or isinstance(class_weight, str):
        return class_weight
    if isinstance(class_weight, dict):
        if any(find_task(k, names) is not None for k in class_weight):
            return _restricted(class_weight, name, names)
        # scikit-learn's single-output form {label: weight}: the one classification task's.
        classifiers = [n for n, kind in tasks if kind != "regression"]
        return class_weight if classifiers == [name] else None
    if isinstance(class_weight, (list, tuple)) and len(class_weight) == len(names):
        entry = class_weight[names.index(name)]
        return None if entry is None else {name: entry}
    return class_weight  # let the estimator report what is wrong with it


def single_task_params(model, name, tasks):
    """The parameters of ``model`` for a fit on task ``name`` alone: every task-keyed
    parameter restricted to that task, the others unchanged."""
    names = [n for n, _ in tasks]
    params = {}
    if isinstance(model.tasks, (list, tuple)):
        params["tasks"] = [name]
    elif isinstance(model.tasks, dict):
        params["tasks"] = _restricted(model.tasks, name, names)
    for key in ("losses", "task_depth"):
        value = getattr(model, key)
        if isinstance(value, dict):
            params[key] = _restricted(value, name, names)
    weights = model.loss_weights
    if isinstance(weights, dict):
        weights = _restricted(weights, name, names)
    elif weights is not None and np.ndim(weights) and len(weights) == len(names):
        weights = {name: weights[names.index(name)]}
    if isinstance(weights, dict) and all(
            isinstance(w, Real) and not isinstance(w, bool) and w == 0
            for w in weights.values()):
        weights = None  # a task alone is trained whatever its weight in the mix
    params["loss_weights"] = weights
    params["auxiliary_tasks"] = None
    params["head_inputs"] = None
    params["class_weight"] = _class_weight_for(model.class_weight, name, tasks)
    return params


def _rows(data, idx):
    if isinstance(data, dict):
        return {k: _safe_indexing(np.asarray(v) if isinstance(v, list) else v, idx)
                for k, v in data.items()}
    return _safe_indexing(data, idx)


def _single_target(Y, name, column):
    """Task ``name``'s column of Y in a form whose task is named ``name``."""
    if isinstance(Y, pd.DataFrame):
        position = [i for i, c in enumerate(Y.columns) if c is name or c == name][0]
        return Y.iloc[:, [position]]
    if isinstance(Y, dict):
        key = next(k for k in Y if k is name or k == name)
        return {key: Y[key]}
    return {name: column}


# ---------------------------------------------------------------------------
# One fit


def _fit_and_score(estimator, X, Y, train, test, names, metrics):
    """Fit on the train rows, return {task: score} on the test rows."""
    fitted = estimator.fit(_rows(X, train), _rows(Y, train))
    X_test, Y_test = _rows(X, test), _rows(Y, test)
    model = _multitask_estimator(fitted)
    truth = target_columns(model, Y_test)
    outputs = {}
    scores = {}
    for name in names:
        func, sign, options, method, _ = metrics[name]
        if method not in outputs:
            outputs[method] = getattr(fitted, method)(X_test)
        predicted = _select(outputs[method], name, model.task_names_)
        task = next(t for t in model.tasks_ if t.name == name)
        scores[name] = sign * task_score(func, task, truth[name], predicted, method, options)
    return scores


# ---------------------------------------------------------------------------
# The comparison


def _interval(differences, ratio, confidence):
    """(mean, low, high) of the corrected resampled t-interval (NaN below 2 folds)."""
    J = len(differences)
    if J == 0:
        return np.nan, np.nan, np.nan
    mean = float(np.mean(differences))
    if J < 2:
        return mean, np.nan, np.nan
    sd = float(np.std(differences, ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, J - 1) * sd * np.sqrt(1.0 / J + ratio)
    return mean, mean - half, mean + half


def _verdict(low, high):
    if np.isfinite(low) and low > 0:
        return "helps"
    if np.isfinite(high) and high < 0:
        return "hurts"
    return "no clear difference"


def compare_single_task(estimator, X, Y, *, cv=5, scoring=None, n_jobs=None,
                        random_state=None, confidence=0.95):
    """Cross-validated comparison of one multi-task network with one network per task.

    In every fold a clone of ``estimator`` is fitted on all tasks, and one
    more clone per task on that task alone, as a single-task model would be
    trained: on the fold's training rows where the task has a label, with the
    same hyperparameters and budget (``max_epochs``, ``batch_size``, the
    optimiser, the fold's seed), the task-keyed parameters (``tasks``,
    ``losses``, ``loss_weights``, ``task_depth``, ``class_weight``) restricted
    to the task, and no auxiliary tasks or ``head_inputs``. Every predicted
    task is scored on the fold's held-out rows where it has a label.

    Parameters
    ----------
    estimator : multi-task estimator or Pipeline ending in one
        Cloned; what is passed is not fitted or changed.
    X : array-like or DataFrame (n_samples, n_features)
    Y : the targets, in any form ``fit`` takes; missing labels allowed.
    cv : int, splitter or iterable of (train, test), default=5
        An int is the number of folds of a *shuffled* ``KFold`` (a table
        sorted by a label still gets folds with every class). A splitter's
        ``split(X, y)`` gets ``y=Y`` when Y is one column.
    scoring : None, metric or dict, default=None
        None: R² for regression tasks, accuracy for classification tasks (as
        ``score_tasks``). A metric name (``'roc_auc'``,
        ``'neg_mean_absolute_error'``, ...: greater is better), a scorer, or a
        dict task (or kind) -> metric; tasks not named get the default.
    n_jobs : int, default=None
        Fits run in parallel with joblib over (fold, fit) pairs; None: one
        at a time.
    random_state : int, RandomState or None, default=None
        Seeds the fold shuffling and the fits (every fit of one fold gets the
        same seed: paired comparisons). None: fresh folds, and the fits keep
        the estimator's own ``random_state``.
    confidence : float in (0, 1), default=0.95
        Level of the interval.

    Returns
    -------
    DataFrame indexed by task, with columns
        ``multi_task``, ``single_task``: the mean held-out scores;
        ``difference``: the mean of the per-fold differences (multi-task
        minus single-task: positive means multi-task learning scores better);
        ``ci_low``, ``ci_high``: the corrected resampled t-interval of the
        mean difference (Nadeau & Bengio 2003; see the module docstring for
        why not the plain t-interval); NaN with fewer than two folds;
        ``verdict``: ``'helps'`` when the interval lies above 0, ``'hurts'``
        when below, else ``'no clear difference'``.
        ``attrs`` holds the metric of each task (``'metrics'``), the per-fold
        scores (``'fold_scores'``), the interval's description and level.
    """
    if (isinstance(confidence, bool) or not isinstance(confidence, Real)
            or not 0 < confidence < 1):
        raise ValueError(f"confidence must be a number in (0, 1); got {confidence!r}.")
    model, prefix = final_step(estimator)
    if Y is None:
        raise ValueError("compare_single_task needs Y, the task targets.")
    tasks, auxiliary = _tasks(model, Y)
    predicted = [(name, kind) for name, kind in tasks if name not in auxiliary]
    names = [name for name, _ in predicted]
    metrics = _resolve_scoring(scoring, predicted)
    rng = check_random_state(random_state)
    splits = _splits(cv, X, Y, rng)
    seeds = (None if random_state is None
             else rng.randint(np.iinfo(np.int32).max, size=len(splits)).tolist())
    _, columns, _, _ = read_targets(Y, list(model.tasks) if isinstance(
        model.tasks, (list, tuple)) else None)
    column_of = dict(zip([name for name, _ in tasks], columns))

    labelled = {name: ~missing_mask(column_of[name]) for name in names}
    jobs = []
    for k, (train, test) in enumerate(splits):
        base = clone(estimator)
        if seeds is not None:
            base.set_params(**{prefix + "random_state": seeds[k]})
        jobs.append((k, None, base, Y, train, test, names))
        for name in names:
            single = clone(base)
            single.set_params(**{prefix + key: value for key, value
                                 in single_task_params(model, name, tasks).items()})
            # The rows where the task has a label: a network of its own trains on those.
            rows = np.asarray(train)[labelled[name][np.asarray(train)]]
            jobs.append((k, name, single, _single_target(Y, name, column_of[name]), rows,
                         test, [name]))
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score)(est, X, target, train, test, scored, metrics)
        for _, _, est, target, train, test, scored in jobs)

    J = len(splits)
    multi = {name: np.full(J, np.nan) for name in names}
    single = {name: np.full(J, np.nan) for name in names}
    for (k, name, *_), scores in zip(jobs, results):
        if name is None:
            for task, value in scores.items():
                multi[task][k] = value
        else:
            single[name][k] = scores[name]
    ratios = np.array([len(test) / max(len(train), 1) for train, test in splits])

    rows = []
    for name in names:
        ok = np.isfinite(multi[name]) & np.isfinite(single[name])
        differences = multi[name][ok] - single[name][ok]
        mean, low, high = _interval(differences, float(ratios[ok].mean()) if ok.any() else 0.0,
                                    confidence)
        rows.append({
            "multi_task": float(np.mean(multi[name][ok])) if ok.any() else np.nan,
            "single_task": float(np.mean(single[name][ok])) if ok.any() else np.nan,
            "difference": mean, "ci_low": low, "ci_high": high,
            "verdict": _verdict(low, high),
        })
    table = pd.DataFrame(rows, index=pd.Index(names, name="task", tupleize_cols=False),
                         columns=["multi_task", "single_task", "difference", "ci_low",
                                  "ci_high", "verdict"])
    table.attrs.update(
        metrics={name: metrics[name][4] for name in names},
        fold_scores={name: {"multi_task": multi[name].tolist(),
                            "single_task": single[name].tolist()} for name in names},
        interval=INTERVAL, confidence=float(confidence), n_splits=J,
    )
    return table
