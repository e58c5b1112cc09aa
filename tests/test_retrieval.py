"""Retrieval features (``n_neighbors``): hand-computed values, no leakage from a row's own
label or from validation labels, masked labels never retrieved, and the estimator with them
through prediction, saving, searches and the refusals."""

import copy
import types
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl._retrieval import (
    MIN_PATIENCE_WINDOWS,
    MIN_VALIDATION_LABELS,
    fit_retrieval,
    n_retrieval_features,
    neighbour_sizes,
    retrieval_features,
)
from sklearn_mtl.model_selection import MultiTaskGridSearchCV

from .conftest import joblib_round_trip, pickle_round_trip, skops_round_trip

REGRESSION = types.SimpleNamespace(is_classifier=False, n_outputs=1)
BINARY = types.SimpleNamespace(is_classifier=True, n_outputs=1)
THREE_CLASSES = types.SimpleNamespace(is_classifier=True, n_outputs=3)


def packed(*columns):
    """The (n, 2T) label-and-weight matrix of label columns (NaN: missing)."""
    labels = np.column_stack(columns).astype(np.float32)
    weights = np.isfinite(labels).astype(np.float32)
    return np.hstack([np.nan_to_num(labels), weights])


@pytest.mark.parametrize("k, sizes", [(1, (1,)), (3, (1, 3)), (4, (1, 4)), (5, (1, 4, 5)),
                                      (16, (1, 4, 16)), (64, (1, 4, 16, 64))])
def test_neighbour_sizes(k, sizes):
    assert neighbour_sizes(k) == sizes


# Five rows on a line; rows 1 and 2 are duplicates. Row 4 is the validation row.
LINE = np.array([[0.0], [1.0], [1.0], [3.0], [10.0]], dtype=np.float32)
TRAIN = np.array([0, 1, 2, 3])


def test_features_by_hand_with_a_duplicate_and_leave_one_out():
    y = np.array([10.0, 20.0, 30.0, 40.0, 99.0])
    state = fit_retrieval(LINE, packed(y), [REGRESSION], TRAIN, n_neighbors=2)
    F = retrieval_features(state, LINE, leave_out_self=True)
    assert F.shape == (5, n_retrieval_features(state)) == (5, 3)  # means of 1 and 2, distance
    # Row 0 (x=0): not itself; its nearest are rows 1 and 2 (distance 1, a tie that
    # goes to the lower index, row 1).
    np.testing.assert_allclose(F[0], [20.0, 25.0, np.log(2)])
    # Row 1: its duplicate row 2 (distance 0), then row 0 -- never its own label 20.
    np.testing.assert_allclose(F[1], [30.0, 20.0, 0.0])
    np.testing.assert_allclose(F[2], [20.0, 15.0, 0.0])
    # Row 3 (x=3): rows 1 and 2 at distance 2, row 1 first.
    np.testing.assert_allclose(F[3], [20.0, 25.0, np.log(3)])
    # The validation row 4 (x=10) looks up training rows only: row 3, then row 1.
    np.testing.assert_allclose(F[4], [40.0, 30.0, np.log(8)])
    # New rows: the training rows, none left out.
    new = retrieval_features(state, np.array([[1.0], [2.9]], np.float32))
    np.testing.assert_allclose(new[0], [20.0, 25.0, 0.0])
    np.testing.assert_allclose(new[1], [40.0, 30.0, np.log1p(3 - np.float32(2.9))], atol=1e-6)


def test_ties_go_to_the_lower_training_index_at_every_neighbour_count():
    """Exact duplicates and points placed symmetrically tie exactly; the lower index
    wins, at the boundary of each neighbour count (what an ONNX export reproduces)."""
    # Training rows: x=1 four times (labels 1..4), x=-1 and x=3 (symmetric about 1).
    X = np.array([[1.0], [1.0], [1.0], [1.0], [-1.0], [3.0]], dtype=np.float32)
    y = np.array([1.0, 2.0, 3.0, 4.0, 50.0, 60.0])
    state = fit_retrieval(X, packed(y), [REGRESSION], np.arange(6), n_neighbors=5)
    query = np.array([[1.0], [1.0 + 1e-3], [0.0]], dtype=np.float32)
    F = retrieval_features(state, query)  # means of 1, 4 and 5 neighbours, distance
    np.testing.assert_allclose(F[0], [1.0, 2.5, (10 + 50) / 5, 0.0])
    np.testing.assert_allclose(F[1, :3], [1.0, 2.5, (10 + 60) / 5])  # x=3 is nearer now
    # x=0: the four duplicates at distance 1, then -1 (distance 1) and 3 (distance 3).
    np.testing.assert_allclose(F[2], [1.0, 2.5, (10 + 50) / 5, np.log(2)])
    # Leaving a row out: row 0 (label 1) sees rows 1, 2, 3 first.
    own = retrieval_features(state, X, leave_out_self=True)
    np.testing.assert_allclose(own[0, :2], [2.0, (2 + 3 + 4 + 50) / 4])


def test_own_label_never_reaches_its_own_features():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3)).astype(np.float32)
    X[30:] = X[:30]  # every row has an exact duplicate
    y = rng.standard_normal(60)
    train = np.arange(50)
    before = retrieval_features(fit_retrieval(X, packed(y), [REGRESSION], train, 8), X, True)
    for row in (0, 7, 31):
        changed = y.copy()
        changed[row] += 100.0
        after = retrieval_features(fit_retrieval(X, packed(changed), [REGRESSION], train, 8),
                                   X, True)
        np.testing.assert_array_equal(after[row], before[row])
        assert (after != before).any()  # the label is other rows' neighbour


def test_validation_labels_change_no_feature():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 4)).astype(np.float32)
    y = rng.standard_normal(80)
    c = rng.integers(0, 3, 80).astype(float)
    train = rng.permutation(80)[:60]
    valid = np.setdiff1d(np.arange(80), train)
    tasks = [REGRESSION, THREE_CLASSES]
    before = retrieval_features(fit_retrieval(X, packed(y, c), tasks, train, 16), X, True)
    y2, c2 = y.copy(), c.copy()
    y2[valid] = rng.standard_normal(len(valid)) * 50
    c2[valid] = (c2[valid] + 1) % 3
    after = retrieval_features(fit_retrieval(X, packed(y2, c2), tasks, train, 16), X, True)
    np.testing.assert_array_equal(after, before)


def test_missing_labels_are_never_retrieved():
    y = np.array([10.0, np.nan, 30.0, 40.0, 99.0])
    state = fit_retrieval(LINE, packed(y), [REGRESSION], TRAIN, n_neighbors=1)
    F = retrieval_features(state, LINE, leave_out_self=True)
    # Row 1 is unlabelled: not a candidate, and its nearest labelled row is its duplicate.
    np.testing.assert_allclose(F[1], [30.0, 0.0])
    # Row 2: its duplicate has no label, so its nearest labelled is row 0 at distance 1.
    np.testing.assert_allclose(F[2], [10.0, np.log(2)])


def test_class_labels_are_one_hot_and_binary_the_positive_class():
    X = np.arange(6, dtype=np.float32).reshape(-1, 1)
    flag = np.array([1, 0, 1, 1, 0, 0], float)
    level = np.array([0, 2, 2, 1, 0, 2], float)
    state = fit_retrieval(X, packed(flag, level), [BINARY, THREE_CLASSES], np.arange(6), 2)
    F = retrieval_features(state, X, leave_out_self=True)
    assert F.shape == (6, (1 * 2 + 1) + (3 * 2 + 1))
    # Row 2 (x=2): neighbours rows 1 and 3 (tie at distance 1), positive-class mean 0.5.
    assert F[2, 1] == 0.5
    np.testing.assert_allclose(F[2, 3 + 3:3 + 6], [0.0, 0.5, 0.5])  # classes 2 and 1
    np.testing.assert_allclose(F[:, 3 + 3:3 + 6].sum(axis=1), 1.0)


def test_a_task_with_one_candidate_gets_its_prior():
    y = np.array([5.0, np.nan, np.nan, np.nan, np.nan])
    state = fit_retrieval(LINE, packed(y), [REGRESSION], TRAIN, n_neighbors=4)
    F = retrieval_features(state, LINE, leave_out_self=True)
    # Row 0 has no other candidate: the prior (its mean label) and distance 0.
    np.testing.assert_allclose(F[0], [5.0, 5.0, 0.0])
    np.testing.assert_allclose(F[3], [5.0, 5.0, np.log(4)])


# ----------------------------------------------------------------------------
# The estimator


def people(n_people=150, years=5, seed=0):
    """Rows that recur: each person's features repeat over the years and their class is
    their own, unrelated to the features' values (a lookup, not a smooth function)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_people, 4)).astype(np.float32)
    person = np.repeat(np.arange(n_people), years)
    group = rng.integers(0, 3, n_people)
    X = base[person]
    Y = pd.DataFrame({"group": group[person],
                      "size": rng.standard_normal(n_people)[person]
                      + 0.1 * rng.standard_normal(len(person))})
    return X, Y


def fit(X, Y, **params):
    params = {"random_state": 0, "max_epochs": 60, "hidden_layer_sizes": (32, 32),
              "tasks": {"group": "multiclass", "size": "regression"}, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MultiTaskRegressorClassifier(**params).fit(X, Y)


@pytest.fixture(scope="module")
def lookup():
    X, Y = people()
    order = np.random.default_rng(1).permutation(len(X))
    train, test = order[:600], order[600:]
    return X[train], Y.iloc[train], X[test], Y.iloc[test]


@pytest.fixture(scope="module")
def with_retrieval(lookup):
    X, Y, _, _ = lookup
    return fit(X, Y, retrieval="on", n_neighbors=4)


def test_retrieval_learns_a_lookup_the_plain_network_cannot(lookup, with_retrieval):
    X, Y, X_test, Y_test = lookup
    plain = fit(X, Y, retrieval="off")
    scores = {name: model.score_tasks(X_test, Y_test)
              for name, model in (("plain", plain), ("retrieval", with_retrieval))}
    assert scores["retrieval"]["group"] > 0.9 > scores["plain"]["group"] + 0.2
    assert scores["retrieval"]["size"] > 0.9 > scores["plain"]["size"] + 0.2


def test_prediction_reads_the_stored_training_rows(lookup, with_retrieval):
    X, Y, X_test, _ = lookup
    model = with_retrieval
    state = model._retrieval
    # The network's input: X, then the features against the fit's training rows.
    assert model.n_features_in_ == X.shape[1]
    assert len(state["train_rows"]) == round(0.9 * len(X))
    expected = np.hstack([X_test, retrieval_features(state, X_test)])
    np.testing.assert_array_equal(model._net_input(X_test), expected)
    raw = model.net_.raw_outputs(expected)
    proba = model.predict_proba(X_test)["group"]
    np.testing.assert_allclose(proba, np.exp(raw[:, :3]) / np.exp(raw[:, :3]).sum(1, keepdims=True),
                               rtol=1e-5)
    assert model.predict(X_test[:0]).shape == (0, 2)


def test_the_users_data_are_not_changed(lookup):
    X, Y, _, _ = lookup
    X0, Y0 = X.copy(), Y.copy()
    fit(X, Y, retrieval="on", n_neighbors=4, max_epochs=2)
    np.testing.assert_array_equal(X, X0)
    pd.testing.assert_frame_equal(Y, Y0)


@pytest.mark.parametrize("round_trip", [pickle_round_trip, joblib_round_trip, skops_round_trip])
def test_round_trip_keeps_the_neighbours(lookup, with_retrieval, round_trip):
    _, _, X_test, _ = lookup
    loaded = round_trip(with_retrieval)
    pd.testing.assert_frame_equal(loaded.predict(X_test), with_retrieval.predict(X_test))


def test_same_random_state_same_model(lookup, with_retrieval):
    X, Y, X_test, _ = lookup
    again = fit(X, Y, retrieval="on", n_neighbors=4)
    np.testing.assert_array_equal(again.predict_proba(X_test)["group"],
                                  with_retrieval.predict_proba(X_test)["group"])


def test_partial_fit_refuses_with_a_reason(lookup):
    X, Y, _, _ = lookup
    model = MultiTaskRegressorClassifier(retrieval="on", tasks={"group": "multiclass",
                                                                "size": "regression"})
    with pytest.raises(ValueError, match="retrieval='on' cannot be used with partial_fit"):
        model.partial_fit(X, Y)


def assert_onnx_reproduces(model, X):
    """The exported graph (input X only) computes the retrieval features of X, the same
    neighbours at every tie (each person's rows are exact duplicates with labels of
    their own), and the model's predictions."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    graph = model.to_onnx()
    assert [i.name for i in graph.graph.input] == ["X"]
    graph.graph.output.append(onnx.helper.make_tensor_value_info("R", onnx.TensorProto.FLOAT,
                                                                 None))
    session = ort.InferenceSession(graph.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, {"X": X})))
    np.testing.assert_allclose(out["R"], retrieval_features(model._retrieval, X), rtol=1e-6,
                               atol=1e-6)
    pred, proba = model.predict(X), model.predict_proba(X)
    np.testing.assert_array_equal(out["group_label"], pred["group"].to_numpy())
    np.testing.assert_allclose(out["group_proba"], proba["group"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["size_value"], pred["size"], rtol=1e-4, atol=1e-4)


def test_onnx_export_computes_the_features_and_predicts_as_the_model(lookup, with_retrieval):
    X, _, X_test, _ = lookup
    assert_onnx_reproduces(with_retrieval, X_test)
    assert_onnx_reproduces(with_retrieval, X[:50])  # training rows: a duplicate at distance 0


def both_searches(base, grid, cv, X, Y):
    """The stacked search and scikit-learn's on the same grid and folds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return (MultiTaskGridSearchCV(base, grid, cv=cv).fit(X, Y),
                GridSearchCV(base, grid, cv=cv).fit(X, Y))


def test_search_fits_each_candidate_on_its_own_rows(lookup):
    """Each fold's features come from that fold's training rows: the stacked search falls
    back to one fit per candidate and fold, and agrees with scikit-learn's search."""
    X, Y, _, _ = lookup
    base = MultiTaskRegressorClassifier(
        retrieval="on", n_neighbors=4, random_state=0, max_epochs=5, hidden_layer_sizes=(16,),
        tasks={"group": "multiclass", "size": "regression"})
    grid = {"loss_weights": [{"group": 1.0, "size": 1.0}, {"group": 1.0, "size": 0.0}]}
    ours, ref = both_searches(base, grid, KFold(3, shuffle=True, random_state=0), X, Y)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], rtol=1e-6)
    assert ours.best_params_ == ref.best_params_


def test_per_task_sharing_reads_the_same_inputs(lookup):
    """The single-task networks of ``sharing`` read X and the retrieval features too; the
    blend is the mean of the two networks' predictions on them."""
    X, Y, X_test, _ = lookup
    blend = fit(X, Y, retrieval="on", n_neighbors=4, sharing="blend", max_epochs=10)
    shared = fit(X, Y, retrieval="on", n_neighbors=4, max_epochs=10)
    assert blend.sharing_ == {"group": "blend", "size": "blend"}
    np.testing.assert_array_equal(blend._net_input(X_test), shared._net_input(X_test))
    assert np.isfinite(blend.predict(X_test)["size"]).all()
    loaded = pickle_round_trip(blend)
    pd.testing.assert_frame_equal(loaded.predict(X_test), blend.predict(X_test))


# ----------------------------------------------------------------------------
# retrieval='auto'


@pytest.fixture(scope="module")
def large_lookup():
    """A lookup with more than MIN_VALIDATION_LABELS validation rows per task."""
    X, Y = people(n_people=300, years=5, seed=2)
    order = np.random.default_rng(3).permutation(len(X))
    train, test = order[:1300], order[1300:]
    return X[train], Y.iloc[train], X[test], Y.iloc[test]


# patience=5: the 60 epochs of ``fit`` are MIN_PATIENCE_WINDOWS patience windows or more.
AUTO = {"retrieval": "auto", "n_neighbors": 4, "validation_fraction": 0.4, "patience": 5}


@pytest.fixture(scope="module")
def auto_lookup(large_lookup):
    X, Y, _, _ = large_lookup
    return fit(X, Y, **AUTO)


def smooth(n=500, seed=0):
    """Targets that are smooth functions of X: a network beats the neighbours' labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    Y = pd.DataFrame({"value": X[:, 0] * 2 + X[:, 1] - X[:, 2] + 0.1 * rng.standard_normal(n),
                      "flag": (X[:, 0] - X[:, 3] > 0).astype(int)})
    return X, Y


SMOOTH_TASKS = {"value": "regression", "flag": "binary"}


def test_auto_predicts_a_lookup_with_the_retrieval_network(large_lookup, auto_lookup):
    X, Y, X_test, Y_test = large_lookup
    model = auto_lookup
    n_valid = len(X) - len(model._retrieval["train_rows"])
    assert n_valid == 520 >= MIN_VALIDATION_LABELS
    losses = model.retrieval_losses_
    assert list(losses.columns) == ["plain", "neighbours", "neighbours_se", "retrieval",
                                    "retrieval_se"]
    assert (losses["neighbours"] + losses["neighbours_se"] < losses["plain"]).all()
    assert model.retrieval_ == {"group": True, "size": True}
    chosen = losses["retrieval"] + losses["retrieval_se"] < losses["plain"]
    assert chosen.to_dict() == model.retrieval_
    assert model.score_tasks(X_test, Y_test)["group"] > 0.9
    # Its predictions are the retrieval network's on X and the features.
    wide = np.hstack([X_test, retrieval_features(model._retrieval, X_test)])
    raw = model._retrieval_net.raw_outputs(wide)
    np.testing.assert_allclose(model.predict(X_test)["size"],
                               model.tasks_[1].encoder.inverse_transform(raw[:, 3:4]).ravel())
    # Each task's best epoch is the retrieval network's.
    stopper = dict(model._retrieval_net.callbacks_)["early_stopping"]
    assert model.best_epoch_ == {"group": int(stopper.best_epochs_[0]),
                                 "size": int(stopper.best_epochs_[1])}


def test_auto_is_off_where_the_neighbours_predict_worse():
    X, Y = smooth(n=1500)
    off = fit(X, Y, tasks=SMOOTH_TASKS, retrieval="off", validation_fraction=0.4, patience=5)
    auto = fit(X, Y, tasks=SMOOTH_TASKS, retrieval="auto", validation_fraction=0.4, patience=5)
    losses = auto.retrieval_losses_
    assert list(losses.columns) == ["plain", "neighbours", "neighbours_se"]
    assert (losses["neighbours"] > losses["plain"]).all()
    assert auto.retrieval_ == {"value": False, "flag": False}
    assert "_retrieval_net" not in auto.__dict__ and auto._retrieval is None
    # Nothing else changed: the same model as without retrieval.
    pd.testing.assert_frame_equal(auto.predict(X), off.predict(X))


def test_auto_decides_no_task_with_few_validation_labels(lookup):
    """60 validation labels per task: the neighbours would predict the lookup better, but
    too few labels decide nothing (no neighbour search), and the model is the plain one."""
    X, Y, X_test, _ = lookup
    auto = fit(X, Y, retrieval="auto", n_neighbors=4)
    assert auto.retrieval_ == {"group": False, "size": False}
    with pytest.raises(AttributeError, match="at least 500 validation labels"):
        auto.retrieval_losses_
    off = fit(X, Y, retrieval="off")
    pd.testing.assert_frame_equal(auto.predict(X_test), off.predict(X_test))


def test_auto_decides_nothing_after_a_fit_cut_short(large_lookup):
    """max_epochs reached before early stopping ended the fit, and fewer epochs than
    MIN_PATIENCE_WINDOWS patience windows: the network is no yardstick yet."""
    X, Y, X_test, _ = large_lookup
    params = {**AUTO, "max_epochs": 5 * MIN_PATIENCE_WINDOWS - 1}
    short = fit(X, Y, **params)
    assert short.n_epochs_ == params["max_epochs"]
    assert short.retrieval_ == {"group": False, "size": False}
    off = fit(X, Y, **{**params, "retrieval": "off"})
    pd.testing.assert_frame_equal(short.predict(X_test), off.predict(X_test))
    # The same fit for as many epochs as ten patience windows decides.
    assert fit(X, Y, **{**params, "max_epochs": 5 * MIN_PATIENCE_WINDOWS}).retrieval_["group"]


def test_auto_without_validation_rows_does_nothing(lookup):
    X, Y, X_test, _ = lookup
    model = fit(X, Y, retrieval="auto", early_stopping=False, max_epochs=5)
    assert model.retrieval_ == {"group": False, "size": False}
    with pytest.raises(AttributeError, match="retrieval_losses_"):
        model.retrieval_losses_


@pytest.mark.parametrize("round_trip", [pickle_round_trip, joblib_round_trip, skops_round_trip])
def test_auto_round_trip_keeps_both_networks(large_lookup, auto_lookup, round_trip):
    _, _, X_test, _ = large_lookup
    loaded = round_trip(auto_lookup)
    assert loaded.retrieval_ == auto_lookup.retrieval_
    pd.testing.assert_frame_equal(loaded.predict(X_test), auto_lookup.predict(X_test))
    pd.testing.assert_frame_equal(loaded.retrieval_losses_, auto_lookup.retrieval_losses_)


def test_auto_continued_training_uses_the_plain_network(large_lookup):
    X, Y, X_test, _ = large_lookup
    model = fit(X, Y, **AUTO, warm_start=True)
    assert model.retrieval_["group"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(max_epochs=2).fit(X, Y)
    assert model.retrieval_ == {"group": False, "size": False}
    raw = model.net_.raw_outputs(X_test)
    np.testing.assert_allclose(model.predict(X_test)["size"],
                               model.tasks_[1].encoder.inverse_transform(raw[:, 3:4]).ravel())
    # partial_fit trains the plain network too (retrieval='on' refuses it).
    model.partial_fit(X, Y)
    assert model.retrieval_ == {"group": False, "size": False}


def test_auto_onnx_export_takes_each_task_from_its_network(large_lookup, auto_lookup):
    _, _, X_test, _ = large_lookup
    assert auto_lookup.retrieval_ == {"group": True, "size": True}
    assert_onnx_reproduces(auto_lookup, X_test)
    # One task from each network: the graph follows the model's choice per task.
    mixed = copy.deepcopy(auto_lookup)
    mixed._retrieval_tasks = [True, False]
    assert not np.allclose(mixed.predict(X_test)["size"], auto_lookup.predict(X_test)["size"])
    assert_onnx_reproduces(mixed, X_test)


def test_stacked_search_decides_retrieval_per_member_as_its_fit_does():
    """retrieval='auto' stays stackable: the plain networks train as one stack, then each
    candidate and fold runs the check on its own fold, as GridSearchCV's fits do."""
    X, Y = people(n_people=600, years=5, seed=4)
    base = MultiTaskRegressorClassifier(
        retrieval="auto", n_neighbors=4, validation_fraction=0.4, random_state=0,
        max_epochs=10, patience=1, hidden_layer_sizes=(16,),
        tasks={"group": "multiclass", "size": "regression"})
    grid = {"loss_weights": [{"group": 1.0, "size": 1.0}, {"group": 1.0, "size": 0.5}]}
    ours, ref = both_searches(base, grid, KFold(2, shuffle=True, random_state=0), X, Y)
    assert ours.n_stacked_fits_ == 4
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], atol=1e-4)
    assert ours.best_estimator_.retrieval_ == ref.best_estimator_.retrieval_ == {
        "group": True, "size": True}
