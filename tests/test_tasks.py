"""Reading targets: task kinds, label encoding and scaling round trips."""

import numpy as np
import pandas as pd
import pytest

from sklearn_mtl._tasks import (
    decode_predictions,
    encode_targets,
    fit_tasks,
    read_targets,
)


def _fit(Y, kinds=None, losses=None):
    names, columns, dtypes, fmt = read_targets(Y)
    return fit_tasks(names, columns, dtypes, kinds or {}, losses or {}), columns, fmt


def test_kinds_inferred_with_sklearn_rules():
    Y = pd.DataFrame({
        "r": [0.5, 1.7, 2.2, np.nan],
        "b": ["a", "b", None, "a"],
        "m": [1, 2, 3, 1],
        "flag": [True, False, True, False],
    })
    tasks, _, fmt = _fit(Y)
    assert [t.kind for t in tasks] == ["regression", "binary", "multiclass", "binary"]
    assert fmt.container == "frame"


def test_kind_override_and_two_class_multiclass_becomes_binary():
    Y = pd.DataFrame({"m": [1, 2, 3, 1], "two": [0, 1, 1, 0]})
    tasks, _, _ = _fit(Y, kinds={"m": "regression", "two": "multiclass"})
    assert [t.kind for t in tasks] == ["regression", "binary"]


@pytest.mark.parametrize("column", [
    pd.Series(["cat", "dog", None, "cat", "bird"]),
    pd.Series([3, 7, 7, 3, 9]),
    pd.Series(pd.array([3, 7, None, 3, 9], dtype="Int64")),
    pd.Series(pd.Categorical(["x", "y", "x", None, "z"])),
    pd.Series(pd.array([True, False, None, True, False], dtype="boolean")),
    pd.Series(["a", "b", pd.NA, "a", "b"], dtype="string"),
])
def test_label_round_trip(column):
    Y = pd.DataFrame({"t": column})
    tasks, columns, _ = _fit(Y)
    task = tasks[0]
    encoded = encode_targets(tasks, columns)
    observed = encoded[:, 1] > 0
    codes = encoded[observed, 0].astype(int)
    # A one-hot "network output" of the encoded labels decodes to the original labels.
    out = np.full((len(codes), task.n_outputs), -5.0)
    if task.kind == "binary":
        out[:, 0] = np.where(codes == 1, 5.0, -5.0)
    else:
        out[np.arange(len(codes)), codes] = 5.0
    decoded = decode_predictions(task, out)
    original = column[observed].tolist()
    assert decoded.tolist() == original
    assert type(decoded[0]) is type(np.asarray(original)[0]) or isinstance(decoded[0], type(original[0]))


def test_missing_labels_get_zero_weight_and_zero_label():
    Y = {"a": np.array([1.0, np.nan, 3.0]), "b": np.array(["x", None, "y"], dtype=object)}
    tasks, columns, fmt = _fit(Y)
    enc = encode_targets(tasks, columns)
    assert fmt.container == "dict"
    np.testing.assert_array_equal(enc[:, 2:], [[1, 1], [0, 0], [1, 1]])
    assert enc[1, 0] == 0 and enc[1, 1] == 0


def test_regression_scaling_round_trip():
    values = np.array([1000.0, 2500.0, np.nan, 4000.0, 3100.0])
    tasks, columns, _ = _fit({"mass": values}, kinds={"mass": "regression"})
    enc = encode_targets(tasks, columns)
    observed = enc[:, 1] > 0
    scaled = enc[observed, 0]
    assert abs(scaled.mean()) < 1e-6 and abs(scaled.std() - 1) < 1e-5
    back = decode_predictions(tasks[0], scaled.reshape(-1, 1).astype(np.float64))
    np.testing.assert_allclose(back, values[observed], rtol=1e-6)


def test_poisson_targets_are_scaled_not_centred():
    counts = np.array([0.0, 2.0, 5.0, 1.0])
    tasks, columns, _ = _fit({"n": counts}, kinds={"n": "regression"}, losses={"n": "poisson"})
    enc = encode_targets(tasks, columns)
    assert (enc[:, 0] >= 0).all()
    back = decode_predictions(tasks[0], np.log(enc[:, :1].astype(np.float64) + 1e-12))
    np.testing.assert_allclose(back, counts, atol=1e-6)


def test_array_names_and_vector():
    names, cols, _, fmt = read_targets(np.zeros((4, 2)), ["u", "v"])
    assert names == ["u", "v"] and fmt.container == "array"
    names, cols, _, fmt = read_targets(np.zeros(4))
    assert names == ["task_0"] and fmt.container == "vector"


def test_many_whole_numbers_are_a_quantity():
    with pytest.warns(UserWarning, match="tasks=\\{'days': 'multiclass'\\}"):
        tasks, _, _ = _fit({"days": np.arange(60) % 30})
    assert tasks[0].kind == "regression"
    tasks, _, _ = _fit({"grams": np.arange(60, dtype=float) * 25})  # float: no warning
    assert tasks[0].kind == "regression"
    tasks, _, _ = _fit({"codes": np.arange(60) % 30}, kinds={"codes": "multiclass"})
    assert tasks[0].kind == "multiclass" and tasks[0].n_outputs == 30
