"""The estimator parameters that name tasks, resolved once per fit.

``tasks`` (kinds), ``losses``, ``loss_weights``, ``auxiliary_tasks``,
``head_inputs``, ``task_depth`` and partial_fit's ``classes`` can only be
checked against Y's task names. :func:`resolve_task_params` checks them all
and returns one :class:`TaskParams` record in task order; the rest of the
fit reads that record, never the raw parameters.
"""

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ._tasks import ALL_LOSSES, DECLARABLE_KINDS, find_task


@dataclass(frozen=True)
class TaskParams:
    """Task-keyed parameters, resolved against the task names (in task order)."""

    names: list
    kinds: dict  # task -> declared kind (absent: inferred)
    losses: dict  # task -> loss name or callable (absent: the kind's default)
    weights: np.ndarray  # (T,) static loss weights
    auxiliary: frozenset  # tasks trained but not predicted
    head_inputs: dict  # task -> list of tasks whose outputs its head reads
    depths: dict  # task -> 1-based shared layer its head reads
    classes: dict  # task -> all class labels (partial_fit's classes)


def by_task(param, mapping, names):
    """``{task: value}`` from a dict keyed by task labels (see :func:`find_task`);
    unknown keys raise a ValueError naming the parameter and the tasks."""
    out, unknown = {}, []
    for key, value in mapping.items():
        name = find_task(key, names)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise ValueError(f"{param} names unknown task(s) {unknown!r}; the tasks are {names!r}.")
    return out


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (str, Integral)) or not isinstance(value, (list, tuple, set)):
        return [value]
    return list(value)


def _kinds(tasks, names, allowed):
    kinds = {}
    if isinstance(tasks, dict):
        for name, kind in by_task("tasks", tasks, names).items():
            if not isinstance(kind, str) or kind not in DECLARABLE_KINDS:
                raise ValueError(f"tasks[{name!r}]={kind!r} is not a task kind; use one of "
                                 f"{list(DECLARABLE_KINDS)}.")
            kinds[name] = kind
    if allowed is not None:
        default = allowed[0] if len(allowed) == 1 else "classification"
        for name in names:
            kinds.setdefault(name, default)
    return kinds


def _losses(losses, names):
    out = by_task("losses", losses or {}, names)
    for name, loss in out.items():
        if isinstance(loss, str):
            if loss not in ALL_LOSSES:
                raise ValueError(f"losses[{name!r}]={loss!r} is not a known loss; use one of "
                                 f"{list(ALL_LOSSES)} or a torch loss callable.")
        elif not callable(loss):
            raise TypeError(f"losses[{name!r}] must be a loss name or a callable "
                            f"loss(y_pred, y_true); got {type(loss).__name__}.")
    return out


def static_weights(loss_weights, names):
    """(T,) float weights from ``loss_weights`` (None, dict task -> w, one per task)."""
    if loss_weights is None:
        return np.ones(len(names))
    if isinstance(loss_weights, dict):
        items = by_task("loss_weights", loss_weights, names)
    else:
        values = list(np.asarray(loss_weights, dtype=object).ravel()) \
            if np.ndim(loss_weights) else [loss_weights]
        if len(values) != len(names):
            raise ValueError(
                f"loss_weights has {len(values)} entries but there are {len(names)} tasks "
                f"{names!r}; give one weight per task or a dict task -> weight.")
        items = dict(zip(names, values))
    weights = np.ones(len(names))
    for j, name in enumerate(names):
        if name not in items:
            continue
        value = items[name]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
            raise TypeError(f"loss_weights[{name!r}] must be a non-negative number; got "
                            f"{value!r} ({type(value).__name__}).")
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"loss_weights[{name!r}] must be a finite number >= 0; got "
                             f"{value!r}.")
        weights[j] = float(value)
    if not weights.any():
        raise ValueError("All loss_weights are 0: no task would be trained; give one a "
                         "positive weight.")
    return weights


def _auxiliary(auxiliary_tasks, names):
    aux = _as_list(auxiliary_tasks)
    found = by_task("auxiliary_tasks", dict.fromkeys(aux), names) if aux else {}
    if len(found) == len(names):
        raise ValueError(f"auxiliary_tasks names every task {names!r}: leave at least one task "
                         "to predict.")
    return frozenset(found)


def _head_inputs(head_inputs, names):
    out = {}
    for name, sources in by_task("head_inputs", head_inputs or {}, names).items():
        out[name] = list(by_task(f"head_inputs[{name!r}]", dict.fromkeys(_as_list(sources)),
                                 names))
    return out


def _depths(task_depth, names, n_layers):
    out = by_task("task_depth", task_depth or {}, names)
    for name, depth in out.items():
        if isinstance(depth, bool) or not isinstance(depth, Integral) or not (
                1 <= depth <= n_layers):
            raise ValueError(
                f"task_depth[{name!r}]={depth!r}: a depth is a shared layer number from 1 to "
                f"{n_layers} (the number of hidden_layer_sizes).")
        out[name] = int(depth)
    return out


def classes_by_task(classes, names):
    """partial_fit's ``classes`` as a dict task -> labels."""
    if classes is None:
        return {}
    if isinstance(classes, dict):
        return by_task("classes", classes, names)
    if len(names) == 1:
        values = np.asarray(classes)
        # [labels] (scikit-learn's multi-output form with one output) or labels.
        return {names[0]: values[0] if values.ndim == 2 and len(values) == 1 else values}
    if isinstance(classes, (list, tuple)) and len(classes) == len(names):
        return {name: c for name, c in zip(names, classes) if c is not None}
    raise ValueError(f"classes must be a dict task -> labels or a list with one entry per "
                     f"task {names!r}; got {classes!r}.")


def check_same_classes(tasks, name, labels):
    """partial_fit's ``classes`` for ``name`` on a later call must be the fitted ones."""
    known = next(t for t in tasks if t.name == name).classes_
    if known is None or not np.array_equal(np.unique(np.asarray(labels)), known):
        raise ValueError(
            f"classes={np.asarray(labels).tolist()!r} for task {name!r} is not the same as "
            f"on the first call to partial_fit "
            f"({None if known is None else known.tolist()!r}).")


def resolve_task_params(estimator, names, n_layers, classes=None):
    """Check every task-keyed parameter of ``estimator`` against ``names``."""
    return TaskParams(
        names=list(names),
        kinds=_kinds(estimator.tasks, names, estimator._allowed_kinds),
        losses=_losses(estimator.losses, names),
        weights=static_weights(estimator.loss_weights, names),
        auxiliary=_auxiliary(estimator.auxiliary_tasks, names),
        head_inputs=_head_inputs(estimator.head_inputs, names),
        depths=_depths(estimator.task_depth, names, n_layers),
        classes=classes_by_task(classes, names),
    )
