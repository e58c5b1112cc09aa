"""Saving and loading: the fitted state is plain data, and pickle, joblib and skops
give back a model that predicts exactly as the original, here or in a fresh process,
on a CPU-only machine even when it was trained on CUDA."""

import copy
import importlib.util
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch

from sklearn_mtl import MultiTaskClassifier, MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl.architectures import MMoE
from sklearn_mtl.weighting import Uncertainty
from sklearn_mtl.weighting._registry import WEIGHTINGS

from .conftest import joblib_round_trip as _joblib
from .conftest import pickle_round_trip as _pickle
from .conftest import skops_round_trip as _skops


def skops_io():
    """skops.io, or a skip where skops is not installed (the other tests still run)."""
    return pytest.importorskip("skops.io")

REPO = Path(__file__).resolve().parent.parent
TINY = dict(hidden_layer_sizes=(8, 6), head_hidden_sizes=(4,), max_epochs=2, batch_size=32,
            random_state=0)
ARCHITECTURES = ["hard", "soft", "cross_stitch", "mmoe", "ple"]
# Modules whose types may appear in a saved model's plain state.
PLAIN_MODULES = {"builtins", "numpy", "sklearn", "collections"}


class Trunk(torch.nn.Module):
    """A user trunk: importable from this module, so pickle and skops can find it."""

    def __init__(self, n_features=5, width=6):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, width)
        self.register_buffer("shift", torch.zeros(width))

    def forward(self, X):
        return torch.tanh(self.linear(X)) + self.shift


def make_data(n=64, seed=0):
    """Five features; a regression task with missing labels, a binary task (string
    labels, missing too), a multiclass task (int labels) and a fourth, auxiliary one."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    value = 10.0 * X[:, 0] + 100.0 + rng.normal(size=n)
    value[::7] = np.nan
    flag = np.where(X[:, 1] > 0, "yes", "no").astype(object)
    flag[3::9] = None
    Y = pd.DataFrame({"value": value, "flag": flag,
                      "level": np.digitize(X[:, 2], [-0.5, 0.5]),
                      "hint": X[:, 3] + 0.1 * rng.normal(size=n)})
    return X, Y


def fit(cls=MultiTaskRegressorClassifier, Y_columns=None, **params):
    X, Y = make_data()
    if Y_columns is not None:
        Y = Y[Y_columns]
    return cls(**{**TINY, **params}).fit(X, Y), X


def assert_same_predictions(loaded, model, X):
    expected = model.predict(X)
    got = loaded.predict(X)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for task in expected:
            np.testing.assert_array_equal(got[task], expected[task])
    else:
        np.testing.assert_array_equal(got, expected)
    if hasattr(model, "predict_proba"):
        proba, expected_proba = loaded.predict_proba(X), model.predict_proba(X)
        if isinstance(expected_proba, dict):
            assert proba.keys() == expected_proba.keys()
            for task in expected_proba:
                np.testing.assert_array_equal(proba[task], expected_proba[task])
        else:
            np.testing.assert_array_equal(proba, expected_proba)


def skops_round_trip(model, tmp_path):
    sio = skops_io()
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    untrusted = sio.get_untrusted_types(file=path)
    return sio.load(path, trusted=untrusted), untrusted


def state_types(value, seen=None):
    """The types found in a state (dicts, lists, tuples, sets and objects' __dict__)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return set()
    seen.add(id(value))
    found = {type(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= state_types(key, seen) | state_types(item, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            found |= state_types(item, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        found |= state_types(vars(value), seen)
    return found


# ---------------------------------------------------------------------------
# The state is plain data


def test_state_holds_only_builtins_numpy_and_scikit_learn_objects():
    model, _ = fit(class_weight="balanced", auxiliary_tasks=["hint"],
                   head_inputs={"value": ["level"]}, weighting="uncertainty",
                   loss_normalization="running_mean")
    state = model.__getstate__()
    modules = {t.__module__.split(".")[0] for t in state_types(state)}
    assert modules <= PLAIN_MODULES, modules
    # The live model is untouched by taking its state.
    assert type(model.net_).__name__ == "MultiTaskNet"
    assert type(model.tasks_[0]).__name__ == "Task"
    assert isinstance(model.target_format_.columns, pd.Index)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("cls, columns, extra", [
    (MultiTaskRegressorClassifier, None,
     dict(class_weight={"flag": "balanced"}, head_inputs={"value": ["level"]})),
    (MultiTaskRegressor, ["value", "hint"], dict(head_inputs={"value": ["hint"]})),
    (MultiTaskClassifier, ["flag", "level", "hint"],
     dict(class_weight="balanced")),
], ids=["mixed", "regressor", "classifier"])
def test_skops_trusts_only_the_estimator_class(architecture, cls, columns, extra, tmp_path):
    X, Y = make_data()
    Y = Y if columns is None else Y[columns]
    if cls is MultiTaskClassifier:
        Y = Y.assign(hint=np.digitize(Y["hint"], [0.0]))
    aux = "hint"
    params = {**TINY, **extra, "architecture": architecture, "auxiliary_tasks": [aux]}
    model = cls(**params).fit(X, Y)
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert untrusted == [f"sklearn_mtl._estimators.{cls.__name__}"]
    assert_same_predictions(loaded, model, X)
    assert loaded.get_params() == model.get_params()


def test_skops_with_task_depth_and_every_option(tmp_path):
    model, X = fit(task_depth={"flag": 1}, head_inputs={"value": ["flag"]},
                   auxiliary_tasks=["hint"], class_weight="balanced", early_stopping=True,
                   validation_fraction=0.25, loss_normalization="initial", max_epochs=3)
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert untrusted == ["sklearn_mtl._estimators.MultiTaskRegressorClassifier"]
    assert_same_predictions(loaded, model, X)


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_every_weighting_state_round_trips_through_skops(weighting, tmp_path):
    model, X = fit(weighting=weighting, validation_fraction=0.25)
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert untrusted == ["sklearn_mtl._estimators.MultiTaskRegressorClassifier"]
    assert_same_predictions(loaded, model, X)
    # The strategy's learned state (uncertainty's log-variances, GradNorm's and FAMO's
    # weights, running statistics) comes back exactly.
    saved, restored = model.net_.weighting_.state_dict(), loaded.net_.weighting_.state_dict()
    assert saved.keys() == restored.keys()
    for key in saved:  # NaN where a strategy has no value yet: equal_nan
        np.testing.assert_array_equal(restored[key].numpy(), saved[key].numpy(), err_msg=key)


def test_configuration_objects_are_the_only_other_trusted_types(tmp_path):
    model, X = fit(architecture=MMoE(n_experts=2), weighting=Uncertainty())
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert set(untrusted) == {"sklearn_mtl._estimators.MultiTaskRegressorClassifier",
                              "sklearn_mtl.architectures.mmoe.MMoE",
                              "sklearn_mtl.weighting.uncertainty.Uncertainty"}
    assert_same_predictions(loaded, model, X)


def test_skops_refuses_an_untrusted_file_by_default(tmp_path):
    sio = skops_io()
    model, _ = fit()
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    with pytest.raises(Exception, match="MultiTaskRegressorClassifier"):
        sio.load(path)


# ---------------------------------------------------------------------------
# Round trips




ROUND_TRIPS = {"pickle": _pickle, "joblib": _joblib, "skops": _skops, "deepcopy": copy.deepcopy}


@pytest.fixture(scope="module")
def fitted():
    return fit(class_weight="balanced", auxiliary_tasks=["hint"], weighting="famo")


@pytest.mark.parametrize("trip", sorted(ROUND_TRIPS))
def test_round_trip_predicts_exactly_as_the_original(fitted, trip):
    model, X = fitted
    loaded = ROUND_TRIPS[trip](model)
    assert_same_predictions(loaded, model, X)
    assert loaded.score(X, make_data()[1]) == model.score(X, make_data()[1])
    assert loaded.classes_.keys() == model.classes_.keys()
    for task, classes in model.classes_.items():
        np.testing.assert_array_equal(loaded.classes_[task], classes)
    assert loaded.history_[:, "train_loss"] == model.history_[:, "train_loss"]
    assert loaded.n_epochs_ == model.n_epochs_
    assert [t.name for t in loaded.tasks_] == [t.name for t in model.tasks_]
    assert loaded.net_.device == "cpu"


@pytest.mark.parametrize("trip", ["pickle", "skops"])
def test_continued_training_after_loading_is_training_without_the_round_trip(trip):
    # Adam's moments, the strategy's state and the loss scales are all restored:
    # one more epoch gives the same weights as on the model that was never saved.
    X, Y = make_data()
    for params in (dict(weighting="uncertainty", loss_normalization="running_mean"),
                   dict(weighting="gradnorm"), dict(weighting="rlw", dropout=0.2)):
        model = MultiTaskRegressorClassifier(**{**TINY, **params}).fit(X, Y)
        loaded = ROUND_TRIPS[trip](model)
        model.partial_fit(X, Y)
        loaded.partial_fit(X, Y)
        assert_same_predictions(loaded, model, X)
        assert len(loaded.history_) == len(model.history_) == 3
        model.set_params(warm_start=True, max_epochs=1).fit(X, Y)
        loaded.set_params(warm_start=True, max_epochs=1).fit(X, Y)
        assert_same_predictions(loaded, model, X)


def test_round_trip_keeps_the_form_of_y(tmp_path):
    X, Y = make_data()
    tuples = Y[["value", "flag"]].set_axis(
        pd.MultiIndex.from_tuples([("body", "mass"), ("body", "flag")], names=["a", "b"]),
        axis=1)
    cases = {
        "multiindex": (MultiTaskRegressorClassifier, tuples),
        "int labels": (MultiTaskRegressorClassifier, Y[["value", "level"]].set_axis([0, 1],
                                                                                  axis=1)),
        "dict": (MultiTaskRegressorClassifier, {"value": Y["value"].to_numpy(),
                                                "level": Y["level"].to_numpy()}),
        "2-D array": (MultiTaskRegressor, Y[["value", "hint"]].to_numpy()),
        "1-D array": (MultiTaskClassifier, Y["level"].to_numpy()),
        "series": (MultiTaskClassifier, Y["level"].rename("lvl")),
    }
    for name, (cls, target) in cases.items():
        model = cls(**TINY).fit(pd.DataFrame(X, columns=list("pqrst")), target)
        frame = pd.DataFrame(X, columns=list("pqrst"))
        for trip in (_skops, _pickle):
            loaded = trip(model)
            assert_same_predictions(loaded, model, frame)
            np.testing.assert_array_equal(loaded.feature_names_in_, list("pqrst"))
    # The MultiIndex is rebuilt, names and all; parameters keyed by its tuples too.
    keyed = dict(loss_weights={("body", "mass"): 2.0}, class_weight={("body", "flag"): "balanced"},
                 head_inputs={("body", "mass"): [("body", "flag")]})
    model = MultiTaskRegressorClassifier(**TINY, **keyed).fit(X, tuples)
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert untrusted == ["sklearn_mtl._estimators.MultiTaskRegressorClassifier"]
    assert_same_predictions(loaded, model, X)
    assert loaded.predict(X).columns.equals(tuples.columns)
    assert list(loaded.predict(X).columns.names) == ["a", "b"]
    assert loaded.get_params() == model.get_params()
    assert _pickle(model).get_params() == model.get_params()


def test_unfitted_and_cloned_estimators_round_trip(tmp_path):
    model = MultiTaskRegressorClassifier(architecture=MMoE(n_experts=3), lr=0.01)
    for trip in (_skops, _pickle):
        loaded = trip(model)
        assert not hasattr(loaded, "net_")
        assert loaded.get_params()["lr"] == 0.01
        assert loaded.architecture.n_experts == 3


def test_fresh_process_loads_and_predicts_exactly(fitted, tmp_path):
    model, X = fitted
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    joblib.dump(model, tmp_path / "model.joblib")
    formats = ["joblib", "pickle"]
    script = (
        "import pickle, joblib, numpy as np, pandas as pd\n"
        "X = np.load('X.npy')\n"
        "with open('model.pkl', 'rb') as f:\n"
        "    models = {'pickle': pickle.load(f)}\n"
        "models['joblib'] = joblib.load('model.joblib')\n"
    )
    if importlib.util.find_spec("skops") is not None:
        skops_io().dump(model, tmp_path / "model.skops")
        formats.append("skops")
        script += ("import skops.io as sio\n"
                   "models['skops'] = sio.load('model.skops', trusted=["
                   "'sklearn_mtl._estimators.MultiTaskRegressorClassifier'])\n")
    script += ("pd.to_pickle({k: (m.predict(X), m.predict_proba(X)) for k, m in models.items()},"
               " 'out.pkl')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = pd.read_pickle(tmp_path / "out.pkl")
    assert sorted(outputs) == formats
    for pred, proba in outputs.values():
        pd.testing.assert_frame_equal(pred, model.predict(X))
        for task, p in model.predict_proba(X).items():
            np.testing.assert_array_equal(proba[task], p)


# ---------------------------------------------------------------------------
# Devices


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_model_trained_on_cuda_loads_on_a_cpu_only_machine(fitted, device, monkeypatch):
    model, X = fitted
    state = model.__getstate__()
    state["net_"] = {**state["net_"], "device": device}  # as saved from a CUDA fit
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = MultiTaskRegressorClassifier.__new__(MultiTaskRegressorClassifier)
    with pytest.warns(UserWarning, match=rf"trained on '{device}'.*loaded on the CPU"):
        loaded.__setstate__(state)
    assert loaded.net_.device == "cpu"
    assert all(p.device.type == "cpu" for p in loaded.net_.module_.parameters())
    assert_same_predictions(loaded, model, X)


def test_saved_arrays_are_host_arrays_whatever_the_device():
    # The record holds numpy arrays only: nothing in it refers to a device, so no
    # CUDA is needed to read it.
    model, _ = fit()
    record = model.__getstate__()["net_"]
    arrays = [a for m in record["modules"].values() for a in m.values()]
    assert arrays and all(isinstance(a, np.ndarray) for a in arrays)
    assert not any(isinstance(t, torch.Tensor) for t in state_types(record))


# ---------------------------------------------------------------------------
# Loading leaves the caller alone; what is saved is what was fitted


def test_loading_does_not_draw_from_the_global_torch_rng(fitted):
    model, _ = fitted
    data = pickle.dumps(model)
    before = torch.get_rng_state()
    pickle.loads(data)
    assert torch.equal(torch.get_rng_state(), before)


def test_parameters_changed_after_fit_do_not_change_the_saved_network(fitted):
    model, X = fitted
    changed = copy.deepcopy(model)
    changed.set_params(hidden_layer_sizes=(32, 32, 32), head_hidden_sizes=(9,),
                       architecture="mmoe", activation="tanh")
    loaded = _skops(changed)
    assert_same_predictions(loaded, model, X)
    assert loaded.hidden_layer_sizes == (32, 32, 32)  # the parameters stay as set


def test_saving_does_not_touch_the_model(fitted):
    model, X = fitted
    net, tasks, params, fmt = model.net_, model.tasks_, model.task_params_, model.target_format_
    weights = {k: v.clone() for k, v in net.module_.state_dict().items()}
    before = model.predict(X)
    model.__getstate__()
    pickle.dumps(model)
    assert model.net_ is net and model.tasks_ is tasks
    assert model.task_params_ is params and model.target_format_ is fmt
    for key, value in net.module_.state_dict().items():
        assert torch.equal(value, weights[key])
    pd.testing.assert_frame_equal(model.predict(X), before)


def test_a_record_of_another_format_is_refused_by_name(fitted):
    model, _ = fitted
    state = model.__getstate__()
    state["net_"] = {**state["net_"], "format": 99}
    loaded = MultiTaskRegressorClassifier.__new__(MultiTaskRegressorClassifier)
    with pytest.raises(ValueError, match="net record format 99"):
        loaded.__setstate__(state)


# ---------------------------------------------------------------------------
# A user's trunk (module=)


def test_a_custom_module_round_trips_and_skops_names_its_types(tmp_path):
    trunk = Trunk()
    model, X = fit(module=trunk)
    for trip in (_pickle, _joblib, copy.deepcopy):
        assert_same_predictions(trip(model), model, X)
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert set(untrusted) == {"sklearn_mtl._estimators.MultiTaskRegressorClassifier",
                              f"{__name__}.Trunk", "torch.nn.modules.linear.Linear"}
    assert_same_predictions(loaded, model, X)
    # The module parameter comes back as the user's (untrained) module.
    assert type(loaded.module) is Trunk
    for key, value in trunk.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)
    assert model.module is trunk


def test_a_custom_module_class_round_trips_through_skops(tmp_path):
    model, X = fit(module=Trunk)
    loaded, untrusted = skops_round_trip(model, tmp_path)
    assert set(untrusted) == {"sklearn_mtl._estimators.MultiTaskRegressorClassifier",
                              f"{__name__}.Trunk"}
    assert_same_predictions(loaded, model, X)


def test_a_module_with_hooks_is_pickled_by_torch(tmp_path):
    trunk = Trunk()
    trunk.register_forward_hook(_identity_hook)
    model, X = fit(module=trunk)
    state = model.__getstate__()
    assert state["module"] is trunk  # kept as it is: torch's own pickling
    assert_same_predictions(_pickle(model), model, X)


def _identity_hook(module, args, output):
    return output


def test_a_swapped_module_is_reported_by_name(fitted):
    model, X = fit(module=Trunk)
    state = model.__getstate__()
    state["module"] = Trunk(width=3)
    loaded = MultiTaskRegressorClassifier.__new__(MultiTaskRegressorClassifier)
    with pytest.raises(ValueError, match="module=Trunk"), warnings.catch_warnings():
        loaded.__setstate__(state)
