"""Synthetic multi-task data with a tunable degree of task relatedness."""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from .._tasks import KINDS

# Dimension of each latent factor block (shared block and each task's block).
_LATENT_DIM = 2
# Width of the random tanh layer that makes the targets nonlinear in the factors.
_N_HIDDEN = 8


def make_multitask(n_samples=1000, n_features=10, tasks=("regression", "binary", "multiclass"),
                   relatedness=0.5, n_classes=3, noise=0.1, missing_rate=0.0,
                   random_state=None):
    """Generate a multi-task problem whose tasks share a tunable part of their signal.

    The features are independent standard normal. Orthonormal projections of
    them give a block of shared latent factors ``s`` and one block of
    task-specific factors ``u_t`` per task, each of dimension 2 and standard
    normal, mutually independent. Task t is driven by

    ``z_t = sqrt(relatedness) * s + sqrt(1 - relatedness) * u_t``

    so ``z_t`` is standard normal and the correlation between the factors of
    two tasks is exactly ``relatedness`` in the population: 1 drives all tasks
    with the same factors, 0 makes them independent. A fixed random nonlinear
    map ``h(z) = tanh(z A + c)`` (8 units, A normal with standard deviation
    2, c uniform in [-1, 1]; shared by all tasks, so that only
    ``relatedness`` decides how alike the tasks are) is read out per kind of
    task:

    * ``"regression"``: the standardised readout ``h(z_t) w`` plus Gaussian
      noise of standard deviation ``noise``;
    * ``"binary"``: 1 where the same standardised readout plus noise exceeds
      its median (balanced classes), else 0;
    * ``"multiclass"``: the argmax over ``n_classes`` standardised projections
      ``h(z_t) W`` plus independent Gaussian noise of standard deviation
      ``noise`` on each.

    Tasks of the same kind therefore have identical noiseless targets when
    ``relatedness=1``. The remaining ``n_features - 2 * (n_tasks + 1)``
    directions of the feature space carry no signal. When ``n_features`` is
    smaller than ``2 * (n_tasks + 1)`` the projection directions cannot all be
    orthogonal; they are then random unit vectors, the factors of different
    blocks are correlated and a ``UserWarning`` says so.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of rows.
    n_features : int, default=10
        Number of features.
    tasks : sequence of {"regression", "binary", "multiclass"} or str, \
            default=("regression", "binary", "multiclass")
        Kind of each task, in column order; a single string means one task.
    relatedness : float in [0, 1], default=0.5
        Share of each task's latent variance that comes from the shared factors.
    n_classes : int >= 2, default=3
        Number of classes of every ``"multiclass"`` task.
    noise : float >= 0, default=0.1
        Standard deviation of the noise added to the standardised signal
        (before thresholding or argmax for the classification tasks). 0 gives
        noiseless targets.
    missing_rate : float in [0, 1), default=0.0
        Fraction of each task's labels replaced by NaN, drawn independently
        per task (exactly ``round(missing_rate * n_samples)`` per task).
    random_state : int, RandomState or Generator instance, or None, default=None
        Seed or generator for reproducible output: an int or a
        ``numpy.random.RandomState`` goes through
        :func:`sklearn.utils.check_random_state`, a ``numpy.random.Generator``
        is used directly.

    Returns
    -------
    X : pandas.DataFrame of shape (n_samples, n_features)
        Float features, columns ``x0, x1, ...``.
    Y : pandas.DataFrame of shape (n_samples, n_tasks)
        Targets, columns ``task_0, task_1, ...`` in the order of ``tasks``.
        Regression columns are float. Classification columns hold the labels
        ``0 .. n_classes - 1`` (``0, 1`` for binary) as int64, or as float64
        when ``missing_rate > 0`` so that they can hold NaN.

    Examples
    --------
    >>> from sklearn_mtl.datasets import make_multitask
    >>> X, Y = make_multitask(n_samples=200, random_state=0)
    >>> X.shape, list(Y.columns)
    ((200, 10), ['task_0', 'task_1', 'task_2'])
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    n_features = _check_int("n_features", n_features, 1)
    n_classes = _check_int("n_classes", n_classes, 2)
    if isinstance(tasks, str):
        tasks = (tasks,)
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("tasks must name at least one task.")
    for kind in tasks:
        if kind not in KINDS:
            raise ValueError(f"Unknown task kind {kind!r}; valid kinds are {KINDS}.")
    relatedness = _check_real("relatedness", relatedness, 0.0, 1.0)
    noise = _check_real("noise", noise, 0.0, np.inf)
    missing_rate = _check_real("missing_rate", missing_rate, 0.0, 1.0)
    if missing_rate == 1.0:
        raise ValueError("missing_rate must be < 1: every task needs some labels.")
    if isinstance(random_state, np.random.Generator):
        rng = random_state  # used as is: it offers every method drawn from below
    else:
        rng = check_random_state(random_state)
    n_tasks = len(tasks)

    X = rng.standard_normal((n_samples, n_features))

    # Factor blocks: shared first, then one per task, each _LATENT_DIM columns.
    n_directions = _LATENT_DIM * (n_tasks + 1)
    directions = rng.standard_normal((n_features, n_directions))
    if n_directions <= n_features:
        # Orthonormal directions make the factor blocks independent.
        directions, _ = np.linalg.qr(directions)
    else:
        warnings.warn(
            f"n_features={n_features} < {n_directions} (2 per task plus 2 shared): the latent "
            "factors cannot be independent, so tasks stay correlated even at relatedness=0.",
            UserWarning, stacklevel=2,
        )
        directions /= np.linalg.norm(directions, axis=0)
    factors = (X @ directions).reshape(n_samples, n_tasks + 1, _LATENT_DIM)
    shared, specific = factors[:, 0], factors[:, 1:]
    latent = np.sqrt(relatedness) * shared[:, None, :] + np.sqrt(1 - relatedness) * specific

    # One nonlinear map and one readout per kind, common to all tasks.
    # Scale 2 saturates the tanh often enough that a linear model misses a
    # good part of the signal (R^2 about 0.7-0.8 on noiseless regression).
    A = 2.0 * rng.standard_normal((_LATENT_DIM, _N_HIDDEN))
    c = rng.uniform(-1.0, 1.0, _N_HIDDEN)
    w = rng.standard_normal(_N_HIDDEN)
    W = rng.standard_normal((_N_HIDDEN, n_classes))
    hidden = np.tanh(latent @ A + c)  # (n_samples, n_tasks, _N_HIDDEN)

    columns = {}
    for t, kind in enumerate(tasks):
        if kind == "multiclass":
            scores = _standardise(hidden[:, t] @ W)
            scores += noise * rng.standard_normal(scores.shape)
            y = scores.argmax(axis=1).astype(np.int64)
        else:
            score = _standardise(hidden[:, t] @ w)
            score += noise * rng.standard_normal(n_samples)
            if kind == "regression":
                y = score
            else:
                y = (score > np.median(score)).astype(np.int64)
        if missing_rate > 0:
            y = y.astype(np.float64)
            n_missing = int(round(missing_rate * n_samples))
            y[rng.choice(n_samples, size=n_missing, replace=False)] = np.nan
        columns[f"task_{t}"] = y

    X = pd.DataFrame(X, columns=[f"x{j}" for j in range(n_features)])
    Y = pd.DataFrame(columns)
    return X, Y


def _standardise(values):
    """Zero mean, unit variance along the rows (constant columns only centred)."""
    values = values - values.mean(axis=0)
    std = values.std(axis=0)
    return values / np.where(std > 0, std, 1.0)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_real(name, value, low, high):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    return float(value)
