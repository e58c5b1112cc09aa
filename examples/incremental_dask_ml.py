"""
Train block by block on a dask array with dask-ml
=================================================

``dask_ml.wrappers.Incremental`` trains an estimator by ``partial_fit``, one
block of rows of a dask array at a time, so the data never need to fit in
memory at once. :class:`sklearn_mtl.distributed.Incremental` is that wrapper
taking a 2-D dask ``y`` too (one column per task): dask-ml's own passes a
2-D ``y``'s blocks by a key that does not exist, and the estimator would get
the key instead of the block. ``classes=`` gives each classification task's
labels up front, for blocks that lack some class.

Run: ``python examples/incremental_dask_ml.py`` (needs the ``distributed``
extra; a few seconds).
"""

import dask
import dask.array as da
import numpy as np

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.distributed import Incremental


def main(n_samples=4000, block_rows=500):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n_samples, 6)).astype(np.float32)
    # Task 0: regression; task 1: three classes.
    Y = np.column_stack([X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=n_samples),
                         np.digitize(X[:, 2] + X[:, 3], [-1.0, 1.0]).astype(float)])
    dX = da.from_array(X, chunks=(block_rows, 6))
    dY = da.from_array(Y, chunks=(block_rows, 2))
    model = MultiTaskRegressorClassifier(hidden_layer_sizes=(32,), random_state=0)
    incremental = Incremental(model, shuffle_blocks=False)
    with dask.config.set(scheduler="threads", num_workers=2):
        for _ in range(3):  # three passes over the blocks, one partial_fit per block
            incremental.partial_fit(dX, dY, classes={"task_1": [0.0, 1.0, 2.0]})
        predicted = incremental.predict(dX).compute()
    fitted = incremental.estimator_
    scores = fitted.score_tasks(X, Y)
    print(f"{fitted.n_epochs_} partial_fit calls; predictions {predicted.shape}; "
          f"R2 task_0 {scores['task_0']:.3f}, accuracy task_1 {scores['task_1']:.3f}")
    return scores


if __name__ == "__main__":
    main()
