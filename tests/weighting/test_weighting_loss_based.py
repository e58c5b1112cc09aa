"""Hand-computed checks of the loss-only strategies."""

import math

import numpy as np
import pytest
import torch

from sklearn_mtl.weighting import DWA, FAMO, RLW, Alternating, Static, Uncertainty, ValidationTrend
from sklearn_mtl.weighting.dwa import dwa_weights
from sklearn_mtl.weighting.famo import famo_logits_gradient, famo_loss_weights
from sklearn_mtl.weighting.validation_trend import trend_ratios

ALL = torch.ones(3, dtype=torch.bool)


# --- Static ---------------------------------------------------------------


def test_static_weighted_sum_and_gradient():
    state = Static().build(np.array([2.0, 0.5, 1.0]))
    losses = torch.tensor([1.0, 4.0, 3.0], requires_grad=True)
    rec = state.combine(losses, torch.tensor([True, True, False]))
    assert rec.loss.item() == pytest.approx(2 * 1 + 0.5 * 4)
    rec.loss.backward()
    assert losses.grad.tolist() == [2.0, 0.5, 0.0]
    assert rec.weights.tolist() == [2.0, 0.5, 0.0]


# --- Uncertainty ----------------------------------------------------------


def test_uncertainty_regression_and_classification_forms():
    state = Uncertainty().build(np.array([2.0, 1.0]), task_kinds=["regression", "binary"])
    with torch.no_grad():
        state.log_vars.copy_(torch.tensor([0.0, math.log(2.0)]))
    losses = torch.tensor([2.0, 3.0])
    rec = state.combine(losses, torch.tensor([True, True]))
    # prior * (0.5 e^-s L + 0.5 s) and prior * (e^-s L + 0.5 s)
    expected = 2.0 * (0.5 * 2.0) + (3.0 / 2.0 + 0.5 * math.log(2.0))
    assert rec.loss.item() == pytest.approx(expected)
    rec.loss.backward()
    # d/ds: prior * (-scale e^-s L + 0.5)
    assert state.log_vars.grad.tolist() == pytest.approx([2.0 * (-1.0 + 0.5), -1.5 + 0.5])
    assert rec.weights.tolist() == pytest.approx([2.0 * 0.5, 0.5])


def test_uncertainty_absent_task_gets_no_gradient_on_its_variance():
    state = Uncertainty().build(np.ones(2))
    rec = state.combine(torch.tensor([3.0, 0.0]), torch.tensor([True, False]))
    rec.loss.backward()
    assert state.log_vars.grad[1] == 0 and state.log_vars.grad[0] != 0
    assert state.task_kinds == ["regression", "regression"]


def test_uncertainty_learns_noise_levels():
    # Two linear regression tasks with noise sd 0.1 and 1.0: at the optimum
    # exp(s_t) equals each task's residual variance, 0.01 and 1.0.
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(400, 4, generator=gen)
    coef = torch.randn(4, 2, generator=gen)
    Y = X @ coef + torch.randn(400, 2, generator=gen) * torch.tensor([0.1, 1.0])
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    state = Uncertainty().build(np.ones(2))
    opt = torch.optim.Adam(list(model.parameters()) + list(state.parameters()), lr=0.05)
    present = torch.ones(2, dtype=torch.bool)
    for _ in range(300):
        opt.zero_grad()
        losses = ((model(X) - Y) ** 2).mean(0)
        state.combine(losses, present).loss.backward()
        opt.step()
    var = torch.exp(state.log_vars.detach())
    assert var[0] < var[1]
    assert 0.005 < var[0] < 0.02
    assert 0.8 < var[1] < 1.25


# --- DWA --------------------------------------------------------------------


def test_dwa_first_two_epochs_equal_then_ratio_softmax():
    state = DWA().build(np.array([1.0, 3.0]))
    losses = torch.tensor([1.0, 1.0])
    both = torch.tensor([True, True])
    state.epoch_end(np.array([1.0, 1.0]))
    rec = state.combine(losses, both)
    assert rec.weights.tolist() == [1.0, 3.0]  # still equal (times priors)
    state.epoch_end(np.array([0.5, 0.9]))
    e = np.exp(np.array([0.5, 0.9]) / 2.0)
    expected = 2 * e / e.sum()
    assert state.epoch_weights.numpy() == pytest.approx(expected, rel=1e-6)
    rec = state.combine(torch.tensor([2.0, 1.0]), both)
    assert rec.loss.item() == pytest.approx(expected[0] * 2.0 + 3.0 * expected[1], rel=1e-6)
    assert rec.weights.numpy() == pytest.approx(expected * np.array([1.0, 3.0]), rel=1e-6)
    # The slower task (ratio 0.9) gets the larger weight.
    assert expected[1] > expected[0]


def test_dwa_undefined_ratio_is_neutral_and_temperature_matters():
    w = dwa_weights(torch.tensor([0.5, float("nan")]), torch.tensor([1.0, 1.0]), temperature=2.0)
    e = np.exp(np.array([0.5, 1.0]) / 2.0)
    assert w.numpy() == pytest.approx(2 * e / e.sum(), rel=1e-6)
    sharp = dwa_weights(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]), temperature=0.1)
    assert sharp[1] / sharp[0] == pytest.approx(math.exp(5.0), rel=1e-5)


# --- RLW --------------------------------------------------------------------


def test_rlw_weights_are_scaled_softmax_of_seeded_normals():
    state = RLW(random_state=7).build(np.array([1.0, 2.0, 1.0]))
    ref = torch.Generator().manual_seed(7)
    for present in ([True, True, True], [True, False, True]):
        p = torch.tensor(present)
        z = torch.randn(3, generator=ref)
        sm = torch.softmax(z[p], 0) * p.sum()
        expected = torch.zeros(3)
        expected[p] = sm
        expected = expected * torch.tensor([1.0, 2.0, 1.0])
        rec = state.combine(torch.ones(3), p)
        assert torch.allclose(rec.weights, expected, atol=1e-6)


def test_rlw_reproducible_and_varies():
    def draws(seed):
        st = RLW(random_state=seed).build(np.ones(3))
        out = []
        for _ in range(5):
            out.append(st.combine(torch.ones(3), ALL).weights.clone())
        return torch.stack(out)

    a, b, c = draws(1), draws(1), draws(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.sum(1), torch.full((5,), 3.0))
    assert a.std(0).min() > 0  # weights change from step to step
    torch.manual_seed(3)
    d = draws(None)
    torch.manual_seed(3)
    assert torch.equal(d, draws(None))  # None follows torch's global seed


# --- FAMO -------------------------------------------------------------------


def test_famo_weights_and_log_form_gradient():
    state = FAMO().build(np.ones(2))
    losses = torch.tensor([1.0, 4.0], requires_grad=True)
    rec = state.combine(losses, torch.tensor([True, True]))
    rec.loss.backward()
    # z = (1/2, 1/2); q = z / L = (0.5, 0.125); w = q / sum(q) = (0.8, 0.2); times k = 2.
    assert losses.grad.tolist() == pytest.approx([1.6, 0.4])
    assert rec.weights.tolist() == pytest.approx([1.6, 0.4])
    # Same gradient as the paper's form k * sum z log(L) / c with c = sum z / L.
    x = torch.tensor([1.0, 4.0], requires_grad=True)
    z = torch.tensor([0.5, 0.5])
    c = (z / x.detach()).sum()
    (2 * (z * torch.log(x)).sum() / c).backward()
    assert torch.allclose(x.grad, losses.grad)


def test_famo_prior_and_absent():
    w = famo_loss_weights(
        torch.zeros(3),
        torch.tensor([1.0, 5.0, 4.0]),
        torch.tensor([True, False, True]),
        prior=torch.tensor([1.0, 1.0, 2.0]),
    )
    # z over present = (1/2, 0, 1/2), times prior (1/2, 0, 1), / L = (1/2, 0, 1/4).
    assert w.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3])


def test_famo_logit_update_moves_weight_to_slower_task():
    state = FAMO(lr=0.1, weight_decay=0.0).build(np.ones(2))
    both = torch.tensor([True, True])
    state.combine(torch.tensor([1.0, 1.0]), both)
    state.after_step(torch.tensor([0.5, 0.9]), both)  # task 0 fell faster
    # Gradient z * (delta - z.delta) = (+, -); Adam's first step is lr * sign.
    g = famo_logits_gradient(torch.zeros(2), torch.ones(2), torch.tensor([0.5, 0.9]), both)
    d = torch.log(torch.tensor([2.0, 1 / 0.9]))
    assert torch.allclose(g, 0.5 * (d - d.mean()))
    assert state.logits.tolist() == pytest.approx([-0.1, 0.1], rel=1e-5)
    # Keep task 0 falling faster: the weight keeps shifting to task 1.
    losses = torch.tensor([1.0, 1.0])
    previous = 0.5
    for _ in range(20):
        state.combine(losses, both)
        losses = losses * torch.tensor([0.5, 0.9])
        state.after_step(losses, both)
        z = torch.softmax(state.logits, 0)
        assert z[1] > previous
        previous = z[1].item()
    assert previous > 0.8


def test_famo_absent_task_logit_untouched():
    state = FAMO(lr=0.1).build(np.ones(3))
    p = torch.tensor([True, False, True])
    state.combine(torch.tensor([1.0, 0.0, 1.0]), p)
    state.after_step(torch.tensor([0.5, 0.0, 0.9]), p)
    assert state.logits[1] == 0 and state.logits[0] < 0 < state.logits[2]


# --- ValidationTrend -----------------------------------------------------------


def test_validation_trend_formula_window_1():
    state = ValidationTrend(window=1, temperature=0.2).build(np.ones(2))
    state.epoch_end(np.array([9.0, 9.0]), np.array([1.0, 1.0]))
    assert state.epoch_weights.tolist() == [1.0, 1.0]
    state.epoch_end(np.array([9.0, 9.0]), np.array([0.5, 0.95]))
    e = np.exp(np.array([0.5, 0.95]) / 0.2)
    assert state.epoch_weights.numpy() == pytest.approx(2 * e / e.sum(), rel=1e-5)
    rec = state.combine(torch.tensor([1.0, 2.0]), torch.tensor([True, True]))
    expected = float(2 * e[0] / e.sum() + 2 * 2 * e[1] / e.sum())
    assert rec.loss.item() == pytest.approx(expected, rel=1e-5)
    # A rising validation loss counts as stagnating (ratio clipped at 1).
    state.epoch_end(np.array([9.0, 9.0]), np.array([0.25, 1.2]))
    e = np.exp(np.array([0.5, 1.0]) / 0.2)
    assert state.epoch_weights.numpy() == pytest.approx(2 * e / e.sum(), rel=1e-5)


def test_validation_trend_window_2_and_train_fallback():
    state = ValidationTrend(window=2, temperature=0.5).build(np.ones(2))
    train = [[1.0, 1.0], [1.0, 1.0], [0.8, 0.4], [0.6, 0.2]]
    for t in train:
        assert state.epoch_weights.tolist() == [1.0, 1.0]
        state.epoch_end(np.array(t), None)  # no validation set: train trend
    rho = np.array([0.7 / 1.0, 0.3 / 1.0])
    e = np.exp(rho / 0.5)
    assert state.epoch_weights.numpy() == pytest.approx(2 * e / e.sum(), rel=1e-5)


def test_validation_trend_per_task_fallback():
    h = torch.tensor([[1.0, 1.0], [0.5, 2.0]])
    assert trend_ratios(h, 1).tolist() == [0.5, 1.0]
    state = ValidationTrend(window=1, temperature=1.0).build(np.ones(2))
    state.epoch_end(np.array([1.0, 1.0]), np.array([1.0, np.nan]))
    state.epoch_end(np.array([1.0, 0.5]), np.array([0.5, np.nan]))
    # Task 0 uses validation (0.5), task 1 has no validation labels: train (0.5).
    assert state.epoch_weights.tolist() == pytest.approx([1.0, 1.0])


# --- Alternating ---------------------------------------------------------------


def test_alternating_round_robin():
    state = Alternating().build(np.array([2.0, 3.0, 4.0]))
    losses = torch.tensor([1.0, 10.0, 100.0])
    seen = []
    for _ in range(4):
        rec = state.combine(losses, ALL)
        seen.append((rec.weights.tolist(), rec.loss.item()))
    assert seen == [([2, 0, 0], 2.0), ([0, 3, 0], 30.0), ([0, 0, 4], 400.0), ([2, 0, 0], 2.0)]
    # Task 1 absent: skip to task 2, then wrap to 0.
    p = torch.tensor([True, False, True])
    rec = state.combine(losses, p)
    assert rec.weights.tolist() == [0, 0, 4]
    rec = state.combine(losses, p)
    assert rec.weights.tolist() == [2, 0, 0]
    state.combine(losses, torch.zeros(3, dtype=torch.bool))  # empty batch skips nobody
    rec = state.combine(losses, ALL)
    assert rec.weights.tolist() == [0, 3, 0]
