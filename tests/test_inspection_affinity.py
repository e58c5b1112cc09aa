"""Task affinity: the lookahead and the gradient cosine against hand computations."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl.callbacks import TaskAffinity
from sklearn_mtl.inspection import task_affinity

from .conftest import make_mixed


class LinearTrunk(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, X):
        return self.linear(X)


class Capture(Callback):
    """Keeps the network and the batch of every step it is called on (before the step)."""

    every = 1

    def initialize(self):
        self.states_, self.batches_ = [], []
        return self

    def on_step(self, net, batch, step):
        self.states_.append(copy.deepcopy(net.module_.state_dict()))
        self.batches_.append(tuple(t.clone() for t in batch))


def _linear_problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    Y = pd.DataFrame({"a": X[:, 0] + 0.5 * X[:, 1], "b": X[:, 0] - 0.2 * X[:, 2],
                      "c": X[:, 2] + 0.1 * rng.normal(size=n)})
    Y.loc[rng.random(n) < 0.3, "c"] = np.nan  # missing labels are masked
    return X, Y


def _fit(method, batch_size, lr=0.2, average="loss", seed=0):
    X, Y = _linear_problem()
    est = MultiTaskRegressor(module=LinearTrunk(), head_hidden_sizes=(), optimizer="sgd",
                             early_stopping=False,
                             lr=lr, batch_size=batch_size, max_epochs=1, random_state=seed,
                             callbacks=[Capture(), TaskAffinity(method=method, every=1,
                                                                average=average)])
    est.fit(X, Y)
    capture = next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, Capture))
    return est, X, Y, capture


def _hand_losses(state, X, Y, W=None, b=None):
    """Each task's mean squared error on its observed rows, by hand (float64), with the
    trunk's weights W, b (default: the captured ones)."""
    W = state["trunk.linear.weight"].double() if W is None else W
    b = state["trunk.linear.bias"].double() if b is None else b
    Wh = state["heads.layers.0.weight"].double()[:, :, 0]  # (2, T)
    bh = state["heads.layers.0.bias"].double()[:, 0]  # (T,)
    z = torch.as_tensor(X, dtype=torch.float64) @ W.T + b
    pred = z @ Wh + bh
    losses = []
    for t, name in enumerate(Y.columns):
        y = torch.tensor(Y[name].to_numpy(float))
        seen = ~torch.isnan(y)
        losses.append(((pred[seen, t] - y[seen]) ** 2).mean())
    return torch.stack(losses)


def _standardised(Y, rows):
    # The estimator trains on standardised targets (its StandardScaler, fitted on all rows).
    Z = (Y - Y.mean()) / Y.std(ddof=0)
    return Z.iloc[rows].reset_index(drop=True)


def _hand_step(state, Xb, Zb, lr):
    """(losses (T,), lookahead (T, T), gradients (T, P)) of one step, by hand."""
    W = state["trunk.linear.weight"].double().clone().requires_grad_(True)
    b = state["trunk.linear.bias"].double().clone().requires_grad_(True)
    losses = _hand_losses(state, Xb, Zb, W, b)
    T = len(losses)
    grads = []
    for t in range(T):
        gW, gb = torch.autograd.grad(losses[t], (W, b), retain_graph=True)
        grads.append((gW, gb))
    A = torch.zeros((T, T), dtype=torch.float64)
    with torch.no_grad():
        for i, (gW, gb) in enumerate(grads):
            moved = _hand_losses(state, Xb, Zb, W - lr * gW, b - lr * gb)
            A[i] = 1 - moved / losses
    G = torch.stack([torch.cat([gW.reshape(-1), gb]) for gW, gb in grads])
    return losses.detach(), A, G


def test_lookahead_matches_a_hand_computation_on_one_step():
    est, X, Y, capture = _fit("lookahead", batch_size=40)
    assert len(capture.states_) == 1
    Z = _standardised(Y, np.arange(len(X)))  # one batch: every row (the first shuffle)
    order = capture.batches_[0][0].numpy()
    rows = [int(np.flatnonzero((X == row).all(1))[0]) for row in order]
    _, A, _ = _hand_step(capture.states_[0], X[rows], Z.iloc[rows].reset_index(drop=True), 0.2)
    got = est.task_affinity_
    assert list(got.index) == ["a", "b", "c"] and list(got.columns) == ["a", "b", "c"]
    assert got.index.name == "source" and got.columns.name == "target"
    np.testing.assert_allclose(got.to_numpy(), A.numpy(), rtol=2e-4, atol=1e-6)
    assert got.attrs["n_steps"] == 1 and got.attrs["method"] == "lookahead"


@pytest.mark.parametrize("average", ["loss", "uniform"])
def test_lookahead_over_several_steps_is_the_documented_average(average):
    est, X, Y, capture = _fit("lookahead", batch_size=10, average=average)
    assert len(capture.states_) == 4  # 40 rows, batches of 10
    Z = _standardised(Y, np.arange(len(X)))
    weighted, weights, plain = 0, 0, 0
    for state, (Xb, _) in zip(capture.states_, capture.batches_):
        rows = [int(np.flatnonzero((X == row).all(1))[0]) for row in Xb.numpy()]
        Zb = Z.iloc[rows].reset_index(drop=True)
        losses, A, _ = _hand_step(state, X[rows], Zb, 0.2)
        if torch.isnan(losses).any():
            pytest.skip("a batch without labels of c; the seed gives none")
        w = losses[:, None] * losses[None, :]
        weighted, weights, plain = weighted + w * A, weights + w, plain + A
    expected = weighted / weights if average == "loss" else plain / 4
    np.testing.assert_allclose(est.task_affinity_.to_numpy(), expected.numpy(),
                               rtol=2e-4, atol=1e-6)


def test_gradient_cosine_matches_cosine_similarity_of_separate_gradients():
    X, Y = make_mixed(n=120, seed=4, missing=0.2)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(16, 8), batch_size=120,
                                       max_epochs=1, random_state=0,
                                       callbacks=[Capture(), TaskAffinity("gradient_cosine",
                                                                          every=1)]).fit(X, Y)
    capture = next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, Capture))
    module = copy.deepcopy(est.net_.module_)
    module.load_state_dict(capture.states_[0])
    module.eval()
    Xb, yb = capture.batches_[0]
    shared = list(module.trunk.parameters())
    grads = []
    for t in range(3):  # one full backward pass per task, from scratch
        losses, _ = est.net_.criterion_(module(Xb), yb)
        g = torch.autograd.grad(losses[t], shared)
        grads.append(torch.cat([x.reshape(-1) for x in g]))
    expected = np.array([[F.cosine_similarity(grads[i], grads[j], dim=0).item()
                          for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(est.task_affinity_.to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_recording_leaves_the_fit_unchanged_and_records_every_kth_step():
    X, Y = make_mixed(n=200)
    params = dict(hidden_layer_sizes=(8,), batch_size=20, max_epochs=2, random_state=0)
    plain = MultiTaskRegressorClassifier(**params).fit(X, Y)
    recorder = TaskAffinity(every=7)
    recorded = MultiTaskRegressorClassifier(**params, callbacks=[recorder]).fit(X, Y)
    for (name, a), (_, b) in zip(plain.net_.module_.state_dict().items(),
                                 recorded.net_.module_.state_dict().items()):
        assert torch.equal(a, b), name
    assert recorded.task_affinity_.attrs["n_steps"] == 3  # steps 0, 7, 14 of 20
    assert not hasattr(recorder, "sums_")  # the callback passed in is not the one fitted
    assert recorded.net_._fast_epoch_ok()


def test_task_affinity_clones_and_reaches_into_pipelines():
    X, Y = make_mixed(n=150)
    inner = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), max_epochs=2,
                                         callbacks=[TaskAffinity("gradient_cosine", every=3)])
    pipe = make_pipeline(StandardScaler(), inner)
    user_callbacks = inner.callbacks
    got = task_affinity(pipe, X, Y, method="lookahead", every=2, random_state=0)
    assert got.attrs["method"] == "lookahead"  # ours, not the estimator's own
    assert got.shape == (3, 3) and np.isfinite(got.to_numpy()).all()
    assert np.all(np.diag(got.to_numpy()) > 0)  # a step for a task lowers its own loss
    assert inner.callbacks is user_callbacks and len(user_callbacks) == 1
    assert not hasattr(inner, "net_")
    again = task_affinity(pipe, X, Y, method="lookahead", every=2, random_state=0)
    pd.testing.assert_frame_equal(got, again)
    cosine = task_affinity(inner, X, Y, method="gradient_cosine", random_state=0)
    assert (np.diag(cosine.to_numpy()) == 1.0).all()
    np.testing.assert_allclose(cosine.to_numpy(), cosine.to_numpy().T, atol=1e-12)
    assert cosine.to_numpy().min() >= -1 - 1e-9 and cosine.to_numpy().max() <= 1 + 1e-9


def test_errors():
    X, Y = make_mixed(n=60)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=1)
    with pytest.raises(ValueError, match="method must be one of"):
        task_affinity(est, X, Y, method="tag")
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        task_affinity(est, X, Y, every=0)
    with pytest.raises(ValueError, match="average must be one of"):
        task_affinity(est, X, Y, average="median")
    with pytest.raises(ValueError, match="every must be an integer"):
        est.set_params(callbacks=[TaskAffinity(every=2.5)]).fit(X, Y)
    soft = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=1,
                                        architecture="soft")
    with pytest.raises(ValueError, match="shares none"):
        task_affinity(soft, X, Y)
    with pytest.raises(AttributeError, match="recorded nothing"):
        TaskAffinity().initialize().affinity_


def test_the_vectorised_lookahead_equals_the_one_by_one_one(monkeypatch):
    from sklearn_mtl import callbacks

    X, Y = make_mixed(n=150, missing=0.2)
    params = dict(hidden_layer_sizes=(8,), batch_size=30, max_epochs=2, random_state=0)

    def affinity():
        return MultiTaskRegressorClassifier(
            **params, callbacks=[TaskAffinity(every=2)]).fit(X, Y).task_affinity_

    vectorised = affinity()
    monkeypatch.setattr(callbacks, "_batched_losses", lambda *args: None)
    one_by_one = affinity()
    np.testing.assert_allclose(vectorised.to_numpy(), one_by_one.to_numpy(), rtol=1e-4,
                               atol=1e-7)


class GuardedTrunk(torch.nn.Module):
    """A trunk with data-dependent Python control flow, which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 4)

    def forward(self, X):
        out = self.linear(X)
        if float(out.detach().abs().max()) > 1e6:
            out = out.clamp(-1e6, 1e6)
        return out


def test_a_trunk_vmap_cannot_batch_falls_back_to_one_by_one():
    X, Y = make_mixed(n=120)
    est = MultiTaskRegressorClassifier(module=GuardedTrunk(), max_epochs=2, random_state=0,
                                       callbacks=[TaskAffinity(every=2)]).fit(X, Y)
    recorder = next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, TaskAffinity))
    assert recorder._vectorised is False
    assert np.isfinite(est.task_affinity_.to_numpy()).all()
    assert (np.diag(est.task_affinity_.to_numpy()) > 0).all()
