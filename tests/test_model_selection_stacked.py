"""MultiTaskGridSearchCV / MultiTaskRandomizedSearchCV: stacked fits against scikit-learn's
searches (ranking, scores, results format), multi-metric scoring and refit, the
sequential fallback, and the independence of the members (masked rows, no shared
parameter)."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV, KFold, PredefinedSplit, RandomizedSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier, make_task_scorers
from sklearn_mtl.model_selection import MultiTaskGridSearchCV, MultiTaskRandomizedSearchCV
from sklearn_mtl import _stacked as stacked_module
from sklearn_mtl._stacked import StackedMLP, _StackedRun

from .conftest import make_mixed

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CV = KFold(3, shuffle=True, random_state=0)
# Equal weights win clearly: every other candidate leaves a task untrained.
CLEAR_GRID = {"loss_weights": [{"value": 1.0, "flag": 1.0, "level": 1.0},
                               {"value": 0.0, "flag": 1.0, "level": 1.0},
                               {"value": 1.0, "flag": 0.0, "level": 0.0},
                               {"value": 0.0, "flag": 0.0, "level": 1.0}]}


def small(**params):
    params = {"hidden_layer_sizes": (16,), "head_hidden_sizes": (8,), "max_epochs": 8,
              "batch_size": 32, "lr": 1e-2, "random_state": 0, **params}
    return MultiTaskRegressorClassifier(**params)


@pytest.fixture(scope="module")
def data():
    X, Y = make_mixed(n=180, seed=1)
    return X.astype(np.float32), Y


@pytest.fixture(scope="module")
def clear_searches(data):
    X, Y = data
    ours = MultiTaskGridSearchCV(small(), CLEAR_GRID, cv=CV).fit(X, Y)
    ref = GridSearchCV(small(), CLEAR_GRID, cv=CV).fit(X, Y)
    return ours, ref


def test_clear_winner_same_best_params(clear_searches):
    ours, ref = clear_searches
    assert ours.n_stacked_fits_ == 4 * 3
    assert ours.best_params_ == ref.best_params_ == {"loss_weights": CLEAR_GRID[
        "loss_weights"][0]}
    assert ours.best_index_ == ref.best_index_ == 0
    assert ours.best_score_ == pytest.approx(ref.best_score_, abs=1e-4)


def test_mean_scores_within_fold_spread_and_splits_match(clear_searches):
    ours, ref = clear_searches
    diff = np.abs(ours.cv_results_["mean_test_score"] - ref.cv_results_["mean_test_score"])
    assert (diff <= ref.cv_results_["std_test_score"]).all()
    # Stronger: the members train as the plain fits do (same initialisation and batches).
    for s in range(3):
        np.testing.assert_allclose(ours.cv_results_[f"split{s}_test_score"],
                                   ref.cv_results_[f"split{s}_test_score"], atol=1e-4)
    np.testing.assert_array_equal(ours.cv_results_["rank_test_score"],
                                  ref.cv_results_["rank_test_score"])


def test_cv_results_keys_match_gridsearchcv(clear_searches):
    ours, ref = clear_searches
    assert sorted(ours.cv_results_) == sorted(ref.cv_results_)
    assert ours.cv_results_["params"] == ref.cv_results_["params"]
    assert ours.n_splits_ == ref.n_splits_ == 3
    assert ours.multimetric_ is ref.multimetric_ is False
    assert (ours.cv_results_["mean_fit_time"] > 0).all()


def test_best_estimator_is_fitted_and_predicts(clear_searches, data):
    X, Y = data
    ours, _ = clear_searches
    best = ours.best_estimator_
    assert isinstance(best, MultiTaskRegressorClassifier)
    assert best.loss_weights == CLEAR_GRID["loss_weights"][0]
    prediction = ours.predict(X[:5])
    assert list(prediction.columns) == list(Y.columns) and len(prediction) == 5
    assert ours.score(X, Y) == pytest.approx(best.score(X, Y))
    assert ours.refit_time_ > 0


def test_member_equals_plain_fit_of_candidate_on_fold(data):
    """Per-member lr, alpha, patience and seed: each split score is that of a plain fit
    of the candidate on the fold's training rows."""
    X, Y = data
    grid = {"lr": [3e-3, 1e-2], "alpha": [0.0, 1e-2], "patience": [2],
            "random_state": [0, 7]}
    search = MultiTaskGridSearchCV(small(max_epochs=12), grid, cv=CV, refit=False).fit(X, Y)
    assert search.n_stacked_fits_ == 8 * 3
    splits = list(CV.split(X, Y))
    for c in (0, 3, 5, 6):
        params = search.cv_results_["params"][c]
        for s, (train, test) in enumerate(splits):
            plain = small(max_epochs=12).set_params(**params).fit(X[train], Y.iloc[train])
            assert search.cv_results_[f"split{s}_test_score"][c] == pytest.approx(
                plain.score(X[test], Y.iloc[test]), abs=1e-4)


def test_members_with_a_zero_loss_weight_stop_as_plain_fits_do(data):
    """A task of weight 0 does not decide a member's stop, as in a plain fit: each split
    score is that of the plain fit of the candidate on the fold."""
    X, Y = data
    grid = {"loss_weights": [{"value": 1.0, "flag": 0.0, "level": 0.0},
                             {"value": 0.0, "flag": 1.0, "level": 1.0}],
            "patience": [2]}
    search = MultiTaskGridSearchCV(small(max_epochs=60), grid, cv=CV, refit=False).fit(X, Y)
    assert search.n_stacked_fits_ == 2 * 3
    for c, params in enumerate(search.cv_results_["params"]):
        for s, (train, test) in enumerate(CV.split(X, Y)):
            plain = small(max_epochs=60).set_params(**params).fit(X[train], Y.iloc[train])
            assert plain.n_iter_ < 60
            assert search.cv_results_[f"split{s}_test_score"][c] == pytest.approx(
                plain.score(X[test], Y.iloc[test]), abs=1e-4)


def test_multimetric_per_task_scorers_and_refit_task_scorer(data):
    X, Y = data
    scoring = make_task_scorers(MultiTaskRegressorClassifier(), Y)
    assert set(scoring) == {"value", "flag", "level"}
    ours = MultiTaskGridSearchCV(small(), CLEAR_GRID, cv=CV, scoring=scoring, refit="value",
                                 return_train_score=True).fit(X, Y)
    ref = GridSearchCV(small(), CLEAR_GRID, cv=CV, scoring=scoring, refit="value",
                       return_train_score=True).fit(X, Y)
    assert sorted(ours.cv_results_) == sorted(ref.cv_results_)
    assert "mean_train_value" in ours.cv_results_ and "rank_test_flag" in ours.cv_results_
    assert ours.multimetric_ and ours.best_index_ == ref.best_index_
    assert ours.best_params_ == ref.best_params_
    assert set(ours.scorer_) == set(scoring)
    for name in scoring:
        np.testing.assert_allclose(ours.cv_results_[f"mean_test_{name}"],
                                   ref.cv_results_[f"mean_test_{name}"], atol=1e-4)
    # The task that gets weight 0 is not learned: its score is far below equal weights'.
    assert ours.cv_results_["mean_test_value"][1] < ours.cv_results_["mean_test_value"][0] - 0.5


def test_multimetric_without_valid_refit_is_refused(data):
    X, Y = data
    scoring = make_task_scorers(MultiTaskRegressorClassifier(), Y)
    with pytest.raises(ValueError, match="refit must be set to a scorer key"):
        MultiTaskGridSearchCV(small(), CLEAR_GRID, cv=CV, scoring=scoring).fit(X, Y)


def test_randomized_search_draws_sklearn_candidates(data):
    X, Y = data
    distributions = {"loss_weights__value": loguniform(0.1, 10), "alpha": [0.0, 1e-3]}
    kwargs = dict(n_iter=3, random_state=0, cv=CV)
    ours = MultiTaskRandomizedSearchCV(small(), distributions, **kwargs).fit(X, Y)
    ref = RandomizedSearchCV(small(), distributions, **kwargs).fit(X, Y)
    assert ours.cv_results_["params"] == ref.cv_results_["params"]
    assert len(ours.cv_results_["params"]) == 3
    assert sorted(ours.cv_results_) == sorted(ref.cv_results_)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], atol=1e-4)
    assert ours.best_params_ == ref.best_params_
    other = MultiTaskRandomizedSearchCV(small(), distributions, n_iter=3, random_state=1,
                                        cv=CV, refit=False).fit(X, Y)
    assert other.cv_results_["params"] != ours.cv_results_["params"]


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(6, 8)

    def forward(self, X):
        return torch.relu(self.layer(X))


def test_custom_module_falls_back_with_same_format(data):
    X, Y = data
    grid = {"loss_weights__value": [0.5, 1.0]}
    trunk = Trunk()
    ours = MultiTaskGridSearchCV(small(module=trunk), grid, cv=CV).fit(X, Y)
    ref = GridSearchCV(small(module=trunk), grid, cv=CV).fit(X, Y)
    assert ours.n_stacked_fits_ == 0
    assert sorted(ours.cv_results_) == sorted(ref.cv_results_)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], atol=1e-6)
    # A grid mixing both: the stackable candidates are stacked, the others fitted alone.
    mixed = MultiTaskGridSearchCV(small(), {"module": [None, Trunk()]}, cv=CV,
                                  refit=False).fit(X, Y)
    assert mixed.n_stacked_fits_ == 3
    assert np.isfinite(mixed.cv_results_["mean_test_score"]).all()


def test_pipeline_searched_sequentially(data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, Y = data
    pipe = make_pipeline(StandardScaler(), small())
    grid = {"multitaskregressorclassifier__loss_weights__value": [0.5, 1.0]}
    ours = MultiTaskGridSearchCV(pipe, grid, cv=CV, refit=False).fit(X, Y)
    assert ours.fallback_reason_ is not None and "Pipeline" in ours.fallback_reason_
    ref = GridSearchCV(pipe, grid, cv=CV, refit=False).fit(X, Y)
    assert sorted(ours.cv_results_) == sorted(ref.cv_results_)


def test_held_out_rows_and_other_candidates_change_no_member(data):
    """A member never trains on its held-out fold, and its training does not depend on
    the other members of the stack."""
    X, Y = data
    fold = np.arange(len(X)) % 3
    cv = PredefinedSplit(fold)
    grid = {"loss_weights__value": [0.3, 1.0, 3.0]}
    kwargs = dict(cv=cv, refit=False, return_train_score=True)
    base = MultiTaskGridSearchCV(small(), grid, **kwargs).fit(X, Y)
    # Other labels on fold 0's rows: the members held out on fold 0 train the same.
    Y2 = Y.copy()
    rows = np.flatnonzero(fold == 0)
    Y2.loc[rows, "value"] = Y2.loc[rows, "value"] * -5.0 + 100.0
    Y2.loc[rows, "flag"] = np.where(Y2.loc[rows, "flag"] == "yes", "no", "yes")
    changed = MultiTaskGridSearchCV(small(), grid, **kwargs).fit(X, Y2)
    np.testing.assert_array_equal(base.cv_results_["split0_train_score"],
                                  changed.cv_results_["split0_train_score"])
    assert not np.allclose(base.cv_results_["split1_train_score"],
                           changed.cv_results_["split1_train_score"])
    # One candidate alone: the same scores as inside the three-candidate stack.
    alone = MultiTaskGridSearchCV(small(), {"loss_weights__value": [1.0]}, **kwargs).fit(X, Y)
    for s in range(3):
        assert alone.cv_results_[f"split{s}_test_score"][0] == pytest.approx(
            base.cv_results_[f"split{s}_test_score"][1], abs=1e-6)


def _members(X, Y, n):
    search = MultiTaskGridSearchCV(small(), {"loss_weights__value": [1.0]}, cv=CV)
    scorer = check_scoring(small())
    rows = np.arange(len(X))
    return [search._prepare(clone(small(random_state=i)), X, Y, rows, {}, 0, scorer)
            for i in range(n)]


def test_masked_rows_carry_no_gradient(data):
    X, Y = data
    members = _members(X, Y, 3)
    run = _StackedRun(members, "cpu")
    k, B = 3, 8
    idx = torch.arange(B).repeat(k, 1)
    mask = torch.ones((k, B))
    mask[1] = 0.0  # member 1 has no row in this step
    mask[2, B // 2:] = 0.0  # member 2 half of them
    Xb = run.X[idx]
    targets = run.targets[idx]
    out = run.net.forward(run.net.leaves, Xb)
    losses, den = run._losses(out, targets, mask)
    grad = run.net.flat_grad(torch.where(den > 0, losses, 0.0).sum())
    assert torch.count_nonzero(grad[0]) > 0
    assert torch.count_nonzero(grad[1]) == 0
    # Member 2's gradient is that of its unmasked rows only.
    half = torch.ones((k, B))
    half[:, B // 2:] = 0.0
    targets2 = targets.clone()
    targets2[2, B // 2:, 0] = 123.0  # other regression labels on the masked rows
    out = run.net.forward(run.net.leaves, Xb)
    losses2, den2 = run._losses(out, targets2, half)
    grad2 = run.net.flat_grad(torch.where(den2 > 0, losses2, 0.0).sum())
    torch.testing.assert_close(grad2[2], grad[2])


def test_members_share_no_parameter(data):
    X, Y = data
    members = _members(X, Y, 2)
    net = StackedMLP([m.estimator.net_.module_ for m in members], "relu", "cpu")
    Xb = torch.from_numpy(X[:6]).repeat(2, 1, 1)
    out = net.forward(net.leaves, Xb).view(2, 6, -1)
    grad = net.flat_grad(out[0].sum())
    assert torch.count_nonzero(grad[0]) > 0 and torch.count_nonzero(grad[1]) == 0
    # Each member's initial weights are those of its own plain net.
    for i, member in enumerate(members):
        state = net.member_state(net.flat, i, member.estimator.net_.module_)
        for name, value in member.estimator.net_.module_.state_dict().items():
            torch.testing.assert_close(state[name], value)


def test_memory_bound_chunks_give_same_results(clear_searches, data):
    X, Y = data
    ours, _ = clear_searches
    chunked = MultiTaskGridSearchCV(small(), CLEAR_GRID, cv=CV, max_members=5,
                                    refit=False).fit(X, Y)
    np.testing.assert_allclose(chunked.cv_results_["mean_test_score"],
                               ours.cv_results_["mean_test_score"], atol=1e-6)


def test_rows_gathered_a_step_at_a_time_give_the_same_search(clear_searches, data,
                                                              monkeypatch):
    # An epoch's rows are gathered in blocks of steps; blocks of one step give
    # the same arithmetic, hence the same scores to the last bit.
    X, Y = data
    ours, _ = clear_searches
    monkeypatch.setattr(stacked_module, "_BLOCK_BYTES", 1)
    stepwise = MultiTaskGridSearchCV(small(), CLEAR_GRID, cv=CV, refit=False).fit(X, Y)
    np.testing.assert_array_equal(stepwise.cv_results_["mean_test_score"],
                                  ours.cv_results_["mean_test_score"])


def test_invalid_max_members_names_the_parameter(data):
    X, Y = data
    with pytest.raises(InvalidParameterError, match="max_members"):
        MultiTaskGridSearchCV(small(), CLEAR_GRID, max_members=0).fit(X, Y)


def test_failed_fits_follow_error_score(data):
    X, Y = data
    grid = {"loss_weights": [{"value": 1.0}, {"nope": 1.0}]}
    with pytest.warns(FitFailedWarning, match="3 fits failed"):
        search = MultiTaskGridSearchCV(small(), grid, cv=CV, refit=False).fit(X, Y)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    with pytest.raises(ValueError, match="unknown task"):
        MultiTaskGridSearchCV(small(), grid, cv=CV, error_score="raise").fit(X, Y)


def test_dropout_and_sample_weight_members_train(data):
    X, Y = data
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    grid = {"dropout": [0.0, 0.2]}
    ours = MultiTaskGridSearchCV(small(), grid, cv=CV, refit=False).fit(
        X, Y, sample_weight=weights)
    ref = GridSearchCV(small(), grid, cv=CV, refit=False).fit(X, Y, sample_weight=weights)
    assert ours.n_stacked_fits_ == 6
    # No dropout: the plain fits; with dropout: other dropout draws, a similar model.
    assert ours.cv_results_["mean_test_score"][0] == pytest.approx(
        ref.cv_results_["mean_test_score"][0], abs=1e-4)
    assert ours.cv_results_["mean_test_score"][1] == pytest.approx(
        ref.cv_results_["mean_test_score"][1], abs=0.1)


def test_regressor_with_numpy_targets(data):
    X, _ = data
    rng = np.random.default_rng(0)
    Y = np.column_stack([X[:, 0] * 2 + 0.1 * rng.normal(size=len(X)), X[:, 1] - X[:, 2]])
    est = MultiTaskRegressor(hidden_layer_sizes=(8,), head_hidden_sizes=(), max_epochs=5,
                             random_state=0)
    grid = {"loss_weights": [[1.0, 1.0], [1.0, 0.0]]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MultiTaskGridSearchCV(est, grid, cv=CV).fit(X, Y)
        ref = GridSearchCV(est, grid, cv=CV).fit(X, Y)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], atol=1e-4)
    assert ours.best_index_ == ref.best_index_ == 0
    assert ours.predict(X[:3]).shape == (3, 2)


def _members_with(X, Y, n, **params):
    search = MultiTaskGridSearchCV(small(**params), {"loss_weights__value": [1.0]}, cv=CV)
    scorer = check_scoring(small(**params))
    rows = np.arange(len(X))
    return [search._prepare(clone(small(random_state=i, **params)), X, Y, rows, {}, 0, scorer)
            for i in range(n)]


@pytest.mark.parametrize("params", [
    {},
    {"head_hidden_sizes": ()},
    {"head_hidden_sizes": (8, 6), "hidden_layer_sizes": (16, 12)},
    {"activation": "tanh", "dropout": 0.3},
    {"activation": "elu", "head_hidden_sizes": (8, 6)},
    {"tasks": ["value", "flag"]},
    {"tasks": ["value", "flag"], "dropout": 0.2},
], ids=["default", "no head hidden layer", "deeper", "tanh and dropout", "elu, deeper heads",
        "one output per task (row-wise last layer)", "one output per task, dropout"])
def test_written_out_stacked_step_equals_autograd(data, params):
    X, Y = data
    params = dict(params)
    if "tasks" in params:
        Y = Y[params.pop("tasks")]
    members = _members_with(X, Y, 3, **params)
    run = _StackedRun(members, "cpu")
    assert run.direct
    k, B = 3, 10
    g = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randperm(len(X), generator=g)[:B] for _ in range(k)])
    mask = torch.ones((k, B))
    mask[1, B // 2:] = 0.0  # padding rows of a member with fewer rows
    X_b, targets = run.X[idx], run.targets[idx]
    dropout = "dropout" in params
    torch.manual_seed(5)
    # The step reads padding as label weight 0 in the targets (as the epoch folds it in).
    folded = targets.clone()
    folded[..., run.T:2 * run.T] *= mask.unsqueeze(-1)
    member, grad = run._direct_step(X_b, folded, dropout)
    torch.manual_seed(5)  # the same dropout draws
    out = run.net.forward(run.net.leaves, X_b, run.keep if dropout else None)
    losses, den = run._losses(out, targets, mask)
    reference = torch.where(den > 0, run.static * losses, 0.0).sum(1)
    torch.testing.assert_close(member, reference.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, run.net.flat_grad(reference.sum()), rtol=1e-5, atol=1e-7)


def test_members_blend_with_single_task_networks_as_their_fits_do(data):
    """sharing='blend': each stacked member trains its fold's single-task networks and
    blends with them, as a plain fit of it does."""
    X, Y = data
    grid = {"alpha": [0.0, 1e-3]}
    ours = MultiTaskGridSearchCV(small(sharing="blend"), grid, cv=CV).fit(X, Y)
    ref = GridSearchCV(small(sharing="blend"), grid, cv=CV).fit(X, Y)
    plain = MultiTaskGridSearchCV(small(), grid, cv=CV).fit(X, Y)
    assert ours.n_stacked_fits_ == 2 * 3
    for s in range(3):
        np.testing.assert_allclose(ours.cv_results_[f"split{s}_test_score"],
                                   ref.cv_results_[f"split{s}_test_score"], atol=1e-4)
    assert not np.allclose(ours.cv_results_["mean_test_score"],
                           plain.cv_results_["mean_test_score"], atol=1e-4)
    assert set(ours.best_estimator_.sharing_.values()) == {"blend"}
