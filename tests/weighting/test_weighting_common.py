"""Behaviour every strategy shares: absent tasks, cloning, devices, registry."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sklearn_mtl.weighting import (
    FAMO,
    MGDA,
    MGDAUB,
    WEIGHTINGS,
    GradNorm,
    Static,
    Step,
    Uncertainty,
    Weighting,
    WeightingState,
    resolve_weighting,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NAMES = sorted(WEIGHTINGS)


def make_inputs(present, device="cpu", seed=0, P=6):
    gen = torch.Generator().manual_seed(seed)
    n = len(present)
    present = torch.tensor(present, device=device)
    losses = (torch.rand(n, generator=gen) + 0.5).to(device)
    losses = torch.where(present, losses, torch.zeros_like(losses)).requires_grad_(True)
    grads = torch.randn(n, P, generator=gen).to(device)
    grads = torch.where(present[:, None], grads, torch.zeros_like(grads))
    return losses, present, grads


def step(state, weighting, losses, present, grads):
    record = state.combine(losses, present, grads if weighting.needs_grads else None)
    assert isinstance(record, Step)
    if weighting.needs_losses_after_step:
        state.after_step((losses * 0.9).detach(), present)
    return record


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_absent_task_gets_zero_weight_and_output_is_finite(name, device):
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.array([1.0, 2.0, 0.5])).to(device)
    for s in range(4):  # several steps so stateful strategies move
        losses, present, grads = make_inputs([True, False, True], device, seed=s)
        rec = step(state, weighting, losses, present, grads)
        out = rec.loss
        assert out.dim() == 0 and torch.isfinite(out)
        out.backward()
        assert torch.isfinite(losses.grad).all()
        assert losses.grad[1] == 0
        assert rec.weights.shape == (3,)
        assert torch.isfinite(rec.weights).all()
        assert rec.weights[1] == 0
        assert rec.weights.device.type == device
        assert not rec.weights.requires_grad
        if weighting.needs_grads:
            assert rec.shared_coef.shape == (3,)
            assert rec.shared_coef.device.type == device
            assert torch.isfinite(rec.shared_coef).all()
            assert rec.shared_coef[1] == 0
            assert not rec.shared_coef.requires_grad
        else:
            assert rec.shared_coef is None
        state.epoch_end(np.array([1.0, np.nan, 0.8]), None)
        state.epoch_end(np.array([0.9, np.nan, 0.8]), np.array([1.0, np.nan, 0.7]))


@pytest.mark.parametrize("name", NAMES)
def test_nan_loss_of_absent_task_does_not_leak(name):
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.ones(3))
    losses, present, grads = make_inputs([True, False, True])
    losses = torch.tensor([0.7, float("nan"), 1.3], requires_grad=True)
    out = step(state, weighting, losses, present, grads).loss
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(losses.grad).all() and losses.grad[1] == 0


@pytest.mark.parametrize("name", NAMES)
def test_zero_loss_task_is_finite(name):
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.ones(3))
    losses = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    present = torch.ones(3, dtype=torch.bool)
    grads = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    grads[0] = 0  # a task at its optimum has a zero gradient
    for _ in range(3):
        rec = step(state, weighting, losses, present, grads)
        assert torch.isfinite(rec.loss)
        assert torch.isfinite(rec.weights).all()
        if weighting.needs_grads:
            assert torch.isfinite(rec.shared_coef).all()


@pytest.mark.parametrize("name", NAMES)
def test_single_present_task(name):
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.array([2.0, 1.0, 1.0]))
    losses, present, grads = make_inputs([False, True, False])
    rec = step(state, weighting, losses, present, grads)
    assert torch.isfinite(rec.loss)
    w = rec.weights
    assert w[0] == 0 and w[2] == 0 and torch.isfinite(w[1]) and w[1] > 0
    if weighting.needs_grads:
        c = rec.shared_coef
        assert c[0] == 0 and c[2] == 0 and c[1] > 0


@pytest.mark.parametrize("name", NAMES)
def test_no_present_task(name):
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.ones(2))
    losses, present, grads = make_inputs([False, False])
    rec = step(state, weighting, losses, present, grads)
    assert rec.loss == 0
    assert torch.equal(rec.weights, torch.zeros(2))
    if weighting.needs_grads:
        assert torch.equal(rec.shared_coef, torch.zeros(2))


@pytest.mark.parametrize("name", NAMES)
def test_clone_get_set_params(name):
    weighting = WEIGHTINGS[name]()
    assert isinstance(weighting, Weighting)
    params = weighting.get_params()
    cloned = clone(weighting)
    assert type(cloned) is type(weighting) and cloned is not weighting
    assert cloned.get_params() == params
    for key, value in params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            cloned.set_params(**{key: value + 1})
            assert cloned.get_params()[key] == value + 1
            assert weighting.get_params()[key] == value  # original untouched
    assert cloned.needs_grads == type(cloned).needs_grads
    assert pickle.loads(pickle.dumps(weighting)).get_params() == params


@pytest.mark.parametrize("name", NAMES)
def test_state_is_module_and_roundtrips(name):
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.ones(3))
    assert isinstance(state, WeightingState) and isinstance(state, torch.nn.Module)
    for s in range(3):
        losses, present, grads = make_inputs([True, True, True], seed=s)
        step(state, weighting, losses, present, grads)
        state.epoch_end(np.array([1.0, 0.9, 0.8]) / (s + 1), np.array([1.0, 1.1, 0.7]) / (s + 1))
    fresh = weighting.build(np.ones(3))
    fresh.load_state_dict(state.state_dict())
    for key, value in state.state_dict().items():
        assert torch.equal(fresh.state_dict()[key].nan_to_num(-7), value.nan_to_num(-7)), key
    again = pickle.loads(pickle.dumps(state))
    losses, present, grads = make_inputs([True, True, True], seed=9)
    assert torch.isfinite(step(again, weighting, losses, present, grads).loss)


def test_needs_grads_declared():
    expected = {
        "gradnorm": "params",
        "mgda": "params",
        "mgda_ub": "representation",
        "pcgrad": "params",
        "cagrad": "params",
        "imtl": "params",
        "upgrad": "params",
    }
    for name, cls in WEIGHTINGS.items():
        assert cls.needs_grads == expected.get(name), name
        assert cls().needs_grads == expected.get(name), name
    assert FAMO.needs_losses_after_step and not Static.needs_losses_after_step


def test_gradient_methods_refuse_missing_grads():
    state = MGDA().build(np.ones(2))
    with pytest.raises(ValueError, match="gradients"):
        state.combine(torch.ones(2), torch.ones(2, dtype=torch.bool), None)


def test_learned_parameters_are_registered():
    st = Uncertainty().build(np.ones(2))
    params = dict(st.named_parameters())
    assert set(params) == {"log_vars"} and params["log_vars"].requires_grad
    st = GradNorm().build(np.ones(2))
    assert set(dict(st.named_parameters())) == {"weights"}
    st = FAMO().build(np.ones(2))
    assert set(dict(st.named_parameters())) == {"logits"}
    # These two are updated by their own rule, never by back-propagation.
    assert not any(p.requires_grad for p in st.parameters())
    assert list(Static().build(np.ones(2)).parameters()) == []


def test_build_accepts_task_kinds_everywhere():
    for cls in WEIGHTINGS.values():
        assert isinstance(
            cls().build(np.ones(2), task_kinds=["regression", "binary"]), WeightingState
        )


@pytest.mark.parametrize(
    "weighting",
    [MGDA(normalization="bogus"), FAMO(lr=0), FAMO(lr=-1.0), GradNorm(alpha=-1)],
)
def test_bad_hyperparameters_raise_at_resolve(weighting):
    with pytest.raises(ValueError):
        resolve_weighting(weighting)


def test_bad_task_kinds_raise_at_build():
    # Depends on the estimator's tasks, so it is build's to check.
    with pytest.raises(ValueError, match="task kinds"):
        Uncertainty().build(np.ones(2), task_kinds=["regression", "ordinal"])
    with pytest.raises(ValueError, match="task_kinds"):
        Uncertainty().build(np.ones(2), task_kinds=["regression"])


def test_resolve_weighting():
    for name, cls in WEIGHTINGS.items():
        got = resolve_weighting(name)
        assert type(got) is cls and got.get_params() == cls().get_params()
    inst = MGDAUB(normalization="l2")
    assert resolve_weighting(inst) is inst
    with pytest.raises(ValueError) as exc:
        resolve_weighting("mgdaa")
    for name in WEIGHTINGS:
        assert repr(name) in str(exc.value)
    for bad in (None, 3, Static, torch.nn.Linear(1, 1), ["static"]):
        with pytest.raises(TypeError):
            resolve_weighting(bad)


@pytest.mark.parametrize("name", ["static", "pcgrad", "cagrad", "upgrad", "mgda", "dwa"])
def test_static_weights_changed_in_place_are_used(name):
    # The engine may overwrite state.static_weights in place (warm start).
    weighting = WEIGHTINGS[name]()
    state = weighting.build(np.ones(2))
    state.static_weights.copy_(torch.tensor([3.0, 0.5]))
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: no surgery
    rec = state.combine(
        losses, torch.ones(2, dtype=torch.bool), G if weighting.needs_grads else None
    )
    assert rec.loss.item() == pytest.approx(3.0 * 1.0 + 0.5 * 2.0)
    if name == "pcgrad":
        assert rec.shared_coef.tolist() == pytest.approx([3.0, 0.5])
