"""Small-scale checks of the memory contract: a fit holds no hidden copy of X.

The 1,000,000 x 100 peak-memory measurement is in ``benchmarks/`` (it takes
a subprocess and most of a minute); these checks pin the mechanisms it relies on.
"""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

import sklearn_mtl._net as net_module
from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl._net import BatchIterator, TensorTable

from .conftest import make_mixed


class _Table(Callback):
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.table = X
        self.valid = net.train_split(X)[1] if net.train_split else None


def _training_table(X, Y, **params):
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=1, random_state=0,
                                       callbacks=[_Table()], **params).fit(X, Y)
    return next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, _Table))


@pytest.mark.parametrize("validation_fraction", [None, 0.25])
def test_float32_X_is_trained_on_in_place(validation_fraction):
    X, Y = make_mixed(n=120)
    X = np.ascontiguousarray(X, dtype=np.float32)
    seen = _training_table(X, Y, validation_fraction=validation_fraction)
    # The training table is the caller's memory: no float32 copy, no float64 copy.
    assert seen.table.X.dtype == torch.float32
    assert seen.table.X.data_ptr() == X.ctypes.data
    if validation_fraction:
        # Train and validation rows are index sets into the same table.
        assert seen.valid.X.data_ptr() == X.ctypes.data
        assert len(seen.table) + len(seen.valid) == X.shape[0]
        assert set(seen.table.rows.tolist()).isdisjoint(seen.valid.rows.tolist())


def test_float64_X_becomes_one_float32_table():
    X, Y = make_mixed(n=60)
    seen = _training_table(np.asarray(X, dtype=np.float64), Y)
    assert seen.table.X.dtype == torch.float32
    assert seen.table.y.dtype == torch.float32


def test_shuffle_gathers_bounded_chunks(monkeypatch):
    # The shuffled pass never gathers more than one chunk of rows at a time.
    monkeypatch.setattr(net_module, "_HOST_CHUNK_BYTES", 4096)
    X = torch.zeros(1000, 8)
    y = torch.zeros(1000, 2)
    largest = []
    real = BatchIterator._take

    def spy(self, tensor, idx, start, stop, transfer):
        out = real(self, tensor, idx, start, stop, transfer)
        largest.append(out.shape[0])
        return out

    monkeypatch.setattr(BatchIterator, "_take", spy)
    batches = list(BatchIterator(TensorTable(X, y), batch_size=16, shuffle=True, seed=0))
    assert sum(len(b[0]) for b in batches) == 1000
    row_bytes = (8 + 2) * 4
    assert max(largest) <= max(16, 4096 // row_bytes)
