"""Retrieval features: the labels of each row's nearest training rows, as inputs.

With ``n_neighbors=k`` every row of X gets, for each task, the mean label of
its 1, 4, 16, ... and k nearest *training* rows labelled for that task
(Euclidean distance in X as given; regression labels standardised as the
network sees them, classes one-hot, binary tasks their positive class), and
the log of one plus the distance to the nearest of them. The network reads
them next to X. This is the retrieval idea of TabR (Gorishniy et al. 2024,
"TabR: Tabular Deep Learning Meets Nearest Neighbors") in its plainest form:
the neighbours are found in the input space, not in a learned one, so they are
computed once per fit rather than per step.

Leakage is ruled out by construction:

* the candidates are the training rows of the fit (never its validation rows)
  whose label of the task is observed and whose sample weight is positive;
* a training row is never its own neighbour (its own label would be an input
  that predicts itself): it is left out of its own candidate list by index,
  so that an exact duplicate of it, a different row, still counts;
* validation rows and rows given to ``predict`` look up the training rows only.

The state is plain data (arrays), so a fitted model saves as any other.
"""

import numpy as np
from sklearn.neighbors import NearestNeighbors

# The neighbour counts whose mean labels are features: powers of 4 up to k, and k.
_GROWTH = 4


def neighbour_sizes(n_neighbors):
    """The counts ``1, 4, 16, ...`` below ``n_neighbors``, then ``n_neighbors``."""
    sizes, size = [], 1
    while size < n_neighbors:
        sizes.append(size)
        size *= _GROWTH
    return tuple(sizes + [int(n_neighbors)])


def _label_values(task, codes):
    """A task's encoded labels as the values its neighbours' means are taken of:
    (n, 1) for regression and binary tasks, (n, n_classes) one-hot otherwise."""
    if not task.is_classifier:
        return codes.reshape(-1, 1).astype(np.float32)
    codes = codes.astype(np.int64)
    if task.n_outputs == 1:  # binary: the positive class
        return (codes == 1).astype(np.float32).reshape(-1, 1)
    return np.eye(task.n_outputs, dtype=np.float32)[codes]


def fit_retrieval(X, targets, tasks, train_rows, n_neighbors):
    """The retrieval state of one fit (a dict of plain data).

    ``targets`` is the packed (n, 2T) label-and-weight matrix of the fit and
    ``train_rows`` the indices of its training rows; the candidates of task t
    are the training rows with a positive weight for t.
    """
    T = len(tasks)
    train_rows = np.asarray(train_rows)
    per_task = []
    for t, task in enumerate(tasks):
        # Candidates as positions among the training rows.
        positions = np.flatnonzero(targets[train_rows, T + t] > 0)
        values = _label_values(task, targets[train_rows[positions], t])
        # What a row with no usable neighbour is given: the mean label.
        prior = values.mean(axis=0) if len(values) else np.zeros(values.shape[1], np.float32)
        per_task.append({"positions": positions, "values": values, "prior": prior})
    return {"X": np.ascontiguousarray(X[train_rows], dtype=np.float32),
            "train_rows": train_rows, "tasks": per_task,
            "sizes": neighbour_sizes(n_neighbors)}


def n_retrieval_features(state):
    """How many columns :func:`retrieval_features` adds."""
    return sum(task["values"].shape[1] * len(state["sizes"]) + 1 for task in state["tasks"])


def retrieval_features(state, X, fit_rows=None):
    """The (n, F) float32 retrieval features of the rows of X.

    ``fit_rows``: for the X of the fit itself, the row indices of X (so that a
    training row can be left out of its own neighbours); None for new rows.
    """
    X = np.asarray(X, dtype=np.float32)
    if not X.shape[0]:
        return np.zeros((0, n_retrieval_features(state)), dtype=np.float32)
    position = None
    if fit_rows is not None:
        # position[i]: where row i of X sits among the training rows (-1: not one).
        position = np.full(X.shape[0], -1, dtype=np.int64)
        position[state["train_rows"]] = np.arange(len(state["train_rows"]))
    out = []
    for task in state["tasks"]:
        out.append(_task_features(state, task, X, position))
    return np.hstack(out).astype(np.float32, copy=False)


def _task_features(state, task, X, position):
    sizes, values = state["sizes"], task["values"]
    n, width = X.shape[0], values.shape[1]
    positions = task["positions"]
    n_candidates = len(positions)
    # where[p]: the candidate index of training row p (-1: not a candidate).
    where = np.full(len(state["train_rows"]), -1, dtype=np.int64)
    where[positions] = np.arange(n_candidates)
    own = None if position is None else np.where(position >= 0, where[position.clip(0)], -1)
    leave_out = own is not None and (own >= 0).any()
    features = np.empty((n, width * len(sizes) + 1), dtype=np.float32)
    if n_candidates == 0 or (leave_out and n_candidates == 1):
        # No neighbour to give (the only candidate is the row itself): the mean label.
        features[:, :-1] = np.tile(task["prior"], len(sizes))
        features[:, -1] = 0.0
        if n_candidates == 1:
            others = own < 0
            distance = np.linalg.norm(X[others] - state["X"][positions[0]], axis=1)
            features[others, :-1] = np.tile(values[0], len(sizes))
            features[others, -1] = np.log1p(distance)
        return features
    k = min(sizes[-1], n_candidates - leave_out)
    index = NearestNeighbors(n_neighbors=k + leave_out).fit(state["X"][positions])
    distance, neighbours = index.kneighbors(X)
    if leave_out:
        # Drop each row's own index; rows that are not candidates drop their last.
        keep = neighbours != own[:, None]
        keep[keep.all(axis=1), -1] = False
        neighbours = neighbours[keep].reshape(n, k)
        distance = distance[keep].reshape(n, k)
    labels = values[neighbours]  # (n, k, width)
    cumulative = np.cumsum(labels, axis=1)
    for j, size in enumerate(sizes):
        m = min(size, k)
        features[:, j * width:(j + 1) * width] = cumulative[:, m - 1] / m
    features[:, -1] = np.log1p(distance[:, 0])
    return features
