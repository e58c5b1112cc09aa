"""Early stopping per task: the validation split, each task's best epoch, own validation
data, the ConvergenceWarning, and the snapshots through pickling, saving and ONNX."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl._early_stopping import MIN_VALIDATION_LABELS, validation_split


def scarce_and_plenty(n=800, seed=0, labelled=0.08):
    """A task with few labels (overfits early) and a well-labelled one (improves long)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    signal = np.sin(X[:, 0] * 2) + X[:, 1] * X[:, 2]
    Y = pd.DataFrame({
        "scarce": signal + 0.5 * rng.standard_normal(n),
        "plenty": signal + X[:, 3] + 0.1 * rng.standard_normal(n),
    })
    Y.loc[rng.random(n) >= labelled, "scarce"] = np.nan
    return X, Y


def fit(X, Y, **params):
    params = {"random_state": 0, "max_epochs": 60, "patience": 60,
              "hidden_layer_sizes": (64, 64), **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MultiTaskRegressor(**params).fit(X, Y)


# ----------------------------------------------------------------------
# The split


@pytest.mark.parametrize("fraction", [0.1, 0.2])
def test_the_split_keeps_each_group_of_labelled_tasks_in_proportion(fraction):
    rng = np.random.default_rng(0)
    weights = np.ones((2000, 3))
    weights[rng.random(2000) < 0.7, 1] = 0
    weights[rng.random(2000) < 0.97, 2] = 0
    train, valid = validation_split(weights, fraction, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(2000))
    assert not np.intersect1d(train, valid).size
    for t in range(3):
        n_t = int((weights[:, t] > 0).sum())
        in_valid = int((weights[valid, t] > 0).sum())
        assert in_valid >= min(MIN_VALIDATION_LABELS, n_t // 4)
        if t < 2:  # plenty of labels: the fraction, up to rounding per group
            assert abs(in_valid - fraction * n_t) <= 8  # 8 groups


def test_a_scarce_task_gets_more_than_a_handful_of_validation_labels():
    weights = np.ones((1000, 2))
    weights[40:, 1] = 0  # 40 labels: a plain 10% split would leave it 4
    train, valid = validation_split(weights, 0.1, seed=0)
    assert int((weights[valid, 1] > 0).sum()) == 10  # min(25, 40 // 4)
    assert int((weights[train, 1] > 0).sum()) == 30
    assert len(valid) < 0.12 * 1000


def test_the_split_is_reproducible_and_depends_on_the_seed():
    weights = np.ones((300, 2))
    first = validation_split(weights, 0.1, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, validation_split(weights, 0.1, 1)))
    assert not np.array_equal(first[1], validation_split(weights, 0.1, 2)[1])


def test_too_few_rows_to_hold_out_trains_on_all_of_them():
    one = MultiTaskRegressor(max_epochs=2, random_state=0).fit(np.ones((1, 1), np.float32), [1.0])
    assert "valid_loss" not in one.net_.history[-1]
    assert not hasattr(one, "best_epoch_")
    # Two rows: one of them is held out.
    X = np.arange(2, dtype=np.float32).reshape(-1, 1)
    two = MultiTaskRegressor(max_epochs=2, random_state=0).fit(X, [0.0, 1.0])
    assert len(two.net_.train_split.keywords["valid_ds"]) == 1


# ----------------------------------------------------------------------
# Each task from its own best epoch


def test_each_task_is_predicted_from_a_fit_stopped_at_its_own_best_epoch():
    X, Y = scarce_and_plenty()
    full = fit(X, Y)
    best = full.best_epoch_
    curves = full.task_validation_curves_
    # The scarce task's validation loss rises after its best epoch while the other's
    # keeps improving well past it.
    assert best["scarce"] + 10 < best["plenty"], best
    assert curves["scarce"].iloc[-1] > curves["scarce"].min()
    assert curves["scarce"].idxmin() == best["scarce"]
    assert curves["plenty"].idxmin() == best["plenty"]
    stopped = fit(X, Y, max_epochs=best["scarce"])
    assert stopped.best_epoch_["scarce"] == best["scarce"]
    np.testing.assert_array_equal(full.predict(X)["scarce"], stopped.predict(X)["scarce"])
    # ... and the other task is not predicted from that epoch.
    assert not np.allclose(full.predict(X)["plenty"], stopped.predict(X)["plenty"])
    later = fit(X, Y, max_epochs=best["plenty"])
    np.testing.assert_array_equal(full.predict(X)["plenty"], later.predict(X)["plenty"])


def test_training_stops_when_no_task_improves_for_patience_epochs():
    X, Y = scarce_and_plenty()
    est = fit(X, Y, max_epochs=300, patience=5)
    stopper = dict(est.net_.callbacks_)["early_stopping"]
    assert stopper.stopped_epoch_ == est.n_iter_ < 300
    assert est.n_iter_ - max(est.best_epoch_.values()) >= 5


def _last_progress_epoch(losses, tol=1e-4):
    """The last epoch (1-based) whose loss beat the previous progress by ``tol`` (relative)."""
    previous, last = np.inf, 0
    for epoch, loss in enumerate(losses, 1):
        if not np.isfinite(previous) or loss < previous - tol * abs(previous):
            previous, last = loss, epoch
    return last


def test_a_task_of_loss_weight_zero_does_not_keep_training_going():
    # The untrained task's validation loss only drifts with the shared layers: the stop
    # is patience epochs after the trained task's last progress, whatever the drift does.
    X, Y = scarce_and_plenty(labelled=0.5)
    est = fit(X, Y, max_epochs=300, patience=4, loss_weights={"scarce": 1.0, "plenty": 0.0})
    stopper = dict(est.net_.callbacks_)["early_stopping"]
    np.testing.assert_array_equal(stopper.deciding_, [True, False])
    last = _last_progress_epoch(est.history_[:, "valid_loss_scarce"])
    assert stopper.stopped_epoch_ == last + 4
    # Weights read each epoch: a continued fit that trains both tasks watches both.
    est.set_params(warm_start=True, loss_weights={"scarce": 1.0, "plenty": 1.0},
                   max_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, Y)
    np.testing.assert_array_equal(dict(est.net_.callbacks_)["early_stopping"].deciding_,
                                  [True, True])


def test_max_epochs_while_improving_warns_and_an_early_stop_does_not():
    X, Y = scarce_and_plenty()
    with pytest.warns(ConvergenceWarning, match="max_epochs=3 reached.*'plenty'"):
        MultiTaskRegressor(max_epochs=3, random_state=0).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        MultiTaskRegressor(max_epochs=400, patience=3, random_state=0).fit(X, Y)
        # No validation, no convergence criterion: no warning.
        MultiTaskRegressor(max_epochs=3, early_stopping=False, random_state=0).fit(X, Y)


def test_without_early_stopping_every_task_is_predicted_from_the_last_epoch():
    X, Y = scarce_and_plenty()
    est = MultiTaskRegressor(early_stopping=False, max_epochs=5, random_state=0).fit(X, Y)
    assert not hasattr(est, "best_epoch_")
    assert est.net_.prediction_module() is est.net_.module_


def test_partial_fit_trains_on_every_row_without_early_stopping():
    X, Y = scarce_and_plenty()
    est = MultiTaskRegressor(random_state=0).partial_fit(X, Y)
    assert est.net_.history[-1]["train_batch_count"] == int(np.ceil(len(X) / est.net_.batch_size))
    assert "valid_loss" not in est.net_.history[-1]
    assert not hasattr(est, "best_epoch_")


def test_continued_fit_counts_best_epochs_over_all_calls():
    X, Y = scarce_and_plenty()
    est = fit(X, Y, max_epochs=5, warm_start=True)
    est.fit(X, Y)
    assert all(5 < e <= 10 for e in est.best_epoch_.values())


# ----------------------------------------------------------------------
# Own validation data


def test_own_validation_data_give_the_recorded_validation_losses():
    X, Y = scarce_and_plenty()
    X_val, Y_val = scarce_and_plenty(n=200, seed=1, labelled=0.5)
    est = MultiTaskRegressor(early_stopping=False, max_epochs=4, random_state=0)
    est.fit(X, Y, X_val=X_val, y_val=Y_val)
    # Every row of X trains: 800 rows in batches of batch_size.
    assert est.net_.history[-1]["train_batch_count"] == int(np.ceil(800 / est.net_.batch_size))
    raw = est.net_.raw_outputs(X_val)
    for t, task in enumerate(est.tasks_):
        observed = Y_val[task.name].notna().to_numpy()
        target = task.encoder.transform(Y_val[[task.name]].to_numpy()[observed]).ravel()
        expected = np.mean((raw[observed, t] - target) ** 2)
        recorded = est.net_.history[-1][f"valid_loss_{task.name}"]
        assert recorded == pytest.approx(expected, rel=1e-5)


def test_own_validation_data_decide_the_best_epochs():
    X, Y = scarce_and_plenty()
    X_val, Y_val = scarce_and_plenty(n=300, seed=1, labelled=0.5)
    est = fit(X, Y, max_epochs=40)
    own = fit(X, Y, max_epochs=40)
    own.fit(X, Y, X_val=X_val, Y_val=Y_val)  # Y_val: the same as y_val
    curves = own.task_validation_curves_
    assert own.best_epoch_ == {name: int(curves[name].idxmin()) for name in curves}
    assert est.net_.history[-1]["train_batch_count"] < own.net_.history[-1][
        "train_batch_count"]


def test_own_validation_data_mistakes_are_named():
    X, Y = scarce_and_plenty(n=100)
    est = MultiTaskRegressor(max_epochs=1)
    with pytest.raises(ValueError, match="X_val and y_val together"):
        est.fit(X, Y, X_val=X)
    with pytest.raises(TypeError, match="once, as y_val"):
        est.fit(X, Y, X_val=X, y_val=Y, Y_val=Y)
    with pytest.raises(ValueError, match="y_val has tasks"):
        est.fit(X, Y, X_val=X, y_val=Y[["plenty"]])
    with pytest.raises(ValueError, match="X_val has 99 rows"):
        est.fit(X, Y, X_val=X[:99], y_val=Y)
    with pytest.raises(ValueError, match="3 features"):
        est.fit(X, Y, X_val=X[:, :3], y_val=Y)
    with pytest.raises(ValueError, match="sample_weight_val was given"):
        est.fit(X, Y, sample_weight_val=np.ones(100))
    with pytest.raises(ValueError, match="b.*not seen in fit"):
        Yc = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
        MultiTaskRegressorClassifier(max_epochs=1).fit(
            X, Yc, X_val=X[:2], y_val=pd.DataFrame({"c": ["a", "z"]}))


# ----------------------------------------------------------------------
# The per-task snapshots travel with the model


@pytest.fixture(scope="module")
def stopped_model():
    X, Y = scarce_and_plenty()
    est = fit(X, Y)
    assert len(set(est.best_epoch_.values())) == 2
    return est, X


def test_pickle_keeps_each_tasks_epoch(stopped_model):
    est, X = stopped_model
    again = pickle.loads(pickle.dumps(est))
    pd.testing.assert_frame_equal(again.predict(X), est.predict(X))
    assert again.best_epoch_ == est.best_epoch_


def test_save_and_load_keep_each_tasks_epoch(stopped_model, tmp_path):
    pytest.importorskip("skops")
    import skops.io

    est, X = stopped_model
    skops.io.dump(est, tmp_path / "model.skops")
    again = skops.io.load(tmp_path / "model.skops", trusted=skops.io.get_untrusted_types(
        file=tmp_path / "model.skops"))
    pd.testing.assert_frame_equal(again.predict(X), est.predict(X))


def test_onnx_export_predicts_each_task_from_its_epoch(stopped_model, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    est, X = stopped_model
    model = est.to_onnx()
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: X[:50]})
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, outputs))
    expected = est.predict(X[:50])
    for task in ["scarce", "plenty"]:
        key = next(n for n in names if task in n)
        np.testing.assert_allclose(np.ravel(got[key]), expected[task], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------
# batch_size='auto'


@pytest.mark.parametrize("n, expected", [(300, 64), (2000, 125), (9000, 256)])
def test_auto_batch_size_is_a_sixteenth_of_the_training_rows_within_bounds(n, expected):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    est = MultiTaskRegressor(max_epochs=1, early_stopping=False, random_state=0).fit(
        X, X[:, 0])
    assert est.batch_size == "auto"  # the parameter is kept as given
    assert est.net_.batch_size == expected
    assert est.net_.history[-1]["train_batch_count"] == int(np.ceil(n / expected))
    # The training rows decide, not the rows held out for validation.
    held = MultiTaskRegressor(max_epochs=1, random_state=0).fit(X, X[:, 0])
    n_train = n - len(held.net_.train_split.keywords["valid_ds"])
    assert held.net_.batch_size == min(256, max(64, n_train // 16))
