"""Every user mistake gets a clear scikit-learn style error that names what is wrong."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from sklearn_mtl import MultiTaskRegressorClassifier

from .conftest import make_mixed


@pytest.fixture
def data():
    return make_mixed(n=60)


def fit(X, Y, **params):
    return MultiTaskRegressorClassifier(max_epochs=1, **params).fit(X, Y)


def test_row_counts_differ(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"X has 59 rows but Y\['value'\] has 60"):
        fit(X[:-1], Y)


def test_task_column_entirely_missing(data):
    X, Y = data
    Y = Y.assign(empty=np.nan)
    with pytest.raises(ValueError, match="Task 'empty' has no observed label"):
        fit(X, Y)


def test_one_class_task(data):
    X, Y = data
    Y = Y.assign(flag="yes")
    with pytest.raises(ValueError, match="Task 'flag' has only one class"):
        fit(X, Y, tasks={"flag": "binary"})


@pytest.mark.parametrize("param", ["loss_weights", "losses", "tasks"])
def test_unknown_task_names(data, param):
    X, Y = data
    value = {"stay": 1.0} if param == "loss_weights" else {"stay": "mse"} if param == "losses" \
        else {"stay": "regression"}
    with pytest.raises(ValueError, match=rf"{param} names unknown task\(s\) \['stay'\]"):
        fit(X, Y, **{param: value})


@pytest.mark.parametrize("weight, error, text", [
    (-1.0, ValueError, "finite number >= 0"),
    (float("nan"), ValueError, "finite number >= 0"),
    ("heavy", TypeError, "must be a non-negative number"),
    (None, TypeError, "must be a non-negative number"),
])
def test_bad_loss_weights(data, weight, error, text):
    X, Y = data
    with pytest.raises(error, match=rf"loss_weights\['value'\].*{text}"):
        fit(X, Y, loss_weights={"value": weight})


def test_all_zero_weights(data):
    X, Y = data
    with pytest.raises(ValueError, match="All loss_weights are 0"):
        fit(X, Y, loss_weights={"value": 0, "flag": 0, "level": 0})


def test_unknown_loss_and_kind_names(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"losses\['value'\]='l3' is not a known loss"):
        fit(X, Y, losses={"value": "l3"})
    with pytest.raises(ValueError, match=r"tasks\['value'\]='ordinal' is not a task kind"):
        fit(X, Y, tasks={"value": "ordinal"})
    with pytest.raises(ValueError, match=r"losses\['flag'\]='mse' does not fit task 'flag'"):
        fit(X, Y, losses={"flag": "mse"})


def test_nan_in_X_points_to_imputer(data):
    X, Y = data
    X = X.copy()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="SimpleImputer"):
        fit(X, Y)
    X[3, 2] = np.inf
    with pytest.raises(ValueError, match="SimpleImputer"):
        fit(X, Y)


def test_non_numeric_X_points_to_encoders(data):
    X, Y = data
    frame = pd.DataFrame(X).assign(island=["Biscoe"] * len(X))
    with pytest.raises(ValueError, match=r"non-numeric columns \['island'\].*OneHotEncoder"):
        fit(frame, Y)
    objects = np.array(frame, dtype=object)
    with pytest.raises(ValueError, match="OneHotEncoder"):
        fit(objects, Y)


def test_predict_with_other_feature_count(data):
    X, Y = data
    model = fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])


def test_cuda_without_cuda(data, monkeypatch):
    X, Y = data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        fit(X, Y, device="cuda")


def test_empty_inputs(data):
    X, Y = data
    with pytest.raises(ValueError, match="0 sample"):
        fit(X[:0], Y[:0])
    with pytest.raises(ValueError, match="Y has no columns"):
        fit(X, Y[[]])


def test_unfitted_predict():
    with pytest.raises(NotFittedError):
        MultiTaskRegressorClassifier().predict(np.zeros((2, 3)))


def test_bad_scalar_params(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"The 'max_epochs' parameter of "
                       r"MultiTaskRegressorClassifier must be an int in the range \[1, inf\)\. "
                       "Got 0 instead."):
        MultiTaskRegressorClassifier(max_epochs=0).fit(X, Y)
    with pytest.raises(ValueError, match="The 'activation' parameter .* Got 'swish' instead"):
        fit(X, Y, activation="swish")
    with pytest.raises(ValueError, match="The 'optimizer' parameter .* Got 'lbfgs2' instead"):
        fit(X, Y, optimizer="lbfgs2")


def test_unseen_label_in_score(data):
    X, Y = data
    model = fit(X, Y)
    Y2 = Y.copy()
    Y2.loc[0, "flag"] = "maybe"
    # Scoring against a label the model never saw is simply wrong, not an error.
    predicted = model.predict(X)["flag"].to_numpy()
    expected = np.mean(predicted == Y2["flag"].to_numpy())
    assert model.score_tasks(X, Y2)["flag"] == pytest.approx(expected)
    assert model.score_tasks(X, Y2)["flag"] < model.score_tasks(X, Y)["flag"] or \
        predicted[0] != Y.loc[0, "flag"]
