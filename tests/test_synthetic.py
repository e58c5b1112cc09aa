import importlib.util
import pathlib

import numpy as np
import pandas as pd
import pytest

try:
    from sklearn_mtl.datasets import make_multitask
except ImportError:  # a sibling loader of the package may not import yet
    _path = pathlib.Path(__file__).parents[1] / "sklearn_mtl" / "datasets" / "_synthetic.py"
    _spec = importlib.util.spec_from_file_location("_synthetic_standalone", _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    make_multitask = _module.make_multitask


def test_shapes_columns_and_dtypes():
    X, Y = make_multitask(n_samples=150, n_features=9, random_state=0)
    assert isinstance(X, pd.DataFrame) and isinstance(Y, pd.DataFrame)
    assert X.shape == (150, 9) and Y.shape == (150, 3)
    assert list(X.columns) == [f"x{j}" for j in range(9)]
    assert list(Y.columns) == ["task_0", "task_1", "task_2"]
    assert (X.index == Y.index).all()
    assert Y.dtypes.tolist() == [np.float64, np.int64, np.int64]
    assert set(Y.task_1) == {0, 1}
    assert set(Y.task_2) == {0, 1, 2}
    assert not X.isna().any().any() and not Y.isna().any().any()


def test_task_kinds_and_classes():
    tasks = ("multiclass", "binary", "regression", "multiclass")
    _, Y = make_multitask(n_samples=2000, tasks=tasks, n_classes=5, n_features=12,
                          random_state=1)
    assert Y.shape == (2000, 4)
    assert set(Y.task_0) == set(range(5)) and set(Y.task_3) == set(range(5))
    # Binary labels are balanced by construction (median threshold).
    assert Y.task_1.mean() == pytest.approx(0.5, abs=0.01)
    # Regression: standardised signal plus noise of variance noise^2.
    assert Y.task_2.mean() == pytest.approx(0.0, abs=0.05)
    assert Y.task_2.std() == pytest.approx(np.sqrt(1 + 0.1 ** 2), abs=0.05)
    # Every class is reasonably frequent.
    assert Y.task_0.value_counts(normalize=True).min() > 0.03
    _, single = make_multitask(n_samples=10, tasks="binary", random_state=0)
    assert list(single.columns) == ["task_0"]


def test_reproducible():
    first = make_multitask(n_samples=100, missing_rate=0.2, random_state=42)
    second = make_multitask(n_samples=100, missing_rate=0.2, random_state=42)
    other = make_multitask(n_samples=100, missing_rate=0.2, random_state=43)
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not first[0].equals(other[0])
    from_generator = [make_multitask(n_samples=50, random_state=np.random.default_rng(3))
                      for _ in range(2)]
    pd.testing.assert_frame_equal(from_generator[0][1], from_generator[1][1])


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37])
def test_missing_rate(rate):
    _, Y = make_multitask(n_samples=800, missing_rate=rate, random_state=0)
    for column in Y:
        assert Y[column].isna().mean() == pytest.approx(rate, abs=1 / 800)
    if rate:
        # Classification columns turn float to hold NaN; observed labels stay integral.
        assert (Y.dtypes == np.float64).all()
        observed = Y.task_2.dropna()
        assert set(observed) == {0.0, 1.0, 2.0}
        # Missing positions are drawn per task.
        masks = Y.isna()
        assert not masks.task_0.equals(masks.task_1)


def _regression_correlation(relatedness, seed):
    _, Y = make_multitask(n_samples=3000, n_features=8, tasks=("regression", "regression"),
                          relatedness=relatedness, noise=0.0, random_state=seed)
    return np.corrcoef(Y.task_0, Y.task_1)[0, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_relatedness_controls_task_correlation(seed):
    unrelated = _regression_correlation(0.0, seed)
    half = _regression_correlation(0.5, seed)
    same = _regression_correlation(1.0, seed)
    assert abs(unrelated) < 0.1
    assert same > 0.999
    assert unrelated + 0.15 < half < same - 0.15


def test_relatedness_for_classification_tasks():
    def agreement(relatedness):
        _, Y = make_multitask(n_samples=3000, n_features=8, tasks=("binary", "binary"),
                              relatedness=relatedness, noise=0.0, random_state=0)
        return (Y.task_0 == Y.task_1).mean()

    assert agreement(1.0) == 1.0
    assert agreement(0.0) == pytest.approx(0.5, abs=0.05)


def test_noise_degrades_the_signal():
    _, clean = make_multitask(n_samples=2000, tasks=("regression",), noise=0.0, random_state=0)
    _, noisy = make_multitask(n_samples=2000, tasks=("regression",), noise=1.0, random_state=0)
    # Same draws up to the noise: the noisy target correlates with the clean one at ~1/sqrt(2).
    corr = np.corrcoef(clean.task_0, noisy.task_0)[0, 1]
    assert corr == pytest.approx(1 / np.sqrt(2), abs=0.05)


def test_targets_are_nonlinear_but_learnable_from_the_features():
    from sklearn.linear_model import LinearRegression
    from sklearn.neighbors import KNeighborsRegressor

    # 4 features = 2 shared + 2 task-specific directions: every feature matters.
    X, Y = make_multitask(n_samples=2000, n_features=4, tasks=("regression",), noise=0.0,
                          random_state=0)
    train, test = slice(0, 1500), slice(1500, None)
    y = Y.task_0
    local = KNeighborsRegressor(10).fit(X[train], y[train]).score(X[test], y[test])
    linear = LinearRegression().fit(X[train], y[train]).score(X[test], y[test])
    assert local > 0.85
    assert linear < local - 0.1


def test_few_features_warns():
    with pytest.warns(UserWarning, match="cannot be independent"):
        X, Y = make_multitask(n_samples=20, n_features=3, random_state=0)
    assert X.shape == (20, 3) and Y.shape == (20, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_samples": 0}, "n_samples"),
    ({"n_features": 2.5}, "n_features"),
    ({"tasks": ("regression", "ordinal")}, "Unknown task kind"),
    ({"tasks": ()}, "at least one task"),
    ({"relatedness": 1.2}, "relatedness"),
    ({"n_classes": 1}, "n_classes"),
    ({"noise": -0.1}, "noise"),
    ({"missing_rate": 1.0}, "missing_rate"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_multitask(**kwargs)
