"""The masked per-task losses against hand computation, and the masking invariants."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sklearn_mtl._losses import MultiTaskLoss
from sklearn_mtl._modules import MLPTrunk, MultiTaskModule, TaskHeads
from sklearn_mtl.weighting.static import Static

KINDS = ["regression", "binary", "multiclass", "regression"]
LOSSES = ["mse", "bce", "cross_entropy", "huber"]
N_OUT = [1, 1, 3, 1]


def _setup(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    X = torch.randn(n, 5, generator=g)
    trunk = MLPTrunk(5, (8,))
    heads = TaskHeads(trunk.out_features, N_OUT, (4,))
    module = MultiTaskModule(trunk, heads)
    criterion = MultiTaskLoss(KINDS, LOSSES, N_OUT, heads.max_out)
    labels = torch.stack([
        torch.randn(n, generator=g),
        torch.randint(0, 2, (n,), generator=g).float(),
        torch.randint(0, 3, (n,), generator=g).float(),
        torch.randn(n, generator=g),
    ], 1)
    weights = torch.ones(n, 4)
    weights[::3, 0] = 0.0  # missing regression labels
    weights[1::4, 2] = 0.0  # missing multiclass labels
    return module, criterion, X, labels, weights


def _hand_losses(out, labels, weights, stride):
    """Each task's mean loss over its observed rows, with torch's reduced losses."""
    obs = [weights[:, t] > 0 for t in range(4)]
    mse = F.mse_loss(out[obs[0], 0], labels[obs[0], 0])
    bce = F.binary_cross_entropy_with_logits(out[obs[1], stride], labels[obs[1], 1])
    ce = F.cross_entropy(out[obs[2], 2 * stride:2 * stride + 3], labels[obs[2], 2].long())
    huber = F.huber_loss(out[obs[3], 3 * stride], labels[obs[3], 3])
    return torch.stack([mse, bce, ce, huber])


def test_per_task_losses_match_torch_reduced_losses():
    module, criterion, X, labels, weights = _setup()
    out = module(X)
    losses, den = criterion(out, torch.cat([labels, weights], 1))
    expected = _hand_losses(out, labels, weights, module.heads.max_out)
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(den, weights.sum(0))


def test_masked_labels_change_neither_loss_nor_any_gradient():
    module, criterion, X, labels, weights = _setup()
    changed = labels.clone()
    masked = weights == 0
    changed[masked] = torch.where(
        torch.arange(4).expand_as(labels)[masked] == 2, 1.0, 1e6)  # wild but valid values
    results = []
    for lab in (labels, changed):
        module.zero_grad()
        losses, _ = criterion(module(X), torch.cat([lab, weights], 1))
        losses.sum().backward()
        results.append((losses.detach(), [p.grad.clone() for p in module.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1, rtol=0, atol=0)


def test_nan_in_a_masked_label_does_not_leak():
    module, criterion, X, labels, weights = _setup()
    labels = labels.clone()
    labels[weights[:, 0] == 0, 0] = float("nan")
    losses, _ = criterion(module(X), torch.cat([labels, weights], 1))
    assert torch.isfinite(losses).all()


def test_zero_weight_task_gets_zero_head_gradient_and_total_is_weighted_sum():
    module, criterion, X, labels, weights = _setup()
    static = np.array([1.0, 0.0, 0.5, 2.0], dtype=np.float32)
    state = Static().build(static)
    out = module(X)
    losses, den = criterion(out, torch.cat([labels, weights], 1))
    total = state.combine(losses, den > 0).loss
    hand = _hand_losses(out, labels, weights, module.heads.max_out)
    torch.testing.assert_close(total, (torch.from_numpy(static) * hand).sum())
    total.backward()
    for layer in module.heads.layers:
        if hasattr(layer, "weight"):
            assert torch.count_nonzero(layer.weight.grad[:, 1, :]) == 0
            assert torch.count_nonzero(layer.bias.grad[1]) == 0
            assert torch.count_nonzero(layer.weight.grad[:, 0, :]) > 0


def test_task_without_labels_in_batch_contributes_nothing():
    module, criterion, X, labels, weights = _setup()
    weights = weights.clone()
    weights[:, 1] = 0.0
    out = module(X)
    losses, den = criterion(out, torch.cat([labels, weights], 1))
    assert den[1] == 0 and losses[1] == 0
    total = Static().build(np.ones(4, dtype=np.float32)).combine(losses, den > 0).loss
    assert torch.isfinite(total)


def test_sample_weights_are_a_weighted_mean():
    module, criterion, X, labels, weights = _setup()
    w = torch.rand(X.shape[0], generator=torch.Generator().manual_seed(3))
    out = module(X)
    losses, _ = criterion(out, torch.cat([labels, weights * w[:, None]], 1))
    obs = weights[:, 0] > 0
    err = (out[obs, 0] - labels[obs, 0]) ** 2
    torch.testing.assert_close(losses[0], (w[obs] * err).sum() / w[obs].sum())


def test_zero_sample_weight_equals_dropping_the_row():
    module, criterion, X, labels, weights = _setup()
    w = torch.ones(X.shape[0])
    w[[2, 5]] = 0.0
    keep = w > 0
    grads = []
    for Xi, lab, wt in ((X, labels, weights * w[:, None]), (X[keep], labels[keep], weights[keep])):
        module.zero_grad()
        losses, _ = criterion(module(Xi), torch.cat([lab, wt], 1))
        losses.sum().backward()
        grads.append((losses.detach(), [p.grad.clone() for p in module.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name, fn", [
    ("mae", lambda p, y: (p - y).abs()),
    ("poisson", lambda p, y: torch.exp(p) - y * p),
])
def test_other_regression_losses(name, fn):
    torch.manual_seed(0)
    out = torch.randn(10, 1)
    y = torch.rand(10, 1) * 3
    crit = MultiTaskLoss(["regression"], [name], [1], 1)
    losses, _ = crit(out, torch.cat([y, torch.ones(10, 1)], 1))
    torch.testing.assert_close(losses[0], fn(out, y).mean())


def test_hinge_losses():
    out = torch.tensor([[2.0], [0.5], [-0.3]])
    y = torch.tensor([[1.0], [0.0], [0.0]])
    crit = MultiTaskLoss(["binary"], ["hinge"], [1], 1)
    losses, _ = crit(out, torch.cat([y, torch.ones(3, 1)], 1))
    # margins: 1-2 -> 0 ; 1+0.5 -> 1.5 ; 1-0.3 -> 0.7
    torch.testing.assert_close(losses[0], torch.tensor((0 + 1.5 + 0.7) / 3))


def test_torch_loss_module_gets_rowwise_weights():
    torch.manual_seed(1)
    out = torch.randn(8, 1)
    y = torch.randn(8, 1)
    w = torch.tensor([1, 0, 2, 1, 0, 1, 1, 3], dtype=torch.float32)[:, None]
    crit = MultiTaskLoss(["regression"], [torch.nn.SmoothL1Loss()], [1], 1)
    losses, _ = crit(out, torch.cat([y, w], 1))
    expected = (w * F.smooth_l1_loss(out, y, reduction="none")).sum() / w.sum()
    torch.testing.assert_close(losses[0], expected)


def test_plain_callable_is_called_on_observed_rows():
    seen = {}

    def loss(pred, target):
        seen["n"] = pred.shape[0]
        return ((pred - target) ** 4).mean()

    out = torch.randn(6, 1)
    y = torch.randn(6, 1)
    w = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.float32)[:, None]
    losses, _ = MultiTaskLoss(["regression"], [loss], [1], 1)(out, torch.cat([y, w], 1))
    keep = w[:, 0] > 0
    assert seen["n"] == 4
    torch.testing.assert_close(losses[0], ((out[keep] - y[keep]) ** 4).mean())


def test_grouped_tasks_equal_one_by_one():
    torch.manual_seed(2)
    out = torch.randn(9, 3)
    lab = torch.randn(9, 3)
    w = (torch.rand(9, 3) > 0.3).float()
    grouped = MultiTaskLoss(["regression"] * 3, ["mse", "mae", "mse"], [1, 1, 1], 1)
    losses, _ = grouped(out, torch.cat([lab, w], 1))
    for t, name in enumerate(["mse", "mae", "mse"]):
        single = MultiTaskLoss(["regression"], [name], [1], 1)
        expected, _ = single(out[:, t:t + 1], torch.cat([lab[:, t:t + 1], w[:, t:t + 1]], 1))
        torch.testing.assert_close(losses[t], expected[0])


# The closed-form node (one autograd node for every task's loss) against autograd
# through the element losses: same values, same gradients, for every loss with a
# closed-form derivative, tasks in any order, padded outputs, missing labels,
# fractional weights and non-finite values at masked entries.
_CLOSED_FORM_CASES = {
    "regression losses": (["regression"] * 4, ["mse", "mae", "huber", "poisson"], [1, 1, 1, 1]),
    "binary losses": (["binary", "binary"], ["bce", "hinge"], [1, 1]),
    "interleaved, padded": (["binary", "multiclass", "regression", "binary", "multiclass"],
                            ["bce", "cross_entropy", "mse", "hinge", "cross_entropy"],
                            [1, 4, 1, 1, 3]),
}


def _closed_form_inputs(kinds, n_out, seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    stride = max(n_out)
    y_pred = torch.randn(n, len(kinds) * stride, generator=g, dtype=torch.float64)
    cols = []
    for kind, k in zip(kinds, n_out):
        if kind == "regression":
            cols.append(torch.randn(n, generator=g, dtype=torch.float64).abs())
        else:
            cols.append(torch.randint(0, max(k, 2), (n,), generator=g).double())
    labels = torch.stack(cols, 1)
    weights = torch.rand(n, len(kinds), generator=g, dtype=torch.float64) + 0.5
    weights[torch.rand(n, len(kinds), generator=g) < 0.3] = 0.0
    # Wild but valid values at masked entries: they must not matter.
    wild = torch.tensor([1e6 if kind == "regression" else 1.0 for kind in kinds],
                        dtype=torch.float64).expand_as(labels)
    labels = torch.where(weights > 0, labels, wild)
    return y_pred, labels, weights, stride


@pytest.mark.parametrize("case", sorted(_CLOSED_FORM_CASES))
def test_closed_form_losses_and_gradients_equal_autograd(case):
    kinds, names, n_out = _CLOSED_FORM_CASES[case]
    y_pred, labels, weights, stride = _closed_form_inputs(kinds, n_out)
    y_true = torch.cat([labels, weights], 1)
    criterion = MultiTaskLoss(kinds, names, n_out, stride)
    assert criterion.closed_form
    reference = MultiTaskLoss(kinds, names, n_out, stride)
    reference.closed_form = False  # autograd through the element losses
    coefs = torch.linspace(0.5, 2.0, len(kinds), dtype=torch.float64)
    results = []
    for crit in (criterion, reference):
        pred = y_pred.clone().requires_grad_()
        losses, den = crit(pred, y_true)
        (grad,) = torch.autograd.grad((coefs * losses).sum(), pred)
        results.append((losses.detach(), den, grad))
    (losses, den, grad), (ref_losses, ref_den, ref_grad) = results
    assert torch.isfinite(losses).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(losses, ref_losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(den, ref_den)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    # Padded columns get no gradient.
    for t, k in enumerate(n_out):
        assert not grad[:, t * stride + k:(t + 1) * stride].any()
    # NaN at the masked entries of single-output tasks leaks into neither losses nor
    # gradients (autograd through the element losses would give 0 * NaN there).
    single = torch.tensor([k == 1 and kind != "multiclass" for kind, k in zip(kinds, n_out)])
    nan_labels = torch.where((weights == 0) & single, float("nan"), labels)
    pred = y_pred.clone().requires_grad_()
    nan_losses, _ = criterion(pred, torch.cat([nan_labels, weights], 1))
    (nan_grad,) = torch.autograd.grad((coefs * nan_losses).sum(), pred)
    torch.testing.assert_close(nan_losses.detach(), losses, rtol=0, atol=0)
    torch.testing.assert_close(nan_grad, grad, rtol=0, atol=0)


def test_closed_form_applies_only_where_every_loss_has_one():
    assert not MultiTaskLoss(["multiclass"], ["hinge"], [3], 3).closed_form
    assert not MultiTaskLoss(["regression"], [torch.nn.MSELoss()], [1], 1).closed_form
    crit = MultiTaskLoss(["regression"], ["mse"], [1], 1)
    y_pred = torch.randn(5, 1)
    losses, _ = crit(y_pred, torch.cat([torch.randn(5, 1), torch.ones(5, 1)], 1))
    assert losses.grad_fn is None  # no graph without a gradient to compute
