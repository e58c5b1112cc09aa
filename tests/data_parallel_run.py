"""Run by tests/test_distributed.py in every process of a 2-process launch: fits the
problem of :func:`problem` with each weighting given on the command line inside
``data_parallel`` and saves, per process, the predictions (or the error raised); then
one fit with retrieval features."""

import json
import os
import sys

import numpy as np


def problem():
    """Two regression tasks and a 3-class task with missing labels, and sample weights;
    a batch size that splits unevenly over 2 processes."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    Y = np.column_stack([X[:, 0] - X[:, 1], X[:, 2] * X[:, 3],
                         np.digitize(X[:, 1], [-0.5, 0.5]).astype(float)])
    Y[rng.rand(90) < 0.3, 2] = np.nan
    sample_weight = rng.uniform(0.5, 2.0, size=90)
    return X, Y, sample_weight


def estimator(weighting):
    from sklearn_mtl import MultiTaskRegressorClassifier

    return MultiTaskRegressorClassifier(weighting=weighting, hidden_layer_sizes=(16,),
                                        head_hidden_sizes=(), batch_size=31, max_epochs=4,
                                        patience=2, random_state=0)


def main(out, weightings):
    from accelerate import Accelerator
    from sklearn_mtl.distributed import data_parallel

    X, Y, sample_weight = problem()
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    report = {"num_processes": accelerator.num_processes}
    for name in weightings:
        model = estimator(name)
        try:
            with data_parallel(accelerator):
                model.fit(X, Y, sample_weight=sample_weight)
        except ValueError as exc:
            report[name] = {"error": str(exc)}
            continue
        np.save(os.path.join(out, f"{name}_{rank}.npy"), model.net_.raw_outputs(X))
        report[name] = {"n_epochs": int(model.n_epochs_),
                        "train_loss": [float(v) for v in model.history_[:, "train_loss"]]}
    # Retrieval features: every process finds the same neighbours in the same data.
    retrieving = estimator("static").set_params(retrieval="on")
    with data_parallel(accelerator):
        retrieving.fit(X, Y, sample_weight=sample_weight)
    np.save(os.path.join(out, f"retrieval_{rank}.npy"), retrieving.predict(X).astype(float))
    unseeded = estimator("static").set_params(random_state=None)
    try:
        with data_parallel(accelerator):
            unseeded.fit(X, Y)
    except ValueError as exc:
        report["random_state=None"] = str(exc)
    with open(os.path.join(out, f"report_{rank}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
