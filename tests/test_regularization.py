"""The L1 penalty (a loss term on the weights, not the biases) and the lr schedules."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier


def data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    Y = pd.DataFrame({"value": X[:, 0] - X[:, 1] + 0.1 * rng.standard_normal(n),
                      "flag": (X[:, 2] > 0).astype(int)})
    return X, Y


def hand_l1(module):
    """sum(|w|) over the weights, listed by hand for the default network: the trunk's
    two Linear layers and the heads' two TaskParallelLinear layers."""
    trunk = [module.trunk.layers[0].weight, module.trunk.layers[2].weight]
    heads = [module.heads.layers[0].weight, module.heads.layers[2].weight]
    return float(sum(w.detach().abs().sum() for w in trunk + heads))


def test_the_l1_term_is_the_hand_computed_penalty():
    X, Y = data()
    est = MultiTaskRegressorClassifier(l1=0.01, max_epochs=1, random_state=0).fit(X, Y)
    net = est.net_
    assert hand_l1(net.module_) == pytest.approx(float(net.l1_penalty()), rel=1e-6)
    batch = torch.from_numpy(X[:32])
    from sklearn_mtl._tasks import encode_targets

    targets = torch.from_numpy(encode_targets(est.tasks_, [Y[c].to_numpy() for c in Y])[:32])
    net.module_.train()
    y_pred = net.module_(batch)
    with_l1 = float(net.get_loss(y_pred, targets, training=True))
    net.l1 = 0.0
    without = float(net.get_loss(y_pred, targets, training=True))
    assert with_l1 - without == pytest.approx(0.01 * hand_l1(net.module_), rel=1e-5)


def test_the_l1_gradient_is_its_sign_on_weights_and_zero_on_biases():
    X, Y = data()
    est = MultiTaskRegressor(l1=0.1, max_epochs=1, random_state=0).fit(X, Y[["value"]])
    net = est.net_
    net.module_.zero_grad()
    (net.l1 * net.l1_penalty()).backward()
    for name, p in net.module_.named_parameters():
        if name.endswith("bias"):
            assert p.grad is None or not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, 0.1 * torch.sign(p.detach()))


def test_l1_drives_the_weights_of_noise_features_towards_zero():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 6)).astype(np.float32)
    y = X[:, 0] + 0.05 * rng.standard_normal(600)

    def noise_weight(l1):
        est = MultiTaskRegressor(l1=l1, max_epochs=60, early_stopping=False, batch_size=64,
                                 lr=1e-3, random_state=0).fit(X, y)
        first = est.net_.module_.trunk.layers[0].weight.detach().abs()
        return float(first[:, 1:].sum() / first[:, :1].sum())

    assert noise_weight(1e-3) < 0.5 * noise_weight(0.0)


def test_l1_is_searchable_and_validated():
    X, Y = data(n=120)
    search = GridSearchCV(MultiTaskRegressor(max_epochs=2), {"l1": [0.0, 1e-3]}, cv=2)
    search.fit(X, Y[["value"]])
    assert set(search.cv_results_["param_l1"]) == {0.0, 1e-3}
    with pytest.raises(ValueError, match="'l1' parameter"):
        MultiTaskRegressor(l1=-1.0).fit(X, Y[["value"]])


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_lr_schedules_change_the_learning_rate(schedule):
    X, Y = data()
    est = MultiTaskRegressorClassifier(lr_schedule=schedule, lr=0.01, max_epochs=30,
                                       patience=3, early_stopping=False, random_state=0)
    est.fit(X, Y)
    lrs = [group["lr"] for group in est.net_.optimizer_.param_groups]
    if schedule == "cosine":
        # After all 30 epochs of a 30-epoch cosine the lr is (close to) zero.
        assert max(lrs) < 1e-4
    else:
        assert max(lrs) < 0.01  # halved at least once on a training-loss plateau
    assert est.lr == 0.01  # the parameter is not touched


def test_no_schedule_keeps_the_learning_rate():
    X, Y = data()
    est = MultiTaskRegressorClassifier(lr=0.01, max_epochs=5, random_state=0).fit(X, Y)
    assert all(g["lr"] == 0.01 for g in est.net_.optimizer_.param_groups)
    with pytest.raises(ValueError, match="'lr_schedule' parameter"):
        MultiTaskRegressorClassifier(lr_schedule="step").fit(X, Y)
