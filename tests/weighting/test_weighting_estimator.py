"""Every strategy inside the estimator: missing labels, history, search, devices."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.weighting import WEIGHTINGS, CAGrad, PCGrad, Static, ValidationTrend
from tests.conftest import make_mixed

SMALL = {"hidden_layer_sizes": (16,), "head_hidden_sizes": (8,), "batch_size": 16,
         "max_epochs": 3, "random_state": 0}
NAMES = sorted(WEIGHTINGS)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def sparse_data(n=160, seed=0):
    """Mixed tasks with heavy missingness; 'level' has only 3 labels, so with batches of
    16 at least 7 of the 10 batches of every epoch have no label for it."""
    X, Y = make_mixed(n=n, seed=seed, missing=0.4)
    rng = np.random.default_rng(seed)
    level = pd.Series(np.nan, index=Y.index, dtype=object)
    keep = rng.choice(n, size=3, replace=False)
    level.iloc[keep] = ["low", "mid", "high"]
    Y["level"] = level
    return X, Y


def finite_history(model):
    keys = [k for k in model.history_[-1] if k.startswith(("train_loss", "weight_", "valid_loss"))]
    assert {f"weight_{t}" for t in model.task_names_} <= set(keys)
    for key in keys:
        values = np.asarray(model.history_[:, key], dtype=float)
        assert np.isfinite(values).all(), key
    return keys


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_trains_with_missing_labels(name, device):
    X, Y = sparse_data()
    model = MultiTaskRegressorClassifier(weighting=name, device=device, **SMALL).fit(X, Y)
    finite_history(model)
    assert len(model.history_) == SMALL["max_epochs"]
    pred = model.predict(X)
    assert np.isfinite(pred["value"].to_numpy()).all()
    for task, proba in model.predict_proba(X).items():
        assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1, atol=1e-5), task
    # The strategy the net used is a copy: the estimator's parameter is untouched.
    assert model.weighting == name


@pytest.mark.parametrize("name", ["mgda", "upgrad", "famo", "uncertainty"])
def test_loss_normalization_inside_the_estimator(name):
    X, Y = sparse_data()
    for mode in ("initial", "running_mean"):
        model = MultiTaskRegressorClassifier(weighting=name, loss_normalization=mode,
                                             **SMALL).fit(X, Y)
        finite_history(model)
        scale = model.net_.loss_normalization_.scale
        assert torch.isfinite(scale).all() and (scale > 0).all()
        assert model.net_.loss_normalization_.seen.all()


def test_loss_normalization_is_validated_in_fit():
    X, Y = make_mixed(n=40)
    for bad in ("mean", None, 1, ["initial"]):
        model = MultiTaskRegressorClassifier(loss_normalization=bad, **SMALL)
        with pytest.raises(ValueError, match="The 'loss_normalization' parameter of MultiTaskRegressorClassifier must be a str among"):
            model.fit(X, Y)


def test_initial_normalization_balances_a_large_scale_loss():
    # The first training loss of every task is its scale, so the first step's
    # normalised losses, and therefore the reported weights times losses, are equal.
    X, Y = make_mixed(n=64)
    model = MultiTaskRegressorClassifier(loss_normalization="initial", batch_size=64,
                                         max_epochs=1, random_state=0).fit(X, Y)
    first = model.net_.loss_normalization_.scale.numpy()
    raw = np.array([model.history_[0, f"train_loss_{t}"] for t in model.task_names_])
    np.testing.assert_allclose(first, raw, rtol=1e-5)  # one step: the epoch mean is it
    assert model.history_[0, "train_loss"] == pytest.approx(3.0, rel=1e-5)


def test_static_weight_history_known_answer():
    X, Y = make_mixed(n=96)
    model = MultiTaskRegressorClassifier(loss_weights={"value": 2.0, "flag": 0.5},
                                         **SMALL).fit(X, Y)
    for epoch in range(len(model.history_)):
        assert model.history_[epoch, "weight_value"] == pytest.approx(2.0)
        assert model.history_[epoch, "weight_flag"] == pytest.approx(0.5)
        assert model.history_[epoch, "weight_level"] == pytest.approx(1.0)


def test_validation_trend_with_validation_data():
    X, Y = make_mixed(n=200)
    model = MultiTaskRegressorClassifier(weighting=ValidationTrend(window=1),
                                         validation_fraction=0.25, **{**SMALL, "max_epochs": 5})
    model.fit(X, Y)
    keys = finite_history(model)
    assert {f"valid_loss_{t}" for t in model.task_names_} <= set(keys)
    weights = np.array([[model.history_[e, f"weight_{t}"] for t in model.task_names_]
                        for e in range(5)])
    # Every task is labelled in every batch: the weights are T * softmax, summing to T.
    np.testing.assert_allclose(weights.sum(1), 3.0, rtol=1e-5)
    np.testing.assert_allclose(weights[:2], 1.0)  # until 2 * window epochs have passed
    assert np.abs(weights[2:] - 1.0).max() > 1e-4  # then the validation trends differ
    state = model.net_.weighting_
    assert torch.isfinite(state.valid_history[-2:]).all()


def test_strategies_clone_and_estimator_pickles():
    strategy = CAGrad(c=0.3)
    model = MultiTaskRegressorClassifier(weighting=strategy, loss_normalization="running_mean",
                                         **SMALL)
    twin = clone(model)
    assert twin.weighting is not strategy and twin.weighting.get_params() == {"c": 0.3,
                                                                                "rescale": 1}
    X, Y = make_mixed(n=80)
    model.fit(X, Y)
    again = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(again.predict(X), model.predict(X))
    again.set_params(warm_start=True, max_epochs=1).fit(X, Y)  # training goes on after loading
    finite_history(again)
    assert strategy.get_params() == {"c": 0.3, "rescale": 1}  # never mutated by fit


def test_nested_set_params_reaches_the_strategy():
    model = MultiTaskRegressorClassifier(weighting=CAGrad())
    model.set_params(weighting__c=0.7, loss_weights__value=2.0)
    assert model.weighting.c == 0.7 and model.loss_weights == {"value": 2.0}
    assert model.get_params()["weighting__c"] == 0.7
    X, Y = make_mixed(n=48)
    model.set_params(**SMALL).fit(X, Y)
    assert model.net_.weighting_.c == 0.7  # the state was built from the new value


def test_grid_search_over_strategies_and_their_hyperparameters():
    X, Y = make_mixed(n=96)
    base = MultiTaskRegressorClassifier(**{**SMALL, "max_epochs": 2})
    grid = {"weighting": [Static(), PCGrad(), CAGrad(c=0.2), CAGrad(c=0.5)]}
    search = GridSearchCV(base, grid, cv=KFold(2)).fit(X, Y)
    params = search.cv_results_["params"]
    assert [type(p["weighting"]).__name__ for p in params] == ["Static", "PCGrad", "CAGrad",
                                                                "CAGrad"]
    assert [p["weighting"].get_params().get("c") for p in params] == [None, None, 0.2, 0.5]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.weighting is not grid["weighting"][search.best_index_]
    # A strategy's own hyperparameter as a grid key, next to a loss weight.
    search = GridSearchCV(base.set_params(weighting=CAGrad()),
                          {"weighting__c": [0.1, 0.6], "loss_weights__flag": [1.0, 2.0]},
                          cv=KFold(2)).fit(X, Y)
    assert len(search.cv_results_["params"]) == 4
    best = search.best_params_
    assert search.best_estimator_.net_.weighting_.c == best["weighting__c"]
    assert search.best_estimator_.loss_weights == {"flag": best["loss_weights__flag"]}
    assert base.weighting.c == 0.4  # the base estimator's strategy is untouched
