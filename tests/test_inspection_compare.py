"""compare_single_task: folds, single-task fits, scoring, the interval and the verdict."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskClassifier, MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl.inspection import _compare, compare_single_task

from .conftest import make_mixed

FAST = dict(hidden_layer_sizes=(8,), head_hidden_sizes=(), max_epochs=3, batch_size=64,
            lr=0.02)
COLUMNS = ["multi_task", "single_task", "difference", "ci_low", "ci_high", "verdict"]


def test_table_shape_and_attrs(mixed_data):
    X, Y = mixed_data
    table = compare_single_task(MultiTaskRegressorClassifier(**FAST), X, Y, cv=3,
                                random_state=0)
    assert list(table.columns) == COLUMNS
    assert list(table.index) == ["value", "flag", "level"] and table.index.name == "task"
    assert set(table["verdict"]) <= {"helps", "hurts", "no clear difference"}
    assert (table["ci_low"] <= table["difference"]).all()
    assert (table["difference"] <= table["ci_high"]).all()
    folds = table.attrs["fold_scores"]
    for name in table.index:
        d = np.subtract(folds[name]["multi_task"], folds[name]["single_task"])
        assert table.loc[name, "difference"] == pytest.approx(d.mean())
        assert table.loc[name, "multi_task"] == pytest.approx(np.mean(folds[name]["multi_task"]))
    assert table.attrs["metrics"] == {"value": "r2", "flag": "accuracy", "level": "accuracy"}
    assert table.attrs["n_splits"] == 3 and table.attrs["confidence"] == 0.95


def test_nothing_passed_is_changed(mixed_data):
    X, Y = mixed_data
    X_before, Y_before = X.copy(), Y.copy()
    weights = {"value": 2.0}
    est = MultiTaskRegressorClassifier(**FAST, loss_weights=weights, random_state=3)
    params = est.get_params()
    compare_single_task(est, X, Y, cv=2, random_state=0)
    assert not hasattr(est, "net_")
    assert est.get_params() == params and weights == {"value": 2.0}
    np.testing.assert_array_equal(X, X_before)
    pd.testing.assert_frame_equal(Y, Y_before)


def test_the_interval_is_nadeau_bengio():
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    mean, low, high = _compare._interval(d, 0.25, 0.95)
    half = stats.t.ppf(0.975, 4) * np.std(d, ddof=1) * np.sqrt(1 / 5 + 0.25)
    assert mean == 3.0 and low == pytest.approx(3.0 - half) and high == pytest.approx(3.0 + half)
    # Wider than the plain t-interval, which ignores that the folds overlap.
    assert half > stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / np.sqrt(5)
    assert np.isnan(_compare._interval(d[:1], 0.25, 0.95)[1])
    assert _compare._verdict(0.1, 0.5) == "helps"
    assert _compare._verdict(-0.5, -0.1) == "hurts"
    assert _compare._verdict(-0.1, 0.5) == "no clear difference"
    assert _compare._verdict(np.nan, np.nan) == "no clear difference"


def test_verdict_follows_the_interval_computed_from_the_folds(mixed_data, monkeypatch):
    X, Y = mixed_data
    fake = {"value": ([0.9, 0.8, 0.85], [0.5, 0.52, 0.48]),  # clearly better
            "flag": ([0.5, 0.52, 0.48], [0.9, 0.8, 0.85]),   # clearly worse
            "level": ([0.7, 0.5, 0.6], [0.6, 0.7, 0.5])}     # mixed
    calls = {"n": 0}

    def fake_fit_and_score(estimator, X, Y, train, test, names, metrics):
        fold = calls["n"] // 4
        calls["n"] += 1
        return {name: fake[name][0 if len(names) > 1 else 1][fold] for name in names}

    monkeypatch.setattr(_compare, "_fit_and_score", fake_fit_and_score)
    table = compare_single_task(MultiTaskRegressorClassifier(**FAST), X, Y, cv=3)
    assert table["verdict"].to_dict() == {"value": "helps", "flag": "hurts",
                                          "level": "no clear difference"}
    d = np.subtract(*fake["value"])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) * np.sqrt(1 / 3 + 0.5)
    assert table.loc["value", "ci_low"] == pytest.approx(d.mean() - half, rel=1e-2)


def test_single_task_parameters_are_restricted_to_the_task():
    tasks = [("a", "regression"), ("b", "binary"), ("c", "multiclass")]
    est = MultiTaskRegressorClassifier(
        tasks={"a": "regression", "c": "classification"}, losses={"a": "mae", "b": "hinge"},
        loss_weights={"a": 2.0, "c": 0.0}, auxiliary_tasks=["c"], head_inputs={"a": ["b"]},
        task_depth={"b": 1}, class_weight={"b": "balanced"})
    a = _compare.single_task_params(est, "a", tasks)
    assert a == {"tasks": {"a": "regression"}, "losses": {"a": "mae"}, "task_depth": None,
                 "loss_weights": {"a": 2.0}, "auxiliary_tasks": None, "head_inputs": None,
                 "class_weight": None}
    b = _compare.single_task_params(est, "b", tasks)
    assert b["losses"] == {"b": "hinge"} and b["task_depth"] == {"b": 1}
    assert b["class_weight"] == {"b": "balanced"} and b["tasks"] is None
    c = _compare.single_task_params(est, "c", tasks)
    assert c["loss_weights"] is None  # alone, a task is trained whatever its weight
    listed = MultiTaskRegressorClassifier(tasks=["a", "b", "c"], loss_weights=[1.0, 3.0, 1.0],
                                          class_weight=[None, "balanced", None])
    b = _compare.single_task_params(listed, "b", tasks)
    assert b["tasks"] == ["b"] and b["loss_weights"] == {"b": 3.0}
    assert b["class_weight"] == {"b": "balanced"}
    single_form = MultiTaskRegressorClassifier(class_weight={0: 1.0, 1: 2.0})
    two = [("a", "regression"), ("b", "binary")]
    assert _compare.single_task_params(single_form, "b", two)["class_weight"] == {0: 1.0, 1: 2.0}
    assert _compare.single_task_params(single_form, "a", two)["class_weight"] is None


def test_single_task_fits_train_on_the_tasks_labelled_rows_with_the_same_budget(monkeypatch):
    X, Y = make_mixed(n=240, seed=2, missing=0.3)
    seen = []
    original = _compare._fit_and_score

    def spy(estimator, X, Y, train, test, names, metrics):
        scores = original(estimator, X, Y, train, test, names, metrics)
        seen.append((list(estimator.task_names_), estimator.n_iter_, estimator.random_state,
                     np.asarray(train), np.asarray(test)))
        return scores

    monkeypatch.setattr(_compare, "_fit_and_score", spy)
    compare_single_task(MultiTaskRegressorClassifier(**FAST), X, Y, cv=2, random_state=0)
    assert [s[0] for s in seen] == [["value", "flag", "level"], ["value"], ["flag"],
                                    ["level"]] * 2
    assert {s[1] for s in seen} == {FAST["max_epochs"]}  # the same epochs
    for fold in (seen[:4], seen[4:]):
        assert len({s[2] for s in fold}) == 1  # one seed per fold: paired fits
        multi_train = fold[0][3]
        for names, _, _, train, test in fold[1:]:
            # A single-task network trains on the fold's rows where its task has a label.
            labelled = multi_train[Y[names[0]].notna().to_numpy()[multi_train]]
            np.testing.assert_array_equal(train, labelled)
            np.testing.assert_array_equal(test, fold[0][4])
    assert seen[0][2] != seen[4][2]


def test_missing_labels_are_left_out_of_the_scores():
    X, Y = make_mixed(n=240, seed=2, missing=0.3)
    table = compare_single_task(MultiTaskRegressorClassifier(**FAST), X, Y, cv=3,
                                random_state=0)
    assert table[["multi_task", "single_task"]].notna().all().all()


def test_a_table_sorted_by_a_label_gets_folds_with_every_class():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    Y = pd.DataFrame({"flag": (X[:, 0] > 0).astype(int), "value": X[:, 1]})
    order = np.argsort(Y["flag"].to_numpy(), kind="stable")
    X, Y = X[order], Y.iloc[order].reset_index(drop=True)
    # Unshuffled 2-fold on this table would train on one class only.
    table = compare_single_task(MultiTaskRegressorClassifier(**FAST), X, Y, cv=2,
                                random_state=0)
    assert table.loc["flag", "multi_task"] > 0.6


def test_cv_splitter_iterable_and_pipeline(mixed_data):
    X, Y = mixed_data
    pipe = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(**FAST))
    splitter = KFold(3, shuffle=True, random_state=1)
    a = compare_single_task(pipe, X, Y, cv=splitter, random_state=0)
    b = compare_single_task(pipe, X, Y, cv=list(splitter.split(X)), random_state=0)
    pd.testing.assert_frame_equal(a, b)
    assert not hasattr(pipe[-1], "net_")


def test_random_state_reproduces_and_n_jobs_gives_the_same_answer(mixed_data):
    X, Y = mixed_data
    est = MultiTaskRegressorClassifier(**FAST)
    a = compare_single_task(est, X, Y, cv=2, random_state=5)
    b = compare_single_task(est, X, Y, cv=2, random_state=5, n_jobs=2)
    pd.testing.assert_frame_equal(a, b)


def test_scoring_names_dicts_and_kinds(mixed_data):
    X, Y = mixed_data
    est = MultiTaskRegressorClassifier(**FAST)
    table = compare_single_task(est, X, Y, cv=2, random_state=0,
                                scoring={"value": "neg_mean_absolute_error",
                                         "classification": "balanced_accuracy"})
    assert table.attrs["metrics"] == {"value": "neg_mean_absolute_error",
                                      "flag": "balanced_accuracy",
                                      "level": "balanced_accuracy"}
    assert (table.loc["value", ["multi_task", "single_task"]] < 0).all()  # negated MAE
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]"):
        compare_single_task(est, X, Y, cv=2, scoring={"nope": "r2"})
    with pytest.raises(ValueError, match="regression task 'value'.*probabilities"):
        compare_single_task(est, X, Y, cv=2, scoring="roc_auc")
    with pytest.raises(ValueError, match="not a scikit-learn scorer name"):
        compare_single_task(est, X, Y, cv=2, scoring="accurracy")


def test_array_targets_single_output_estimators_and_auxiliary_tasks():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 4))
    Y = np.column_stack([X[:, 0] + 0.1 * rng.normal(size=150), X[:, 0] - X[:, 1]])
    table = compare_single_task(MultiTaskRegressor(**FAST), X, Y, cv=2, random_state=0)
    assert list(table.index) == ["task_0", "task_1"]
    labels = np.column_stack([(X[:, 0] > 0), (X[:, 1] > 0)]).astype(int)
    table = compare_single_task(MultiTaskClassifier(**FAST), X, labels, cv=2, random_state=0)
    assert list(table.index) == ["task_0", "task_1"]
    frame = pd.DataFrame({"main": X[:, 0], "helper": X[:, 0] + X[:, 1]})
    aux = MultiTaskRegressor(**FAST, auxiliary_tasks=["helper"])
    table = compare_single_task(aux, X, frame, cv=2, random_state=0)
    assert list(table.index) == ["main"]  # auxiliary tasks are trained, not compared


def test_errors_name_what_is_wrong(mixed_data):
    X, Y = mixed_data
    est = MultiTaskRegressorClassifier(**FAST)
    with pytest.raises(ValueError, match="at least 2"):
        compare_single_task(est, X, Y, cv=1)
    with pytest.raises(TypeError, match="cv must be"):
        compare_single_task(est, X, Y, cv="five")
    with pytest.raises(ValueError, match="confidence"):
        compare_single_task(est, X, Y, confidence=95)
    with pytest.raises(TypeError, match="multi-task estimator"):
        compare_single_task(StandardScaler(), X, Y)
    with pytest.raises(ValueError, match="needs Y"):
        compare_single_task(est, X, None)
    assert clone(est).get_params() == est.get_params()
