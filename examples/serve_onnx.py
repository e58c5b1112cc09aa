"""
Serving with ONNX: preprocessing and the multi-task network in one graph
========================================================================

A pipeline (imputation, scaling and one-hot encoding of the raw penguin table,
then one network for species, sex and body mass) is fitted as usual. Its two
halves are exported separately -- the preprocessing by skl2onnx, the network by
``to_onnx`` -- and joined with ``onnx.compose.merge_models`` into one model that
takes the raw columns and returns each task's prediction: ``species_label``,
``sex_label`` (with ``*_proba``) and ``body_mass_g_value`` in grams. That model
runs in onnxruntime with neither scikit-learn nor torch.

Both halves are brought to the same opset (``merge_models`` requires it). The
predictions of the merged model are compared with the pipeline's own: labels
agree, values and probabilities agree to float32 precision (both halves run
in float32 in ONNX; the pipeline computes in float64).

Needs the serving extra: ``pip install "sklearn-mtl[serving,examples]"``
Run: ``python examples/serve_onnx.py``
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import compose, version_converter
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import load_penguins

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"]
CATEGORICAL = ["island"]
# The default-domain opset of both halves: one that torch's exporter, skl2onnx and
# onnxruntime all support.
OPSET = 18


def fit_pipeline(X, Y):
    preprocess = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ])
    network = MultiTaskRegressorClassifier(hidden_layer_sizes=(32, 32), max_epochs=60,
                                           batch_size=32, lr=5e-3, random_state=0)
    return make_pipeline(preprocess, network).fit(X, Y)


def export_pipeline(pipeline):
    """One ONNX model from raw columns to per-task predictions."""
    preprocess, network = pipeline[0], pipeline[-1]
    # One graph input per column, as the ColumnTransformer sees them.
    inputs = ([(name, FloatTensorType([None, 1])) for name in NUMERIC]
              + [(name, StringTensorType([None, 1])) for name in CATEGORICAL])
    front = convert_sklearn(preprocess, initial_types=inputs,
                            target_opset={"": OPSET, "ai.onnx.ml": 3})
    # skl2onnx writes the lowest opset its operators need (13 here): convert it up.
    front = version_converter.convert_version(front, OPSET)
    back = network.to_onnx(opset=OPSET)
    # merge_models wants one IR version; the older of the two is the safe label.
    front.ir_version = back.ir_version = min(front.ir_version, back.ir_version)
    features = front.graph.output[0].name  # the ColumnTransformer's float matrix
    merged = compose.merge_models(front, back, io_map=[(features, "X")])
    # The per-task metadata that to_onnx wrote (tasks, output names, classes).
    onnx.helper.set_model_props(merged, {p.key: p.value for p in back.metadata_props})
    onnx.checker.check_model(merged)
    return merged


def feeds(X):
    """The raw columns as the merged model's inputs (float32 numbers, strings)."""
    out = {name: X[[name]].to_numpy(dtype=np.float32) for name in NUMERIC}
    out.update({name: X[[name]].astype(str).to_numpy(dtype=object) for name in CATEGORICAL})
    return out


def main(path=None):
    start = time.perf_counter()
    X, Y = load_penguins()
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.25, random_state=0)
    pipeline = fit_pipeline(X_train, Y_train)

    model = export_pipeline(pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(path or Path(tmp) / "penguins.onnx")
        onnx.save_model(model, path)
        size = path.stat().st_size
        # What a server does: load the file, feed raw columns.
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    served = dict(zip(names, session.run(None, feeds(X_test))))

    expected = pipeline.predict(X_test)
    expected_proba = pipeline.predict_proba(X_test)
    report = {
        "species_labels_agree": float(np.mean(served["species_label"]
                                              == expected["species"].to_numpy())),
        "sex_labels_agree": float(np.mean(served["sex_label"] == expected["sex"].to_numpy())),
        "body_mass_max_abs_diff_g": float(np.max(np.abs(served["body_mass_g_value"]
                                                        - expected["body_mass_g"].to_numpy()))),
        "proba_max_abs_diff": float(max(
            np.max(np.abs(served[f"{task}_proba"] - expected_proba[task]))
            for task in ("species", "sex"))),
    }
    print(f"ONNX model: {path.name} ({size / 1024:.0f} KiB), inputs "
          f"{[i.name for i in session.get_inputs()]}")
    print(f"outputs: {names}\n")
    first = pd.DataFrame({
        "species": served["species_label"][:5], "sex": served["sex_label"][:5],
        "body_mass_g": served["body_mass_g_value"][:5].astype(np.float64).round(1),
    }, index=X_test.index[:5])
    print("first served predictions:")
    print(first.to_string())
    print("\nagreement with pipeline.predict on the held-out rows:")
    for key, value in report.items():
        print(f"  {key}: {value:.3g}")
    print(f"\ntotal time: {time.perf_counter() - start:.1f} s")
    return report


if __name__ == "__main__":
    main()
