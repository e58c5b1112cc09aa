"""MultiTaskRegressorClassifier end to end: formats, round trips, reproducibility, search."""

import copy
import io
import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import make_patient_records

from .conftest import make_mixed

FAST = dict(max_epochs=30, batch_size=32, random_state=0)


@pytest.fixture(scope="module")
def fitted():
    X, Y = make_mixed(n=400, missing=0.1)
    model = MultiTaskRegressorClassifier(**FAST).fit(X, Y)
    return model, X, Y


def test_learns_every_task_with_missing_labels(fitted):
    model, X, Y = fitted
    Xt, Yt = make_mixed(n=300, seed=1)
    scores = model.score_tasks(Xt, Yt)
    assert scores["value"] > 0.9
    assert scores["flag"] > 0.85
    assert scores["level"] > 0.8
    assert model.score(Xt, Yt) == pytest.approx(np.mean(list(scores.values())))


def test_predict_returns_dataframe_in_original_labels(fitted):
    model, X, Y = fitted
    index = pd.Index([f"row{i}" for i in range(len(X))], name="id")
    Xdf = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])], index=index)
    refit = MultiTaskRegressorClassifier(**FAST).fit(Xdf, Y.set_axis(index))
    pred = refit.predict(Xdf.iloc[:7])
    assert isinstance(pred, pd.DataFrame)
    assert list(pred.columns) == ["value", "flag", "level"]
    assert pred.index.equals(index[:7])
    assert set(pred["flag"]) <= {"yes", "no"}
    assert set(pred["level"]) <= {"low", "mid", "high"}
    assert pred["value"].dtype == float
    assert 30 < pred["value"].mean() < 70  # back on the original scale


def test_predict_proba_per_classification_task(fitted):
    model, X, _ = fitted
    proba = model.predict_proba(X[:20])
    assert set(proba) == {"flag", "level"}
    assert proba["flag"].shape == (20, 2) and proba["level"].shape == (20, 3)
    for p in proba.values():
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    pred = model.predict(X[:20])
    for task in ("flag", "level"):
        np.testing.assert_array_equal(
            model.classes_[task][proba[task].argmax(1)], pred[task].to_numpy())


def test_other_y_containers():
    X, Y = make_mixed(n=120)
    as_dict = {k: Y[k].to_numpy() for k in Y}
    pred = MultiTaskRegressorClassifier(max_epochs=2).fit(X, as_dict).predict(X[:3])
    assert isinstance(pred, dict) and set(pred) == set(Y.columns)
    Ynum = np.column_stack([Y["value"], (Y["flag"] == "yes").astype(int)])
    model = MultiTaskRegressorClassifier(max_epochs=2, tasks=["v", "f"]).fit(X, Ynum)
    pred = model.predict(X[:3])
    assert pred.shape == (3, 2) and model.task_names_ == ["v", "f"]
    assert set(np.unique(pred[:, 1])) <= {0, 1}
    vec = MultiTaskRegressorClassifier(max_epochs=2).fit(X, Y["value"].to_numpy()).predict(X[:3])
    assert vec.shape == (3,)


def test_same_random_state_same_model_and_global_rng_untouched():
    X, Y = make_mixed(n=200, missing=0.1)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = MultiTaskRegressorClassifier(**FAST, dropout=0.2).fit(X, Y)
    after = torch.rand(3)
    torch.testing.assert_close(before, after)  # our seeding did not move the user's RNG
    b = MultiTaskRegressorClassifier(**FAST, dropout=0.2).fit(X, Y)
    for (ka, va), (kb, vb) in zip(a.net_.module_.state_dict().items(),
                                  b.net_.module_.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    pd.testing.assert_frame_equal(a.predict(X), b.predict(X))
    c = MultiTaskRegressorClassifier(**{**FAST, "random_state": 1}).fit(X, Y)
    assert not np.allclose(a.predict(X)["value"], c.predict(X)["value"])


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_serialisation_round_trip(fitted, dump):
    model, X, _ = fitted
    buffer = io.BytesIO()
    if dump == "pickle":
        pickle.dump(model, buffer)
        buffer.seek(0)
        loaded = pickle.load(buffer)
    else:
        joblib.dump(model, buffer)
        buffer.seek(0)
        loaded = joblib.load(buffer)
    pd.testing.assert_frame_equal(loaded.predict(X), model.predict(X))
    for task, p in model.predict_proba(X).items():
        np.testing.assert_array_equal(loaded.predict_proba(X)[task], p)


def test_history_has_per_task_losses():
    X, Y = make_mixed(n=200)
    model = MultiTaskRegressorClassifier(max_epochs=5, validation_fraction=0.2,
                                         random_state=0).fit(X, Y)
    history = model.net_.history
    assert len(history) == 5
    for task in Y.columns:
        train = history[:, f"train_loss_{task}"]
        valid = history[:, f"valid_loss_{task}"]
        assert len(train) == len(valid) == 5
        assert train[-1] < train[0]
    # The epoch's total is the weighted sum of the per-task epoch losses (equal weights).
    total_valid = sum(history[-1, f"valid_loss_{t}"] for t in Y.columns)
    assert history[-1, "valid_loss"] == pytest.approx(total_valid, rel=1e-4)


def test_early_stopping_restores_best_weights():
    X, Y = make_mixed(n=200)
    model = MultiTaskRegressorClassifier(max_epochs=200, early_stopping=True, patience=3,
                                         lr=0.05, random_state=0).fit(X, Y)
    history = model.net_.history
    assert len(history) < 200
    stopper = dict(model.net_.callbacks_)["early_stopping"]
    best = stopper.best_epoch_ - 1  # skorch numbers epochs from 1
    # Stopped `patience` epochs after the last task's last improvement (each task keeps
    # its own best epoch, see test_early_stopping.py).
    assert stopper.stopped_epoch_ == len(history)
    assert len(history) - max(stopper.best_epochs_) >= 3
    # module_ holds the weights of the best total validation loss, recomputed here on
    # the validation rows, not the last epoch's.
    valid = model.net_.train_split.keywords["valid_ds"]
    rows = valid.rows
    net = model.net_
    net.module_.eval()
    with torch.no_grad():
        losses, _ = net.criterion_(net.module_(valid.X[rows]), valid.y[rows])
    recomputed = float((net.weighting_.static_weights * losses).sum())
    assert recomputed == pytest.approx(history[best, "valid_loss"], rel=1e-5)
    assert recomputed != pytest.approx(history[-1, "valid_loss"], rel=1e-5)


def test_set_params_nested_loss_weights_does_not_mutate():
    weights = {"value": 1.0, "flag": 2.0}
    model = MultiTaskRegressorClassifier(loss_weights=weights)
    model.set_params(loss_weights__flag=0.5, loss_weights__level=3.0)
    assert weights == {"value": 1.0, "flag": 2.0}
    assert model.loss_weights == {"value": 1.0, "flag": 0.5, "level": 3.0}
    assert model.get_params()["loss_weights"] is model.loss_weights
    assert clone(model).loss_weights == model.loss_weights
    fresh = MultiTaskRegressorClassifier().set_params(loss_weights__flag=0.0)
    assert fresh.loss_weights == {"flag": 0.0}


def test_fit_does_not_modify_inputs():
    X, Y = make_mixed(n=120, missing=0.2)
    X_df = pd.DataFrame(X)
    X_copy, Y_copy = X_df.copy(), Y.copy()
    weights = {"value": 2.0}
    MultiTaskRegressorClassifier(max_epochs=2, loss_weights=weights).fit(X_df, Y)
    pd.testing.assert_frame_equal(X_df, X_copy)
    pd.testing.assert_frame_equal(Y, Y_copy)
    assert weights == {"value": 2.0}


def test_zero_weight_task_head_does_not_move():
    X, Y = make_mixed(n=150)
    model = MultiTaskRegressorClassifier(max_epochs=1, loss_weights={"flag": 0.0},
                                         random_state=0)
    model.fit(X, Y)
    trained = {k: v.clone() for k, v in model.net_.module_.heads.state_dict().items()}
    init = MultiTaskRegressorClassifier(max_epochs=1, random_state=0, lr=1e-12).fit(X, Y)
    for name, value in init.net_.module_.heads.state_dict().items():
        flag_slice = (slice(None), 1) if value.dim() == 3 else (1,)
        torch.testing.assert_close(trained[name][flag_slice], value[flag_slice], rtol=0, atol=1e-9)
        assert not torch.allclose(trained[name][(slice(None), 0) if value.dim() == 3 else (0,)],
                                  value[(slice(None), 0) if value.dim() == 3 else (0,)])


def _weighting_case(n=300, seed=0):
    """Task 'target' is learnable; with weight 0 its head never trains."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    Y = pd.DataFrame({"target": X[:, 0] * 2 - X[:, 1], "other": X[:, 2] + 0.1 * rng.normal(size=n)})
    return X, Y


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("style", ["dict", "nested"])
def test_grid_search_over_loss_weights_picks_the_better_weighting(style, n_jobs):
    X, Y = _weighting_case()
    base = MultiTaskRegressorClassifier(max_epochs=15, batch_size=64, lr=1e-3, random_state=0)
    if style == "dict":
        grid = {"loss_weights": [{"target": 0.0}, {"target": 1.0}]}
    else:
        grid = {"loss_weights__target": [0.0, 1.0]}
    search = GridSearchCV(base, grid, cv=KFold(3), n_jobs=n_jobs).fit(X, Y)
    best = search.best_params_
    assert (best.get("loss_weights") or {}).get("target", best.get("loss_weights__target")) == 1.0
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] - scores[0] > 0.3  # clearly better, not a coin flip
    assert base.loss_weights is None  # the base estimator is untouched


def test_grid_search_through_pipeline_keys():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Y = _weighting_case(n=200)
    pipe = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(max_epochs=10, batch_size=64,
                                                                        random_state=0))
    search = GridSearchCV(pipe, {"multitaskregressorclassifier__loss_weights__target": [0.0, 1.0]},
                          cv=KFold(2)).fit(X, Y)
    assert search.best_params_["multitaskregressorclassifier__loss_weights__target"] == 1.0


def test_patient_records_two_heads():
    X, Y = make_patient_records(n_samples=1500, missing_rate=0.2, random_state=0)
    from sklearn.preprocessing import StandardScaler

    Xs = StandardScaler().fit_transform(X)
    model = MultiTaskRegressorClassifier(max_epochs=25, random_state=0).fit(Xs[:1000], Y[:1000])
    scores = model.score_tasks(Xs[1000:], Y[1000:])
    assert scores["disease"] > 0.72
    assert scores["stay_days"] > 0.4


def test_warm_start_and_partial_fit_continue_training():
    X, Y = make_mixed(n=200)
    model = MultiTaskRegressorClassifier(max_epochs=3, warm_start=True, random_state=0).fit(X, Y)
    first = model.net_.module_.trunk.layers[0].weight.detach().clone()
    model.fit(X, Y)
    assert len(model.net_.history) == 6
    assert not torch.equal(first, model.net_.module_.trunk.layers[0].weight)
    partial = MultiTaskRegressorClassifier(random_state=0)
    partial.partial_fit(X, Y)
    partial.partial_fit(X, Y)
    assert len(partial.net_.history) == 2


def test_a_rows_prediction_does_not_depend_on_the_rows_predicted_with_it():
    # Inference runs in float64: float32 kernels block differently by batch size
    # (AVX-512 above all), which moved predictions by ~1e-7 relative.
    X, Y = make_mixed(n=300)
    model = MultiTaskRegressorClassifier(max_epochs=3, random_state=0).fit(X, Y)
    together = model.predict(X)["value"].to_numpy()
    alone = np.array([model.predict(X[i:i + 1])["value"][0] for i in range(0, 300, 7)])
    np.testing.assert_allclose(alone, together[::7], rtol=1e-12)
    proba = model.predict_proba(X)["level"]
    np.testing.assert_allclose(model.predict_proba(X[5:17])["level"], proba[5:17], rtol=1e-12)


def test_a_trunk_that_changes_the_batch_size_later_is_stopped():
    class DropsRowsOfLargeBatches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(6, 4)

        def forward(self, x):  # fine on the trial rows, wrong on a training batch
            return self.linear(x if x.shape[0] < 10 else x[:-1])

    X, Y = make_mixed(n=60)
    with pytest.raises(ValueError, match="DropsRowsOfLargeBatches returned 31 rows for a "
                                         "batch of 32"):
        MultiTaskRegressorClassifier(module=DropsRowsOfLargeBatches(), batch_size=32,
                                     max_epochs=1).fit(X, Y)


@pytest.mark.parametrize("weighting", ["static", "gradnorm", "uncertainty"])
def test_predictions_follow_continued_training(weighting):
    """predict, then more training, then predict: the second answer comes from the new
    weights (the cached inference copy of the network is rebuilt), as on a copy of the
    model that never predicted before."""
    X, Y = make_mixed(n=64, seed=3)
    params = dict(hidden_layer_sizes=(8,), max_epochs=2, batch_size=32, random_state=0,
                  weighting=weighting, early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MultiTaskRegressorClassifier(**params).fit(X, Y)
        twin = copy.deepcopy(model)
        before = model.predict(X)
        model.partial_fit(X, Y)
        twin.partial_fit(X, Y)
        after = model.predict(X)
    assert not np.allclose(after["value"], before["value"])
    pd.testing.assert_frame_equal(after, twin.predict(X))
