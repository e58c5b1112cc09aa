"""The direct fused Adam/AdamW update equals ``optimizer.step()`` bit for bit, and
applies only where nothing could tell the difference."""

import copy

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sklearn_mtl._fused_optim import FusedAdamStep


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))


def _groups(model, two_groups, weight_decay):
    if not two_groups:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": 0.0, "lr": 3e-3}]


def _loss(model, step):
    g = torch.Generator().manual_seed(step)
    X = torch.randn(16, 5, generator=g)
    return model(X).square().mean()


def _train(model, optimizer, steps, direct, after_step=None):
    plan = None
    for step in range(steps):
        if plan is not None:
            plan.zero_grad()
        else:
            optimizer.zero_grad(set_to_none=True)
        _loss(model, step).backward()
        if plan is not None:
            plan.step()
        else:
            optimizer.step()
            if direct:
                plan = FusedAdamStep.for_optimizer(optimizer)
                assert plan is not None
        if after_step is not None:
            after_step()
    return model


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("two_groups", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_direct_update_equals_optimizer_step_bit_for_bit(cls, amsgrad, two_groups, weight_decay):
    results = []
    for direct in (False, True):
        model = _model()
        optimizer = cls(_groups(model, two_groups, weight_decay), lr=1e-2, amsgrad=amsgrad,
                        fused=True)
        _train(model, optimizer, 12, direct)
        results.append((model, optimizer))
    (ref, ref_opt), (fast, fast_opt) = results
    for a, b in zip(ref.parameters(), fast.parameters()):
        assert torch.equal(a, b)
    ref_state, fast_state = ref_opt.state_dict()["state"], fast_opt.state_dict()["state"]
    assert ref_state.keys() == fast_state.keys()
    for k in ref_state:
        for key, value in ref_state[k].items():
            assert torch.equal(value, fast_state[k][key]), key


def test_learning_rate_changes_are_read_at_every_step():
    results = []
    for direct in (False, True):
        model = _model()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        results.append(_train(model, optimizer, 6, direct, after_step=scheduler.step))
    for a, b in zip(*(m.parameters() for m in results)):
        assert torch.equal(a, b)



def test_a_parameter_without_gradient_falls_back_to_the_optimizer():
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    _loss(model, 0).backward()
    optimizer.step()
    plan = FusedAdamStep.for_optimizer(optimizer)
    reference = copy.deepcopy((model, optimizer))
    for m, step in ((model, plan.step), (reference[0], reference[1].step)):
        for p in m.parameters():
            p.grad = None
        m[2].weight.grad = torch.ones_like(m[2].weight)  # the others have none
        step()
    for a, b in zip(model.parameters(), reference[0].parameters()):
        assert torch.equal(a, b)


def _stepped(optimizer, model):
    _loss(model, 0).backward()
    optimizer.step()
    return optimizer


class _MyAdam(torch.optim.Adam):
    pass


@pytest.mark.parametrize("make", [
    lambda m: torch.optim.Adam(m.parameters(), fused=False),  # the for-loop kernel
    lambda m: torch.optim.Adam(m.parameters(), foreach=True),
    lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
    lambda m: _MyAdam(m.parameters(), fused=True),  # a subclass may override step()
], ids=["unfused", "foreach", "sgd", "subclass"])
def test_other_optimizers_are_left_to_their_own_step(make):
    model = _model()
    assert FusedAdamStep.for_optimizer(_stepped(make(model), model)) is None


def test_hooks_and_missing_state_keep_the_optimizer_step():
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    assert FusedAdamStep.for_optimizer(optimizer) is None  # no state before the first step
    _stepped(optimizer, model)
    assert FusedAdamStep.for_optimizer(optimizer) is not None
    handle = optimizer.register_step_post_hook(lambda *args: None)
    assert FusedAdamStep.for_optimizer(optimizer) is None
    handle.remove()
    handle = register_optimizer_step_pre_hook(lambda *args: None)
    try:
        assert FusedAdamStep.for_optimizer(optimizer) is None
    finally:
        handle.remove()
