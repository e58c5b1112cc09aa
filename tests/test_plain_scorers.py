"""Plain scikit-learn scorer names (scoring='accuracy') on multi-task estimators.

They either keep their scikit-learn meaning (one task from a 1-D y, a metric of its
kind: the value is checked against the metric computed by hand) or are refused with
an error that names the package's scorers -- at fit time in searches and
cross-validation, so no search ranks NaN scores -- never NaN scores with a "best"
model.
"""

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    fbeta_score,
    get_scorer,
    make_scorer,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    cross_val_score,
    cross_validate,
    validation_curve,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import (
    MultiTaskClassifier,
    MultiTaskRegressor,
    MultiTaskRegressorClassifier,
    make_mean_task_scorer,
    make_task_scorer,
    make_task_scorers,
)

from .conftest import make_mixed

NAMES = ["accuracy", "r2", "roc_auc", "neg_mean_absolute_error"]
CV = KFold(3, shuffle=True, random_state=0)
FAST = dict(max_epochs=4, batch_size=32, random_state=0)


def _data():
    X, Y = make_mixed(n=120, seed=1)
    Y_reg = pd.DataFrame({"value": Y["value"], "other": 2.0 * X[:, 1] + X[:, 4]})
    return X, Y, Y_reg


X, Y, Y_REG = _data()
MULTI = {
    "mixed": (MultiTaskRegressorClassifier, Y),
    "regression": (MultiTaskRegressor, Y_REG),
    "classification": (MultiTaskClassifier, Y[["flag", "level"]]),
}


def _search(estimator, scoring, **kw):
    return GridSearchCV(estimator, {"lr": [1e-3, 2e-3]}, scoring=scoring, cv=CV, **kw)


RUNNERS = {
    "GridSearchCV": lambda est, y, s: _search(est, s).fit(X, y),
    "cross_validate": lambda est, y, s: cross_validate(est, X, y, scoring=s, cv=CV),
    "cross_val_score": lambda est, y, s: cross_val_score(est, X, y, scoring=s, cv=CV),
}


def _refused(run, *args, match="make_task_scorer"):
    """The call raises a ValueError naming the package's scorers, and warns no NaN scores."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=match) as info:
            run(*args)
    # No "Scoring failed" / non-finite-score warnings: nothing was scored at all.
    assert not [w for w in caught if "Scoring failed" in str(w.message)
                or "non-finite" in str(w.message)]
    return str(info.value)


# ---------------------------------------------------------------------------
# Several tasks: every plain name is refused, in every runner


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("kind", sorted(MULTI))
@pytest.mark.parametrize("name", NAMES)
def test_plain_name_on_several_tasks_is_refused(runner, kind, name):
    cls, y = MULTI[kind]
    before = y.copy()
    message = _refused(RUNNERS[runner], cls(**FAST), y, name)
    assert f"scoring={name!r}" in message
    assert "make_task_scorers" in message and "make_mean_task_scorer" in message
    pd.testing.assert_frame_equal(y, before)  # the user's Y is untouched


def test_refusal_suggests_the_metric_for_its_kind():
    est = MultiTaskRegressorClassifier(**FAST)
    message = _refused(RUNNERS["cross_val_score"], est, Y, "accuracy")
    assert "metrics={'classification': 'accuracy'}" in message
    assert "make_task_scorer('flag', 'accuracy')" in message  # a classification task
    message = _refused(RUNNERS["cross_val_score"], est, Y, "r2")
    assert "make_task_scorer('value', 'r2')" in message


def test_refused_before_training_and_at_the_first_fit_with_error_score_raise():
    # 100000 epochs would take minutes: the refusal comes before any training.
    est = make_pipeline(StandardScaler(),
                        MultiTaskRegressorClassifier(max_epochs=100_000, random_state=0))
    search = GridSearchCV(est, {"multitaskregressorclassifier__lr": [1e-3, 2e-3]},
                          scoring="accuracy", cv=CV, error_score="raise")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="3 target columns") as info:
        search.fit(X, Y)
    assert time.perf_counter() - start < 20
    assert "All the" not in str(info.value)  # our error itself, not the fit summary


def test_the_suggested_scorers_do_work_in_the_same_search():
    est = MultiTaskRegressorClassifier(**FAST)
    scoring = make_task_scorers(est, Y, metrics={"classification": "accuracy"})
    search = _search(est, scoring, refit="flag").fit(X, Y)
    for key in ("value", "flag", "level"):
        assert np.isfinite(search.cv_results_[f"mean_test_{key}"]).all()
    search = _search(est, make_mean_task_scorer({"classification": "accuracy"})).fit(X, Y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_a_plain_entry_of_a_multi_metric_dict_is_named():
    est = MultiTaskRegressorClassifier(**FAST)
    scoring = {"flag": make_task_scorer("flag"), "acc": "accuracy"}
    search = GridSearchCV(est, {"lr": [1e-3]}, scoring=scoring, refit="flag", cv=CV)
    message = _refused(search.fit, X, Y)
    assert "scoring['acc']='accuracy'" in message


def test_make_scorer_of_a_sklearn_metric_is_refused_too():
    # Equal to a named scorer: shown by its name; else by its repr.
    message = _refused(RUNNERS["cross_validate"], MultiTaskClassifier(**FAST),
                       Y[["flag", "level"]], make_scorer(accuracy_score))
    assert "scoring='accuracy'" in message
    message = _refused(RUNNERS["cross_validate"], MultiTaskClassifier(**FAST),
                       Y[["flag", "level"]], make_scorer(fbeta_score, beta=2))
    assert "make_scorer(fbeta_score" in message and "<the same scorer>" in message


def _flag_accuracy(y_true, y_pred):
    return float(np.mean(np.asarray(y_true)[:, 1] == np.asarray(y_pred)[:, 1]))


def test_a_users_own_scoring_function_is_left_alone():
    # The user's function gets Y and predict's DataFrame as they are.
    result = cross_validate(MultiTaskRegressorClassifier(**FAST), X, Y, cv=CV,
                            scoring=make_scorer(_flag_accuracy), return_estimator=True,
                            return_indices=True)
    expected = [accuracy_score(Y["flag"].iloc[test], m.predict(X[test])["flag"])
                for m, test in zip(result["estimator"], result["indices"]["test"])]
    np.testing.assert_allclose(result["test_score"], expected)


def test_a_users_function_is_refused_where_scikit_learn_cannot_read_the_classifier():
    # scikit-learn's scorers read a classifier's classes_ as one array: per task, they fail.
    message = _refused(RUNNERS["cross_val_score"], MultiTaskClassifier(**FAST),
                       Y[["flag", "level"]], make_scorer(_flag_accuracy))
    assert "classes_" in message and "make_task_scorer" in message


def test_validation_curve_warns_since_it_keeps_failed_fits_as_nan():
    with pytest.warns(UserWarning, match="make_task_scorers"):
        train, test = validation_curve(MultiTaskRegressor(**FAST), X, Y_REG, param_name="lr",
                                       param_range=[1e-3], scoring="r2", cv=CV)
    assert np.isnan(test).all()


def test_a_fitted_model_called_by_a_plain_scorer_says_what_to_use():
    model = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(**FAST)).fit(X, Y)
    for name in NAMES:
        with pytest.raises(ValueError, match="make_task_scorers"):
            get_scorer(name)(model, X, Y)
    with pytest.raises(ValueError, match="make_task_scorers"):
        permutation_importance(model, X, Y, scoring="r2", n_repeats=1, random_state=0)
    # The same estimator is scored by the package's scorers and by its own score().
    assert np.isfinite(make_mean_task_scorer()(model, X, Y))
    assert np.isfinite(model.score(X, Y))


# ---------------------------------------------------------------------------
# One task from a 1-D y: an ordinary scikit-learn estimator, plain names mean what
# they mean in scikit-learn


def _folds(estimator, y, scoring):
    """Per-fold scores of ``scoring``, and the fitted estimators with their test rows."""
    result = cross_validate(estimator, X, y, scoring=scoring, cv=CV, return_estimator=True,
                            return_indices=True)
    return result["test_score"], zip(result["estimator"], result["indices"]["test"])


def test_one_classification_task_accuracy_and_roc_auc_are_the_usual_values():
    y = Y["flag"]
    est = MultiTaskClassifier(**FAST)
    scores, fitted = _folds(est, y, "accuracy")
    expected = [accuracy_score(y.iloc[test], model.predict(X[test])) for model, test in fitted]
    np.testing.assert_allclose(scores, expected)
    np.testing.assert_allclose(scores, cross_val_score(est, X, y, cv=CV))  # = score()
    scores, fitted = _folds(est, y, "roc_auc")
    expected = []
    for model, test in fitted:
        positive = list(model.classes_).index("yes")  # the second class, as scikit-learn
        expected.append(roc_auc_score(y.iloc[test] == "yes",
                                      model.predict_proba(X[test])[:, positive]))
    np.testing.assert_allclose(scores, expected)
    assert np.isfinite(_search(est, "roc_auc").fit(X, y).cv_results_["mean_test_score"]).all()


def test_one_regression_task_r2_and_mae_are_the_usual_values():
    y = Y["value"]
    est = MultiTaskRegressor(**FAST)
    scores, fitted = _folds(est, y, "r2")
    np.testing.assert_allclose(
        scores, [r2_score(y.iloc[test], m.predict(X[test])) for m, test in fitted])
    scores, fitted = _folds(est, y, "neg_mean_absolute_error")
    np.testing.assert_allclose(
        scores, [-mean_absolute_error(y.iloc[test], m.predict(X[test])) for m, test in fitted])
    # A one-column regression Y is scored the same way.
    np.testing.assert_allclose(cross_val_score(est, X, Y[["value"]], scoring="r2", cv=CV),
                               cross_val_score(est, X, y, scoring="r2", cv=CV))


def test_mixed_estimator_on_one_task_accepts_prediction_metrics():
    est = MultiTaskRegressorClassifier(**FAST)
    np.testing.assert_allclose(
        cross_val_score(est, X, Y["flag"], scoring="accuracy", cv=CV),
        cross_val_score(MultiTaskClassifier(**FAST), X, Y["flag"], scoring="accuracy", cv=CV))
    assert np.isfinite(cross_val_score(est, X, Y["value"], scoring="r2", cv=CV)).all()


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("case, match", [
    ("classifier-r2", "regression metric"),
    ("classifier-neg_mean_absolute_error", "regression metric"),
    ("regressor-accuracy", "classification metric"),
    ("regressor-roc_auc", "classification metric"),
    ("mixed-roc_auc", "Fit MultiTaskClassifier"),
    ("missing-accuracy", "missing labels"),
    ("one-column-accuracy", "1-D y"),
])
def test_one_task_misuse_is_refused(runner, case, match):
    kind, name = case.rsplit("-", 1)
    est, y = {
        "classifier": (MultiTaskClassifier(**FAST), Y["flag"]),
        "regressor": (MultiTaskRegressor(**FAST), Y["value"]),
        "mixed": (MultiTaskRegressorClassifier(**FAST), Y["flag"]),
        "missing": (MultiTaskClassifier(**FAST), Y["flag"].mask(np.arange(len(X)) < 3)),
        "one-column": (MultiTaskClassifier(**FAST), Y[["flag"]]),
    }[kind]
    message = _refused(RUNNERS[runner], est, y, name, match=match)
    assert "make_task_scorer" in message


def test_a_metric_that_fails_on_the_task_is_refused_after_one_trial():
    # 'roc_auc' without multi_class cannot score a multiclass task.
    message = _refused(RUNNERS["GridSearchCV"], MultiTaskClassifier(**FAST), Y["level"],
                       "roc_auc", match="own training rows")
    assert "multi_class" in message and "'roc_auc_ovr'" in message
    # The multiclass variant works and is the usual value.
    scores, fitted = _folds(MultiTaskClassifier(**FAST), Y["level"], "roc_auc_ovr")
    expected = [roc_auc_score(Y["level"].iloc[test], m.predict_proba(X[test]),
                              multi_class="ovr", labels=m.classes_) for m, test in fitted]
    np.testing.assert_allclose(scores, expected)


def test_plain_fits_and_our_scorers_never_see_the_check():
    # Outside cross-validation nothing is looked up; inside, the package's scorers pass.
    MultiTaskRegressorClassifier(**FAST).fit(X, Y)
    scores = cross_validate(MultiTaskRegressorClassifier(**FAST), X, Y, cv=CV,
                            scoring=make_task_scorers(MultiTaskRegressorClassifier(), Y))
    assert all(np.isfinite(scores[f"test_{t}"]).all() for t in ("value", "flag", "level"))
    assert np.isfinite(cross_val_score(MultiTaskRegressorClassifier(**FAST), X, Y, cv=CV)).all()
