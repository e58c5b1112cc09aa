"""Retrieval features: the labels of each row's nearest training rows, as inputs.

With ``n_neighbors=k``, every row of X gets, for each task, the mean label of
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

``retrieval='on'`` trains the network with these features; ``retrieval='auto'``
(:func:`choose_retrieval`) trains the plain network first and a second one with
the features only where the neighbours' labels alone predict a task better, then
predicts each task with the better of the two on the validation rows.

Neighbours at equal distances (exact duplicates, common in tables of people
observed over years) are taken in the order of the training rows, lower index
first, with distances summed the same way wherever they are computed: the
features are a function of the data alone, not of a search tree's order, and an
ONNX export reproduces them.

The state is plain data (arrays), so a fitted model saves as any other.
"""

import numpy as np
from sklearn.base import clone
from sklearn.neighbors import KDTree

from ._net import TrainingDivergedError, seeded_torch
from ._tasks import probabilities

# The neighbour counts whose mean labels are features: powers of 4 up to k, and k.
_GROWTH = 4
#: retrieval='auto' decides only for tasks with at least this many validation labels,
MIN_VALIDATION_LABELS = 500
#: and only after a fit that early stopping ended or that ran this many patience windows.
MIN_PATIENCE_WINDOWS = 10
#: Rows whose neighbours are ranked at once (bounds the memory and the sort keys).
_ROWS_PER_BLOCK = 4096


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


def squared_distances(X, candidates):
    """Squared Euclidean distances in float64, summed over the features one at a time
    in their order: ``X`` and ``candidates`` are (..., F) arrays of the same shape or
    broadcastable. Every operation is one IEEE operation in a fixed order, so the
    same pair gives the same bits wherever it is computed (the exported ONNX graph
    computes them the same way), and exact duplicates tie exactly."""
    X = np.asarray(X, dtype=np.float64)
    C = np.asarray(candidates, dtype=np.float64)
    total = None
    for f in range(X.shape[-1]):
        diff = X[..., f] - C[..., f]
        diff *= diff
        total = diff if total is None else np.add(total, diff, out=total)
    return total


def nearest_candidates(candidates, X, k, own=None):
    """``(distance, index)``, (n, k) each: every row's k nearest candidates by
    :func:`squared_distances`, nearest first, equal distances in the order of the
    candidates (the lower index first: the order ONNX's TopK keeps, so that an
    exported model picks the same neighbours). ``distance`` is squared. ``own``
    (optional, (n,)): the candidate that is the row itself (-1: none), never its
    own neighbour.

    A k-d tree finds each row's k-th distance and then every candidate within it
    (a hair more, for the tree's own rounding); those are ranked exactly.
    """
    n, m = X.shape[0], candidates.shape[0]
    distance = np.empty((n, k))
    index = np.empty((n, k), dtype=np.int64)
    tree = KDTree(candidates.astype(np.float64))
    reach = min(m, k + (own is not None))
    for start in range(0, n, _ROWS_PER_BLOCK):
        block = slice(start, min(start + _ROWS_PER_BLOCK, n))
        rows_own = None if own is None else own[block]
        distance[block], index[block] = _nearest_block(
            tree, candidates, X[block].astype(np.float64), k, reach, rows_own)
    return distance, index


def _nearest_block(tree, candidates, X, k, reach, own):
    n = X.shape[0]
    found_distance, found = tree.query(X, k=reach)
    if own is not None:
        mine = found == own[:, None]
        # Without the row itself; a row that is not among its own finds drops its last.
        mine[~mine.any(axis=1), -1] = True
        found_distance = found_distance[~mine].reshape(n, reach - 1)
    within = tree.query_radius(X, found_distance[:, k - 1] * (1.0 + 1e-9) + 1e-12)
    counts = np.fromiter((len(w) for w in within), dtype=np.int64, count=n)
    rows = np.repeat(np.arange(n), counts)
    cand = np.concatenate(within).astype(np.int64)
    if own is not None:
        keep = cand != own[rows]
        rows, cand = rows[keep], cand[keep]
    d = squared_distances(X[rows], candidates[cand])
    # Sort by row, then distance, then candidate: one integer key (the distances'
    # dense ranks keep their exact order).
    values, rank = np.unique(d, return_inverse=True)
    if float(n) * len(values) * len(candidates) < 2.0 ** 62:
        order = np.argsort((rows * len(values) + rank.reshape(-1)) * len(candidates) + cand)
    else:
        order = np.lexsort((cand, d, rows))
    pick = np.searchsorted(rows[order], np.arange(n))[:, None] + np.arange(k)
    return d[order][pick], cand[order][pick]


def distance_feature(squared):
    """The distance feature of a row: ``log(1 + d)`` of its nearest candidate's
    distance d (given squared, float64), as float32."""
    return np.log1p(np.sqrt(squared)).astype(np.float32)


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


def retrieval_features(state, X, leave_out_self=False):
    """The (n, F) float32 retrieval features of the rows of X.

    ``leave_out_self``: True for the X of the fit itself, whose training rows are
    left out of their own neighbours; False for rows that are not candidates
    (validation rows, new rows).
    """
    X = np.asarray(X, dtype=np.float32)
    if not X.shape[0]:
        return np.zeros((0, n_retrieval_features(state)), dtype=np.float32)
    position = None
    if leave_out_self:
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
            distance, _ = nearest_candidates(state["X"][positions], X[others], 1)
            features[others, :-1] = np.tile(values[0], len(sizes))
            features[others, -1] = distance_feature(distance[:, 0])
        return features
    k = min(sizes[-1], n_candidates - leave_out)
    candidates = state["X"][positions]
    distance, neighbours = nearest_candidates(candidates, X, k, own)
    labels = values[neighbours]  # (n, k, width)
    cumulative = np.cumsum(labels, axis=1)
    for j, size in enumerate(sizes):
        m = min(size, k)
        features[:, j * width:(j + 1) * width] = cumulative[:, m - 1] / m
    features[:, -1] = distance_feature(distance[:, 0])
    return features


# ----------------------------------------------------------------------------
# retrieval='auto': a second network, where the neighbours predict better


def neighbour_predictions(state, features, tasks):
    """Per task, what the labels of the ``n_neighbors`` nearest training rows predict
    alone: the mean value (regression, encoded scale) or the class frequencies,
    shrunk towards the task's mean label by one pseudo-row (so that no class gets
    probability 0). ``features``: :func:`retrieval_features` of the rows."""
    k = state["sizes"][-1]
    out, start = [], 0
    for task, fitted in zip(tasks, state["tasks"]):
        width = fitted["values"].shape[1]
        last = start + width * (len(state["sizes"]) - 1)
        mean = features[:, last:last + width].astype(np.float64)
        start += width * len(state["sizes"]) + 1
        if task.is_classifier:
            mean = (k * mean + fitted["prior"]) / (k + 1)
            if task.n_outputs == 1:
                mean = np.column_stack([1.0 - mean[:, 0], mean[:, 0]])
        out.append(mean)
    return out


def element_losses(tasks, predictions, targets):
    """Per task, ``(weights, losses)`` over the rows of ``targets`` (packed labels and
    weights) that label it: the squared error (regression, encoded scale) or the log
    loss of ``predictions`` (values (n, 1) or class probabilities (n, K)). One
    yardstick for a network and the neighbours, whatever loss the network was
    trained with (for the default losses it is that loss)."""
    T = len(tasks)
    out = []
    for t, (task, pred) in enumerate(zip(tasks, predictions)):
        weight = targets[:, T + t].astype(np.float64)
        labelled = weight > 0
        label, pred = targets[labelled, t], pred[labelled]
        if task.is_classifier:
            p = pred[np.arange(len(label)), label.astype(np.int64)]
            element = -np.log(np.clip(p, 1e-12, None))
        else:
            element = (pred[:, 0] - label) ** 2
        out.append((weight[labelled], element))
    return out


def mean_losses(elements):
    """Per task, the weighted mean of :func:`element_losses` (NaN: no labelled row)."""
    return [float((w * e).sum() / w.sum()) if len(w) else float("nan") for w, e in elements]


def paired_standard_errors(elements, reference):
    """Per task, the standard error of the weighted mean difference between two sets
    of :func:`element_losses` on the same rows (NaN: no labelled row)."""
    out = []
    for (w, e), (_, r) in zip(elements, reference):
        if not len(w):
            out.append(float("nan"))
            continue
        d = e - r
        mean = (w * d).sum() / w.sum()
        out.append(float(np.sqrt((w ** 2 * (d - mean) ** 2).sum()) / w.sum()))
    return out


def network_predictions(net, tasks, X):
    """A net's predictions of rows X in the yardstick of :func:`element_losses`."""
    raw = net.raw_outputs(X)
    stride = net.module_.heads.max_out
    out = []
    for t, task in enumerate(tasks):
        columns = raw[:, t * stride:t * stride + task.n_outputs]
        if task.is_classifier:
            out.append(probabilities(task, columns))
        else:
            out.append(np.exp(columns) if task.loss == "poisson" else columns)
    return out


def choose_retrieval(estimator, prepared):
    """``retrieval='auto'`` after the plain network's fit.

    Only tasks with at least :data:`MIN_VALIDATION_LABELS` validation labels are
    decided on, and only after a fit that early stopping ended or that ran at least
    :data:`MIN_PATIENCE_WINDOWS` times ``patience`` epochs (a network stopped by a
    small ``max_epochs`` is no yardstick). The labels of each validation row's
    ``n_neighbors`` nearest training rows are first used as a prediction on their
    own. Where they predict none of those tasks better than the fitted network by
    more than one standard error of the paired difference (the usual case: a smooth
    function of X, which a network learns), nothing more is done. Otherwise a second
    network is trained with the retrieval features on the same rows, and each of
    those tasks is predicted by it when its validation loss is lower than the plain
    network's by more than one standard error.

    Returns a dict: ``losses`` (the validation losses compared: 'plain',
    'neighbours' and 'neighbours_se', and where trained 'retrieval' and
    'retrieval_se'), and where some task is chosen, ``state``, ``net``, ``tasks``
    (per task, whether it is predicted with retrieval) and ``best_epochs`` (the
    retrieval network's); None when nothing is decided (no task with the
    validation labels, a fit cut short, or a ``module=`` of the user's, which reads
    X's columns only).
    """
    train, valid = prepared.rows
    if valid is None or not len(valid) or estimator.module is not None:
        return None  # nothing to decide on; a user's module reads X's columns only
    # A network cut short by max_epochs loses to the neighbours for the wrong reason:
    # decide after a fit that early stopping ended, or one of many patience windows.
    epochs = estimator.__dict__.get("n_epochs_", 0)
    if epochs >= estimator.max_epochs and epochs < MIN_PATIENCE_WINDOWS * estimator.patience:
        return None
    tasks, targets = prepared.tasks, prepared.targets
    T = len(tasks)
    # The tasks the check may switch: enough validation labels to tell a lookup
    # from noise (a small table's few labels cannot, and an undertrained network
    # would lose to the neighbours there for the wrong reason).
    n_labels = (targets[valid, T:2 * T] > 0).sum(axis=0)
    decided = [t for t, task in enumerate(tasks)
               if not task.auxiliary and n_labels[t] >= MIN_VALIDATION_LABELS]
    if not decided:
        return None
    state = fit_retrieval(prepared.X, targets, tasks, train, estimator.n_neighbors)
    # Validation rows are never candidates: their features need no leaving out, and
    # the check needs no others.
    valid_features = retrieval_features(state, prepared.X[valid])
    net = estimator.net_
    valid_targets = targets[valid]
    plain = element_losses(tasks, network_predictions(net, tasks, prepared.X[valid]),
                           valid_targets)
    neighbours = element_losses(tasks, neighbour_predictions(state, valid_features, tasks),
                                valid_targets)
    losses = {"plain": mean_losses(plain), "neighbours": mean_losses(neighbours),
              "neighbours_se": paired_standard_errors(neighbours, plain)}
    if not any(losses["neighbours"][t] + losses["neighbours_se"][t] < losses["plain"][t]
               for t in decided):
        return {"losses": losses}
    X_wide = np.hstack([prepared.X, retrieval_features(state, prepared.X, leave_out_self=True)])
    other = clone(estimator).set_params(retrieval="off", sharing="shared", callbacks=None,
                                        verbose=0)
    seeds = [int(s) + 7919 for s in prepared.seeds]  # draws of their own
    try:
        with seeded_torch(other.random_state, seeds[0], prepared.device):
            other._new_net(tasks, prepared.params, prepared.target_format, X_wide, targets,
                           prepared.device, seeds, fit_rows=train)
            other._train(X_wide, targets, prepared.rows, other.max_epochs, prepared.device,
                         continuing=False)
    except TrainingDivergedError:
        return {"losses": losses}
    wide = element_losses(tasks, network_predictions(other.net_, tasks, X_wide[valid]),
                          valid_targets)
    losses["retrieval"] = mean_losses(wide)
    losses["retrieval_se"] = paired_standard_errors(wide, plain)
    chosen = [False] * len(tasks)
    for t in decided:
        a, b, se = losses["plain"][t], losses["retrieval"][t], losses["retrieval_se"][t]
        chosen[t] = bool(np.isfinite(a) and np.isfinite(b) and np.isfinite(se) and b + se < a)
    if not any(chosen):
        return {"losses": losses}
    return {"losses": losses, "state": state, "net": other.net_, "tasks": chosen,
            "best_epochs": other.__dict__.get("_best_epochs")}
