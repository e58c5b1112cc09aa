"""Notebook-facing outputs: task_report, predict_proba(as_frame=True), predictions under
X's index, and summary()."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskClassifier, MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl.metrics import task_report

from .conftest import make_mixed

FAST = dict(max_epochs=15, random_state=0)


@pytest.fixture(scope="module")
def split():
    X, Y = make_mixed(n=300, seed=3, missing=0.15)
    # A shuffled, non-default index, as a notebook's train_test_split leaves it.
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])],
                     index=pd.Index(np.arange(1000, 1300), name="row"))
    Y.index = X.index
    return train_test_split(X, Y, test_size=0.4, random_state=0)


@pytest.fixture(scope="module")
def fitted(split):
    X_train, X_test, Y_train, Y_test = split
    model = make_pipeline(StandardScaler().set_output(transform="pandas"),
                          MultiTaskRegressorClassifier(**FAST))
    return model.fit(X_train, Y_train)


# ---------------------------------------------------------------------------
# task_report


def _observed(Y, task):
    return Y[task].notna().to_numpy()


def test_task_report_equals_sklearn_metrics_on_the_observed_rows(split, fitted):
    _, X_test, _, Y_test = split
    before = Y_test.copy()
    report = task_report(fitted, X_test, Y_test)
    pd.testing.assert_frame_equal(Y_test, before)  # nothing the user passed is changed
    assert list(report.index) == ["value", "flag", "level"] and report.index.name == "task"
    assert list(report.columns) == ["kind", "n_observed", "r2", "mae", "rmse", "accuracy",
                                    "balanced_accuracy", "log_loss", "macro_f1", "roc_auc"]
    assert report["kind"].tolist() == ["regression", "binary", "multiclass"]
    pred = fitted.predict(X_test)
    proba = fitted.predict_proba(X_test)
    classes = fitted[-1].classes_

    rows = _observed(Y_test, "value")
    truth, guess = Y_test["value"][rows], pred["value"][rows]
    assert report.loc["value", "n_observed"] == rows.sum()
    assert report.loc["value", "r2"] == pytest.approx(r2_score(truth, guess))
    assert report.loc["value", "mae"] == pytest.approx(mean_absolute_error(truth, guess))
    assert report.loc["value", "rmse"] == pytest.approx(root_mean_squared_error(truth, guess))

    for task in ("flag", "level"):
        rows = _observed(Y_test, task)
        truth, guess = Y_test[task][rows], pred[task][rows]
        assert report.loc[task, "n_observed"] == rows.sum()
        assert report.loc[task, "accuracy"] == pytest.approx(accuracy_score(truth, guess))
        assert report.loc[task, "balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(truth, guess))
        assert report.loc[task, "macro_f1"] == pytest.approx(
            f1_score(truth, guess, average="macro"))
        assert report.loc[task, "log_loss"] == pytest.approx(
            log_loss(truth, proba[task][rows], labels=classes[task]))
    rows = _observed(Y_test, "flag")
    assert report.loc["flag", "roc_auc"] == pytest.approx(
        roc_auc_score(Y_test["flag"][rows] == "yes", proba["flag"][rows, 1]))
    # Metrics of the other kind, and roc_auc of a multiclass task, do not apply.
    assert report.loc["value", ["accuracy", "log_loss", "roc_auc"]].isna().all()
    assert report.loc[["flag", "level"], ["r2", "mae", "rmse"]].isna().all().all()
    assert np.isnan(report.loc["level", "roc_auc"])


def test_task_report_takes_the_estimator_a_pipeline_and_a_search(split, fitted):
    X_train, X_test, Y_train, Y_test = split
    expected = task_report(fitted, X_test, Y_test)
    alone = task_report(fitted[-1], fitted[0].transform(X_test), Y_test)
    pd.testing.assert_frame_equal(alone, expected)
    search = GridSearchCV(fitted, {"multitaskregressorclassifier__lr": [fitted[-1].lr]},
                          cv=KFold(2, shuffle=True, random_state=0)).fit(X_train, Y_train)
    pd.testing.assert_frame_equal(task_report(search, X_test, Y_test), expected)


def test_task_report_sample_weight_and_one_dimensional_y(split):
    X_train, X_test, Y_train, Y_test = split
    y_train = Y_train["value"].dropna()
    model = MultiTaskRegressor(**FAST).fit(X_train.loc[y_train.index], y_train)
    y_test = Y_test["value"].dropna()
    Xt = X_test.loc[y_test.index]
    w = np.linspace(0.5, 2.0, len(y_test))
    report = task_report(model, Xt, y_test, sample_weight=w)
    assert list(report.index) == ["value"]
    assert report.loc["value", "r2"] == pytest.approx(
        r2_score(y_test, model.predict(Xt), sample_weight=w))
    assert report.loc["value", "mae"] == pytest.approx(
        mean_absolute_error(y_test, model.predict(Xt), sample_weight=w))


def test_task_report_on_a_two_dimensional_array_y():
    X, Y = make_mixed(n=200, seed=4)
    Y2 = np.column_stack([Y["value"], (Y["flag"] == "yes").astype(int)])
    model = MultiTaskRegressorClassifier(tasks=["amount", "flag"], **FAST).fit(X, Y2)
    report = task_report(model, X, Y2)
    assert list(report.index) == ["amount", "flag"]
    assert report.loc["flag", "accuracy"] == pytest.approx(
        accuracy_score(Y2[:, 1], model.predict(X)[:, 1]))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_task_report_says_why_a_metric_is_nan(split, fitted):
    _, X_test, _, Y_test = split
    one_class = Y_test.copy()
    one_class["flag"] = "yes"
    one_class["level"] = np.nan  # no observed label at all: NaN metrics, n_observed 0
    # scikit-learn warns (or, in older versions, raises and the report warns) why.
    with pytest.warns(Warning, match="[Oo]nly one class"):
        report = task_report(fitted, X_test, one_class)
    assert np.isnan(report.loc["flag", "roc_auc"])
    assert report.loc["flag", "accuracy"] == pytest.approx(
        np.mean(fitted.predict(X_test)["flag"] == "yes"))
    assert report.loc["level", "n_observed"] == 0
    assert report.loc["level", ["accuracy", "log_loss", "macro_f1"]].isna().all()


def test_task_report_errors_name_the_problem(split, fitted):
    _, X_test, _, Y_test = split
    with pytest.raises(ValueError, match=r"lacks the task column\(s\) \['level'\]"):
        task_report(fitted, X_test, Y_test.drop(columns="level"))
    with pytest.raises(ValueError, match="one label row per row of X"):
        task_report(fitted, X_test, Y_test.iloc[:-3])
    with pytest.raises(ValueError, match="Cannot find a fitted multi-task estimator"):
        task_report(StandardScaler(), X_test, Y_test)


# ---------------------------------------------------------------------------
# Predictions and probabilities under X's index


def test_predictions_keep_x_index_through_a_pandas_pipeline(split, fitted):
    _, X_test, _, Y_test = split
    pred = fitted.predict(X_test)
    assert pred.index.equals(X_test.index)
    # assign aligns on the index: the predictions land on their own rows.
    joined = Y_test.assign(value_pred=pred["value"])
    np.testing.assert_array_equal(joined["value_pred"].to_numpy(), pred["value"].to_numpy())
    shuffled = X_test.sample(frac=1.0, random_state=1)
    again = fitted.predict(shuffled)
    pd.testing.assert_frame_equal(again.loc[X_test.index], pred)


def test_predict_proba_as_frame(split, fitted):
    _, X_test, _, _ = split
    frames = fitted.predict_proba(X_test, as_frame=True)
    arrays = fitted.predict_proba(X_test)
    classes = fitted[-1].classes_
    assert set(frames) == {"flag", "level"}
    for task, frame in frames.items():
        assert frame.columns.tolist() == classes[task].tolist()
        assert frame.index.equals(X_test.index)
        np.testing.assert_array_equal(frame.to_numpy(), arrays[task])


def test_predict_proba_as_frame_for_one_task_and_for_arrays():
    X, Y = make_mixed(n=150, seed=5)
    clf = MultiTaskClassifier(**FAST).fit(X, Y["level"])
    frame = clf.predict_proba(X[:7], as_frame=True)
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == clf.classes_.tolist()
    assert frame.index.equals(pd.RangeIndex(7))  # a NumPy X has no index of its own
    np.testing.assert_array_equal(frame.to_numpy(), clf.predict_proba(X[:7]))
    # A 2-D array y: one DataFrame per task name.
    Y2 = np.column_stack([(Y["flag"] == "yes").astype(int), Y["level"]])
    clf2 = MultiTaskClassifier(**FAST).fit(X, Y2)
    frames = clf2.predict_proba(X[:4], as_frame=True)
    assert set(frames) == {"task_0", "task_1"}
    assert frames["task_1"].columns.tolist() == clf2.classes_[1].tolist()


def test_regression_only_estimator_has_no_predict_proba():
    X, Y = make_mixed(n=100, seed=6)
    reg = MultiTaskRegressor(**FAST).fit(X, Y[["value"]])
    assert not hasattr(reg, "predict_proba")


# ---------------------------------------------------------------------------
# summary()


def _parameters(module):
    return sum(p.numel() for p in module.parameters())


def test_summary_counts_every_parameter_per_part(fitted):
    model = fitted[-1]
    summary = model.summary()
    parts = summary.parts
    net = model.net_
    assert summary.total_parameters == _parameters(net.module_) + _parameters(net.weighting_)
    # Hand count: trunk 6 -> 64 -> 64, heads 64 -> 20 -> outputs (1, 1, 3).
    assert parts.loc["trunk", "parameters"] == (6 * 64 + 64) + (64 * 64 + 64)
    head = 64 * 20 + 20
    assert parts.loc["head value", "parameters"] == head + 21 * 1
    assert parts.loc["head flag", "parameters"] == head + 21 * 1
    assert parts.loc["head level", "parameters"] == head + 21 * 3
    assert parts.loc["output padding", "parameters"] == 2 * 21 * 2  # two 1-wide tasks padded to 3
    assert parts.loc["weighting", "parameters"] == 0  # static weighting
    tasks = summary.tasks
    assert tasks["kind"].tolist() == ["regression", "binary", "multiclass"]
    assert tasks["loss"].tolist() == ["mse", "bce", "cross_entropy"]
    assert tasks["loss_weight"].tolist() == [1.0, 1.0, 1.0]
    text = str(summary)
    for needle in ("trunk", "head level", "cross_entropy", f"{summary.total_parameters:,}",
                   "MLP 6 -> 64 -> 64"):
        assert needle in text
    assert repr(summary) == text
    assert "<table>" in summary._repr_html_()


def test_summary_shows_loss_weights_learnable_weighting_and_task_graph():
    X, Y = make_mixed(n=150, seed=7)
    model = MultiTaskRegressorClassifier(
        weighting="uncertainty", loss_weights={"flag": 2.0}, head_inputs={"level": ["flag"]},
        auxiliary_tasks=["value"], hidden_layer_sizes=(16,), head_hidden_sizes=(8,),
        max_epochs=3, random_state=0).fit(X, Y)
    summary = model.summary()
    parts, tasks = summary.parts, summary.tasks
    assert parts.loc["weighting", "parameters"] == 3  # one log-variance per task
    assert summary.total_parameters == (_parameters(model.net_.module_)
                                        + _parameters(model.net_.weighting_))
    # The level head reads the flag head's output (1 column) beside the 16-wide trunk.
    assert parts.loc["head level", "parameters"] == (17 * 8 + 8) + (8 * 3 + 3)
    assert "reads flag" in parts.loc["head level", "description"]
    assert "head value (auxiliary)" in parts.index
    assert tasks.loc["flag", "loss_weight"] == 2.0
    assert bool(tasks.loc["value", "auxiliary"])
    assert np.isfinite(tasks["last_weight"]).all()


def test_summary_of_a_custom_trunk():
    X, Y = make_mixed(n=120, seed=8)

    class Trunk(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(6, 5)

        def forward(self, x):
            return torch.relu(self.layer(x))

    model = MultiTaskRegressor(module=Trunk(), max_epochs=2, random_state=0)
    model.fit(X, Y[["value"]])
    summary = model.summary()
    assert summary.parts.loc["trunk", "parameters"] == 6 * 5 + 5
    assert "Trunk" in summary.parts.loc["trunk", "description"]


def test_summary_needs_a_fitted_estimator():
    with pytest.raises(NotFittedError):
        MultiTaskRegressorClassifier().summary()


def test_no_warnings_from_the_report_helpers(split, fitted):
    _, X_test, _, Y_test = split
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task_report(fitted, X_test, Y_test)
        fitted.predict_proba(X_test, as_frame=True)
        str(fitted[-1].summary())
