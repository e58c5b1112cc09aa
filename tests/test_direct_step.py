"""The written-out training step gives the model autograd gives.

Each case fits the same estimator twice: once as it trains by default, once with
the written-out step turned off (autograd through the network); the parameters,
the losses in the history and the predictions must agree to float32 rounding.
Each case also checks that the written-out step really ran (or really did not,
where it must not apply).
"""

import numpy as np
import pytest
import torch

import sklearn_mtl._direct_step as direct_module
import sklearn_mtl._net as net_module
from sklearn_mtl import MultiTaskRegressorClassifier

from .conftest import make_mixed


def _fit(monkeypatch, direct, **params):
    calls = []
    original = direct_module.DirectStep.__call__

    def counted(self, X, y):
        calls.append(X.shape[0])
        return original(self, X, y)

    with monkeypatch.context() as m:
        m.setattr(direct_module.DirectStep, "__call__", counted)
        if not direct:
            m.setattr(net_module.DirectStep, "for_net", classmethod(lambda cls, net: None))
        X, Y = make_mixed(n=240, seed=2, missing=0.25)
        settings = dict(hidden_layer_sizes=(16, 12), head_hidden_sizes=(8,), batch_size=32,
                        max_epochs=3, lr=1e-2, random_state=0, early_stopping=False)
        settings.update(params)
        est = MultiTaskRegressorClassifier(**settings).fit(X, Y)
    return est, X, len(calls)


def _assert_same_model(a, b, X):
    pa = dict(a.net_.module_.named_parameters())
    for name, p in b.net_.module_.named_parameters():
        np.testing.assert_allclose(pa[name].detach().numpy(), p.detach().numpy(),
                                   rtol=2e-5, atol=2e-6, err_msg=name)
    for key in ("train_loss",) + tuple(f"train_loss_{t}" for t in a.task_names_):
        np.testing.assert_allclose(a.history_[:, key], b.history_[:, key], rtol=2e-5)
    np.testing.assert_allclose(a.predict(X)["value"].to_numpy(float),
                               b.predict(X)["value"].to_numpy(float), rtol=1e-4, atol=1e-4)


CASES = {
    "defaults": {},
    "tanh": {"activation": "tanh"},
    "logistic": {"activation": "logistic"},
    "identity": {"activation": "identity"},
    "elu": {"activation": "elu"},
    "leaky_relu": {"activation": "leaky_relu"},
    "dropout": {"dropout": 0.3},
    "l1 and alpha": {"l1": 1e-3, "alpha": 1e-3},
    "no head hidden layer": {"head_hidden_sizes": ()},
    "loss weights": {"loss_weights": {"value": 0.5, "flag": 2.0, "level": 1.0}},
    "uncertainty (learned parameters)": {"weighting": "uncertainty"},
    "dwa": {"weighting": "dwa"},
    "rlw (random weights)": {"weighting": "rlw"},
    "famo (losses after the step)": {"weighting": "famo"},
    **{f"{name} (per-task gradients)": {"weighting": name}
       for name in ("pcgrad", "mgda", "mgda_ub", "cagrad", "imtl", "upgrad", "gradnorm")},
    "pcgrad with dropout and tanh": {"weighting": "pcgrad", "dropout": 0.2,
                                     "activation": "tanh"},
    # Heads scaled by weights other than 1; tiny batches leave tasks without labels.
    "upgrad with loss weights (priors)": {
        "weighting": "upgrad", "loss_weights": {"value": 0.5, "flag": 2.0, "level": 1.0}},
    # One epoch: over 360 steps of batch 2 float32 rounding grows past the tolerance.
    "mgda with absent tasks": {"weighting": "mgda", "batch_size": 2, "max_epochs": 1},
    "running-mean normalisation": {"loss_normalization": "running_mean"},
    "adamw": {"optimizer": "adamw", "alpha": 1e-2},
    "sgd": {"optimizer": "sgd", "lr": 1e-2},
    # The member axis: k members' rows through the shared trunk, k*T heads, adapters.
    "ensemble": {"ensemble_size": 3},
    "ensemble with dropout and tanh": {"ensemble_size": 2, "dropout": 0.3,
                                       "activation": "tanh"},
    "ensemble with learned weights, loss weights and l1": {
        "ensemble_size": 3, "weighting": "uncertainty", "l1": 1e-3,
        "loss_weights": {"value": 0.5, "flag": 2.0, "level": 1.0}},
    "ensemble without a head hidden layer": {"ensemble_size": 2, "head_hidden_sizes": ()},
    "ensemble with absent tasks": {"ensemble_size": 2, "batch_size": 3, "max_epochs": 1},
    "ensemble with famo and running-mean normalisation": {
        "ensemble_size": 2, "weighting": "famo", "loss_normalization": "running_mean"},
    "ensemble with sgd": {"ensemble_size": 2, "optimizer": "sgd"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_written_out_step_equals_autograd(monkeypatch, case):
    fast, X, n_direct = _fit(monkeypatch, True, **CASES[case])
    slow, _, n_slow = _fit(monkeypatch, False, **CASES[case])
    assert n_direct == fast.net_.history[-1, "train_batch_count"] * len(fast.history_)
    assert n_slow == 0
    _assert_same_model(fast, slow, X)


@pytest.mark.parametrize("params", [
    {"weighting": "pcgrad", "loss_normalization": "initial"},
    {"activation": "gelu"},  # no written-out derivative
    {"precision": "bf16"},
    {"feature_embedding": "periodic"},
    {"losses": {"value": torch.nn.L1Loss()}},  # a torch loss callable
], ids=lambda p: next(iter(p)) + "=" + str(next(iter(p.values())))[:12])
def test_other_configurations_keep_the_autograd_step(monkeypatch, params):
    _, _, n_direct = _fit(monkeypatch, True, max_epochs=1, **params)
    assert n_direct == 0


def test_per_batch_callbacks_keep_skorch_loop(monkeypatch):
    from skorch.callbacks import Callback

    class PerBatch(Callback):
        def on_batch_end(self, net, **kwargs):
            pass

    _, _, n_direct = _fit(monkeypatch, True, max_epochs=1, callbacks=[PerBatch()])
    assert n_direct == 0


def test_a_forward_hook_keeps_the_autograd_step():
    X, Y = make_mixed(n=100, seed=0)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), max_epochs=1,
                                       early_stopping=False, random_state=0).fit(X, Y)
    assert direct_module.DirectStep.for_net(est.net_) is not None
    seen = []
    handle = est.net_.module_.trunk.register_forward_hook(lambda *args: seen.append(1))
    try:
        assert direct_module.DirectStep.for_net(est.net_) is None
    finally:
        handle.remove()
    est.net_.module_.trunk.layers[0].weight.requires_grad_(False)  # a frozen parameter
    assert direct_module.DirectStep.for_net(est.net_) is None


def test_a_net_that_computes_its_losses_otherwise_keeps_the_autograd_step(monkeypatch):
    # e.g. the data-parallel net, which reduces the losses across processes there.
    calls = []

    class OwnLosses(net_module.MultiTaskNet):
        def task_losses(self, y_pred, y_true):
            calls.append(1)
            return super().task_losses(y_pred, y_true)

    import sklearn_mtl._data_parallel as data_parallel

    monkeypatch.setattr(data_parallel, "MultiTaskNet", OwnLosses)
    _, _, n_direct = _fit(monkeypatch, True, max_epochs=1)
    assert n_direct == 0 and calls


@pytest.mark.parametrize("member_weights, masked", [(False, True), (True, False), (True, True)],
                         ids=["row masks", "member weights", "both"])
def test_ensemble_step_with_member_weights_and_row_masks_equals_autograd(member_weights,
                                                                         masked):
    # The engine-level member axis of the searches: member m's loss for task t is
    # scaled by W[m, t] and counts only the rows of its mask.
    from sklearn_mtl._ensemble import with_member_masks
    from sklearn_mtl._tasks import encode_targets

    X, Y = make_mixed(n=120, seed=3, missing=0.3)
    est = MultiTaskRegressorClassifier(ensemble_size=3, hidden_layer_sizes=(8,),
                                       head_hidden_sizes=(4,), max_epochs=2, batch_size=32,
                                       random_state=0, early_stopping=False).fit(X, Y)
    net = est.net_
    rng = np.random.default_rng(0)
    if member_weights:
        weights = rng.uniform(0.0, 2.0, size=(3, 3))
        weights[1, 2] = 0.0
        net.set_params(member_weights=weights)
    targets = encode_targets(est.tasks_, [Y[t.name].to_numpy(dtype=object)
                                          for t in est.tasks_])[:50]
    if masked:
        targets = with_member_masks(targets, (rng.random((50, 3)) < 0.6).astype(np.float32))
    X_t = torch.from_numpy(X[:50].astype(np.float32))
    y_t = torch.from_numpy(targets.astype(np.float32))
    module = net.module_.train()
    for p in module.parameters():
        p.grad = None
    net.get_loss(net.infer(X_t), y_t, training=True).backward()
    expected = {name: p.grad.clone() for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None
    step = direct_module.DirectStep.for_net(net)
    assert step is not None
    step(X_t, y_t)
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)
