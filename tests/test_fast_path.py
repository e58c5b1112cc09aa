"""The training fast path computes the same model as a straightforward loop.

The fast path (batches sliced from chunks of one permutation, no per-batch
host synchronisation or callback dispatch, one-group fused Adam, batched
heads) must give the parameters that a plain loop over the same batches gives,
and the same history as skorch's own per-batch loop. No timing here: speed is
measured by ``benchmarks/``.
"""

import copy
import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

import sklearn_mtl._net as net_module
from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl._net import BatchIterator, TensorTable

from .conftest import make_mixed


class _Capture(Callback):
    """Keeps the initial parameters and the training table of a fit."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.initial = copy.deepcopy(net.module_.state_dict())
        self.table = X

    def on_epoch_begin(self, net, **kwargs):
        self.threads = torch.get_num_threads()


class _PerBatch(Callback):
    """Listens to batches: forces skorch's own per-batch loop."""

    def on_batch_end(self, net, **kwargs):
        pass


def _fit(batch_size=32, callbacks=(), **params):
    X, Y = make_mixed(n=250, seed=3, missing=0.2)
    capture = _Capture()
    est = MultiTaskRegressorClassifier(
        hidden_layer_sizes=(16, 16), head_hidden_sizes=(8,), batch_size=batch_size,
        max_epochs=1, lr=1e-2, random_state=0, callbacks=[capture, *callbacks],
        early_stopping=False, **params)
    est.fit(X, Y)
    # The estimator copies its callbacks: read the copy the net used.
    used = next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, _Capture))
    return est, used


def _reference_epoch(est, capture, batch_size):
    """One epoch of the plain loop: same initial weights, same permutation, plain
    (non-fused) Adam, the static weighted sum of the masked task losses."""
    net = est.net_
    module = copy.deepcopy(net.module_)
    module.load_state_dict(capture.initial)
    module.train()
    criterion = net.criterion_
    weights = net.weighting_.static_weights
    optimizer = torch.optim.Adam(module.parameters(), lr=est.lr)
    X, y = capture.table.X, capture.table.y
    generator = torch.Generator().manual_seed(int(net.iterator_train__seed))
    order = torch.randperm(X.shape[0], generator=generator)
    batch_losses, sizes, num, den_sum = [], [], 0.0, 0.0
    for start in range(0, X.shape[0], batch_size):
        idx = order[start:start + batch_size]
        losses, den = criterion(module(X[idx]), y[idx])
        num, den_sum = num + (losses * den).detach(), den_sum + den
        present = den > 0
        loss = (torch.where(present, weights, 0.0) * torch.where(present, losses, 0.0)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batch_losses.append(loss.item())
        sizes.append(len(idx))
    return module, float(np.average(batch_losses, weights=sizes)), (num / den_sum).numpy()


@pytest.mark.parametrize("batch_size", [32, 100])
def test_one_epoch_matches_reference_loop(batch_size):
    est, capture = _fit(batch_size)
    reference, train_loss, task_losses = _reference_epoch(est, capture, batch_size)
    fast = dict(est.net_.module_.named_parameters())
    for name, param in reference.named_parameters():
        np.testing.assert_allclose(fast[name].detach().numpy(), param.detach().numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
    assert est.history_[-1, "train_loss"] == pytest.approx(train_loss, rel=1e-5)
    # Per-task epoch losses: label-weighted means over the batches, from device sums.
    for t, name in enumerate(est.task_names_):
        assert est.history_[-1, f"train_loss_{name}"] == pytest.approx(task_losses[t],
                                                                        rel=1e-5)


def test_fast_path_history_matches_skorch_loop():
    fast, _ = _fit(validation_fraction=0.2)
    slow, _ = _fit(validation_fraction=0.2, callbacks=[_PerBatch()])
    for a, b in zip(fast.history_, slow.history_):
        assert set(a) == set(b)
        for key in a:
            if key in ("dur", "batches"):
                continue
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
        assert len(a["batches"]) == len(b["batches"])
        for row_a, row_b in zip(a["batches"], b["batches"]):
            assert set(row_a) == set(row_b)
            for key in row_a:
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-5), key
    for name in fast.task_names_:
        assert f"train_loss_{name}" in fast.history_[-1]
        assert f"valid_loss_{name}" in fast.history_[-1]
        assert f"weight_{name}" in fast.history_[-1]
    fast_params = dict(fast.net_.module_.named_parameters())
    for name, param in slow.net_.module_.named_parameters():
        np.testing.assert_allclose(fast_params[name].detach().numpy(),
                                   param.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_early_stopping_and_print_log_work_on_fast_path(capsys):
    X, Y = make_mixed(n=200, seed=1)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), max_epochs=40, patience=2,
                                       early_stopping=True, lr=0.05, random_state=0,
                                       verbose=1)
    est.fit(X, Y)
    out = capsys.readouterr().out
    assert "valid_loss" in out and "train_loss" in out
    assert "valid_loss_best" in est.history_[-1]
    assert len(est.history_) == est.n_epochs_


def test_threads_scoped_to_fit():
    torch.set_num_threads(2)
    try:
        est, capture = _fit()
        assert capture.threads == 1  # a small network trains on one thread
        assert torch.get_num_threads() == 2  # and the caller's setting is back
        est.net_.set_params(n_threads=None)
        est.net_.partial_fit(capture.table, None, epochs=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_batch_iterator_batches_are_slices_of_one_permutation(monkeypatch):
    # Tiny chunks: batches must still be exactly order[i:i + batch_size].
    monkeypatch.setattr(net_module, "_HOST_CHUNK_BYTES", 200)
    X = torch.arange(103 * 3, dtype=torch.float32).reshape(103, 3)
    y = torch.arange(103, dtype=torch.float32).reshape(103, 1)
    rows = torch.randperm(103, generator=torch.Generator().manual_seed(5))[:77]
    for table, n in ((TensorTable(X, y), 103), (TensorTable(X, y, rows=rows), 77)):
        it = BatchIterator(table, batch_size=10, shuffle=True, seed=7)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(7))
        if table.rows is not None:
            order = table.rows[order]
        batches = list(it)
        assert len(batches) == len(it) == (n + 9) // 10
        assert all(len(xb) == 10 for xb, _ in batches[:-1])
        torch.testing.assert_close(torch.cat([xb for xb, _ in batches]), X[order])
        torch.testing.assert_close(torch.cat([yb for _, yb in batches]), y[order])
        plain = torch.cat([xb for xb, _ in BatchIterator(table, batch_size=10)])
        torch.testing.assert_close(plain, X if table.rows is None else X[rows])


def test_precision_and_compile_are_validated():
    X, Y = make_mixed(n=40)
    with pytest.raises(ValueError, match="The 'precision' parameter .* must be a str among"):
        MultiTaskRegressorClassifier(precision="fp16", max_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="The 'compile' parameter .* must be an instance of 'bool'"):
        MultiTaskRegressorClassifier(compile="yes", max_epochs=1).fit(X, Y)


def test_bf16_autocast_trains_and_predicts():
    X, Y = make_mixed(n=120)
    est = MultiTaskRegressorClassifier(precision="bf16", hidden_layer_sizes=(8,), max_epochs=2,
                                       random_state=0).fit(X, Y)
    assert est.net_.precision == "bf16"
    pred = est.predict(X)
    assert np.isfinite(pred["value"].to_numpy(float)).all()
    assert np.isfinite(est.history_[-1, "train_loss"])


def test_compile_wiring_keeps_module_plain():
    est, capture = _fit()
    net = est.net_
    # The eager backend keeps this test fast; compile=True on the estimator uses the
    # default backend. (Setting compile re-initialises the module, as in skorch.)
    net.set_params(compile=True, compile__backend="eager")
    net.partial_fit(capture.table, None, epochs=1)
    assert np.isfinite(net.history[-1, "train_loss"])
    compiled = net._compiled_module()
    assert compiled is not net.module_
    assert type(net.module_).__name__ == "MultiTaskModule"
    assert not any(k.startswith("_orig_mod") for k in net.module_.state_dict())
    assert net.infer(capture.table.X[:3]).shape[0] == 3
    clone = pickle.loads(pickle.dumps(net))
    assert "_compiled" not in clone.__dict__
    assert clone.infer(capture.table.X[:3]).shape[0] == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_resident_and_host_copies_give_the_same_model(monkeypatch):
    X, Y = make_mixed(n=300, seed=2, missing=0.1)
    params = {"hidden_layer_sizes": (16,), "max_epochs": 2, "batch_size": 32,
              "random_state": 0, "device": "cuda", "validation_fraction": 0.2}
    resident = MultiTaskRegressorClassifier(**params).fit(X, Y)
    monkeypatch.setattr(MultiTaskRegressorClassifier, "_data_device",
                        staticmethod(lambda X_t, y_t, device: "cpu"))
    copied = MultiTaskRegressorClassifier(**params).fit(X, Y)
    for (name, a), (_, b) in zip(resident.net_.module_.named_parameters(),
                                 copied.net_.module_.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    for task, proba in resident.predict_proba(X).items():
        np.testing.assert_allclose(proba, copied.predict_proba(X)[task], atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_data_stay_on_the_device():
    X, Y = make_mixed(n=200)
    capture = _Capture()
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), max_epochs=1, device="cuda",
                                       callbacks=[capture], precision="bf16").fit(X, Y)
    used = next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, _Capture))
    assert used.table.X.is_cuda and used.table.y.is_cuda
    assert np.isfinite(est.history_[-1, "train_loss"])
