"""Per-task sharing: the single-task networks, the blend, the choice by validation loss,
and the fitted choice through saving, ONNX and continued training."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl._sharing import SOURCES

from .conftest import TanhTrunk, joblib_round_trip, pickle_round_trip, skops_round_trip


def mixed(n=400, seed=0):
    """A regression, a binary and a three-class task with missing labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    Y = pd.DataFrame({
        "value": X[:, 0] * 2 + np.sin(X[:, 1]) + 0.3 * rng.standard_normal(n),
        "flag": np.where(X[:, 0] + X[:, 2] > 0, "yes", "no").astype(object),
        "level": np.digitize(X[:, 1] + 0.5 * X[:, 3], [-0.5, 0.5]),
    })
    Y.loc[rng.random(n) < 0.3, "value"] = np.nan
    Y.loc[rng.random(n) < 0.2, "flag"] = np.nan
    return X, Y


def fit(X, Y, cls=MultiTaskRegressorClassifier, **params):
    params = {"random_state": 0, "max_epochs": 25, "patience": 5,
              "hidden_layer_sizes": (16, 16), "head_hidden_sizes": (8,), **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(**params).fit(X, Y)


def implied_single(blend, shared):
    """The single-task network's prediction implied by a blend with the shared one: the
    blend of values (and probabilities) is their mean."""
    return 2 * blend - shared


@pytest.fixture(scope="module")
def data():
    return mixed()


@pytest.fixture(scope="module")
def shared_and_blend(data):
    X, Y = data
    return fit(X, Y), fit(X, Y, sharing="blend")


def test_default_predicts_every_task_from_the_shared_network(shared_and_blend):
    shared, _ = shared_and_blend
    assert shared.sharing_ == {"value": "shared", "flag": "shared", "level": "shared"}
    with pytest.raises(AttributeError, match="sharing='shared'"):
        shared.sharing_losses_


def test_the_blend_leaves_the_shared_network_as_it_is(shared_and_blend, data):
    shared, blend = shared_and_blend
    assert blend.sharing_ == {"value": "blend", "flag": "blend", "level": "blend"}
    assert blend.best_epoch_ == shared.best_epoch_
    for key in ("train_loss", "valid_loss"):
        assert blend.history_[:, key] == shared.history_[:, key]


def test_the_blend_is_the_mean_value_and_the_mean_probabilities(shared_and_blend, data):
    X, _ = data
    shared, blend = shared_and_blend
    value = implied_single(blend.predict(X)["value"], shared.predict(X)["value"])
    assert not np.allclose(value, shared.predict(X)["value"], atol=1e-3)
    for task in ("flag", "level"):
        proba = implied_single(blend.predict_proba(X)[task], shared.predict_proba(X)[task])
        # The single-task network's probabilities: a distribution on every row.
        assert proba.min() > -1e-6 and proba.max() < 1 + 1e-6
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
        assert not np.allclose(proba, shared.predict_proba(X)[task], atol=1e-3)


def test_a_single_task_network_learns_nothing_from_the_other_tasks(data):
    """Changing another task's labels (not which rows have them) changes the shared
    network's predictions of a task, not its single-task network's."""
    X, Y = data
    rng = np.random.default_rng(5)
    other = Y.copy()
    labelled = other["value"].notna().to_numpy()
    other.loc[labelled, "value"] = rng.permutation(other.loc[labelled, "value"].to_numpy())
    shared, blend = fit(X, Y), fit(X, Y, sharing="blend")
    shared2, blend2 = fit(X, other), fit(X, other, sharing="blend")
    for task in ("flag", "level"):
        a = shared.predict_proba(X)[task]
        b = shared2.predict_proba(X)[task]
        assert not np.allclose(a, b, atol=1e-3)
        np.testing.assert_allclose(
            implied_single(blend.predict_proba(X)[task], a),
            implied_single(blend2.predict_proba(X)[task], b), atol=2e-6)


def test_the_shared_validation_loss_is_the_best_epochs(shared_and_blend):
    shared, blend = shared_and_blend
    losses = blend.sharing_losses_
    assert list(losses.columns) == list(SOURCES) + ["single_se", "blend_se"]
    assert list(losses.index) == ["value", "flag", "level"]
    for task, epoch in shared.best_epoch_.items():
        recorded = shared.history_[epoch - 1, f"valid_loss_{task}"]
        np.testing.assert_allclose(losses.loc[task, "shared"], recorded, rtol=1e-5)
    assert np.isfinite(losses.to_numpy()).all()


def test_auto_keeps_sharing_unless_another_source_wins_by_a_standard_error(data):
    X, Y = data
    shared = fit(X, Y)
    auto = fit(X, Y, sharing="auto")
    blend = fit(X, Y, sharing="blend")
    losses = auto.sharing_losses_
    pd.testing.assert_frame_equal(losses, blend.sharing_losses_)
    expected = {}
    for task, row in losses.iterrows():
        wins = {source: row[source] for source in ("single", "blend")
                if row[source] + row[f"{source}_se"] < row["shared"]}
        expected[task] = min(wins, key=wins.get) if wins else "shared"
    assert auto.sharing_ == expected
    predictions = {"shared": shared, "blend": blend}
    for task, source in expected.items():
        if source in predictions:
            column = predictions[source].predict_proba(X)[task] if task != "value" \
                else predictions[source].predict(X)[task]
            got = auto.predict_proba(X)[task] if task != "value" else auto.predict(X)[task]
            np.testing.assert_allclose(got, column, atol=1e-6)


def test_the_standard_error_is_that_of_the_paired_loss_differences(data):
    """With own validation data the rows are known: the regression task's squared
    errors by hand (the losses are in standardised units, so compare the ratio of the
    standard error to the mean difference, which the scale cancels from)."""
    X, Y = data
    X_val, Y_val = mixed(n=150, seed=11)
    models = {}
    for sharing in ("shared", "blend"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            models[sharing] = MultiTaskRegressorClassifier(
                sharing=sharing, random_state=0, max_epochs=20, hidden_layer_sizes=(16,)).fit(
                X, Y, X_val=X_val, Y_val=Y_val)
    rows = Y_val["value"].notna().to_numpy()
    y = Y_val["value"].to_numpy()[rows]
    shared = models["shared"].predict(X_val)["value"].to_numpy()[rows]
    mean = models["blend"].predict(X_val)["value"].to_numpy()[rows]
    for source, p in (("blend", mean), ("single", implied_single(mean, shared))):
        d = (p - y) ** 2 - (shared - y) ** 2
        se = d.std() / np.sqrt(len(d))  # weights all 1: the plain standard error
        losses = models["blend"].sharing_losses_.loc["value"]
        np.testing.assert_allclose(losses[f"{source}_se"] / (losses[source] - losses["shared"]),
                                   se / d.mean(), rtol=1e-4)


def test_a_task_predicted_alone_reports_its_own_networks_best_epoch(data, monkeypatch):
    from sklearn_mtl import _sharing

    X, Y = data
    trained, measured = {}, _sharing._validation_losses

    def record(singles, prepared):
        trained.update(singles)
        return train(singles, prepared)

    def single_wins_value(*args):
        losses = measured(*args)
        losses["single"][0] = -1.0  # task 'value'
        return losses

    train = _sharing._train
    monkeypatch.setattr(_sharing, "_train", record)
    monkeypatch.setattr(_sharing, "_validation_losses", single_wins_value)
    shared = fit(X, Y, max_epochs=200)
    auto = fit(X, Y, sharing="auto", max_epochs=200)
    assert auto.sharing_["value"] == "single"
    alone = trained[0]._best_epochs[0]
    assert auto.best_epoch_["value"] == alone != shared.best_epoch_["value"]
    for task in ("flag", "level"):
        assert auto.best_epoch_[task] == shared.best_epoch_[task]
    # ... and the task's predictions are that network's.
    np.testing.assert_allclose(auto.predict(X)["value"], trained[0].predict(X)["value"],
                               rtol=1e-6, atol=1e-6)


def test_stacked_and_one_by_one_single_task_fits_agree(data):
    """The single-task networks train as one stack; with a setting a stack does not
    take (an explicit Adam option), one after the other: the same networks."""
    X, Y = data
    stacked = fit(X, Y, sharing="blend")
    one_by_one = fit(X, Y, sharing="blend", optimizer_kwargs={"amsgrad": False})
    pd.testing.assert_frame_equal(stacked.sharing_losses_, one_by_one.sharing_losses_,
                                  rtol=1e-4)
    np.testing.assert_allclose(stacked.predict(X)["value"], one_by_one.predict(X)["value"],
                               rtol=1e-4, atol=1e-4)


def test_a_learned_weighting_still_gives_single_task_networks(data):
    X, Y = data
    model = fit(X, Y, sharing="blend", weighting="uncertainty")
    assert set(model.sharing_.values()) == {"blend"}
    assert np.isfinite(model.sharing_losses_.to_numpy()).all()


def test_without_validation_data_auto_keeps_sharing():
    X, Y = mixed(seed=1)
    model = fit(X, Y, sharing="auto", early_stopping=False, max_epochs=5)
    assert set(model.sharing_.values()) == {"shared"}
    assert model.sharing_losses_.isna().all().all()
    blend = fit(X, Y, sharing="blend", early_stopping=False, max_epochs=5)
    assert set(blend.sharing_.values()) == {"blend"}


def test_with_own_validation_data(data):
    X, Y = data
    X2, Y2 = mixed(n=200, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MultiTaskRegressorClassifier(
            sharing="auto", random_state=0, max_epochs=20, hidden_layer_sizes=(16,)).fit(
            X, Y, X_val=X2, Y_val=Y2)
    assert np.isfinite(model.sharing_losses_.to_numpy()).all()


def test_one_task_and_auxiliary_tasks_train_no_extra_network(data):
    X, Y = data
    one = fit(X, Y[["value"]], cls=MultiTaskRegressor, sharing="blend")
    assert one.sharing_ == {"value": "shared"}
    with pytest.raises(AttributeError):
        one.sharing_losses_
    aux = fit(X, Y, sharing="blend", auxiliary_tasks=["level"])
    assert aux.sharing_ == {"value": "blend", "flag": "blend"}
    assert list(aux.sharing_losses_.index) == ["value", "flag"]


def test_continued_training_predicts_with_the_shared_network(data):
    X, Y = data
    model = fit(X, Y, sharing="blend")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.partial_fit(X, Y)
    assert set(model.sharing_.values()) == {"shared"}
    with pytest.raises(AttributeError):
        model.sharing_losses_
    warm = fit(X, Y, sharing="blend", warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm.fit(X, Y)
    assert set(warm.sharing_.values()) == {"shared"}


def test_same_random_state_gives_the_same_blend(data):
    X, Y = data
    a, b = fit(X, Y, sharing="auto"), fit(X, Y, sharing="auto")
    assert a.sharing_ == b.sharing_
    pd.testing.assert_frame_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("round_trip", [pickle_round_trip, joblib_round_trip,
                                        skops_round_trip])
def test_round_trips_keep_the_blend(shared_and_blend, data, round_trip):
    X, _ = data
    _, model = shared_and_blend
    other = round_trip(model)
    assert other.sharing_ == model.sharing_
    pd.testing.assert_frame_equal(other.sharing_losses_, model.sharing_losses_)
    pd.testing.assert_frame_equal(other.predict(X), model.predict(X))
    for task, values in other.predict_proba(X).items():
        np.testing.assert_array_equal(values, model.predict_proba(X)[task])


def test_onnx_export_gives_the_blend(shared_and_blend, data):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    X, _ = data
    _, model = shared_and_blend
    session = ort.InferenceSession(model.to_onnx().SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {"X": X})))
    proba = model.predict_proba(X)
    np.testing.assert_allclose(outputs["flag_proba"], proba["flag"], atol=1e-5)
    np.testing.assert_allclose(outputs["level_proba"], proba["level"], atol=1e-5)
    np.testing.assert_allclose(outputs["value_value"].ravel(), model.predict(X)["value"],
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad", ["always", None, 1])
def test_invalid_sharing_is_named(data, bad):
    X, Y = data
    with pytest.raises((ValueError, TypeError), match="sharing"):
        MultiTaskRegressorClassifier(sharing=bad).fit(X, Y)


@pytest.mark.parametrize("params", [
    {"architecture": "mmoe"}, {"architecture": "ple"}, {"architecture": "cross_stitch"},
    {"module": TanhTrunk(5, 8)}, {"ensemble_size": 2}, {"feature_embedding": "periodic"},
], ids=lambda p: next(iter(p)) + ("=" + str(next(iter(p.values()))) if "module" not in p else ""))
def test_every_architecture_and_option_blends(data, params):
    """The settings a stack does not take train their single-task networks one by one;
    the blend's validation losses are then measured as for the default network."""
    X, Y = data
    model = fit(X, Y, sharing="blend", max_epochs=4, **params)
    assert set(model.sharing_.values()) == {"blend"}
    assert np.isfinite(model.sharing_losses_[list(SOURCES)].to_numpy()).all()
    assert np.isfinite(model.predict(X)["value"].to_numpy()).all()


def test_tuple_task_labels_index_the_losses(data):
    X, Y = data
    Y = Y.copy()
    Y.columns = pd.MultiIndex.from_tuples([("a", "value"), ("a", "flag"), ("b", "level")])
    model = fit(X, Y, sharing="blend", max_epochs=3)
    assert list(model.sharing_) == list(Y.columns)
    assert list(model.sharing_losses_.index) == list(Y.columns)
