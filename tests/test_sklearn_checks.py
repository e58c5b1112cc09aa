"""scikit-learn's own estimator checks on all three estimators, and the protocol
details the checks do not pin down (clone, NotFittedError, tags, feature names,
warm_start, partial_fit, the single- vs multi-target forms of the classifier)."""

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_mtl import MultiTaskClassifier, MultiTaskRegressor, MultiTaskRegressorClassifier

from .conftest import make_mixed

# The two sample-weight checks compare a fit with integer weights to a fit on
# repeated rows. The default validation split holds out different rows of the two
# (and with mini-batches the two fits take different steps on different batches),
# so they cannot agree to rtol=1e-7; without a split and with one full batch per step they
# do (test_sample_weight_checks_pass_with_full_batches below runs scikit-learn's
# own checks that way and shows them failing at the defaults).
_SAMPLE_WEIGHT_REASON = (
    "weight k vs k repeated rows: the validation split and the mini-batches differ "
    "(see test_sample_weight_checks_pass_with_full_batches)")
_SAMPLE_WEIGHT_CHECKS = ("check_sample_weight_equivalence_on_dense_data",
                         "check_sample_weight_equivalence_on_sparse_data")
EXPECTED_FAILED_CHECKS = {check: _SAMPLE_WEIGHT_REASON for check in _SAMPLE_WEIGHT_CHECKS}

# At their default parameters, as a user gets them.
ESTIMATORS = [MultiTaskRegressor(), MultiTaskClassifier(), MultiTaskRegressorClassifier()]


def _check_name(check):
    while isinstance(check, functools.partial):
        check = check.func
    return check.__name__


# check_supervised_y_no_nan's inf labels make scikit-learn's own type_of_target warn.
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        # The checks' tiny data do not converge in 100 epochs; they are about behaviour.
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


@pytest.mark.parametrize("cls", [MultiTaskRegressor, MultiTaskClassifier,
                                 MultiTaskRegressorClassifier])
def test_every_parameter_is_declared_and_validated(cls):
    # scikit-learn runs this check on its own estimators only: every parameter has a
    # constraint, and a value of a wrong type or out of range raises its message.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        estimator_checks.check_param_validation(cls.__name__, cls())


@pytest.mark.parametrize("check_name", _SAMPLE_WEIGHT_CHECKS)
@pytest.mark.parametrize("cls", [MultiTaskRegressor, MultiTaskClassifier])
def test_sample_weight_checks_pass_with_full_batches(cls, check_name):
    check = getattr(estimator_checks, check_name)
    # One full batch per step (batch_size >= the 45 repeated rows) and a few small
    # steps: float32 sums in another order stay within the checks' rtol=1e-7. Without
    # a validation split, which holds out different rows of the weighted and the
    # repeated data.
    check(cls.__name__, cls(max_epochs=5, batch_size=256, random_state=0,
                            early_stopping=False))
    # The default validation split breaks the equivalence, which is why these two
    # checks are the expected failures above.
    with pytest.raises(AssertionError, match="sample_weight"):
        check(cls.__name__, cls(random_state=0))


# ---------------------------------------------------------------------------
# Protocol details


def test_estimator_types():
    assert is_regressor(MultiTaskRegressor())
    assert is_classifier(MultiTaskClassifier())
    mixed = MultiTaskRegressorClassifier()
    # Not a classifier: cross-validation must not stratify a multi-column y.
    assert not is_classifier(mixed) and not is_regressor(mixed)


@pytest.mark.parametrize("cls", [MultiTaskRegressor, MultiTaskClassifier,
                                 MultiTaskRegressorClassifier])
def test_tags(cls):
    tags = get_tags(cls())
    assert tags.target_tags.required
    assert tags.target_tags.multi_output and tags.target_tags.single_output
    assert not tags.input_tags.allow_nan  # X must be imputed (missing labels are fine)
    assert tags.input_tags.sparse
    # Deterministic on CPU for a fixed random_state; CUDA kernels do not promise it.
    assert not tags.non_deterministic
    assert get_tags(cls(device="cuda")).non_deterministic
    if cls is MultiTaskRegressor:
        assert tags.classifier_tags is None
    else:
        assert tags.classifier_tags.multi_class and tags.classifier_tags.multi_label


@pytest.mark.parametrize("cls", [MultiTaskRegressor, MultiTaskClassifier,
                                 MultiTaskRegressorClassifier])
def test_unfitted_raises_not_fitted_and_clone_of_fitted_is_unfitted(cls):
    X, Y = make_mixed(n=60)
    y = Y["flag"] if cls is MultiTaskClassifier else Y[["value"]]
    est = cls(max_epochs=2, loss_weights={y.name if cls is MultiTaskClassifier else "value": 2.0},
              hidden_layer_sizes=(8,), random_state=3)
    for method in ("predict", "score_tasks", "score"):
        with pytest.raises(NotFittedError):
            getattr(est, method)(X) if method == "predict" else getattr(est, method)(X, y)
    if cls is not MultiTaskRegressor:
        with pytest.raises(NotFittedError):
            est.predict_proba(X)
    failed = clone(est).set_params(loss_weights={"nope": 1.0})
    with pytest.raises(ValueError, match="unknown task"):
        failed.fit(X, y)  # X was validated (n_features_in_ set), then fit stopped
    assert hasattr(failed, "n_features_in_")
    with pytest.raises(NotFittedError):
        failed.predict(X)
    est.fit(X, y)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert twin.loss_weights == est.loss_weights and twin.loss_weights is not est.loss_weights
    assert not hasattr(twin, "net_") and not hasattr(twin, "n_features_in_")
    with pytest.raises(NotFittedError):
        twin.predict(X)
    # The clone trains to the same model: same parameters, same random_state.
    np.testing.assert_array_equal(np.asarray(twin.fit(X, y).predict(X)),
                                  np.asarray(est.predict(X)))


def test_regressor_has_no_predict_proba_and_no_classes():
    X, Y = make_mixed(n=60)
    reg = MultiTaskRegressor(max_epochs=1).fit(X, Y[["value"]])
    assert not hasattr(reg, "predict_proba")
    assert not hasattr(reg, "classes_")
    mixed = MultiTaskRegressorClassifier(max_epochs=1).fit(X, Y[["value"]])
    assert not hasattr(mixed, "predict_proba")  # only regression tasks: nothing to give


def test_feature_names_in_and_mismatch_warning():
    X, Y = make_mixed(n=60)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = MultiTaskRegressorClassifier(max_epochs=1).fit(frame, Y)
    assert est.n_features_in_ == 6
    np.testing.assert_array_equal(est.feature_names_in_, frame.columns)
    with pytest.warns(UserWarning, match="fitted with feature names"):
        est.predict(X)
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        est.predict(frame.rename(columns={"f0": "other"}))
    plain = MultiTaskRegressorClassifier(max_epochs=1).fit(X, Y)
    assert not hasattr(plain, "feature_names_in_")


def test_single_target_classifier_is_an_ordinary_classifier():
    X, Y = make_mixed(n=200)
    clf = MultiTaskClassifier(max_epochs=15, random_state=0).fit(X, Y["level"])
    assert isinstance(clf.classes_, np.ndarray)
    np.testing.assert_array_equal(clf.classes_, ["high", "low", "mid"])
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 3)
    pred = clf.predict(X)
    assert pred.shape == (200,)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], pred)
    assert clf.score(X, Y["level"]) == pytest.approx(np.mean(pred == Y["level"].to_numpy()))


def test_multi_target_forms_follow_y():
    X, Y = make_mixed(n=200)
    two = pd.DataFrame({"flag": Y["flag"], "level": Y["level"]})
    # A 2-D array: scikit-learn's multi-output form (lists in column order).
    arr = MultiTaskClassifier(max_epochs=2).fit(X, two.to_numpy())
    assert isinstance(arr.classes_, list) and isinstance(arr.predict_proba(X), list)
    np.testing.assert_array_equal(arr.classes_[0], ["no", "yes"])
    assert [p.shape for p in arr.predict_proba(X[:5])] == [(5, 2), (5, 3)]
    assert arr.predict(X[:5]).shape == (5, 2)
    # Named tasks: dicts keyed by task.
    named = MultiTaskClassifier(max_epochs=2).fit(X, two)
    assert set(named.classes_) == {"flag", "level"}
    assert named.predict_proba(X[:5])["level"].shape == (5, 3)
    # The mixed estimator on a 2-D array: None where a task is a regression task.
    mixed = MultiTaskRegressorClassifier(max_epochs=2).fit(
        X, np.column_stack([Y["value"], Y["flag"] == "yes"]).astype(float))
    proba = mixed.predict_proba(X[:5])
    assert proba[0] is None and proba[1].shape == (5, 2)
    assert mixed.classes_[0] is None


def test_numeric_2d_y_regressor_like_mlp_regressor():
    X, Y = make_mixed(n=300)
    Y2 = np.column_stack([Y["value"], 2.0 * X[:, 2] - X[:, 3]])
    reg = MultiTaskRegressor(max_epochs=40, random_state=0).fit(X, Y2)
    pred = reg.predict(X)
    assert pred.shape == (300, 2)
    from sklearn.metrics import r2_score

    assert reg.score(X, Y2) == pytest.approx(r2_score(Y2, pred))  # uniform average
    assert reg.score(X, Y2) > 0.9


def test_classifier_rejects_continuous_targets_and_regressor_labels():
    X, Y = make_mixed(n=60)
    with pytest.raises(ValueError, match="Unknown label type"):
        MultiTaskClassifier(max_epochs=1).fit(X, Y["value"])
    with pytest.raises(ValueError, match="Task 'flag' is a regression task but has non-numeric"):
        MultiTaskRegressor(max_epochs=1).fit(X, Y["flag"])


def test_warm_start_continues_and_honours_new_max_epochs():
    X, Y = make_mixed(n=120)
    est = MultiTaskRegressorClassifier(max_epochs=3, warm_start=True, random_state=0)
    est.fit(X, Y)
    first = est.net_
    est.set_params(max_epochs=2).fit(X, Y)
    assert est.net_ is first and len(est.history_) == 5
    # Without warm_start, fit starts over.
    est.set_params(warm_start=False, max_epochs=2).fit(X, Y)
    assert est.net_ is not first and len(est.history_) == 2


def test_continued_training_reshuffles_and_is_reproducible():
    X, Y = make_mixed(n=120)

    def three_calls():
        est = MultiTaskRegressorClassifier(batch_size=32, dropout=0.1, random_state=0)
        seeds = []
        for _ in range(3):
            est.partial_fit(X, Y)
            seeds.append(est.net_.iterator_train__seed)
        return est, seeds

    a, seeds = three_calls()
    assert len(set(seeds)) == 3  # each epoch its own batch order, not the first one replayed
    b, _ = three_calls()
    pd.testing.assert_frame_equal(a.predict(X), b.predict(X))  # same random_state, same model


def test_partial_fit_is_one_epoch_and_continues_after_fit():
    X, Y = make_mixed(n=120)
    est = MultiTaskRegressorClassifier(max_epochs=3, random_state=0)
    est.partial_fit(X, Y)
    assert len(est.history_) == 1
    weights = est.net_.module_.trunk.layers[0].weight.detach().clone()
    est.partial_fit(X, Y)
    assert len(est.history_) == 2
    assert not torch.equal(weights, est.net_.module_.trunk.layers[0].weight)
    est.fit(X, Y)  # fit starts over (warm_start=False)
    assert len(est.history_) == 3
    est.partial_fit(X, Y)  # and partial_fit continues the fitted model
    assert len(est.history_) == 4
    with pytest.raises(ValueError, match="X has 5 features"):
        est.partial_fit(X[:, :5], Y)


def test_partial_fit_classes_given_up_front():
    X, Y = make_mixed(n=120)
    y = Y["level"].to_numpy()
    clf = MultiTaskClassifier(random_state=0)
    first = y != "high"
    clf.partial_fit(X[first], y[first], classes=["low", "mid", "high"])
    np.testing.assert_array_equal(clf.classes_, ["high", "low", "mid"])
    assert clf.predict_proba(X[:3]).shape == (3, 3)
    clf.partial_fit(X, y)  # the class missing from the first batch is known
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=["low", "mid"])
    fresh = MultiTaskClassifier()
    with pytest.raises(ValueError, match="not in classes"):
        fresh.partial_fit(X, y, classes=["low", "mid"])
    # Several tasks: a dict task -> labels.
    multi = MultiTaskClassifier().partial_fit(
        X[first], Y[["flag", "level"]][first], classes={"level": ["low", "mid", "high"]})
    assert len(multi.classes_["level"]) == 3


def test_sklearn_class_weight_forms_for_the_classifier():
    """class_weight in scikit-learn's forms; a class weight is a per-row weight, so the
    known answer is the fit with the same weights given as sample_weight."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    params = dict(max_epochs=5, batch_size=50, random_state=0)
    as_rows = MultiTaskClassifier(**params).fit(X, y, sample_weight=np.where(y == 0, 0.2, 1.0))
    # The single-output form {label: weight}.
    single = MultiTaskClassifier(**params, class_weight={0: 0.2, 1: 1.0}).fit(X, y)
    np.testing.assert_allclose(single.predict_proba(X), as_rows.predict_proba(X), rtol=1e-6)
    # The multi-output form (one entry per column) equals the per-task dict form.
    Y2 = np.column_stack([y, 1 - y])
    listed = MultiTaskClassifier(**params, class_weight=[{0: 0.2, 1: 1.0}, None]).fit(X, Y2)
    named = MultiTaskClassifier(**params, tasks=["a", "b"],
                                class_weight={"a": {0: 0.2, 1: 1.0}}).fit(X, Y2)
    for p, q in zip(listed.predict_proba(X), named.predict_proba(X)):
        np.testing.assert_array_equal(p, q)
    unweighted = MultiTaskClassifier(**params).fit(X, Y2)
    # Down-weighting class 0 of task a lowers its predicted probability of class 0.
    assert (listed.predict_proba(X)[0][:, 0].mean()
            < unweighted.predict_proba(X)[0][:, 0].mean() - 0.02)


def test_sparse_X_is_densified():
    from scipy import sparse

    X, Y = make_mixed(n=80)
    dense = MultiTaskRegressorClassifier(max_epochs=3, random_state=0).fit(X, Y)
    sp = MultiTaskRegressorClassifier(max_epochs=3, random_state=0).fit(sparse.csr_matrix(X), Y)
    pd.testing.assert_frame_equal(dense.predict(X), sp.predict(sparse.csr_matrix(X)))


def test_sample_weight_equivalence_longer_training():
    """Integer weights == repeated rows, and zero weights == dropped rows, after 30 full-batch
    epochs at a learning rate that trains: equal up to float32 rounding."""
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, size=15)
    sw = rng.randint(0, 5, size=15)
    assert (sw == 0).any()
    params = dict(max_epochs=30, lr=0.02, batch_size=256, hidden_layer_sizes=(16,), early_stopping=False,
                  random_state=0)
    for cls, method in [(MultiTaskRegressor, "predict"), (MultiTaskClassifier, "predict_proba")]:
        target = y.astype(float) if cls is MultiTaskRegressor else y
        weighted = cls(**params).fit(X, target, sample_weight=sw)
        repeated = cls(**params).fit(X.repeat(sw, axis=0), target.repeat(sw))
        np.testing.assert_allclose(getattr(weighted, method)(X), getattr(repeated, method)(X),
                                   rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [MultiTaskRegressor, MultiTaskClassifier,
                                 MultiTaskRegressorClassifier])
def test_clone_keeps_every_parameter(cls):
    """Every parameter set to a non-default value survives get_params, set_params and
    clone unchanged (equal, and dicts not shared), nested loss_weights__<task> included."""
    defaults = cls().get_params()
    values = {name: f"value-of-{name}" for name in defaults}
    values.update(loss_weights={"a": 2.0}, losses={"a": "mae"}, tasks={"a": "regression"},
                  hidden_layer_sizes=(7, 5), optimizer_kwargs={"momentum": 0.5})
    est = cls().set_params(**values)
    assert est.get_params() == values
    est.set_params(loss_weights__b=0.25)
    assert est.loss_weights == {"a": 2.0, "b": 0.25} and values["loss_weights"] == {"a": 2.0}
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    for name in ("loss_weights", "losses", "tasks", "optimizer_kwargs"):
        assert getattr(twin, name) is not getattr(est, name)  # clone copies, never shares
