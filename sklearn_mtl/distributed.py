"""Training beyond one process: data-parallel fits and incremental fits on dask arrays.

Searches and cross-validation need nothing from this module: every fit is an
ordinary scikit-learn fit, so joblib's Dask and Ray backends run them on a
cluster as they are (see the README section "Scale out").

* :func:`data_parallel` trains one model on several processes at once (CPU
  processes over gloo, or one GPU per process), through Hugging Face
  ``accelerate``: each process takes its share of every batch, and the result
  is the model one process would have trained on the whole batches.
* :class:`Incremental` is ``dask_ml.wrappers.Incremental`` (training by
  ``partial_fit``, one dask block at a time) that also takes a 2-D dask ``y``
  (one column per task).

Both need the ``distributed`` extra: ``pip install "sklearn-mtl[distributed]"``.
"""

import contextlib
import importlib

import numpy as np

from ._data_parallel import ACTIVE

# Incremental is built on first access (it subclasses dask-ml's wrapper), so it stays
# out of __all__: the API reference imports every name of __all__, without dask-ml.
__all__ = ["data_parallel"]


def _require(package, what):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(f"{what} needs the {package} package: pip install "
                          f"\"sklearn-mtl[distributed]\" (or pip install {package}).") from None


@contextlib.contextmanager
def data_parallel(accelerator=None):
    """Fit the estimators inside this block data-parallel over accelerate's processes.

    Run the same script in every process (``torchrun --nproc_per_node 2
    script.py`` on CPUs, ``accelerate launch --multi_gpu script.py`` on GPUs,
    or ``accelerate.notebook_launcher``); each process builds the same
    estimator with the same data and calls ``fit`` (or ``partial_fit``) inside
    ``with data_parallel():``. Every process then trains on its slice of each
    batch; the per-task losses of the whole batch are formed across processes
    (masked means stay exact with missing labels and sample weights) and the
    gradients are averaged, so every process ends with the same model: the one
    a single process trains on the same data, up to float summation order.
    ``batch_size`` stays the global batch (the rows of one step over all
    processes). Validation and early stopping run on every process on the whole
    validation set.

    Parameters
    ----------
    accelerator : accelerate.Accelerator, default=None
        The process group to train over; None builds ``Accelerator()`` (which
        reads the launcher's environment). Gradient accumulation and
        accelerate's mixed precision are not supported: use the estimator's
        ``precision='bf16'`` for the latter.

    Yields
    ------
    accelerator : accelerate.Accelerator
        E.g. for ``accelerator.is_main_process`` (save or print once).

    Raises
    ------
    ValueError
        At ``fit`` with more than one process: without an integer
        ``random_state`` (the processes must draw the same initial weights,
        split and batch order), with a gradient-based weighting (``mgda``,
        ``pcgrad``, ...: their per-task gradients would have to be all-reduced
        before they are combined), or when the estimator's ``device`` is not of
        the accelerator's type.

    Notes
    -----
    The fitted estimator is an ordinary one: it predicts, pickles and saves
    outside any process group. Training it further outside ``data_parallel``
    runs in one process.

    Examples
    --------
    Launched with ``torchrun --nproc_per_node 2 fit.py``::

        from sklearn_mtl import MultiTaskRegressorClassifier
        from sklearn_mtl.distributed import data_parallel

        model = MultiTaskRegressorClassifier(random_state=0)
        with data_parallel() as accelerator:
            model.fit(X, Y)
        if accelerator.is_main_process:
            model.save("model.skops")
    """
    accelerate = _require("accelerate", "data_parallel")
    if accelerator is None:
        accelerator = accelerate.Accelerator()
    elif not isinstance(accelerator, accelerate.Accelerator):
        raise TypeError(f"accelerator must be an accelerate.Accelerator (or None to build "
                        f"one); got {type(accelerator).__name__}.")
    if accelerator.gradient_accumulation_steps != 1:
        raise ValueError(
            f"data_parallel does not support gradient accumulation (the accelerator has "
            f"gradient_accumulation_steps={accelerator.gradient_accumulation_steps}); raise "
            "batch_size instead: it is the global batch over all processes.")
    if str(accelerator.mixed_precision) != "no":
        raise ValueError(
            f"data_parallel does not support accelerate's mixed precision "
            f"({accelerator.mixed_precision!r}); build Accelerator(mixed_precision='no') and "
            "pass precision='bf16' to the estimator instead.")
    token = ACTIVE.set(accelerator)
    try:
        yield accelerator
    finally:
        ACTIVE.reset(token)


def _rows_keyed(y):
    """A 2-D dask array ``y`` as a collection whose block ``i`` is keyed ``(name, i)``,
    the key dask-ml's fit asks for (it adds no column-block index for y), the value
    being y's 2-D block ``i`` (all columns)."""
    dask = _require("dask", "Incremental")
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    y = y.rechunk({1: -1})  # all task columns in one block per row chunk
    name = "rows-" + dask.base.tokenize(y)
    layer = {(name, i): (y.name, i, 0) for i in range(len(y.chunks[0]))}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[y])
    # The metadata are the row chunks only: dask-ml reads .chunks[0] and .name.
    return da.Array(graph, name, chunks=(y.chunks[0],), dtype=y.dtype)


def _incremental_base():
    return _require("dask_ml.wrappers", "Incremental").Incremental


def __getattr__(name):
    # Incremental is built on first use: importing this module does not need dask-ml.
    if name == "Incremental":
        cls = _make_incremental()
        globals()["Incremental"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_incremental():
    base = _incremental_base()

    class Incremental(base):
        """``dask_ml.wrappers.Incremental`` that also takes a 2-D dask ``y``.

        Same parameters and behaviour as dask-ml's: ``fit`` calls the estimator's
        ``partial_fit`` on each block of rows in turn (``classes=`` and other
        keyword arguments are passed to every call). dask-ml asks for a 2-D
        ``y``'s blocks by a key without the column-block index, so the estimator
        receives that key instead of the block; here a 2-D dask ``y`` is re-keyed
        first, and each call receives the block's rows of every task column.
        ``predict`` on a dask array then returns a 2-D dask array (dask-ml's
        drops the task axis).
        """

        def _fit_for_estimator(self, estimator, X, y, **fit_kwargs):
            if getattr(y, "ndim", None) == 2 and hasattr(y, "chunks"):
                y = _rows_keyed(y)
            return super()._fit_for_estimator(estimator, X, y, **fit_kwargs)

        def predict(self, X):
            estimator = getattr(self, "estimator_", None)
            if not (hasattr(X, "chunks") and getattr(X, "ndim", 0) == 2
                    and getattr(estimator, "target_format_", None) is not None
                    and estimator.target_format_.container == "array"):
                return super().predict(X)
            X = X.rechunk({1: -1})
            meta = estimator.predict(np.zeros((1, X.shape[1]), dtype=X.dtype))
            return X.map_blocks(estimator.predict, chunks=(X.chunks[0], (meta.shape[1],)),
                                dtype=meta.dtype)

    Incremental.__module__ = __name__
    Incremental.__qualname__ = "Incremental"
    return Incremental
