"""Sample weights: a zero weight is a dropped row, and with scikit-learn's metadata
routing sample_weight reaches fit and the scorers through GridSearchCV, Pipeline and
cross_validate."""

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier, make_task_scorer
from sklearn_mtl._tasks import class_weight_vectors, encode_targets, read_targets

from .conftest import make_mixed


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def _conflicting_halves(n=160, seed=0):
    """y = 3 x0 on the first half and -3 x0 on the second: with the second half weighted
    0 a model learns y = 3 x0; unweighted it learns about 0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    half = np.arange(n) < n // 2
    y = np.where(half, 3.0, -3.0) * X[:, 0] + 0.05 * rng.normal(size=n)
    return X, y, half.astype(float)


PARAMS = dict(max_epochs=15, batch_size=32, lr=1e-2, random_state=0, early_stopping=False)
# Shuffled folds: unshuffled, a training fold would be the zero-weight half alone.
CV = KFold(2, shuffle=True, random_state=0)


# ---------------------------------------------------------------------------
# Zero weight == dropped row


def _loss_and_gradients(model, X, Y, sample_weight):
    """Per-task losses and parameter gradients of the model's criterion on (X, Y)."""
    _, columns, _, _ = read_targets(Y)
    class_weights = class_weight_vectors(model.tasks_, columns, model.class_weight, sample_weight)
    targets = torch.from_numpy(encode_targets(model.tasks_, columns, sample_weight, class_weights))
    module = model.net_.module_
    module.zero_grad()
    losses, _ = model.net_.criterion_(model.net_.infer(torch.from_numpy(X.astype(np.float32))),
                                      targets)
    losses.sum().backward()
    return losses.detach(), [p.grad.detach().clone() for p in module.parameters()]


def test_zero_sample_weight_equals_dropping_the_row():
    X, Y = make_mixed(n=120, missing=0.1)
    w = np.ones(len(X))
    dropped = np.zeros(len(X), dtype=bool)
    dropped[[3, 17, 40, 41, 99]] = True
    w[dropped] = 0.0
    Y_kept = Y[~dropped].reset_index(drop=True)
    # 'balanced' class weights count classes with the sample weights, so they agree too.
    params = dict(max_epochs=4, batch_size=256, lr=1e-2, random_state=0, class_weight="balanced",
                  early_stopping=False)
    weighted = MultiTaskRegressorClassifier(**params).fit(X, Y, sample_weight=w)
    kept = MultiTaskRegressorClassifier(**params).fit(X[~dropped], Y_kept)

    # Same loss and same gradients at the same parameters, per task.
    loss_w, grads_w = _loss_and_gradients(weighted, X, Y, w)
    loss_k, grads_k = _loss_and_gradients(weighted, X[~dropped], Y_kept, None)
    torch.testing.assert_close(loss_w, loss_k, rtol=1e-6, atol=1e-7)
    for gw, gk in zip(grads_w, grads_k):
        torch.testing.assert_close(gw, gk, rtol=1e-5, atol=1e-7)

    # One full batch per step: the same training run, epoch for epoch (float32 rounding).
    np.testing.assert_allclose(weighted.history_[:, "train_loss"], kept.history_[:, "train_loss"],
                               rtol=1e-5)
    for (name, a), (_, b) in zip(weighted.net_.module_.state_dict().items(),
                                 kept.net_.module_.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    np.testing.assert_allclose(weighted.predict(X)["value"], kept.predict(X)["value"], rtol=1e-5)
    # A non-zero weight on those rows would have changed the model.
    plain = MultiTaskRegressorClassifier(**params).fit(X, Y)
    assert not np.allclose(plain.predict(X)["value"], kept.predict(X)["value"], rtol=1e-5)


# ---------------------------------------------------------------------------
# Metadata routing


def test_grid_search_routes_sample_weight_to_fit_and_score(routing):
    X, y, w = _conflicting_halves()
    est = MultiTaskRegressor(**PARAMS).set_fit_request(sample_weight=True).set_score_request(
        sample_weight=True)
    search = GridSearchCV(est, {"lr": [3e-3, 1e-2]}, cv=CV)
    search.fit(X, y, sample_weight=w)

    # The refitted model is the one fitted by hand with the weights.
    by_hand = clone(est).set_params(**search.best_params_).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(search.best_estimator_.predict(X), by_hand.predict(X))
    half = w == 1
    assert by_hand.score(X[half], y[half]) > 0.9  # it learned y = 3 x0, the weighted half
    # Each split's score is the weighted fit scored with the weights.
    train, test = next(CV.split(X))
    for i, params in enumerate(search.cv_results_["params"]):
        fold = clone(est).set_params(**params).fit(X[train], y[train], sample_weight=w[train])
        assert search.cv_results_["split0_test_score"][i] == pytest.approx(
            fold.score(X[test], y[test], sample_weight=w[test]))


def test_grid_search_routes_through_pipeline_with_task_scorer(routing):
    X, y, w = _conflicting_halves()
    pipe = make_pipeline(
        StandardScaler().set_fit_request(sample_weight=False),
        MultiTaskRegressor(**PARAMS).set_fit_request(sample_weight=True),
    )
    scorer = make_task_scorer(0, "neg_mean_absolute_error").set_score_request(sample_weight=True)
    search = GridSearchCV(pipe, {"multitaskregressor__loss_weights__task_0": [1.0, 2.0]},
                          scoring=scorer, cv=CV).fit(X, y, sample_weight=w)
    by_hand = clone(pipe).set_params(**search.best_params_).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(search.best_estimator_.predict(X), by_hand.predict(X))
    assert by_hand[-1].score(by_hand[0].transform(X[w == 1]), y[w == 1]) > 0.9


def test_cross_validate_routes_sample_weight_to_fit_and_scorers(routing):
    X, y, w = _conflicting_halves()
    est = MultiTaskRegressor(**PARAMS).set_fit_request(sample_weight=True)
    scoring = {
        "mae": make_task_scorer(0, "neg_mean_absolute_error").set_score_request(
            sample_weight=True),
        "mae_unweighted": make_task_scorer(0, "neg_mean_absolute_error").set_score_request(
            sample_weight=False),
    }
    cv = CV
    result = cross_validate(est, X, y, scoring=scoring, cv=cv, params={"sample_weight": w},
                            return_estimator=True)
    for k, (train, test) in enumerate(cv.split(X)):
        fold = clone(est).fit(X[train], y[train], sample_weight=w[train])
        np.testing.assert_array_equal(result["estimator"][k].predict(X), fold.predict(X))
        err = np.abs(fold.predict(X[test]) - y[test])
        assert result["test_mae"][k] == pytest.approx(-np.average(err, weights=w[test]))
        assert result["test_mae_unweighted"][k] == pytest.approx(-err.mean())
    # On the weighted rows only, the error is small; the unweighted one is not.
    assert result["test_mae"].mean() > -0.5 > result["test_mae_unweighted"].mean()


def test_unrequested_sample_weight_is_an_error_under_routing(routing):
    X, y, w = _conflicting_halves(n=40)
    search = GridSearchCV(MultiTaskRegressor(max_epochs=1), {"lr": [1e-3]}, cv=CV)
    with pytest.raises(UnsetMetadataPassedError, match="sample_weight"):
        search.fit(X, y, sample_weight=w)


def test_requests_survive_clone(routing):
    est = MultiTaskRegressor().set_fit_request(sample_weight=True)
    routing_info = clone(est).get_metadata_routing()
    assert routing_info.fit.requests["sample_weight"] is True
    assert routing_info.partial_fit.requests["sample_weight"] is None


def test_without_routing_fit_params_still_reach_fit():
    X, y, w = _conflicting_halves()
    search = GridSearchCV(MultiTaskRegressor(**PARAMS), {"lr": [1e-2]}, cv=CV)
    search.fit(X, y, sample_weight=w)
    by_hand = MultiTaskRegressor(**PARAMS).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(search.best_estimator_.predict(X), by_hand.predict(X))
