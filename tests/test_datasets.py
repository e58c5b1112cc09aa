"""Tests for the patient-record generator and the penguins loader."""

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl.datasets import load_penguins, make_patient_records

PATIENT_FEATURES = [
    "age", "sex", "height_cm", "weight_kg", "bmi", "systolic_bp", "diastolic_bp",
    "heart_rate", "cholesterol", "glucose", "smoker", "exercise_hours",
]
INT_FEATURES = {"age", "sex", "smoker"}


@pytest.fixture(scope="module")
def patients():
    # One moderately large draw shared by the range, correlation and
    # learnability tests, so the module stays fast.
    return make_patient_records(n_samples=4000, random_state=0)


# ---------------------------------------------------------------- patients --

def test_patients_shapes_columns_dtypes(patients):
    X, Y = patients
    assert X.shape == (4000, 12)
    assert Y.shape == (4000, 2)
    assert list(X.columns) == PATIENT_FEATURES
    assert list(Y.columns) == ["disease", "stay_days"]
    for name in PATIENT_FEATURES:
        expected = np.int64 if name in INT_FEATURES else np.float64
        assert X[name].dtype == expected, name
    assert Y["disease"].dtype == np.int64
    assert Y["stay_days"].dtype == np.float64
    assert isinstance(X.index, pd.RangeIndex) and X.index.name == "patient_id"
    assert X.index.equals(Y.index)
    assert X.index.equals(pd.RangeIndex(4000))


def test_patients_plausible_ranges(patients):
    X, Y = patients
    assert np.isfinite(X.to_numpy()).all()
    assert X["age"].between(18, 89).all()
    assert set(np.unique(X["sex"])) == {0, 1}
    assert set(np.unique(X["smoker"])) == {0, 1}
    assert 0.4 < X["sex"].mean() < 0.6
    assert 0.1 < X["smoker"].mean() < 0.35
    assert X["height_cm"].between(140, 205).all()
    assert X["bmi"].between(15, 56).all()
    assert 23 < X["bmi"].median() < 28
    # bmi is derived from the recorded weight and height (up to rounding).
    derived = X["weight_kg"] / (X["height_cm"] / 100) ** 2
    np.testing.assert_allclose(X["bmi"], derived, atol=0.051)
    assert X["systolic_bp"].between(85, 220).all()
    assert (X["diastolic_bp"] <= X["systolic_bp"] - 15).all()
    assert 115 < X["systolic_bp"].mean() < 140
    assert X["heart_rate"].between(40, 130).all()
    assert X["cholesterol"].between(2.5, 10.5).all()
    assert X["glucose"].between(3.0, 25.0).all()
    assert 4.5 < X["glucose"].median() < 6.0
    assert (X["exercise_hours"] >= 0).all()

    assert set(np.unique(Y["disease"])) == {0, 1}
    assert 0.25 <= Y["disease"].mean() <= 0.40  # the documented prevalence band
    assert (Y["stay_days"] > 0).all()
    assert 1.0 < Y["stay_days"].median() < 5.0


def test_patients_feature_correlations(patients):
    X, _ = patients
    corr = X.corr()
    # Blood pressure rises with age and BMI; the two pressures move together.
    assert corr.loc["systolic_bp", "age"] > 0.3
    assert corr.loc["systolic_bp", "bmi"] > 0.1
    assert corr.loc["systolic_bp", "diastolic_bp"] > 0.5
    # Men are taller; exercise lowers BMI and the resting heart rate.
    assert corr.loc["height_cm", "sex"] > 0.5
    assert corr.loc["exercise_hours", "bmi"] < -0.1
    assert corr.loc["exercise_hours", "heart_rate"] < -0.1


def test_patients_targets_share_risk(patients):
    _, Y = patients
    stay = Y["stay_days"]
    sick = Y["disease"] == 1
    assert stay[sick].mean() > 1.5 * stay[~sick].mean()
    assert Y["disease"].corr(np.log(stay)) > 0.4


def test_patients_learnable(patients):
    X, Y = patients
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.3, random_state=0)

    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, Y_train["disease"])
    accuracy = clf.score(X_test, Y_test["disease"])
    baseline = max(Y_test["disease"].mean(), 1 - Y_test["disease"].mean())
    assert accuracy > 0.75
    assert accuracy > baseline + 0.05

    reg = HistGradientBoostingRegressor(max_iter=100, random_state=0)
    reg.fit(X_train, Y_train["stay_days"])
    assert reg.score(X_test, Y_test["stay_days"]) > 0.5


def test_patients_reproducible():
    X1, Y1 = make_patient_records(n_samples=300, missing_rate=0.3, random_state=42)
    X2, Y2 = make_patient_records(n_samples=300, missing_rate=0.3, random_state=42)
    pd.testing.assert_frame_equal(X1, X2)
    pd.testing.assert_frame_equal(Y1, Y2)

    X3, Y3 = make_patient_records(n_samples=300, missing_rate=0.3, random_state=43)
    assert not X1.equals(X3)
    assert not Y1.equals(Y3)

    # A RandomState instance is accepted and gives the same draw as its seed.
    X4, Y4 = make_patient_records(
        n_samples=300, missing_rate=0.3, random_state=np.random.RandomState(42)
    )
    pd.testing.assert_frame_equal(X1, X4)
    pd.testing.assert_frame_equal(Y1, Y4)


def test_patients_missing_rate():
    X, Y = make_patient_records(n_samples=4000, missing_rate=0.2, random_state=1)
    assert Y["disease"].dtype == np.float64
    assert Y["stay_days"].dtype == np.float64
    for name in ("disease", "stay_days"):
        assert 0.17 <= Y[name].isna().mean() <= 0.23, name
    # Labels are dropped independently per target, not per row.
    both = (Y["disease"].isna() & Y["stay_days"].isna()).mean()
    assert 0.02 <= both <= 0.07
    assert not X.isna().any().any()
    observed = Y["disease"].dropna()
    assert set(np.unique(observed)) == {0.0, 1.0}
    assert (Y["stay_days"].dropna() > 0).all()

    # Masking is drawn last: X and the labels that remain are those of the
    # complete draw with the same seed.
    X_full, Y_full = make_patient_records(n_samples=4000, missing_rate=0.0, random_state=1)
    pd.testing.assert_frame_equal(X, X_full)
    for name in ("disease", "stay_days"):
        kept = Y[name].notna()
        np.testing.assert_array_equal(Y.loc[kept, name], Y_full.loc[kept, name])


def test_patients_no_missing_by_default():
    _, Y = make_patient_records(n_samples=500, random_state=3)
    assert not Y.isna().any().any()
    assert Y["disease"].dtype == np.int64


def test_patients_single_sample():
    X, Y = make_patient_records(n_samples=1, random_state=0)
    assert X.shape == (1, 12) and Y.shape == (1, 2)


@pytest.mark.parametrize("n_samples", [0, -5, 2.5, "10", None, True])
def test_patients_invalid_n_samples(n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        make_patient_records(n_samples=n_samples)


@pytest.mark.parametrize("missing_rate", [-0.1, 1.0, 1.5, float("nan"), "0.1", None])
def test_patients_invalid_missing_rate(missing_rate):
    with pytest.raises(ValueError, match="missing_rate"):
        make_patient_records(n_samples=10, missing_rate=missing_rate)


def test_patients_accepts_numpy_scalars():
    X, Y = make_patient_records(
        n_samples=np.int64(20), missing_rate=np.float32(0.5), random_state=0
    )
    assert X.shape == (20, 12) and Y.shape == (20, 2)


# ---------------------------------------------------------------- penguins --

def test_penguins_shapes_columns_dtypes():
    pytest.importorskip("palmerpenguins")
    X, Y = load_penguins()
    assert X.shape == (344, 5) and Y.shape == (344, 3)
    assert list(X.columns) == [
        "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "island", "year",
    ]
    assert list(Y.columns) == ["species", "sex", "body_mass_g"]
    for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm"):
        assert X[name].dtype == np.float64
        assert X[name].isna().sum() == 2
    assert X["year"].dtype == np.int64
    assert set(X["year"]) == {2007, 2008, 2009}
    assert pd.api.types.is_string_dtype(X["island"])
    assert set(X["island"]) == {"Biscoe", "Dream", "Torgersen"}
    assert X.index.equals(Y.index)


def test_penguins_targets():
    pytest.importorskip("palmerpenguins")
    _, Y = load_penguins()
    assert Y["species"].notna().all()
    assert set(Y["species"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert Y["species"].value_counts().to_dict() == {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}
    assert Y["sex"].isna().sum() == 11
    assert set(Y["sex"].dropna()) == {"female", "male"}
    assert Y["body_mass_g"].dtype == np.float64
    assert Y["body_mass_g"].isna().sum() == 2
    assert Y["body_mass_g"].dropna().between(2500, 6500).all()


def test_penguins_drop_unlabeled():
    pytest.importorskip("palmerpenguins")
    X, Y = load_penguins(drop_unlabeled=True)
    assert X.shape == (333, 5) and Y.shape == (333, 3)
    assert not Y.isna().any().any()
    assert X.index.equals(Y.index)
    # The index of the full table is kept, so rows can be traced back.
    assert len(X.index) == 333 and X.index.max() == 343


def test_penguins_bunch():
    pytest.importorskip("palmerpenguins")
    bunch = load_penguins(return_X_y=False)
    X, Y = load_penguins()
    pd.testing.assert_frame_equal(bunch.data, X)
    pd.testing.assert_frame_equal(bunch.target, Y)
    assert bunch.frame.shape == (344, 8)
    assert bunch.feature_names == list(X.columns)
    assert bunch.target_names == list(Y.columns)
    assert "Gorman" in bunch.DESCR and "Horst" in bunch.DESCR


def test_penguins_returns_independent_copies():
    pytest.importorskip("palmerpenguins")
    X1, Y1 = load_penguins()
    for x_col in ("bill_length_mm", "year"):
        assert not np.shares_memory(X1[x_col].to_numpy(), Y1["body_mass_g"].to_numpy())

    X1.loc[:, "bill_length_mm"] = -1.0
    X1.loc[:, "island"] = "Nowhere"
    Y1.loc[:, "body_mass_g"] = -1.0
    Y1.loc[:, "sex"] = "unknown"
    X2, Y2 = load_penguins()
    assert (X2["bill_length_mm"].dropna() > 0).all()
    assert "Nowhere" not in set(X2["island"])
    assert (Y2["body_mass_g"].dropna() > 0).all()
    assert Y2["sex"].isna().sum() == 11

    bunch = load_penguins(return_X_y=False)
    bunch.frame.loc[:, "body_mass_g"] = -1.0
    assert (bunch.target["body_mass_g"].dropna() > 0).all()


def test_penguins_missing_package(monkeypatch):
    # A None entry in sys.modules makes `import palmerpenguins` raise ImportError.
    monkeypatch.setitem(sys.modules, "palmerpenguins", None)
    with pytest.raises(ImportError, match=r"pip install palmerpenguins.*sklearn-mtl\[examples\]"):
        load_penguins()
