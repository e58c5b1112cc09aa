"""A battery of bad inputs, faults and scale edges, tried as a demanding user would.

Every case states the behaviour the estimators promise:

* a user mistake raises ``ValueError`` or ``TypeError`` (scikit-learn's
  ``InvalidParameterError`` is both) whose message names the offending
  parameter, task or column -- never a raw torch, ``KeyError``,
  ``AttributeError``, ``RuntimeError`` or ``IndexError`` traceback;
* constructor parameters are validated in ``fit`` / ``partial_fit``, in
  scikit-learn's wording ("The 'tol' parameter of ... must be ... Got ...
  instead.");
* what the user passes comes back in kind (column labels, label types,
  containers), is never mutated, and training never ends silently with NaN.

Data are tiny and networks small: the whole file runs in seconds.
"""

import copy
import os
import pickle
import re
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback, EarlyStopping
from torch import nn

import sklearn_mtl
from sklearn_mtl import (
    MultiTaskClassifier,
    MultiTaskRegressor,
    MultiTaskRegressorClassifier,
    make_mean_task_scorer,
    make_task_scorer,
    make_task_scorers,
)
from sklearn_mtl.architectures import HardSharing
from sklearn_mtl.weighting import Static, Uncertainty

MTRC = MultiTaskRegressorClassifier
REPO = Path(__file__).resolve().parents[1]
N = 60
N_FEATURES = 4
FAST = dict(hidden_layer_sizes=(8,), head_hidden_sizes=(), max_epochs=2, batch_size=16,
            random_state=0)
USER_ERRORS = (ValueError, TypeError)


# ---------------------------------------------------------------------------
# Helpers


def make_X(n=N, p=N_FEATURES, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p))


def make_Y(X, seed=0):
    """A regression task 'value', a binary task 'flag' (str), a multiclass task 'level' (str)."""
    rng = np.random.default_rng(seed + 100)
    n = X.shape[0]
    return pd.DataFrame({
        "value": 3.0 * X[:, 0] - 2.0 * X[:, 1] + 0.1 * rng.normal(size=n),
        "flag": np.where(X[:, 2] > 0, "yes", "no").astype(object),
        "level": np.array(["low", "mid", "high"], dtype=object)[np.digitize(X[:, 3], [-0.5, 0.5])],
    })


def make(cls=MTRC, **params):
    return cls(**{**FAST, **params})


def named(name):
    """A task or column name as messages quote it: 'flag' or "flag"."""
    return rf"['\"]{re.escape(str(name))}['\"]"


def param_named(name):
    return rf"\b{re.escape(name)}\b"


def assert_finite_predictions(pred):
    if isinstance(pred, pd.DataFrame):
        numeric = pred.select_dtypes("number")
        assert np.isfinite(numeric.to_numpy(dtype=float)).all(), pred.head()
    elif isinstance(pred, dict):
        for value in pred.values():
            value = np.asarray(value)
            if value.dtype.kind in "fc":
                assert np.isfinite(value).all()
    else:
        pred = np.asarray(pred)
        if pred.dtype.kind in "fc":
            assert np.isfinite(pred).all()


class _ModuleRecord:
    def __init__(self, module):
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.public = {k: copy.deepcopy(v) for k, v in vars(module).items()
                       if not k.startswith("_")}


class _ObjectRecord:
    def __init__(self, obj):
        self.attributes = {k: copy.deepcopy(v) for k, v in vars(obj).items()}


def snapshot(obj):
    """A deep, comparable record of what the user passed (see :func:`assert_unchanged`)."""
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return obj.copy(deep=True)
    if isinstance(obj, np.ndarray):
        return np.array(obj, copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    if isinstance(obj, nn.Module):
        return _ModuleRecord(obj)
    if hasattr(obj, "get_params"):  # skorch callbacks, weighting strategies
        return _ObjectRecord(obj)
    return copy.deepcopy(obj)


def assert_unchanged(before, obj):
    """``obj`` still equals the :func:`snapshot` taken before the fit."""
    if isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(obj, before)
    elif isinstance(before, pd.Series):
        pd.testing.assert_series_equal(obj, before)
    elif isinstance(before, np.ndarray):
        assert isinstance(obj, np.ndarray)
        assert obj.dtype == before.dtype and obj.shape == before.shape
        missing = pd.isna(before)
        np.testing.assert_array_equal(pd.isna(obj), missing)
        np.testing.assert_array_equal(obj[~missing], before[~missing])
    elif isinstance(before, dict):
        assert isinstance(obj, dict) and list(obj) == list(before)
        for key in before:
            assert_unchanged(before[key], obj[key])
    elif isinstance(before, (list, tuple)):
        assert type(obj) is type(before) and len(obj) == len(before)
        for b, a in zip(before, obj):
            assert_unchanged(b, a)
    elif isinstance(before, _ModuleRecord):
        now = obj.state_dict()
        assert list(now) == list(before.state)
        for key in before.state:
            assert torch.equal(now[key], before.state[key]), key
        assert {k: v for k, v in vars(obj).items() if not k.startswith("_")} == before.public
    elif isinstance(before, _ObjectRecord):
        assert vars(obj) == before.attributes, "the user's object was used (and changed) in place"
    else:
        assert obj == before


@pytest.fixture(scope="module")
def data():
    X = make_X()
    return X, make_Y(X)


@pytest.fixture(scope="module")
def fitted(data):
    """A model fitted on a DataFrame Y (never modified by the tests)."""
    X, Y = data
    return make().fit(X, Y)


@pytest.fixture(scope="module")
def fitted_array(data):
    """A model fitted on a 2-D numeric array Y: one regression and one binary column."""
    X, Y = data
    Ya = np.column_stack([Y["value"].to_numpy(), (Y["flag"] == "yes").to_numpy(dtype=float)])
    return make().fit(X, Ya), Ya


# ---------------------------------------------------------------------------
# Constructor parameters: bad types and values, each named in the error

BAD_PARAMS = [
    # tasks
    ("tasks-type-int", {"tasks": 5}, param_named("tasks")),
    ("tasks-unknown-kind", {"tasks": {"value": "ordinal"}}, named("value")),
    ("tasks-kind-type", {"tasks": {"value": 3}}, named("value")),
    ("tasks-unknown-column", {"tasks": {"price": "regression"}}, named("price")),
    ("tasks-list-unknown-column", {"tasks": ["value", "price"]}, named("price")),
    ("tasks-list-duplicate", {"tasks": ["value", "value"]}, named("value")),
    # losses
    ("losses-type-str", {"losses": "mse"}, param_named("losses")),
    ("losses-unknown-name", {"losses": {"value": "l3"}}, named("value")),
    ("losses-wrong-kind-binary", {"losses": {"flag": "mse"}}, named("flag")),
    ("losses-wrong-kind-multiclass", {"losses": {"level": "bce"}}, named("level")),
    ("losses-wrong-kind-regression", {"losses": {"value": "cross_entropy"}}, named("value")),
    ("losses-not-callable", {"losses": {"value": 3}}, named("value")),
    ("losses-unknown-task", {"losses": {"price": "mse"}}, named("price")),
    # loss_weights
    ("loss_weights-negative", {"loss_weights": {"value": -1.0}}, named("value")),
    ("loss_weights-nan", {"loss_weights": {"value": float("nan")}}, named("value")),
    ("loss_weights-inf", {"loss_weights": {"value": float("inf")}}, named("value")),
    ("loss_weights-str", {"loss_weights": {"value": "heavy"}}, named("value")),
    ("loss_weights-none-entry", {"loss_weights": {"value": None}}, named("value")),
    ("loss_weights-unknown-task", {"loss_weights": {"price": 1.0}}, named("price")),
    ("loss_weights-all-zero", {"loss_weights": {"value": 0, "flag": 0, "level": 0}},
     param_named("loss_weights")),
    ("loss_weights-type-float", {"loss_weights": 0.5}, param_named("loss_weights")),
    ("loss_weights-list-length", {"loss_weights": [1.0, 2.0]}, param_named("loss_weights")),
    # weighting
    ("weighting-unknown", {"weighting": "magic"}, param_named("weighting")),
    ("weighting-class-not-instance", {"weighting": Static}, param_named("weighting")),
    ("weighting-type-int", {"weighting": 5}, param_named("weighting")),
    # loss_normalization
    ("loss_normalization-unknown", {"loss_normalization": "max"},
     param_named("loss_normalization")),
    ("loss_normalization-type-int", {"loss_normalization": 3}, param_named("loss_normalization")),
    # architecture
    ("architecture-unknown", {"architecture": "star"}, param_named("architecture")),
    ("architecture-type-int", {"architecture": 5}, param_named("architecture")),
    ("architecture-class-not-instance", {"architecture": HardSharing},
     param_named("architecture")),
    # module
    ("module-type-int", {"module": 5}, param_named("module")),
    ("module-type-str", {"module": "mlp"}, param_named("module")),
    ("module-function", {"module": lambda x: x}, param_named("module")),
    # auxiliary_tasks
    ("auxiliary_tasks-unknown", {"auxiliary_tasks": ["price"]}, named("price")),
    ("auxiliary_tasks-all", {"auxiliary_tasks": ["value", "flag", "level"]},
     param_named("auxiliary_tasks")),
    ("auxiliary_tasks-type-int", {"auxiliary_tasks": 5}, param_named("auxiliary_tasks")),
    # head_inputs
    ("head_inputs-cycle", {"head_inputs": {"value": ["flag"], "flag": ["value"]}},
     param_named("head_inputs")),
    ("head_inputs-unknown-source", {"head_inputs": {"value": ["price"]}}, named("price")),
    ("head_inputs-unknown-key", {"head_inputs": {"price": ["value"]}}, named("price")),
    ("head_inputs-self", {"head_inputs": {"value": ["value"]}}, named("value")),
    ("head_inputs-type-list", {"head_inputs": ["value"]}, param_named("head_inputs")),
    ("head_inputs-sources-int", {"head_inputs": {"value": 5}}, param_named("head_inputs")),
    # task_depth
    ("task_depth-too-deep", {"task_depth": {"value": 3}}, named("value")),
    ("task_depth-zero", {"task_depth": {"value": 0}}, named("value")),
    ("task_depth-float", {"task_depth": {"value": 1.5}}, named("value")),
    ("task_depth-unknown-task", {"task_depth": {"price": 1}}, named("price")),
    ("task_depth-type-int", {"task_depth": 5}, param_named("task_depth")),
    ("task_depth-with-mmoe", {"task_depth": {"value": 1}, "architecture": "mmoe"},
     param_named("task_depth")),
    # feature embeddings
    ("feature_embedding-unknown", {"feature_embedding": "quantile"},
     param_named("feature_embedding")),
    ("feature_embedding-with-module", {"feature_embedding": "periodic",
                                       "module": nn.Linear(4, 3)},
     param_named("feature_embedding")),
    ("n_bins-one", {"n_bins": 1, "feature_embedding": "piecewise_linear"},
     param_named("n_bins")),
    ("n_bins-float", {"n_bins": 4.0}, param_named("n_bins")),
    ("embedding_dim-zero", {"embedding_dim": 0}, param_named("embedding_dim")),
    # regularisation and the lr schedule
    ("l1-negative", {"l1": -0.1}, param_named("l1")),
    ("l1-string", {"l1": "lasso"}, param_named("l1")),
    ("l1-bool", {"l1": True}, param_named("l1")),
    ("lr_schedule-unknown", {"lr_schedule": "step"}, param_named("lr_schedule")),
    ("lr_schedule-callable", {"lr_schedule": max}, param_named("lr_schedule")),
    # hidden_layer_sizes / head_hidden_sizes
    ("hidden_layer_sizes-none", {"hidden_layer_sizes": None}, param_named("hidden_layer_sizes")),
    ("hidden_layer_sizes-zero", {"hidden_layer_sizes": (0,)}, param_named("hidden_layer_sizes")),
    ("hidden_layer_sizes-negative", {"hidden_layer_sizes": (-1,)},
     param_named("hidden_layer_sizes")),
    ("hidden_layer_sizes-float", {"hidden_layer_sizes": (8.5,)},
     param_named("hidden_layer_sizes")),
    ("hidden_layer_sizes-str", {"hidden_layer_sizes": "big"}, param_named("hidden_layer_sizes")),
    ("head_hidden_sizes-none", {"head_hidden_sizes": None}, param_named("head_hidden_sizes")),
    ("head_hidden_sizes-zero", {"head_hidden_sizes": (0,)}, param_named("head_hidden_sizes")),
    ("head_hidden_sizes-float", {"head_hidden_sizes": (4.5,)}, param_named("head_hidden_sizes")),
    # activation
    ("activation-unknown", {"activation": "swish"}, param_named("activation")),
    ("activation-type-int", {"activation": 5}, param_named("activation")),
    ("activation-none", {"activation": None}, param_named("activation")),
    # dropout
    ("dropout-one", {"dropout": 1.0}, param_named("dropout")),
    ("dropout-negative", {"dropout": -0.1}, param_named("dropout")),
    ("dropout-str", {"dropout": "high"}, param_named("dropout")),
    # ensemble_size
    ("ensemble_size-zero", {"ensemble_size": 0}, param_named("ensemble_size")),
    ("ensemble_size-float", {"ensemble_size": 1.5}, param_named("ensemble_size")),
    ("ensemble_size-bool", {"ensemble_size": True}, param_named("ensemble_size")),
    # sharing
    ("sharing-unknown", {"sharing": "always"}, param_named("sharing")),
    ("sharing-type", {"sharing": 1}, param_named("sharing")),
    # retrieval, n_neighbors
    ("retrieval-unknown", {"retrieval": "always"}, param_named("retrieval")),
    ("retrieval-bool", {"retrieval": True}, param_named("retrieval")),
    ("n_neighbors-none", {"n_neighbors": None}, param_named("n_neighbors")),
    ("n_neighbors-zero", {"n_neighbors": 0}, param_named("n_neighbors")),
    ("n_neighbors-float", {"n_neighbors": 4.5}, param_named("n_neighbors")),
    ("n_neighbors-str", {"n_neighbors": "auto"}, param_named("n_neighbors")),
    # alpha
    ("alpha-negative", {"alpha": -1}, param_named("alpha")),
    ("alpha-str", {"alpha": "big"}, param_named("alpha")),
    ("alpha-nan", {"alpha": float("nan")}, param_named("alpha")),
    # optimizer / optimizer_kwargs
    ("optimizer-unknown", {"optimizer": "adamax"}, param_named("optimizer")),
    ("optimizer-type-int", {"optimizer": 5}, param_named("optimizer")),
    ("optimizer-not-an-optimizer-class", {"optimizer": nn.Linear}, param_named("optimizer")),
    ("optimizer_kwargs-float", {"optimizer_kwargs": 0.9}, param_named("optimizer_kwargs")),
    ("optimizer_kwargs-list", {"optimizer_kwargs": ["momentum"]},
     param_named("optimizer_kwargs")),
    ("optimizer_kwargs-unknown-key", {"optimizer_kwargs": {"momentum_typo": 0.9}},
     "momentum_typo"),
    # lr
    ("lr-zero", {"lr": 0}, param_named("lr")),
    ("lr-negative", {"lr": -1e-3}, param_named("lr")),
    ("lr-str", {"lr": "fast"}, param_named("lr")),
    ("lr-nan", {"lr": float("nan")}, param_named("lr")),
    ("lr-inf", {"lr": float("inf")}, param_named("lr")),
    # batch_size
    ("batch_size-zero", {"batch_size": 0}, param_named("batch_size")),
    ("batch_size-float", {"batch_size": 2.5}, param_named("batch_size")),
    ("batch_size-str", {"batch_size": "all"}, param_named("batch_size")),
    ("batch_size-bool", {"batch_size": True}, param_named("batch_size")),
    # max_epochs
    ("max_epochs-zero", {"max_epochs": 0}, param_named("max_epochs")),
    ("max_epochs-float", {"max_epochs": 1.5}, param_named("max_epochs")),
    ("max_epochs-none", {"max_epochs": None}, param_named("max_epochs")),
    # early_stopping: a string must not be taken as truthy
    ("early_stopping-monitor-name", {"early_stopping": "valid_loss_species"},
     param_named("early_stopping")),
    ("early_stopping-yes", {"early_stopping": "yes"}, param_named("early_stopping")),
    # validation_fraction
    ("validation_fraction-zero-with-early-stopping",
     {"validation_fraction": 0.0, "early_stopping": True}, param_named("validation_fraction")),
    ("validation_fraction-one", {"validation_fraction": 1.0}, param_named("validation_fraction")),
    ("validation_fraction-negative", {"validation_fraction": -0.1},
     param_named("validation_fraction")),
    ("validation_fraction-above-one", {"validation_fraction": 1.5},
     param_named("validation_fraction")),
    ("validation_fraction-str", {"validation_fraction": "tenth"},
     param_named("validation_fraction")),
    # patience
    ("patience-zero", {"patience": 0}, param_named("patience")),
    ("patience-negative", {"patience": -3}, param_named("patience")),
    ("patience-float", {"patience": 2.5}, param_named("patience")),
    # tol
    ("tol-str", {"tol": "small"}, param_named("tol")),
    ("tol-negative", {"tol": -1}, param_named("tol")),
    ("tol-nan", {"tol": float("nan")}, param_named("tol")),
    # class_weight
    ("class_weight-unknown-str", {"class_weight": "even"}, param_named("class_weight")),
    ("class_weight-type-int", {"class_weight": 5}, param_named("class_weight")),
    ("class_weight-regression-task", {"class_weight": {"value": "balanced"}}, named("value")),
    ("class_weight-unknown-class", {"class_weight": {"flag": {"maybe": 2.0}}}, named("flag")),
    ("class_weight-unknown-task", {"class_weight": {"price": "balanced"}}, named("price")),
    ("class_weight-entry-unknown-str", {"class_weight": {"flag": "even"}}, named("flag")),
    # warm_start
    ("warm_start-str", {"warm_start": "yes"}, param_named("warm_start")),
    ("warm_start-int", {"warm_start": 2}, param_named("warm_start")),
    # random_state
    ("random_state-str", {"random_state": "seed"}, param_named("random_state")),
    ("random_state-negative", {"random_state": -1}, param_named("random_state")),
    ("random_state-float", {"random_state": 1.5}, param_named("random_state")),
    # device
    ("device-int", {"device": 3}, param_named("device")),
    ("device-unknown", {"device": "tpu"}, param_named("device")),
    ("device-none", {"device": None}, param_named("device")),
    # precision
    ("precision-fp8", {"precision": "fp8"}, param_named("precision")),
    ("precision-int", {"precision": 16}, param_named("precision")),
    # compile: the string 'no' must not be taken as True
    ("compile-yes", {"compile": "yes"}, param_named("compile")),
    ("compile-no-str", {"compile": "no"}, param_named("compile")),
    # verbose
    ("verbose-str", {"verbose": "2"}, param_named("verbose")),
    ("verbose-negative", {"verbose": -1}, param_named("verbose")),
    ("verbose-float", {"verbose": 1.5}, param_named("verbose")),
    # callbacks
    ("callbacks-int", {"callbacks": 5}, param_named("callbacks")),
    ("callbacks-list-of-int", {"callbacks": [5]}, param_named("callbacks")),
    ("callbacks-str", {"callbacks": "progress_bar"}, param_named("callbacks")),
]


@pytest.mark.parametrize("params, name", [pytest.param(p, m, id=i) for i, p, m in BAD_PARAMS])
def test_bad_param_raises_naming_it(data, params, name):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=name):
        make(**params).fit(X, Y)


def test_battery_covers_every_parameter():
    # Guard for this file: a new estimator parameter needs its bad-input cases here.
    covered = {key for _, params, _ in BAD_PARAMS for key in params}
    assert set(MTRC().get_params(deep=False)) <= covered


# Parameters whose constraints scikit-learn's validation expresses; their errors read
# "The 'tol' parameter of MultiTaskRegressorClassifier must be ... Got ... instead."
SKLEARN_FORMAT = [
    ("tasks", 5), ("losses", "mse"), ("loss_weights", 0.5), ("weighting", "magic"),
    ("loss_normalization", "max"), ("architecture", "star"), ("module", 5),
    ("auxiliary_tasks", 5), ("head_inputs", ["value"]), ("task_depth", 5),
    ("feature_embedding", "bins"), ("n_bins", 1), ("embedding_dim", 0),
    ("hidden_layer_sizes", None), ("head_hidden_sizes", "wide"), ("activation", "swish"),
    ("dropout", 1.0), ("alpha", -1), ("l1", -1), ("lr_schedule", "step"),
    ("optimizer", "adamax"), ("optimizer_kwargs", 0.9),
    ("lr", 0), ("lr", "fast"), ("batch_size", 0), ("batch_size", 2.5), ("max_epochs", 0),
    ("early_stopping", "valid_loss_species"), ("validation_fraction", 1.0), ("patience", 0),
    ("tol", "small"), ("tol", -1), ("class_weight", "even"), ("warm_start", "yes"),
    ("random_state", "seed"), ("device", 3), ("precision", "fp8"), ("compile", "yes"),
    ("verbose", "2"), ("verbose", -1), ("callbacks", 5),
    ("ensemble_size", 0), ("ensemble_size", 1.5), ("sharing", "always"),
    ("n_neighbors", 0), ("n_neighbors", "auto"), ("retrieval", "yes"),
]


@pytest.mark.parametrize("param, value",
                         [pytest.param(p, v, id=f"{p}={v!r}") for p, v in SKLEARN_FORMAT])
def test_bad_param_sklearn_message(data, param, value):
    X, Y = data
    pattern = (rf"The '{param}' parameter of MultiTaskRegressorClassifier must be .+\. "
               r"Got .+ instead\.")
    with pytest.raises(USER_ERRORS, match=pattern):
        make(**{param: value}).fit(X, Y)


@pytest.mark.parametrize("cls, y_kind", [
    pytest.param(MultiTaskRegressor, "regression", id="MultiTaskRegressor"),
    pytest.param(MultiTaskClassifier, "classification", id="MultiTaskClassifier"),
])
def test_bad_param_message_names_the_class(data, cls, y_kind):
    X, Y = data
    y = Y["value"] if y_kind == "regression" else Y["flag"]
    with pytest.raises(USER_ERRORS, match=rf"The 'tol' parameter of {cls.__name__} must be"):
        make(cls, tol="small").fit(X, y)


@pytest.mark.parametrize("params, name", [
    pytest.param({"tol": "small"}, "tol", id="tol"),
    pytest.param({"batch_size": 0}, "batch_size", id="batch_size"),
    pytest.param({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes", id="hidden_layer_sizes"),
    pytest.param({"early_stopping": "yes"}, "early_stopping", id="early_stopping"),
    pytest.param({"lr": "fast"}, "lr", id="lr"),
    pytest.param({"verbose": -1}, "verbose", id="verbose"),
])
def test_partial_fit_validates_params(data, params, name):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=param_named(name)):
        make(**params).partial_fit(X, Y)


@pytest.mark.parametrize("params, pattern", [
    pytest.param({"loss_weights__flag": -1.0}, named("flag"), id="negative"),
    pytest.param({"loss_weights__price": 1.0}, named("price"), id="unknown-task"),
])
def test_nested_loss_weight_set_params(data, params, pattern):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=pattern):
        make().set_params(**params).fit(X, Y)


def test_constructor_does_not_validate():
    # scikit-learn convention: __init__ stores, fit validates (clone must work on anything).
    model = MTRC(tol="small", batch_size=0, hidden_layer_sizes=None)
    assert model.get_params()["tol"] == "small"
    assert clone(model).get_params()["batch_size"] == 0


def test_set_params_then_fit_validates(data):
    X, Y = data
    model = make().set_params(tol="small")
    with pytest.raises(USER_ERRORS, match=param_named("tol")):
        model.fit(X, Y)


# ---------------------------------------------------------------------------
# Targets: containers, column labels, shapes


@pytest.mark.parametrize("labels", [
    pytest.param([0, 1, 2], id="int"),
    pytest.param([10, 20, 30], id="int-nonpositional"),
    pytest.param([("num", "value"), ("cat", "flag"), ("cat", "level")], id="tuple"),
    pytest.param(pd.MultiIndex.from_tuples([("num", "value"), ("cat", "flag"), ("cat", "level")]),
                 id="multiindex"),
    pytest.param([0, "flag", 2.5], id="mixed-types"),
])
class TestColumnLabelsRoundTrip:
    """Y's column labels come back as they were given, whatever their type."""

    @pytest.fixture
    def model_and_Y(self, data, labels):
        X, Y = data
        Y = Y.set_axis(labels, axis=1)
        return make().fit(X, Y), X, Y

    def test_predict_columns(self, model_and_Y):
        model, X, Y = model_and_Y
        pred = model.predict(X)
        assert isinstance(pred, pd.DataFrame)
        assert list(pred.columns) == list(Y.columns)
        regression = Y.columns[0]
        assert np.isfinite(pred[regression].to_numpy(dtype=float)).all()
        assert set(pred[Y.columns[1]]) <= {"yes", "no"}

    def test_predict_proba_keys(self, model_and_Y):
        model, X, Y = model_and_Y
        proba = model.predict_proba(X)
        assert set(proba) == {Y.columns[1], Y.columns[2]}
        assert proba[Y.columns[2]].shape == (len(X), 3)

    def test_classes_keys(self, model_and_Y):
        model, _, Y = model_and_Y
        assert set(model.classes_) == {Y.columns[1], Y.columns[2]}
        assert list(model.classes_[Y.columns[1]]) == ["no", "yes"]

    def test_score_tasks_keys(self, model_and_Y):
        # score_tasks is keyed like predict's columns, so scores[label] works.
        model, X, Y = model_and_Y
        scores = model.score_tasks(X, Y)
        assert list(scores) == list(Y.columns)
        assert 0 <= scores[Y.columns[1]] <= 1


def test_int_keys_of_dict_Y_round_trip(data):
    X, Y = data
    Yd = {0: Y["value"].to_numpy(), 1: Y["flag"].to_numpy()}
    pred = make().fit(X, Yd).predict(X)
    assert isinstance(pred, dict) and list(pred) == [0, 1]


def test_int_column_labels_with_loss_weights(data):
    X, Y = data
    Y = Y.set_axis([0, 1, 2], axis=1)
    model = make(loss_weights={1: 2.0}, tasks={0: "regression"}).fit(X, Y)
    assert list(model.predict(X).columns) == [0, 1, 2]


def test_int_and_str_labels_that_print_alike(data):
    # 0 and '0' are two different pandas labels: either both come back or the error names them.
    X, Y = data
    Y = Y[["value", "flag"]].set_axis([0, "0"], axis=1)
    try:
        model = make().fit(X, Y)
    except USER_ERRORS as exc:
        assert "0" in str(exc)
        return
    pred = model.predict(X)
    assert list(pred.columns) == [0, "0"]
    assert set(pred["0"]) <= {"yes", "no"}
    assert np.isfinite(pred[0].to_numpy(dtype=float)).all()


def _plain(build):
    return lambda X, Y: (make(), build(X, Y))


BAD_TARGETS = [
    ("duplicate-column-names", _plain(lambda X, Y: Y[["value", "flag", "flag"]]), named("flag")),
    ("zero-rows", _plain(lambda X, Y: Y.iloc[:0]), r"\b0\b"),
    ("zero-columns", _plain(lambda X, Y: Y[[]]), r"(?i)column|task"),
    ("all-missing-column", _plain(lambda X, Y: Y.assign(empty=np.nan)), named("empty")),
    ("all-missing-column-none",
     _plain(lambda X, Y: Y.assign(empty=pd.Series([None] * len(Y), dtype=object))),
     named("empty")),
    ("all-missing-dict", _plain(lambda X, Y: {"value": Y["value"].to_numpy(),
                                              "empty": np.full(len(Y), np.nan)}), named("empty")),
    ("one-class", _plain(lambda X, Y: Y.assign(flag="yes")), named("flag")),
    ("one-class-with-missing",
     _plain(lambda X, Y: Y.assign(flag=np.where(np.arange(len(Y)) % 2, "yes", None))),
     named("flag")),
    ("mixed-label-types",
     _plain(lambda X, Y: Y.assign(flag=np.array(["yes", 1] * (len(Y) // 2), dtype=object))),
     named("flag")),
    ("list-valued-column", _plain(lambda X, Y: Y.assign(bad=[[1, 2]] * len(Y))), named("bad")),
    ("inf-regression-target",
     _plain(lambda X, Y: Y.assign(value=Y["value"].where(Y.index != 3, np.inf))), named("value")),
    ("neg-inf-regression-target",
     _plain(lambda X, Y: Y.assign(value=Y["value"].where(Y.index != 3, -np.inf))),
     named("value")),
    ("wrong-row-count", _plain(lambda X, Y: Y.iloc[:-1]), r"\b59\b"),
    ("wrong-row-count-array", _plain(lambda X, Y: Y[["value"]].to_numpy()[:-1]), r"\b59\b"),
    ("dict-ragged-lengths", _plain(lambda X, Y: {"value": Y["value"].to_numpy(),
                                                 "flag": Y["flag"].to_numpy()[:-5]}),
     named("flag")),
    ("dict-2d-entry", _plain(lambda X, Y: {"value": Y[["value", "value"]].to_numpy()}),
     named("value")),
    ("3d-array", _plain(lambda X, Y: np.zeros((len(Y), 2, 2))), r"\b[Yy]\b"),
    ("ragged-lists", _plain(lambda X, Y: [[1.0, 2.0], [1.0]] * (len(Y) // 2)), r"\b[Yy]\b"),
    ("strings-declared-regression", lambda X, Y: (make(tasks={"flag": "regression"}), Y),
     named("flag")),
    ("continuous-declared-binary", lambda X, Y: (make(tasks={"value": "binary"}), Y),
     named("value")),
    ("three-classes-declared-binary", lambda X, Y: (make(tasks={"level": "binary"}), Y),
     named("level")),
    ("classification-in-regressor",
     lambda X, Y: (make(MultiTaskRegressor), Y[["value", "flag"]]), named("flag")),
    ("regression-in-classifier",
     lambda X, Y: (make(MultiTaskClassifier), Y[["flag", "value"]]), named("value")),
]


@pytest.mark.parametrize("build, name", [pytest.param(b, m, id=i) for i, b, m in BAD_TARGETS])
def test_bad_targets(data, build, name):
    X, Y = data
    model, target = build(X, Y)
    with pytest.raises(USER_ERRORS, match=name):
        model.fit(X, target)


def test_y_none(data):
    X, _ = data
    with pytest.raises(USER_ERRORS, match=r"\by\b"):
        make().fit(X, None)


# ---------------------------------------------------------------------------
# Labels: types, missing markers, and labels never seen at fit


def _label_column(case, n):
    codes = np.arange(n) % 3
    missing = np.arange(n) % 7 == 0
    if case == "str":
        return np.array(["a", "b", "c"], dtype=object)[codes], str
    if case == "str-none":
        col = np.array(["a", "b", "c"], dtype=object)[codes]
        col[missing] = None
        return col, str
    if case == "str-nan":
        col = np.array(["a", "b", "c"], dtype=object)[codes]
        col[missing] = np.nan
        return col, str
    if case == "str-pd-na":
        col = np.array(["a", "b", "c"], dtype=object)[codes]
        col[missing] = pd.NA
        return col, str
    if case == "int":
        return np.array([1, 2, 3])[codes], int
    if case == "int-object-none":
        col = np.array([1, 2, 3], dtype=object)[codes]
        col[missing] = None
        return col, int
    if case == "float-nan":
        col = (codes % 2).astype(float)
        col[missing] = np.nan
        return col, float
    if case == "bool":
        return codes % 2 == 0, bool
    if case == "bool-object-none":
        col = (codes % 2 == 0).astype(object)
        col[missing] = None
        return col, bool
    if case == "Int64-na":
        return pd.array(np.where(missing, None, codes + 1).tolist(), dtype="Int64"), int
    if case == "boolean-na":
        return pd.array(np.where(missing, None, codes % 2 == 0).tolist(), dtype="boolean"), bool
    if case == "category-str":
        return pd.Categorical(np.where(missing, None, np.array(["a", "b", "c"])[codes])), str
    if case == "category-int":
        return pd.Categorical(np.where(missing, None, codes * 10 + 10).tolist()), int
    if case == "string-python":
        values = np.where(missing, None, np.array(["a", "b", "c"], dtype=object)[codes])
        return pd.array(values.tolist(), dtype="string[python]"), str
    raise AssertionError(case)


LABEL_CASES = ["str", "str-none", "str-nan", "str-pd-na", "int", "int-object-none", "float-nan",
               "bool", "bool-object-none", "Int64-na", "boolean-na", "category-str",
               "category-int", "string-python"]


def _is_type(value, expected):
    if expected is bool:
        return isinstance(value, (bool, np.bool_))
    if expected is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if expected is float:
        return isinstance(value, (float, np.floating, int, np.integer))
    return isinstance(value, expected)


@pytest.mark.parametrize("case", LABEL_CASES)
def test_label_types_round_trip(data, case):
    X, Y = data
    column, expected = _label_column(case, len(X))
    Y = pd.DataFrame({"value": Y["value"], "lab": column})
    model = make().fit(X, Y)
    observed = Y["lab"][~Y["lab"].isna()]
    truth = sorted(set(observed.tolist()))
    classes = model.classes_["lab"].tolist()
    assert classes == truth, "classes_ are the observed labels, missing markers excluded"
    pred = model.predict(X)["lab"]
    assert set(pred.tolist()) <= set(truth)
    assert all(_is_type(v, expected) for v in pred.tolist()), pred.tolist()[:5]
    mask = ~Y["lab"].isna().to_numpy()
    expected_accuracy = np.mean(pred.to_numpy()[mask] == np.asarray(Y["lab"][mask], dtype=object))
    assert model.score_tasks(X, Y)["lab"] == pytest.approx(expected_accuracy)


@pytest.mark.parametrize("case", ["float-nan", "object-none", "Float64-na"])
def test_missing_regression_targets(data, case):
    X, Y = data
    value = Y["value"].to_numpy().copy()
    missing = np.arange(len(X)) % 5 == 0
    if case == "float-nan":
        value[missing] = np.nan
        col = value
    elif case == "object-none":
        col = value.astype(object)
        col[missing] = None
    else:
        col = pd.array(np.where(missing, None, value).tolist(), dtype="Float64")
    Y = Y.assign(value=col)
    model = make().fit(X, Y)
    pred = model.predict(X)
    assert np.isfinite(pred["value"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.score_tasks(X, Y)["value"])


@pytest.fixture(scope="module")
def u1_model(data):
    """A classifier fitted on a numpy '<U1' array: the classes are one-character strings."""
    X, _ = data
    Y = np.column_stack([np.where(X[:, 0] > 0, "a", "b"), np.where(X[:, 1] > 0, "c", "d")])
    assert Y.dtype == np.dtype("<U1")
    return make(MultiTaskClassifier).fit(X, Y), X, Y


@pytest.mark.parametrize("how", ["score_tasks", "score", "make_task_scorer", "mean_scorer"])
def test_unseen_longer_labels_are_not_truncated(u1_model, how):
    # 'ax' is not 'a': scoring must compare the labels, not their first character.
    model, X, Y = u1_model
    unseen = np.char.add(Y, "x")
    if how == "score_tasks":
        assert model.score_tasks(X, unseen) == {"task_0": 0.0, "task_1": 0.0}
    elif how == "score":
        assert model.score(X, unseen) == 0.0
    elif how == "make_task_scorer":
        assert make_task_scorer("task_0", "accuracy")(model, X, unseen) == 0.0
    else:
        assert make_mean_task_scorer()(model, X, unseen) == 0.0


def test_unseen_longer_labels_1d(data):
    X, _ = data
    y = np.where(X[:, 0] > 0, "a", "b")
    model = make(MultiTaskClassifier).fit(X, y)
    assert model.score(X, np.char.add(y, "x")) == 0.0


# ---------------------------------------------------------------------------
# X: bad values and the forms that must work


BAD_X = [
    ("nan", lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X),
     r"(?i)imput"),
    ("inf", lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X),
     r"(?i)imput"),
    ("frame-nullable-na", lambda X: pd.DataFrame(X).astype("Float64").mask(
        np.arange(X.size).reshape(X.shape) == 5, pd.NA), r"(?i)imput"),
    ("non-numeric-column", lambda X: pd.DataFrame(X, columns=list("abcd")).assign(
        island="Biscoe"), named("island")),
    ("category-column", lambda X: pd.DataFrame(X, columns=list("abcd")).assign(
        island=pd.Categorical(["Biscoe"] * len(X))), named("island")),
    ("datetime-column", lambda X: pd.DataFrame(X, columns=list("abcd")).assign(
        when=pd.date_range("2020", periods=len(X))), named("when")),
    ("object-strings", lambda X: np.array(pd.DataFrame(X).assign(s="x"), dtype=object),
     r"(?i)numeric|encode"),
    ("complex", lambda X: X.astype(complex), r"(?i)complex"),
    ("zero-rows", lambda X: X[:0], r"(?i)sample"),
    ("zero-features", lambda X: X[:, :0], r"(?i)feature"),
    ("one-dimensional", lambda X: X[:, 0], r"(?i)2D|reshape"),
    ("three-dimensional", lambda X: X[:, :, None], r"(?i)dim"),
    ("mixed-type-column-names", lambda X: pd.DataFrame(X, columns=["a", 1, "c", "d"]),
     r"(?i)feature names"),
]


@pytest.mark.parametrize("build, pattern", [pytest.param(b, m, id=i) for i, b, m in BAD_X])
def test_bad_X_at_fit(data, build, pattern):
    X, Y = data
    Xb = build(X)
    with pytest.raises(USER_ERRORS, match=pattern):
        make().fit(Xb, Y.iloc[:len(Xb)])


@pytest.mark.parametrize("build, pattern", [
    pytest.param(lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X),
                 r"(?i)imput", id="nan"),
    pytest.param(lambda X: X[:, :3], r"(?i)features", id="fewer-features"),
    pytest.param(lambda X: np.hstack([X, X[:, :1]]), r"(?i)features", id="more-features"),
    pytest.param(lambda X: X.astype(complex), r"(?i)complex", id="complex"),
    pytest.param(lambda X: X[:, 0], r"(?i)2D|reshape", id="one-dimensional"),
])
def test_bad_X_at_predict(fitted, data, build, pattern):
    X, _ = data
    with pytest.raises(USER_ERRORS, match=pattern):
        fitted.predict(build(X))


def test_one_row_regression_fits(data):
    # MLPRegressor fits on one row; so does a regression-only multi-task model.
    X, Y = data
    model = make(MultiTaskRegressor).fit(X[:1], Y[["value"]].iloc[:1])
    assert_finite_predictions(model.predict(X))


def test_one_row_classification_names_task(data):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=named("flag")):
        make().fit(X[:1], Y[["value", "flag"]].iloc[:1])


def _readonly(X):
    X = X.copy()
    X.flags.writeable = False
    return X


def _memmap(X, tmp_path):
    path = tmp_path / "X.dat"
    out = np.memmap(path, dtype=X.dtype, mode="w+", shape=X.shape)
    out[:] = X
    out.flush()
    del out
    return np.memmap(path, dtype=X.dtype, mode="r", shape=X.shape)


GOOD_X = [
    ("csr", lambda X, tmp: sparse.csr_matrix(X), True),
    ("csc", lambda X, tmp: sparse.csc_matrix(X), True),
    ("coo", lambda X, tmp: sparse.coo_matrix(X), True),
    ("csr-array", lambda X, tmp: sparse.csr_array(X), True),
    ("readonly", lambda X, tmp: _readonly(X), True),
    ("readonly-float32", lambda X, tmp: _readonly(X.astype(np.float32)), True),
    ("memmap-readonly", lambda X, tmp: _memmap(X, tmp), True),
    ("fortran-order", lambda X, tmp: np.asfortranarray(X), True),
    ("float16", lambda X, tmp: X.astype(np.float16), False),
    ("int", lambda X, tmp: np.round(X * 10).astype(np.int64), False),
    ("int8", lambda X, tmp: np.round(X * 10).astype(np.int8), False),
    ("bool", lambda X, tmp: X > 0, False),
    ("object-numbers", lambda X, tmp: X.astype(object), True),
    ("list-of-lists", lambda X, tmp: X.tolist(), True),
    ("frame-int-column-names", lambda X, tmp: pd.DataFrame(X), True),
    ("frame-Int64", lambda X, tmp: pd.DataFrame(np.round(X * 10)).astype("Int64"), False),
    ("frame-bool-column",
     lambda X, tmp: pd.DataFrame(X, columns=list("abcd")).assign(d=X[:, 3] > 0), False),
]


@pytest.mark.parametrize("build, same", [pytest.param(b, s, id=i) for i, b, s in GOOD_X])
def test_X_forms_that_work(data, tmp_path, build, same):
    X, Y = data
    Xf = build(X, tmp_path)
    model = make().fit(Xf, Y)
    pred = model.predict(Xf)
    assert isinstance(pred, pd.DataFrame) and pred.shape == (len(X), 3)
    assert_finite_predictions(pred)
    if same:  # the same numbers as float64 X: the same model
        reference = make().fit(X, Y).predict(X)
        pd.testing.assert_frame_equal(pred, reference, rtol=1e-5)


def test_frame_with_int_column_names_has_no_feature_names(data):
    # scikit-learn records feature names only when they are all strings.
    X, Y = data
    model = make().fit(pd.DataFrame(X), Y)
    assert not hasattr(model, "feature_names_in_")
    assert model.n_features_in_ == N_FEATURES


def test_renamed_features_at_predict_raise(data):
    X, Y = data
    model = make().fit(pd.DataFrame(X, columns=list("abcd")), Y)
    with pytest.raises(ValueError, match="(?i)feature names"):
        model.predict(pd.DataFrame(X, columns=list("abce")))


def test_array_at_predict_after_frame_fit_warns(data):
    X, Y = data
    model = make().fit(pd.DataFrame(X, columns=list("abcd")), Y)
    with pytest.warns(UserWarning, match="(?i)feature names"):
        model.predict(X)


def test_frame_at_predict_after_array_fit_warns(data):
    X, Y = data
    model = make().fit(X, Y)
    with pytest.warns(UserWarning, match="(?i)feature names"):
        model.predict(pd.DataFrame(X, columns=list("abcd")))


def test_predict_keeps_X_index(fitted, data):
    X, _ = data
    index = pd.Index([f"r{i}" for i in range(len(X))], name="id")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fitted without feature names
        pred = fitted.predict(pd.DataFrame(X, index=index))
    assert pred.index.equals(index)


# ---------------------------------------------------------------------------
# Zero rows at predict: an empty result of the fitted form


def test_predict_zero_rows_frame(fitted, data):
    X, Y = data
    pred = fitted.predict(X[:0])
    assert isinstance(pred, pd.DataFrame)
    assert pred.shape == (0, 3) and list(pred.columns) == list(Y.columns)


def test_predict_zero_rows_frame_X_keeps_index(data):
    X, Y = data
    Xdf = pd.DataFrame(X, columns=list("abcd"))
    pred = make().fit(Xdf, Y).predict(Xdf.iloc[:0])
    assert isinstance(pred, pd.DataFrame) and pred.shape == (0, 3)
    assert pred.index.equals(Xdf.index[:0])


def test_predict_proba_zero_rows_frame(fitted, data):
    X, _ = data
    proba = fitted.predict_proba(X[:0])
    assert set(proba) == {"flag", "level"}
    assert proba["flag"].shape == (0, 2) and proba["level"].shape == (0, 3)


def test_predict_zero_rows_array(fitted_array, data):
    X, _ = data
    model, Ya = fitted_array
    pred = model.predict(X[:0])
    assert isinstance(pred, np.ndarray) and pred.shape == (0, Ya.shape[1])


def test_predict_proba_zero_rows_array(fitted_array, data):
    X, _ = data
    model, _ = fitted_array
    proba = model.predict_proba(X[:0])
    assert isinstance(proba, list) and proba[0] is None and proba[1].shape == (0, 2)


def test_predict_zero_rows_vector(data):
    X, Y = data
    model = make(MultiTaskClassifier).fit(X, Y["level"].to_numpy())
    assert model.predict(X[:0]).shape == (0,)
    assert model.predict_proba(X[:0]).shape == (0, 3)


def test_predict_zero_rows_dict(data):
    X, Y = data
    model = make().fit(X, {"value": Y["value"].to_numpy(), "flag": Y["flag"].to_numpy()})
    pred = model.predict(X[:0])
    assert isinstance(pred, dict) and list(pred) == ["value", "flag"]
    assert all(np.shape(v) == (0,) for v in pred.values())


# ---------------------------------------------------------------------------
# User callables: custom trunks and losses


class RaisingTrunk(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


class TrainOnlyRaisingTrunk(nn.Module):
    """Fails only in training mode, as a shape bug in a training-only branch would."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 8)

    def forward(self, x):
        if self.training:
            raise RuntimeError("boom in training")
        return self.lin(x)


class FirstRowTrunk(nn.Module):
    """Returns one row whatever the batch: broadcasting would hide it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 8)

    def forward(self, x):
        return self.lin(x)[:1]


class ThreeDTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 8)

    def forward(self, x):
        return self.lin(x).unsqueeze(1)


class TupleTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 8)

    def forward(self, x):
        h = self.lin(x)
        return h, h


class WrongInputTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(10, 8)

    def forward(self, x):
        return self.lin(x)


class NeedsArgTrunk(nn.Module):
    def __init__(self, n_in):
        super().__init__()
        self.lin = nn.Linear(n_in, 8)

    def forward(self, x):
        return self.lin(x)


class GoodTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 8)

    def forward(self, x):
        return torch.relu(self.lin(x))


@pytest.mark.parametrize("module, pattern", [
    pytest.param(RaisingTrunk(), "RaisingTrunk", id="raises"),
    pytest.param(TrainOnlyRaisingTrunk(), "TrainOnlyRaisingTrunk", id="raises-in-training"),
    pytest.param(FirstRowTrunk(), "FirstRowTrunk", id="wrong-batch-size"),
    pytest.param(ThreeDTrunk(), "ThreeDTrunk", id="3d-output"),
    pytest.param(TupleTrunk(), "TupleTrunk", id="tuple-output"),
    pytest.param(WrongInputTrunk(), "WrongInputTrunk", id="wrong-input-width"),
    pytest.param(NeedsArgTrunk, r"\bmodule\b", id="class-needs-args"),
    pytest.param(object(), r"\bmodule\b", id="not-a-module"),
])
def test_bad_module(data, module, pattern):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=pattern):
        make(module=module).fit(X, Y)


def test_wrong_batch_module_with_regression_only(data):
    # With an MSE head a (1, D) output broadcasts against (B, 1) targets: it must not
    # train silently on the broadcast.
    X, Y = data
    with pytest.raises(USER_ERRORS, match="FirstRowTrunk"):
        make(MultiTaskRegressor, module=FirstRowTrunk()).fit(X, Y[["value"]])


def test_good_module_instance_and_class(data):
    X, Y = data
    for module in (GoodTrunk(), GoodTrunk):
        assert_finite_predictions(make(module=module).fit(X, Y).predict(X))


def loss_raises(pred, target):
    raise ValueError("boom")


def loss_per_row(pred, target):
    return (pred - target).square().ravel()


def loss_nan(pred, target):
    return (pred - target).square().mean() * float("nan")


def loss_float(pred, target):
    return 0.5


def loss_wrong_signature(pred):
    return pred.mean()


@pytest.mark.parametrize("loss", [
    pytest.param(loss_raises, id="raises"),
    pytest.param(loss_per_row, id="per-row-vector"),
    pytest.param(loss_float, id="python-float"),
    pytest.param(loss_wrong_signature, id="one-argument"),
])
def test_bad_callable_loss(data, loss):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=named("value")):
        make(losses={"value": loss}).fit(X, Y)


def _divergence_error(exc):
    """A divergence may stop the fit with ValueError, FloatingPointError or a dedicated
    RuntimeError subclass (not torch's bare RuntimeError)."""
    return isinstance(exc, (ValueError, FloatingPointError)) or (
        isinstance(exc, RuntimeError) and type(exc) is not RuntimeError)


def test_callable_loss_returning_nan(data):
    X, Y = data
    with pytest.raises(Exception) as info:
        make(losses={"value": loss_nan}).fit(X, Y)
    assert _divergence_error(info.value), repr(info.value)
    assert re.search(named("value"), str(info.value)), str(info.value)


def test_torch_loss_module_works(data):
    X, Y = data
    model = make(losses={"value": nn.L1Loss(), "flag": nn.BCEWithLogitsLoss()}).fit(X, Y)
    assert_finite_predictions(model.predict(X))


# ---------------------------------------------------------------------------
# Divergence: never end silently with NaN


class NanAfter:
    """The MSE for the first `calls` calls, NaN afterwards (a loss that blows up)."""

    def __init__(self, calls):
        self.calls = calls
        self.count = 0

    def __call__(self, pred, target):
        self.count += 1
        value = (pred - target).square().mean()
        return value if self.count <= self.calls else value * float("nan")


def _big_Y(data):
    X, Y = data
    return X, Y.assign(value=Y["value"] * 1e6)


@pytest.mark.parametrize("params", [
    pytest.param(dict(optimizer="sgd", lr=1e6), id="sgd-lr1e6"),
    pytest.param(dict(optimizer="sgd", lr=1e6, weighting="uncertainty"),
                 id="sgd-lr1e6-uncertainty"),
    pytest.param(dict(optimizer="sgd", lr=1e6, loss_normalization="initial"),
                 id="sgd-lr1e6-normalized"),
    pytest.param(dict(losses={"value": NanAfter(3)}, max_epochs=3), id="loss-turns-nan"),
])
def test_divergence_without_early_stopping(data, params):
    X, Y = _big_Y(data)
    try:
        model = make(**params).fit(X, Y)
    except Exception as exc:
        assert _divergence_error(exc), repr(exc)
        message = str(exc)
        assert re.search(named("value"), message), message
        assert "epoch" in message.lower(), message
        return
    # A fit that did not raise must not predict NaN.
    assert_finite_predictions(model.predict(X))


@pytest.mark.parametrize("params", [
    pytest.param(dict(optimizer="sgd", lr=1e6), id="sgd-lr1e6"),
    pytest.param(dict(losses={"value": NanAfter(4)}, max_epochs=4), id="loss-turns-nan"),
])
def test_divergence_with_early_stopping(data, params):
    X, Y = _big_Y(data)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = make(early_stopping=True, validation_fraction=0.25, patience=5,
                         **params).fit(X, Y)
    except Exception as exc:
        assert _divergence_error(exc), repr(exc)
        assert re.search(named("value"), str(exc)), str(exc)
        return
    # A finite best checkpoint restored, and the user told so.
    assert_finite_predictions(model.predict(X))
    assert any(re.search(r"(?i)finite|nan|diverg", str(w.message)) for w in caught), \
        [str(w.message) for w in caught]


# ---------------------------------------------------------------------------
# Interruption


class InterruptAt(Callback):
    def __init__(self, epoch=2):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("params", [
    pytest.param({}, id="plain"),
    pytest.param({"early_stopping": True, "validation_fraction": 0.25}, id="early-stopping"),
])
def test_keyboard_interrupt_leaves_usable_model(data, params):
    X, Y = data
    model = make(max_epochs=5, callbacks=[InterruptAt(2)], **params).fit(X, Y)
    assert len(model.history_) == 2
    pred = model.predict(X)
    assert pred.shape == (len(X), 3)
    assert_finite_predictions(pred)
    assert model.predict_proba(X)["level"].shape == (len(X), 3)


# ---------------------------------------------------------------------------
# Persistence in a fresh process, and threads


@pytest.fixture(scope="module")
def fresh_process_predictions(fitted, data, tmp_path_factory):
    X, _ = data
    tmp = tmp_path_factory.mktemp("persist")
    np.save(tmp / "X.npy", X)
    with open(tmp / "model.pkl", "wb") as f:
        pickle.dump(fitted, f)
    joblib.dump(fitted, tmp / "model.joblib")
    script = (
        "import pickle, joblib, numpy as np, pandas as pd\n"
        "X = np.load('X.npy')\n"
        "with open('model.pkl', 'rb') as f:\n"
        "    m = pickle.load(f)\n"
        "pd.to_pickle((m.predict(X), m.predict_proba(X)), 'pickle.out')\n"
        "m = joblib.load('model.joblib')\n"
        "pd.to_pickle((m.predict(X), m.predict_proba(X)), 'joblib.out')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
        "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, tmp


@pytest.mark.parametrize("kind", ["pickle", "joblib"])
def test_fresh_process_unpickle(fitted, data, fresh_process_predictions, kind):
    X, _ = data
    result, tmp = fresh_process_predictions
    assert result.returncode == 0, result.stderr[-3000:]
    pred, proba = pd.read_pickle(tmp / f"{kind}.out")
    pd.testing.assert_frame_equal(pred, fitted.predict(X))
    for task, p in fitted.predict_proba(X).items():
        np.testing.assert_array_equal(proba[task], p)


def test_in_process_pickle_round_trip_keeps_int_labels(data):
    X, Y = data
    Y = Y.set_axis([0, 1, 2], axis=1)
    model = pickle.loads(pickle.dumps(make().fit(X, Y)))
    assert list(model.predict(X).columns) == [0, 1, 2]


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_threads_predict_like_sequential(fitted, method):
    X = make_X(n=2000, seed=5)
    expected = getattr(fitted, method)(X)
    barrier = threading.Barrier(4)

    def work(_):
        barrier.wait()
        return getattr(fitted, method)(X)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for result in results:
        if method == "predict":
            pd.testing.assert_frame_equal(result, expected)
        else:
            for task in expected:
                np.testing.assert_array_equal(result[task], expected[task])


# ---------------------------------------------------------------------------
# Nothing the user passed is mutated


class Recorder(Callback):
    """Records the epochs it saw: a callback used in place, not copied, fills its list."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, net, **kwargs):
        self.seen.append(len(net.history))


def _mutation_case(case, X, Y):
    """(fit kwargs, estimator params, the object to watch)."""
    Ynan = Y.copy()
    Ynan.loc[::4, "flag"] = np.nan
    Ynan.loc[::5, "value"] = np.nan
    if case == "X-numpy":
        return dict(X=X.copy(), Y=Y), {}, "X"
    if case == "X-float32":  # shares memory with a torch tensor when converted without copy
        return dict(X=X.astype(np.float32), Y=Y), {}, "X"
    if case == "X-frame":
        return dict(X=pd.DataFrame(X, columns=list("abcd")), Y=Y), {}, "X"
    if case == "Y-frame-with-nan":
        return dict(X=X, Y=Ynan), {}, "Y"
    if case == "Y-frame-category":
        return dict(X=X, Y=Y.astype({"level": "category"})), {}, "Y"
    if case == "Y-dict":
        return dict(X=X, Y={k: Ynan[k].to_numpy().copy() for k in Y}), {}, "Y"
    if case == "Y-array":
        Ya = np.column_stack([Ynan["value"], (Y["flag"] == "yes").astype(float)])
        return dict(X=X, Y=Ya), {}, "Y"
    if case == "sample_weight":
        return dict(X=X, Y=Y, sample_weight=np.linspace(0.5, 2, len(X))), {}, "sample_weight"
    params = {
        "loss_weights": {"value": 2.0, "flag": 0.5},
        "losses": {"value": nn.HuberLoss(delta=2.0), "flag": "hinge"},
        "callbacks": [Recorder(), EarlyStopping(monitor="train_loss", patience=3)],
        "module": GoodTrunk(),
        "tasks": {"value": "regression", "level": "multiclass"},
        "class_weight": {"flag": {"yes": 2.0, "no": 1.0}},
        "optimizer_kwargs": {"betas": (0.8, 0.99)},
        "head_inputs": {"level": ["flag"]},
        "auxiliary_tasks": ["level"],
        "task_depth": {"flag": 1},
        "weighting": Uncertainty(),
        "hidden_layer_sizes": [8],
    }
    return dict(X=X, Y=Y), {case: params[case]}, case


MUTATION_CASES = ["X-numpy", "X-float32", "X-frame", "Y-frame-with-nan", "Y-frame-category",
                  "Y-dict", "Y-array", "sample_weight", "loss_weights", "losses", "callbacks",
                  "module", "tasks", "class_weight", "optimizer_kwargs", "head_inputs",
                  "auxiliary_tasks", "task_depth", "weighting", "hidden_layer_sizes"]


@pytest.mark.parametrize("case", MUTATION_CASES)
def test_nothing_passed_is_mutated(data, case):
    X, Y = data
    fit_args, params, watched = _mutation_case(case, X, Y)
    target = fit_args[watched] if watched in fit_args else params[watched]
    before = snapshot(target)
    model = make(**params)
    model.fit(fit_args["X"], fit_args["Y"], sample_weight=fit_args.get("sample_weight"))
    assert_unchanged(before, target)
    if watched in params:
        assert model.get_params()[watched] is target  # stored as passed, not replaced


def test_partial_fit_does_not_mutate_Y(data):
    X, Y = data
    Ynan = Y.copy()
    Ynan.loc[::3, "level"] = None
    before = Ynan.copy(deep=True)
    make().partial_fit(X, Ynan).partial_fit(X, Ynan)
    pd.testing.assert_frame_equal(Ynan, before)


# ---------------------------------------------------------------------------
# Scale edges


def test_single_task_frame(data):
    X, Y = data
    pred = make().fit(X, Y[["flag"]]).predict(X)
    assert isinstance(pred, pd.DataFrame) and list(pred.columns) == ["flag"]


def test_ten_tasks(data):
    X, _ = data
    rng = np.random.default_rng(3)
    Y = pd.DataFrame({f"t{j}": (X @ rng.normal(size=N_FEATURES) if j % 2 else
                                np.where(X[:, j % N_FEATURES] > 0, "p", "q"))
                      for j in range(10)})
    model = make().fit(X, Y)
    pred = model.predict(X)
    assert list(pred.columns) == list(Y.columns)
    assert_finite_predictions(pred)
    assert len(model.score_tasks(X, Y)) == 10


def test_fifty_classes():
    X = make_X(n=100, seed=2)
    y = np.array([f"c{j:02d}" for j in range(50)] * 2, dtype=object)
    model = make(MultiTaskClassifier).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (100, 50) and len(model.classes_) == 50
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert set(model.predict(X)) <= set(y)


def test_fifty_integer_classes_declared_multiclass():
    X = make_X(n=100, seed=2)
    Y = pd.DataFrame({"code": np.arange(100) % 50})
    model = make(tasks={"code": "multiclass"}).fit(X, Y)
    assert model.predict_proba(X)["code"].shape == (100, 50)


def test_batch_larger_than_n(data):
    X, Y = data
    assert_finite_predictions(make(batch_size=10_000).fit(X, Y).predict(X))


def test_batch_size_one(data):
    X, Y = data
    assert_finite_predictions(make(batch_size=1, max_epochs=1).fit(X[:20], Y.iloc[:20]).predict(X))


def test_two_rows(data):
    X, Y = data
    rows = [int(np.argmax(Y["flag"] == "yes")), int(np.argmax(Y["flag"] == "no"))]
    model = make().fit(X[rows], Y[["value", "flag"]].iloc[rows])
    pred = model.predict(X)
    assert pred.shape == (len(X), 2)
    assert_finite_predictions(pred)


def test_task_with_two_observed_labels(data):
    X, Y = data
    flag = pd.Series([None] * len(Y), dtype=object)
    flag.iloc[0], flag.iloc[1] = "yes", "no"
    model = make().fit(X, Y.assign(flag=flag))
    assert list(model.classes_["flag"]) == ["no", "yes"]
    assert set(model.predict(X)["flag"]) <= {"yes", "no"}


@pytest.mark.parametrize("scale", [1e12, 1e-12, -1e9])
def test_extreme_target_scales(data, scale):
    X, Y = data
    value = scale * (5.0 + Y["value"])
    model = make(MultiTaskRegressor).fit(X, value.to_frame("value"))
    pred = model.predict(X)["value"].to_numpy(dtype=float)
    assert np.isfinite(pred).all()
    ratio = np.abs(pred).mean() / np.abs(value).mean()
    assert 0.1 < ratio < 10, ratio  # on the original scale


@pytest.mark.parametrize("constant", [0.0, 42.0, 1e9])
def test_constant_regression_target(data, constant):
    # A constant has no spread to standardise by: predictions stay near it, within the
    # network's residual (at most about one unit after a short fit), never NaN or inf.
    X, _ = data
    y = np.full(len(X), constant)
    pred = make(MultiTaskRegressor).fit(X, y).predict(X)
    assert pred.shape == (len(X),) and np.isfinite(pred).all()
    assert np.abs(pred - constant).max() <= 1.0 + 1e-6 * abs(constant)


def test_one_feature(data):
    X, Y = data
    assert_finite_predictions(make().fit(X[:, :1], Y).predict(X[:, :1]))


def test_many_features():
    X = make_X(n=40, p=300, seed=4)
    Y = make_Y(X)
    assert_finite_predictions(make().fit(X, Y).predict(X))


# ---------------------------------------------------------------------------
# partial_fit: tasks fixed by the first call, classes


@pytest.mark.parametrize("first, second, pattern", [
    pytest.param(["value", "flag"], ["value", "level"], named("level"), id="swapped-task"),
    pytest.param(["value", "flag"], ["value"], named("flag"), id="missing-task"),
    pytest.param(["value", "flag"], ["value", "flag", "level"], named("level"), id="extra-task"),
])
def test_partial_fit_other_tasks(data, first, second, pattern):
    X, Y = data
    model = make().partial_fit(X, Y[first])
    with pytest.raises(USER_ERRORS, match=pattern):
        model.partial_fit(X, Y[second])


def test_fit_then_partial_fit_other_tasks(data):
    X, Y = data
    model = make().fit(X, Y[["value", "flag"]])
    with pytest.raises(USER_ERRORS, match=named("level")):
        model.partial_fit(X, Y[["value", "level"]])


def test_warm_start_refit_other_tasks(data):
    X, Y = data
    model = make(warm_start=True).fit(X, Y[["value", "flag"]])
    with pytest.raises(USER_ERRORS, match=named("level")):
        model.fit(X, Y[["value", "level"]])


def test_partial_fit_other_feature_count(data):
    X, Y = data
    model = make().partial_fit(X, Y)
    with pytest.raises(USER_ERRORS, match="(?i)features"):
        model.partial_fit(X[:, :3], Y)


def test_partial_fit_new_label(data):
    X, Y = data
    model = make().partial_fit(X, Y)
    with pytest.raises(USER_ERRORS, match=named("flag")):
        model.partial_fit(X, Y.assign(flag=np.where(X[:, 0] > 1, "maybe", Y["flag"])))


def test_partial_fit_regression_task_turns_text(data):
    X, Y = data
    model = make().partial_fit(X, Y)
    with pytest.raises(USER_ERRORS, match=named("value")):
        model.partial_fit(X, Y.assign(value=np.where(X[:, 0] > 0, "high", "low")))


@pytest.mark.parametrize("classes, pattern", [
    pytest.param({"price": ["a", "b"]}, named("price"), id="unknown-task"),
    pytest.param({"value": [0, 1]}, named("value"), id="regression-task"),
    pytest.param({"flag": ["yes"]}, named("flag"), id="one-label"),
    pytest.param({"flag": ["yes", "maybe"]}, named("flag"), id="missing-observed-label"),
    pytest.param({"level": [["low", "mid"], ["high", "x"]]}, named("level"), id="2d-labels"),
    pytest.param(5, param_named("classes"), id="type-int"),
    pytest.param(["no", "yes"], param_named("classes"), id="flat-list-for-three-tasks"),
])
def test_partial_fit_bad_classes(data, classes, pattern):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=pattern):
        make().partial_fit(X, Y, classes=classes)


def test_partial_fit_classes_change_between_calls(data):
    X, Y = data
    model = make().partial_fit(X, Y, classes={"flag": ["no", "yes"]})
    with pytest.raises(USER_ERRORS, match=named("flag")):
        model.partial_fit(X, Y, classes={"flag": ["no", "yes", "maybe"]})


def test_partial_fit_classes_ahead_of_labels(data):
    X, Y = data
    model = make(MultiTaskClassifier).partial_fit(X, Y["flag"].to_numpy(),
                                                  classes=["maybe", "no", "yes"])
    assert list(model.classes_) == ["maybe", "no", "yes"]
    assert model.predict_proba(X).shape == (len(X), 3)


# ---------------------------------------------------------------------------
# sample_weight


@pytest.mark.parametrize("build", [
    pytest.param(lambda n: -np.ones(n), id="negative"),
    pytest.param(lambda n: np.ones(n - 1), id="wrong-length"),
    pytest.param(lambda n: np.where(np.arange(n) == 3, np.nan, 1.0), id="nan"),
    pytest.param(lambda n: np.where(np.arange(n) == 3, np.inf, 1.0), id="inf"),
    pytest.param(lambda n: np.ones((n, 2)), id="2d"),
    pytest.param(lambda n: np.array(["heavy"] * n), id="strings"),
])
def test_bad_sample_weight(data, build):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=r"(?i)sample.weight"):
        make().fit(X, Y, sample_weight=build(len(X)))


@pytest.mark.parametrize("method", ["partial_fit", "score_tasks"])
def test_bad_sample_weight_elsewhere(fitted, data, method):
    X, Y = data
    model = make() if method == "partial_fit" else fitted
    with pytest.raises(USER_ERRORS, match=r"(?i)sample.weight"):
        getattr(model, method)(X, Y, sample_weight=np.ones(len(X) - 1))


# ---------------------------------------------------------------------------
# Scoring against a Y that does not fit the model


@pytest.mark.parametrize("how", ["score_tasks", "score", "task_scorer", "mean_scorer",
                                 "task_scorers"])
def test_scoring_y_lacking_a_task(fitted, data, how):
    X, Y = data
    Y = Y.drop(columns="flag")
    with pytest.raises(USER_ERRORS, match=named("flag")):
        if how == "score_tasks":
            fitted.score_tasks(X, Y)
        elif how == "score":
            fitted.score(X, Y)
        elif how == "task_scorer":
            make_task_scorer("flag", "accuracy")(fitted, X, Y)
        elif how == "mean_scorer":
            make_mean_task_scorer()(fitted, X, Y)
        else:
            make_task_scorers(fitted)["flag"](fitted, X, Y)


@pytest.mark.parametrize("task, metric, pattern", [
    pytest.param("price", "accuracy", named("price"), id="unknown-task"),
    pytest.param("value", "accuracy", named("value"), id="classification-metric-on-regression"),
    pytest.param("value", "roc_auc", named("value"), id="proba-metric-on-regression"),
    pytest.param("flag", "r2", named("flag"), id="regression-metric-on-classification"),
    pytest.param("flag", "no_such_metric", "no_such_metric", id="unknown-metric"),
])
def test_bad_task_scorer(fitted, data, task, metric, pattern):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=pattern):
        make_task_scorer(task, metric)(fitted, X, Y)


def test_score_tasks_wrong_row_count(fitted, data):
    X, Y = data
    with pytest.raises(USER_ERRORS, match=r"\b59\b"):
        fitted.score_tasks(X, Y.iloc[:-1])


def test_score_array_y_lacking_a_column(fitted_array, data):
    X, _ = data
    model, Ya = fitted_array
    with pytest.raises(USER_ERRORS, match=r"task_1|column"):
        model.score_tasks(X, Ya[:, :1])


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        make().predict(make_X())


def test_package_imported_from_this_tree():
    # The battery specifies this checkout's package, not another installed copy.
    assert Path(sklearn_mtl.__file__).resolve().parents[1] == REPO
