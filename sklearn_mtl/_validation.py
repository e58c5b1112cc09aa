"""Input validation of the estimators: the parameter constraints and X.

The constraints follow scikit-learn's declarations (``_parameter_constraints``
checked once at the start of ``fit`` and ``partial_fit`` by
:func:`sklearn_mtl._params.validate_constraints`, with scikit-learn's
messages; a bool is no number there). They rely on
scikit-learn's private ``sklearn.utils._param_validation``: it has kept this
interface from 1.2 to 1.9 and the supported range is pinned in
``pyproject.toml``; vendoring it would only freeze a copy of the same code.
Checks that need the task names (which tasks a dict names, per-task kinds)
live in :mod:`._task_params`.
"""

from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import validate_data

from ._embeddings import FEATURE_EMBEDDINGS
from ._modules import ACTIVATION_NAMES
from ._net import PRECISIONS, OPTIMIZERS
from .architectures import ARCHITECTURES, Architecture
from .weighting import WEIGHTINGS, Weighting
from ._normalization import NORMALIZATIONS


_SIZES = ["array-like", Interval(Integral, 1, None, closed="left")]

#: The constructor parameters of every multi-task estimator.
PARAMETER_CONSTRAINTS = {
    "tasks": [None, list, tuple, dict],
    "losses": [None, dict],
    "loss_weights": [None, dict, "array-like"],
    "weighting": [StrOptions(set(WEIGHTINGS)), Weighting],
    "loss_normalization": [StrOptions(set(NORMALIZATIONS))],
    "architecture": [StrOptions(set(ARCHITECTURES)), Architecture],
    # A torch module instance or class (checked in _build: scikit-learn's constraints
    # cannot say "a subclass of").
    "module": [None, HasMethods(["forward", "parameters"])],
    "auxiliary_tasks": [None, str, list, tuple],
    "head_inputs": [None, dict],
    "task_depth": [None, dict],
    "feature_embedding": [None, StrOptions(set(FEATURE_EMBEDDINGS))],
    "n_bins": [Interval(Integral, 2, None, closed="left")],
    "embedding_dim": [Interval(Integral, 1, None, closed="left")],
    "hidden_layer_sizes": _SIZES,
    "head_hidden_sizes": _SIZES,
    "activation": [StrOptions(set(ACTIVATION_NAMES))],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "ensemble_size": [Interval(Integral, 1, None, closed="left")],
    "sharing": [StrOptions({"shared", "blend", "auto"})],
    "retrieval": [StrOptions({"off", "on", "auto"})],
    "n_neighbors": [Interval(Integral, 1, None, closed="left")],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "l1": [Interval(Real, 0, None, closed="left")],
    "optimizer": [StrOptions(set(OPTIMIZERS)), HasMethods(["step", "zero_grad"])],
    "optimizer_kwargs": [None, dict],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "lr_schedule": [None, StrOptions({"cosine", "plateau"})],
    "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "early_stopping": ["boolean"],
    "validation_fraction": [None, Interval(Real, 0, 1, closed="neither")],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "class_weight": [None, StrOptions({"balanced"}), dict, list, tuple],
    "warm_start": ["boolean"],
    "random_state": ["random_state"],
    "device": [str, torch.device],
    "precision": [StrOptions(set(PRECISIONS))],
    "compile": ["boolean"],
    "verbose": ["verbose"],
    "callbacks": [None, list, tuple],
}


def as_sizes(name, sizes):
    """A tuple of positive layer widths from an int or a sequence of ints."""
    if isinstance(sizes, Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    sizes = tuple(sizes)
    if not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(
            f"{name} must be an int or a sequence of positive ints (layer widths); got "
            f"{sizes!r}.")
    return tuple(int(s) for s in sizes)


def resolve_device(device):
    """The torch device string for the ``device`` parameter ('auto': CUDA when present)."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:N' or "
            "'auto'.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available on this machine; use device='cpu' "
            "or device='auto' (CUDA when present, else CPU).")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: only 'cpu' and 'cuda' devices are supported.")
    return device


def validate_X(estimator, X, *, reset, min_samples=1):
    """X as a C-contiguous, writable float32 array (scikit-learn's checks, our messages)."""
    if isinstance(X, pd.DataFrame):
        columns = [c for c, dt in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
        if columns:
            raise ValueError(
                f"X has non-numeric columns {columns!r}; encode them first, e.g. with "
                "OneHotEncoder or OrdinalEncoder in a ColumnTransformer.")
    try:
        X = validate_data(estimator, X, reset=reset, dtype=np.float32, ensure_min_features=1,
                          ensure_min_samples=min_samples, accept_sparse=("csr", "csc", "coo"))
    except ValueError as exc:
        message = str(exc)
        if "could not convert" in message or "dtype='numeric'" in message \
                or "Complex data" in message:
            raise ValueError(
                f"X must be real numbers: {message.splitlines()[0]} Encode categorical columns "
                "first, e.g. with OneHotEncoder or OrdinalEncoder in a ColumnTransformer."
            ) from None
        if "NaN" in message or "infinity" in message:
            raise ValueError(
                f"{message.splitlines()[0]} Impute missing feature values first, e.g. with "
                "sklearn.impute.SimpleImputer in a Pipeline (missing labels in Y are fine: "
                "they are masked per task).") from None
        raise
    if sparse.issparse(X):
        # The network takes dense rows; sparse input (e.g. one-hot columns) is
        # densified, as MLPRegressor's matrix products effectively do.
        X = X.toarray()
    X = np.ascontiguousarray(X)
    # torch.from_numpy wants a writable array (read-only memmaps come from joblib).
    return X if X.flags.writeable else X.copy()
