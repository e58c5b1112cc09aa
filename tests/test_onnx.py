"""ONNX export: onnxruntime gives the estimator's outputs, per architecture and head
structure, at any batch size; what torch cannot export is refused by name."""

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl._onnx import output_keys

from .conftest import TanhTrunk

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = dict(hidden_layer_sizes=(8, 6), head_hidden_sizes=(4,), max_epochs=3, batch_size=32,
            random_state=0, auxiliary_tasks=["hint"])
BATCHES = (1, 7, 100)
TOL = 1e-5



class Branchy(torch.nn.Module):
    """A trunk torch.export cannot trace: a Python branch on the values of X."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 6)

    def forward(self, X):
        h = self.linear(X)
        if h.sum() > 0:
            return torch.relu(h)
        return torch.tanh(h)


def make_data(n=120, seed=0):
    """A regression task (grams-like scale, missing labels), a binary task with string
    labels (missing too), a 3-class task with int labels, and an auxiliary column."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    value = 300.0 * X[:, 0] + 4000.0 + 10 * rng.normal(size=n)
    value[::9] = np.nan
    flag = np.where(X[:, 1] + 0.3 * X[:, 0] > 0, "yes", "no").astype(object)
    flag[4::11] = None
    Y = pd.DataFrame({"body mass": value, "flag": flag,
                      "level": np.digitize(X[:, 2], [-0.5, 0.5]), "hint": X[:, 3]})
    return X, Y


CONFIGS = {
    "hard": dict(class_weight="balanced"),
    "soft": dict(architecture="soft"),
    "cross_stitch": dict(architecture="cross_stitch"),
    "mmoe": dict(architecture="mmoe", losses={"body mass": "poisson"}),
    "ple": dict(architecture="ple", weighting="gradnorm"),
    "graph heads": dict(head_inputs={"body mass": ["level"]}, task_depth={"flag": 1}),
    "custom module": dict(module=TanhTrunk(5, 6)),
    "feature embedding": dict(feature_embedding="piecewise_linear", architecture="mmoe"),
}


def run(model, X, outputs=None):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()] if outputs is None else outputs
    return dict(zip(names, session.run(names, {"X": X})))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request):
    X, Y = make_data()
    estimator = MultiTaskRegressorClassifier(**{**TINY, **CONFIGS[request.param]}).fit(X, Y)
    return estimator, estimator.to_onnx(), X


def float32_forward(estimator, X):
    module = estimator.net_._inference_module(torch.float32)
    with torch.no_grad():
        return module(torch.from_numpy(X)).numpy()


def test_raw_outputs_equal_the_network_at_every_batch_size(exported):
    estimator, model, X = exported
    for n in BATCHES:
        rows = np.ascontiguousarray(X[:n])
        raw = run(model, rows, ["raw"])["raw"]
        assert raw.dtype == np.float32 and raw.shape == (n, estimator.net_.raw_outputs(rows)
                                                         .shape[1])
        np.testing.assert_allclose(raw, float32_forward(estimator, rows), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(raw, estimator.net_.raw_outputs(rows), rtol=TOL, atol=TOL)


def test_decoded_outputs_are_the_predictions(exported):
    estimator, model, X = exported
    out = run(model, X)
    pred, proba = estimator.predict(X), estimator.predict_proba(X)
    assert list(out) == ["raw", "body_mass_value", "flag_label", "flag_proba", "level_label",
                         "level_proba"]  # the auxiliary task has no output
    np.testing.assert_allclose(out["body_mass_value"], pred["body mass"], rtol=TOL)
    np.testing.assert_array_equal(out["flag_label"], pred["flag"].to_numpy())
    np.testing.assert_array_equal(out["level_label"], pred["level"].to_numpy())
    assert out["level_label"].dtype == np.int64
    for task, key in (("flag", "flag"), ("level", "level")):
        np.testing.assert_allclose(out[f"{key}_proba"], proba[task], rtol=TOL, atol=TOL)


def test_the_batch_dimension_is_dynamic_and_named(exported):
    _, model, _ = exported
    (X,) = model.graph.input
    assert X.name == "X" and X.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in X.type.tensor_type.shape.dim]
    assert dims == ["batch", 5]
    for output in model.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch", output.name


def test_float64_export_gives_the_estimators_own_outputs(tmp_path):
    X, Y = make_data()
    estimator = MultiTaskRegressor(**{**TINY, "auxiliary_tasks": None}).fit(
        X, Y[["body mass", "hint"]].to_numpy())
    path = tmp_path / "model.onnx"
    before, training = estimator.predict(X), estimator.net_.module_.training
    model = estimator.to_onnx(path, dtype="float64")
    # Exporting works on a copy: the estimator's network is as it was.
    np.testing.assert_array_equal(estimator.predict(X), before)
    assert estimator.net_.module_.training == training
    assert {p.dtype for p in estimator.net_.module_.parameters()} == {torch.float32}
    assert isinstance(model, onnx.ModelProto) and path.exists()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["raw", "task_0_value", "task_1_value"]
    out = dict(zip(["raw", "task_0", "task_1"], session.run(None, {"X": X})))
    assert out["raw"].dtype == np.float64
    np.testing.assert_allclose(out["raw"], estimator.net_.raw_outputs(X), rtol=1e-12,
                               atol=1e-12)
    pred = estimator.predict(X)
    np.testing.assert_allclose(out["task_0"], pred[:, 0], rtol=1e-12)
    np.testing.assert_allclose(out["task_1"], pred[:, 1], rtol=1e-12, atol=1e-12)


def test_metadata_describes_tasks_outputs_and_classes(exported):
    _, model, _ = exported
    (prop,) = [p for p in model.metadata_props if p.key == "sklearn_mtl"]
    info = json.loads(prop.value)
    assert info["input"] == "X" and info["n_features"] == 5 and info["dtype"] == "float32"
    assert [(t["name"], t["key"], t["kind"], t["outputs"]) for t in info["tasks"]] == [
        ("body mass", "body_mass", "regression", ["body_mass_value"]),
        ("flag", "flag", "binary", ["flag_label", "flag_proba"]),
        ("level", "level", "multiclass", ["level_label", "level_proba"]),
    ]
    assert info["tasks"][1]["classes"] == ["no", "yes"]
    assert info["tasks"][2]["classes"] == [0, 1, 2]
    assert model.producer_name == "sklearn-mtl"


def test_output_keys_are_unique_identifiers():
    assert output_keys(["body mass", ("a", 1), 3, "", "a_1", "raw", "x-y"]) == [
        "body_mass", "a_1", "3", "task", "a_1_2", "raw", "x_y"]


def test_a_module_torch_cannot_export_is_named():
    X, Y = make_data()
    estimator = MultiTaskRegressorClassifier(**{**TINY, "module": Branchy()}).fit(X, Y)
    with pytest.raises(ValueError, match=r"could not export module=Branchy.*traceable"):
        estimator.to_onnx()


def test_a_graph_that_does_not_reproduce_the_network_is_refused(exported, monkeypatch):
    from sklearn_mtl import _onnx

    estimator, model, _ = exported

    def shifted(est, dtype, opset):
        # The exported graph against a network that differs from it slightly: what a
        # trace that baked in its example input looks like at other inputs.
        def network(rows):
            return torch.from_numpy(est.net_.raw_outputs(rows.numpy())).float() + 1e-2

        return copy.deepcopy(model), network

    monkeypatch.setattr(_onnx, "_network_model", shifted)
    with pytest.raises(ValueError, match=r"graph of .* does not reproduce the network"):
        estimator.to_onnx()


def test_bad_arguments_and_unfitted_estimators():
    with pytest.raises(NotFittedError):
        MultiTaskRegressorClassifier().to_onnx()
    X, Y = make_data(n=40)
    estimator = MultiTaskRegressorClassifier(**{**TINY, "max_epochs": 1}).fit(X, Y)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        estimator.to_onnx(dtype="float16")
    with pytest.raises(ValueError, match="opset must be an int >= 13"):
        estimator.to_onnx(opset=9)


def test_the_serving_example_merges_preprocessing_and_network(capsys):
    pytest.importorskip("skl2onnx")
    pytest.importorskip("palmerpenguins")
    spec = importlib.util.spec_from_file_location("serve_onnx", EXAMPLES / "serve_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main()
    assert report["species_labels_agree"] == 1.0
    assert report["sex_labels_agree"] == 1.0
    assert report["body_mass_max_abs_diff_g"] < 0.5  # grams, float32 end to end
    assert report["proba_max_abs_diff"] < 1e-4
    assert "species_label" in capsys.readouterr().out
