"""
Run a search on a Dask or Ray cluster
=====================================

Every candidate and fold of a scikit-learn search is an ordinary fit, so
joblib's Dask and Ray backends spread them over a cluster's workers with no
change to the estimator. Here a local cluster of two worker processes runs a
grid over the weight of one task's loss (2 candidates x 2 folds); with a fixed
``random_state`` the scores are those of the same search run in one process.

Run: ``python examples/scale_out_dask_ray.py dask`` (or ``ray``; needs the
``distributed`` extra; about half a minute on two cores). Against a real
cluster, connect a ``distributed.Client`` to its scheduler, or call
``ray.init(address=...)``, instead of starting a local one.
"""

import sys

import joblib
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import make_patient_records


def search():
    model = MultiTaskRegressorClassifier(hidden_layer_sizes=(32,), max_epochs=10,
                                         random_state=0)
    return GridSearchCV(model, {"loss_weights__disease": [0.5, 2.0]}, cv=KFold(2))


def on_dask(X, Y):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        with joblib.parallel_config(backend="dask"):
            return search().fit(X, Y)


def on_ray(X, Y):
    import ray
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        register_ray()
        # n_jobs: with Ray's backend the default (None) runs the fits in this process.
        with joblib.parallel_config(backend="ray", n_jobs=2):
            return search().fit(X, Y)
    finally:
        ray.shutdown()


def main(backend="dask"):
    X, Y = make_patient_records(n_samples=600, random_state=0)
    found = {"dask": on_dask, "ray": on_ray}[backend](X, Y)
    print(f"{backend}: mean test scores {found.cv_results_['mean_test_score'].round(4)}, "
          f"best {found.best_params_}")
    return found


if __name__ == "__main__":
    main(*sys.argv[1:])
