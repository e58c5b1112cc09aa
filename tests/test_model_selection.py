"""Scorers for one task, for all tasks and for their mean; searches over loss weights
(GridSearchCV, RandomizedSearchCV with scipy distributions, HalvingRandomSearchCV,
process-based n_jobs=2); the notebook session on penguins end to end."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import loguniform, spearmanr
from sklearn.compose import ColumnTransformer
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    make_scorer,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import (
    GridSearchCV,
    HalvingRandomSearchCV,
    KFold,
    RandomizedSearchCV,
    cross_validate,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklearn_mtl import (
    MultiTaskClassifier,
    MultiTaskRegressor,
    MultiTaskRegressorClassifier,
    make_mean_task_scorer,
    make_task_scorer,
    make_task_scorers,
)

from .conftest import make_mixed

# Short fits: the learning rate of these tests is fixed, not the estimator's default.
FAST = dict(max_epochs=15, batch_size=32, lr=1e-3, random_state=0)


@pytest.fixture(scope="module")
def fitted():
    """A mixed model and held-out data with missing labels in every task."""
    X, Y = make_mixed(n=300)
    model = MultiTaskRegressorClassifier(**FAST).fit(X, Y)
    Xt, Yt = make_mixed(n=200, seed=1, missing=0.2)
    return model, Xt, Yt


def _observed(Y, task):
    return Y[task].notna().to_numpy()


# ---------------------------------------------------------------------------
# One task, one metric: known answers computed by hand on the observed rows


def test_task_scorer_equals_metric_on_observed_rows(fitted):
    model, X, Y = fitted
    pred, proba = model.predict(X), model.predict_proba(X)
    obs = _observed(Y, "value")
    assert not obs.all()  # there are missing labels to ignore
    expected = -mean_absolute_error(Y["value"][obs], pred["value"][obs])
    assert make_task_scorer("value", "neg_mean_absolute_error")(model, X, Y) == \
        pytest.approx(expected)
    obs = _observed(Y, "flag")
    # Binary ROC AUC on the positive class ('yes', the second of classes_).
    assert list(model.classes_["flag"]) == ["no", "yes"]
    expected = roc_auc_score(Y["flag"][obs] == "yes", proba["flag"][obs, 1])
    assert make_task_scorer("flag", "roc_auc")(model, X, Y) == pytest.approx(expected)
    obs = _observed(Y, "level")
    expected = -log_loss(Y["level"][obs], proba["level"][obs], labels=model.classes_["level"])
    assert make_task_scorer("level", "neg_log_loss")(model, X, Y) == pytest.approx(expected)
    expected = roc_auc_score(Y["level"][obs], proba["level"][obs], multi_class="ovr")
    assert make_task_scorer("level", "roc_auc_ovr")(model, X, Y) == pytest.approx(expected)
    # Default metric: R² / accuracy, i.e. score_tasks.
    tasks = model.score_tasks(X, Y)
    for name in ("value", "flag", "level"):
        assert make_task_scorer(name)(model, X, Y) == pytest.approx(tasks[name])


def test_task_scorer_with_metric_functions_and_options(fitted):
    model, X, Y = fitted
    obs = _observed(Y, "value")
    err = mean_absolute_error(Y["value"][obs], model.predict(X)["value"][obs])
    loss = make_task_scorer("value", mean_absolute_error, greater_is_better=False)
    assert loss(model, X, Y) == pytest.approx(-err)
    # A make_scorer scorer is accepted as the metric, with its sign.
    assert make_task_scorer("value", make_scorer(mean_absolute_error, greater_is_better=False))(
        model, X, Y) == pytest.approx(-err)
    obs = _observed(Y, "flag")
    proba = model.predict_proba(X)["flag"][obs]
    # pos_label picks the column; metric options pass through.
    auc_no = make_task_scorer("flag", roc_auc_score, response_method="predict_proba",
                              pos_label="no")
    expected = roc_auc_score(Y["flag"][obs] == "no", proba[:, 0])
    assert auc_no(model, X, Y) == pytest.approx(expected)
    f1 = make_task_scorer("level", "f1_macro")
    from sklearn.metrics import f1_score

    obs = _observed(Y, "level")
    assert f1(model, X, Y) == pytest.approx(
        f1_score(Y["level"][obs], model.predict(X)["level"][obs], average="macro"))


def test_task_scorer_sample_weight_on_observed_rows(fitted):
    model, X, Y = fitted
    w = np.linspace(0.1, 2.0, len(X))
    obs = _observed(Y, "flag")
    expected = accuracy_score(Y["flag"][obs], model.predict(X)["flag"][obs], sample_weight=w[obs])
    assert make_task_scorer("flag", "accuracy")(model, X, Y, sample_weight=w) == \
        pytest.approx(expected)
    assert expected != pytest.approx(make_task_scorer("flag", "accuracy")(model, X, Y))


def test_task_scorer_on_arrays_and_single_task():
    X, Y = make_mixed(n=200)
    Y2 = np.column_stack([Y["value"], 2.0 * X[:, 2]])
    reg = MultiTaskRegressor(**FAST).fit(X, Y2)
    pred = reg.predict(X)
    assert make_task_scorer("task_1", "r2")(reg, X, Y2) == pytest.approx(r2_score(Y2[:, 1],
                                                                                pred[:, 1]))
    assert make_task_scorer(0, "r2")(reg, X, Y2) == pytest.approx(r2_score(Y2[:, 0], pred[:, 0]))
    clf = MultiTaskClassifier(**FAST).fit(X, Y["flag"])  # one task, 1-D y
    proba = clf.predict_proba(X)
    assert make_task_scorer("flag", "roc_auc")(clf, X, Y["flag"].to_numpy()) == pytest.approx(
        roc_auc_score(Y["flag"] == "yes", proba[:, 1]))


def test_task_scorer_errors(fitted):
    model, X, Y = fitted
    with pytest.raises(ValueError, match="Unknown task 'stay'"):
        make_task_scorer("stay")(model, X, Y)
    with pytest.raises(ValueError, match="'roc_auk' is not a scikit-learn scorer name"):
        make_task_scorer("flag", "roc_auk")
    with pytest.raises(ValueError, match="regression task"):
        make_task_scorer("value", "neg_log_loss")(model, X, Y)
    with pytest.raises(ValueError, match="Cannot find a fitted multi-task estimator"):
        make_task_scorer("value")(StandardScaler().fit(X), X, Y)


def test_task_scorer_nan_when_a_task_has_no_label(fitted):
    model, X, Y = fitted
    assert np.isnan(make_task_scorer("flag")(model, X, Y.assign(flag=np.nan)))
    # The mean leaves that task out.
    scores = model.score_tasks(X, Y)
    assert make_mean_task_scorer()(model, X, Y.assign(flag=np.nan)) == pytest.approx(
        np.mean([scores["value"], scores["level"]]))


def test_repr():
    assert repr(make_task_scorer("disease", "roc_auc")) == "make_task_scorer('disease', 'roc_auc')"
    assert repr(make_task_scorer("stay", mean_absolute_error, greater_is_better=False)) == \
        "make_task_scorer('stay', mean_absolute_error, greater_is_better=False)"


# ---------------------------------------------------------------------------
# All tasks, and their mean


def test_make_task_scorers_fitted_or_from_y(fitted):
    model, X, Y = fitted
    from_model = make_task_scorers(model)
    from_y = make_task_scorers(MultiTaskRegressorClassifier(), Y)
    assert list(from_model) == list(from_y) == ["value", "flag", "level"]
    scores = model.score_tasks(X, Y)
    for name, scorer in from_y.items():
        assert scorer(model, X, Y) == pytest.approx(scores[name])
    by_kind = make_task_scorers(model, metrics={
        "regression": "neg_mean_absolute_error", "binary": "roc_auc",
        "level": ["accuracy", "neg_log_loss"]})
    assert list(by_kind) == ["value", "flag", "level_accuracy", "level_neg_log_loss"]
    assert by_kind["value"](model, X, Y) < 0  # a negated error
    with pytest.raises(ValueError, match="pass y"):
        make_task_scorers(MultiTaskRegressorClassifier())


def test_make_task_scorers_through_pipeline_and_search_unfitted():
    _, Y = make_mixed(n=60)
    pipe = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(tasks={"flag": "binary"}))
    search = GridSearchCV(pipe, {"multitaskregressorclassifier__lr": [1e-3]})
    assert list(make_task_scorers(search, Y)) == ["value", "flag", "level"]


def test_mean_task_scorer_signs_and_default(fitted):
    model, X, Y = fitted
    assert make_mean_task_scorer()(model, X, Y) == pytest.approx(model.score(X, Y))
    metrics = {"value": "neg_mean_absolute_error", "flag": "roc_auc", "level": "accuracy"}
    per_task = [make_task_scorer(t, m)(model, X, Y) for t, m in metrics.items()]
    assert per_task[0] < 0 < per_task[1]
    assert make_mean_task_scorer(metrics)(model, X, Y) == pytest.approx(np.mean(per_task))


def test_scorers_in_permutation_importance():
    X, Y = make_mixed(n=300)
    model = MultiTaskRegressorClassifier(**FAST).fit(X, Y)
    # 'value' depends on features 0 and 1 only; 'level' on feature 3 only.
    result = permutation_importance(model, X, Y, scoring={
        "value": make_task_scorer("value", "r2"), "level": make_task_scorer("level")},
        n_repeats=3, random_state=0)
    value, level = result["value"].importances_mean, result["level"].importances_mean
    assert value[0] > 0.5 and value[1] > 0.2 and abs(value[5]) < 0.05
    assert level[3] > 0.2 and abs(level[0]) < 0.1
    single = permutation_importance(model, X, Y, scoring=make_mean_task_scorer(), n_repeats=2,
                                    random_state=0)
    assert single.importances_mean.argmax() in (0, 3)


# ---------------------------------------------------------------------------
# Searches over loss weights


def _weighting_case(n=240, seed=0):
    """Task 'target' is learnable; the smaller its loss weight, the less its head trains."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    Y = pd.DataFrame({"target": X[:, 0] * 2 - X[:, 1],
                      "other": X[:, 2] + 0.1 * rng.normal(size=n)})
    return X, Y


def test_randomized_search_loguniform_over_nested_loss_weight():
    X, Y = _weighting_case()
    base = MultiTaskRegressor(max_epochs=8, batch_size=32, random_state=0)
    search = RandomizedSearchCV(
        base, {"loss_weights__target": loguniform(1e-4, 1e1)}, n_iter=5, cv=KFold(3),
        scoring=make_task_scorers(base, Y), refit="target", random_state=0, n_jobs=2,
        error_score="raise",
    ).fit(X, Y)
    weights = np.asarray(search.cv_results_["param_loss_weights__target"], dtype=float)
    assert ((weights >= 1e-4) & (weights <= 10)).all() and len(set(weights)) == 5
    target = search.cv_results_["mean_test_target"]
    # More weight on the task, better its score: a clear monotone trend over 5 decades.
    assert spearmanr(weights, target).statistic > 0.8
    assert search.best_params_["loss_weights__target"] == weights.max()
    assert search.best_estimator_.loss_weights == {"target": weights.max()}
    assert "mean_test_other" in search.cv_results_
    assert base.loss_weights is None


def test_grid_search_over_loss_weight_dicts_with_scorer_dict_n_jobs_2():
    X, Y = _weighting_case()
    base = MultiTaskRegressor(max_epochs=8, batch_size=32, random_state=0)
    grid = {"loss_weights": [{"target": 1e-3, "other": 1.0}, {"target": 1.0, "other": 1e-3}]}
    search = GridSearchCV(base, grid, cv=KFold(3), scoring=make_task_scorers(base, Y),
                          refit="other", n_jobs=2, error_score="raise").fit(X, Y)
    target, other = search.cv_results_["mean_test_target"], search.cv_results_["mean_test_other"]
    # Each weighting favours its own task; refit follows the 'other' column.
    assert target[1] > target[0] + 0.2 and other[0] > other[1] + 0.2
    assert search.best_index_ == 0
    assert search.best_estimator_.loss_weights == {"target": 1e-3, "other": 1.0}


def test_halving_random_search_over_loss_weight_n_jobs_2():
    X, Y = _weighting_case(n=240)
    base = MultiTaskRegressor(max_epochs=8, batch_size=32, random_state=0)
    search = HalvingRandomSearchCV(
        base, {"loss_weights__target": loguniform(1e-4, 1e1)}, n_candidates=4, factor=2,
        min_resources=120, cv=KFold(3), scoring=make_task_scorer("target", "r2"),
        random_state=0, n_jobs=2, error_score="raise",
    ).fit(X, Y)
    assert list(search.n_resources_) == [120, 240]
    results = pd.DataFrame(search.cv_results_)
    first = results[results["iter"] == 0]
    # The candidates kept for the next round are the best weighted ones of the first.
    kept = set(results[results["iter"] == 1]["param_loss_weights__target"])
    top = set(first.nlargest(len(kept), "mean_test_score")["param_loss_weights__target"])
    assert kept == top
    assert search.best_params_["loss_weights__target"] > 0.01


# ---------------------------------------------------------------------------
# The notebook session, end to end on penguins


def test_penguins_notebook_session():
    pytest.importorskip("palmerpenguins")
    from sklearn_mtl.datasets import load_penguins

    X, Y = load_penguins()
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"]
    preprocess = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["island"]),
    ])
    model = make_pipeline(preprocess, MultiTaskRegressorClassifier(
        max_epochs=15, batch_size=32, lr=1e-2, random_state=0))
    scoring = make_task_scorers(model, Y, metrics={
        "species": "accuracy", "sex": "roc_auc", "body_mass_g": "neg_mean_absolute_error"})
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(
        model, {"multitaskregressorclassifier__loss_weights__sex": [0.5, 2.0]},
        scoring=scoring, refit="sex", cv=cv, n_jobs=2, error_score="raise",
    ).fit(X, Y)

    results = search.cv_results_
    for task in ("species", "sex", "body_mass_g"):
        assert f"mean_test_{task}" in results and f"rank_test_{task}" in results
    assert search.best_index_ == int(np.argmax(results["mean_test_sex"]))
    assert results["mean_test_species"].min() > 0.9
    assert results["mean_test_sex"].min() > 0.85
    assert -600 < results["mean_test_body_mass_g"].max() < 0  # grams of MAE, negated

    pred = search.best_estimator_.predict(X.head(5))
    assert isinstance(pred, pd.DataFrame)
    assert list(pred.columns) == ["species", "sex", "body_mass_g"]
    assert pred.index.equals(X.head(5).index)
    assert set(pred["species"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert (pred["body_mass_g"].between(2500, 6500)).all()
    # The search scores the estimator through the Pipeline: check one by hand.
    sex = Y["sex"].notna().to_numpy()
    proba = search.best_estimator_.predict_proba(X)["sex"][sex, 1]
    assert scoring["sex"](search.best_estimator_, X, Y) == pytest.approx(
        roc_auc_score(Y["sex"][sex] == "male", proba))

    scores = cross_validate(search.best_estimator_, X, Y, scoring=scoring, cv=cv)
    assert {"test_species", "test_sex", "test_body_mass_g"} <= set(scores)
    assert scores["test_species"].mean() > 0.9
    assert scores["test_sex"].mean() > 0.85


def test_tune_loss_weights_example_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "tune_loss_weights.py"
    spec = importlib.util.spec_from_file_location("tune_loss_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    search, table = module.main(n_samples=500, n_iter=2, n_jobs=1)
    assert list(table.index) == ["disease", "stay_days"]
    assert (table.loc["disease", ["equal weights", "tuned weights"]] > 0.6).all()  # ROC AUC
    assert (table.loc["stay_days", ["equal weights", "tuned weights"]] > 0).all()  # MAE, days
    out = capsys.readouterr().out
    assert "top candidates" in out and "held-out scores per task" in out
    assert search.refit == "disease"


def test_classifier_with_missing_labels_in_a_search_with_explicit_folds():
    X, Y = make_mixed(n=150, missing=0.15)
    Yc = Y[["flag", "level"]]
    clf = MultiTaskClassifier(**FAST)
    search = GridSearchCV(clf, {"loss_weights__flag": [0.5, 1.0]},
                          scoring=make_task_scorers(clf, Yc), refit="level",
                          cv=KFold(3, shuffle=True, random_state=0), error_score="raise")
    search.fit(X, Yc)
    assert search.cv_results_["mean_test_flag"].min() > 0.7
    assert search.cv_results_["mean_test_level"].min() > 0.6
    assert set(search.best_estimator_.predict_proba(X[:4])) == {"flag", "level"}
