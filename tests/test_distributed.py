"""Beyond one process: searches on Dask and Ray, dask-ml's Incremental, data-parallel
training with accelerate. Marked ``distributed`` (CI runs them as their own step,
``pytest -m distributed``, with the ``distributed`` extra installed); each skips when
its packages are missing. Clusters are 2 worker processes of 1 thread."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.weighting import WEIGHTINGS

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]


def _search_data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    Y = pd.DataFrame({"r": X[:, 0] + 0.1 * rng.normal(size=120),
                      "c": (X[:, 1] + 0.5 * rng.normal(size=120) > 0).astype(int)})
    return X, Y


def _pid(estimator, X, y):
    return float(os.getpid())


def _search(**kwargs):
    """2 candidates x 2 folds over loss_weights__c; scores and the process of each fit."""
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), head_hidden_sizes=(),
                                       max_epochs=5, early_stopping=False, random_state=0)
    return GridSearchCV(est, {"loss_weights__c": [0.2, 5.0]}, cv=KFold(2),
                        scoring={"score": lambda e, X, y: e.score(X, y), "pid": _pid},
                        refit="score", **kwargs)


@pytest.fixture(scope="module")
def serial_search():
    X, Y = _search_data()
    return _search(n_jobs=1).fit(X, Y)


def _assert_same_search(search, reference):
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               reference.cv_results_["mean_test_score"], rtol=1e-6, atol=1e-9)
    assert search.best_params_ == reference.best_params_
    # The fits ran in the workers, not here: the comparison is not of two serial runs.
    pids = {search.cv_results_[f"split{k}_test_pid"][i] for k in range(2) for i in range(2)}
    assert float(os.getpid()) not in pids


def test_search_on_dask_matches_serial(serial_search):
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    import joblib

    X, Y = _search_data()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            search = _search().fit(X, Y)
    _assert_same_search(search, serial_search)


def test_search_on_ray_matches_serial(serial_search):
    ray = pytest.importorskip("ray")
    import joblib
    from ray.util.joblib import register_ray

    X, Y = _search_data()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # e.g. a sandbox that forbids its processes or ports
        pytest.skip(f"ray.init(num_cpus=2) could not start a local Ray: "
                    f"{type(exc).__name__}: {exc}")
    try:
        register_ray()
        # n_jobs: with Ray's backend, the default (None) runs the fits here, in turn.
        with joblib.parallel_config(backend="ray", n_jobs=2):
            search = _search().fit(X, Y)
    finally:
        ray.shutdown()
    _assert_same_search(search, serial_search)


# ----------------------------------------------------------------------
# dask-ml Incremental

def _incremental_data():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    Y = np.column_stack([X[:, 0] + X[:, 1],
                         np.digitize(X[:, 2], [-0.5, 0.5]).astype(float)])
    return X, Y


CLASSES = {"task_1": [0.0, 1.0, 2.0]}


def _incremental_estimator():
    return MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), head_hidden_sizes=(),
                                        batch_size=8, random_state=0)


def _blockwise_reference(X, Y, **kwargs):
    ref = _incremental_estimator()
    for start in range(0, len(X), 20):
        ref.partial_fit(X[start:start + 20], Y[start:start + 20], **kwargs)
    return ref


@pytest.mark.parametrize("two_d", [False, True], ids=["1-D y", "2-D y"])
def test_incremental_matches_blockwise_partial_fit(two_d):
    pytest.importorskip("dask_ml")
    import dask
    import dask.array as da
    from sklearn_mtl.distributed import Incremental

    X, Y = _incremental_data()
    y = Y if two_d else Y[:, 0]
    kwargs = {"classes": CLASSES} if two_d else {}
    dX = da.from_array(X, chunks=(20, 3))
    # Columns in two blocks too: each partial_fit must see every task column.
    dy = da.from_array(y, chunks=(20, 1) if two_d else 20)
    with dask.config.set(scheduler="sync"):
        inc = Incremental(_incremental_estimator(), shuffle_blocks=False).fit(dX, dy, **kwargs)
        predicted = inc.predict(dX).compute()
    ref = _blockwise_reference(X, y, **kwargs)
    assert inc.estimator_.n_epochs_ == 3  # one partial_fit per block
    np.testing.assert_array_equal(inc.estimator_.predict(X), ref.predict(X))
    np.testing.assert_array_equal(predicted, ref.predict(X))
    if two_d:
        # classes= reached the first call: every class, though a block may lack one.
        np.testing.assert_array_equal(inc.estimator_.classes_[1], CLASSES["task_1"])
        np.testing.assert_array_equal(inc.estimator_.predict_proba(X)[1],
                                      ref.predict_proba(X)[1])


def test_dask_ml_incremental_with_2d_y_says_what_to_do():
    dask_ml = pytest.importorskip("dask_ml")
    import dask
    import dask.array as da

    X, Y = _incremental_data()
    dX, dY = da.from_array(X, chunks=(20, 3)), da.from_array(Y, chunks=(20, 2))
    with dask.config.set(scheduler="sync"), \
            pytest.raises(ValueError, match="sklearn_mtl.distributed.Incremental"):
        dask_ml.wrappers.Incremental(_incremental_estimator()).fit(dX, dY, classes=CLASSES)


# ----------------------------------------------------------------------
# Data-parallel training (accelerate, 2 CPU processes over gloo)

sys.path.insert(0, str(Path(__file__).parent))
from data_parallel_run import estimator as dp_estimator, problem as dp_problem  # noqa: E402


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Every weighting fitted inside data_parallel in each of 2 processes."""
    pytest.importorskip("accelerate")
    out = tmp_path_factory.mktemp("data_parallel")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(Path(__file__).parent / "data_parallel_run.py"),
               str(out), *WEIGHTINGS]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads((out / f"report_{rank}.json").read_text()) for rank in range(2)]
    return out, reports


def _one_process(name):
    X, Y, sample_weight = dp_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dp_estimator(name).fit(X, Y, sample_weight=sample_weight)


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_data_parallel_equals_one_process_or_refuses(two_process_run, name):
    out, reports = two_process_run
    assert reports[0]["num_processes"] == 2
    if WEIGHTINGS[name].needs_grads is not None:
        for report in reports:
            assert "combines per-task gradients" in report[name]["error"]
        return
    assert all("error" not in report[name] for report in reports), reports[0][name]
    X = dp_problem()[0]
    first, second = (np.load(out / f"{name}_{rank}.npy") for rank in range(2))
    np.testing.assert_array_equal(first, second)  # every process holds the same model
    reference = _one_process(name)
    # Each process saw its slice of every batch (31 rows: 15 and 16); the losses of the
    # whole batch, with missing labels and sample weights, are the one-process ones.
    np.testing.assert_allclose(first, reference.net_.raw_outputs(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reports[0][name]["train_loss"],
                               list(reference.history_[:, "train_loss"]), rtol=1e-5)
    assert reports[0][name]["n_epochs"] == reference.n_epochs_


def test_data_parallel_with_retrieval_features_equals_one_process(two_process_run):
    out, _ = two_process_run
    first, second = (np.load(out / f"retrieval_{rank}.npy") for rank in range(2))
    np.testing.assert_array_equal(first, second)
    X, Y, sample_weight = dp_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = dp_estimator("static").set_params(retrieval="on").fit(
            X, Y, sample_weight=sample_weight)
    assert all(reference.retrieval_.values())
    expected = reference.predict(X).astype(float)
    np.testing.assert_allclose(first[:, :2], expected[:, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first[:, 2], expected[:, 2])


def test_data_parallel_needs_a_random_state(two_process_run):
    for report in two_process_run[1]:
        assert "needs an integer random_state" in report["random_state=None"]


def test_data_parallel_in_one_process_is_the_plain_fit():
    pytest.importorskip("accelerate")
    from accelerate import Accelerator
    from sklearn_mtl.distributed import data_parallel

    X, Y, sample_weight = dp_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with data_parallel(Accelerator(cpu=True)):
            model = dp_estimator("static").fit(X, Y, sample_weight=sample_weight)
    reference = _one_process("static")
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))
    # An ordinary model afterwards: it pickles (the accelerator is dropped).
    import pickle

    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X), reference.predict(X))


def test_data_parallel_refuses_what_it_cannot_run():
    accelerate = pytest.importorskip("accelerate")
    from sklearn_mtl.distributed import data_parallel

    with pytest.raises(TypeError, match="accelerate.Accelerator"):
        with data_parallel("cpu"):
            pass
    with pytest.raises(ValueError, match="gradient accumulation"):
        with data_parallel(accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)):
            pass
