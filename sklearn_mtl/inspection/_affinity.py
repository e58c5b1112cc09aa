"""Task affinity from one recorded fit, and task groupings that follow it."""

from itertools import combinations
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..callbacks import AVERAGES, TaskAffinity, _check_every, _check_method
from ._utils import final_step

__all__ = ["suggest_task_groups", "task_affinity"]

#: Up to this many tasks suggest_task_groups searches every partition.
EXHAUSTIVE_MAX_TASKS = 10


def task_affinity(estimator, X, Y, *, method="lookahead", every=10, random_state=None,
                  average="loss"):
    """Fit (a clone of) ``estimator`` on X, Y while recording task affinity.

    Parameters
    ----------
    estimator : multi-task estimator or Pipeline ending in one
        Cloned; a :class:`~sklearn_mtl.callbacks.TaskAffinity` callback is added
        to its ``callbacks``.
    X, Y : the training data, as ``fit`` takes them.
    method : {'lookahead', 'gradient_cosine'}, default='lookahead'
        'lookahead': TAG's inter-task affinity (Fifty et al. 2021), the relative
        change of task j's batch loss after a plain SGD step (the optimizer's
        lr) along task i's gradient alone on the shared parameters,
        ``1 - L_j(theta_s - lr g_i) / L_j(theta_s)``. 'gradient_cosine': the
        cosine of task i's and task j's gradients on the shared parameters.
    every : int, default=10
        Record every ``every``-th training step.
    random_state : int or None, default=None
        The fit's ``random_state`` (None: the estimator's own).
    average : {'loss', 'uniform'}, default='loss'
        How the recorded steps are averaged: each weighted by the product of
        the two tasks' batch losses (so that the steps after the tasks are
        fitted, mostly noise, count less), or uniformly (TAG's average). See
        :class:`~sklearn_mtl.callbacks.TaskAffinity` for why.

    Returns
    -------
    DataFrame (T, T)
        Rows: source task i; columns: target task j (every trained task,
        auxiliary ones included). ``attrs`` holds the method and the number
        of recorded steps.
    """
    _check_method("task_affinity", method)
    _check_every("task_affinity", every)
    if average not in AVERAGES:
        raise ValueError(f"task_affinity(average={average!r}): average must be one of "
                         f"{list(AVERAGES)}.")
    fitted = clone(estimator)
    model, prefix = final_step(fitted)
    recorder = TaskAffinity(method=method, every=every, average=average)
    params = {prefix + "callbacks": list(model.callbacks or []) + [recorder]}
    if random_state is not None:
        params[prefix + "random_state"] = random_state
    fitted.set_params(**params)
    fitted.fit(X, Y)
    model, _ = final_step(fitted)
    # The net holds copies of the callbacks: ours is the last TaskAffinity.
    recorded = [cb for _, cb in model.net_.callbacks_ if isinstance(cb, TaskAffinity)][-1]
    return recorded.affinity_


# ---------------------------------------------------------------------------
# Groupings


def _affinity_matrix(affinity):
    """(names, symmetric matrix with a zero diagonal) from a square DataFrame or array."""
    if isinstance(affinity, pd.DataFrame):
        same_tasks = affinity.index.equals(affinity.columns) or (
            affinity.index.is_unique and set(affinity.index) == set(affinity.columns))
        if affinity.shape[0] != affinity.shape[1] or not same_tasks:
            raise ValueError(f"affinity must be a square table whose rows and columns are the "
                             f"same tasks; got rows {list(affinity.index)!r} and columns "
                             f"{list(affinity.columns)!r}.")
        names = list(affinity.index)
        values = affinity.reindex(columns=affinity.index).to_numpy(dtype=float)
    else:
        values = np.asarray(affinity, dtype=float)
        if values.ndim != 2 or values.shape[0] != values.shape[1]:
            raise ValueError(f"affinity must be a square (T, T) matrix; got shape "
                             f"{values.shape}.")
        names = list(range(values.shape[0]))
    if np.isinf(values).any():
        raise ValueError("affinity holds infinite values.")
    values = np.where(np.isnan(values), 0.0, values)  # a pair never recorded counts 0
    S = 0.5 * (values + values.T)
    np.fill_diagonal(S, 0.0)
    return names, S


def _partitions(n, k):
    """Every partition of range(n) into exactly k non-empty blocks, as restricted growth
    strings (an (N, n) array of block labels, the first element in block 0)."""
    out = []
    labels = [0] * n

    def grow(i, used):
        # Not enough elements left to open the blocks still missing.
        if k - used > n - i:
            return
        if i == n:
            out.append(labels.copy())
            return
        for b in range(min(used + 1, k)):
            labels[i] = b
            grow(i + 1, max(used, b + 1))

    grow(1, 1) if n else None
    return np.array(out, dtype=np.int8).reshape(-1, n)


def _total(labels, S):
    same = labels[..., :, None] == labels[..., None, :]
    return 0.5 * (same * S).sum(axis=(-2, -1))


def _exhaustive(S, k):
    best, best_score = None, -np.inf
    parts = _partitions(S.shape[0], k)
    for start in range(0, len(parts), 20000):
        chunk = parts[start:start + 20000]
        scores = _total(chunk, S)
        i = int(np.argmax(scores))
        if scores[i] > best_score + 1e-12:
            best, best_score = chunk[i], scores[i]
    return best


def _heuristic(S, k):
    """Greedy agglomeration (merge the two groups with the largest affinity between them
    until k are left), then single-task moves that raise the total until none does."""
    T = S.shape[0]
    groups = [[i] for i in range(T)]
    while len(groups) > k:
        gain, a, b = max((S[np.ix_(g, h)].sum(), a, b)
                         for (a, g), (b, h) in combinations(enumerate(groups), 2))
        groups[a] = groups[a] + groups[b]
        del groups[b]
    labels = np.empty(T, dtype=int)
    for g, members in enumerate(groups):
        labels[members] = g
    for _ in range(100 * T):
        # affinity of each task to each group: (T, k)
        to_group = np.stack([S[:, labels == g].sum(1) for g in range(k)], 1)
        sizes = np.bincount(labels, minlength=k)
        own = to_group[np.arange(T), labels]
        gains = to_group - own[:, None]
        gains[sizes[labels] == 1, :] = -np.inf  # a group never empties
        gains[np.arange(T), labels] = -np.inf
        i, g = np.unravel_index(np.argmax(gains), gains.shape)
        if not gains[i, g] > 1e-12:
            break
        labels[i] = g
    return labels


def suggest_task_groups(affinity, n_groups):
    """The partition of the tasks into ``n_groups`` groups with the largest total
    within-group affinity.

    The affinity is symmetrised first (a pair counts ``(A[i, j] + A[j, i]) / 2``;
    the diagonal is ignored, a NaN pair counts 0), and the total is the sum over
    the pairs of tasks placed in the same group. With up to
    ``EXHAUSTIVE_MAX_TASKS`` (10) tasks every partition into ``n_groups``
    non-empty groups is scored (at most 42,525 of them), so the answer is the
    optimum; with more, greedy agglomeration (repeatedly merge the two groups
    with the largest affinity between them) followed by moves of single tasks
    between groups while a move raises the total: a local optimum.

    Note that the objective favours large groups when affinities are
    positive: a task with no affinity to anyone else ends up alone only when
    the number of groups leaves room for it.

    Parameters
    ----------
    affinity : DataFrame (T, T) or array
        E.g. from :func:`task_affinity` or ``task_affinity_`` (rows: source task).
    n_groups : int in [1, T]

    Returns
    -------
    list of lists
        The groups, each a list of task labels in the affinity's order; groups
        ordered by their first task.
    """
    names, S = _affinity_matrix(affinity)
    T = len(names)
    if (isinstance(n_groups, bool) or not isinstance(n_groups, Integral)
            or not 1 <= n_groups <= max(T, 1)):
        raise ValueError(f"n_groups must be an integer from 1 to the number of tasks ({T}); "
                         f"got {n_groups!r}.")
    if T == 0:
        return []
    labels = _exhaustive(S, int(n_groups)) if T <= EXHAUSTIVE_MAX_TASKS else _heuristic(
        S, int(n_groups))
    order = list(dict.fromkeys(int(g) for g in labels))
    return [[names[i] for i in range(T) if labels[i] == g] for g in order]
