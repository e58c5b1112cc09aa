import pytest
import torch

from sklearn_mtl.architectures import PLE, PLEModule

B, F, T = 6, 5, 3


def _check_simplex(gates, shape):
    assert gates.shape == shape
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(shape[:-1]))


@pytest.mark.parametrize("n_levels", [1, 2, 3])
@pytest.mark.parametrize("n_shared, n_task", [(2, 1), (1, 2), (0, 2), (3, 0)])
def test_shapes_and_gates(n_levels, n_shared, n_task):
    module = PLE(n_shared_experts=n_shared, n_task_experts=n_task, n_levels=n_levels).build(
        F, T, (8, 4), "relu", 0.0)
    assert isinstance(module, PLEModule)
    assert len(module.levels) == n_levels
    X = torch.randn(B, F)
    assert module(X).shape == (B, T, 4)
    gates = module.gates(X)
    assert len(gates) == n_levels
    for level_gates in gates:
        _check_simplex(level_gates, (B, T, n_task + n_shared))
    module.keep_gates = True
    module(X)
    for kept, fresh in zip(module.last_gates_, gates, strict=True):
        torch.testing.assert_close(kept, fresh)
    n_shared_gates = n_levels - 1 if n_shared else 0
    assert len(module.last_shared_gates_) == n_shared_gates
    for shared in module.last_shared_gates_:
        _check_simplex(shared, (B, n_shared + T * n_task))


def test_task_gates_differ_per_task():
    module = PLE(n_shared_experts=2, n_task_experts=2).build(F, T, (8,), "relu", 0.0)
    gates = module.gates(torch.randn(B, F))[0]
    assert not torch.allclose(gates[:, 0], gates[:, 1], atol=1e-3)


def _expert_grad_per_expert(level):
    """Gradient mass on each expert of a level, (n_experts,)."""
    return sum(linear.weight.grad.abs().sum(dim=(0, 2)) for linear in level.experts.linears())


def test_cgc_task_experts_are_private():
    n_shared, n_task = 2, 1
    module = PLE(n_shared_experts=n_shared, n_task_experts=n_task).build(F, T, (8,), "relu", 0.0)
    module(torch.randn(B, F))[:, 0].sum().backward()
    mass = _expert_grad_per_expert(module.levels[0])
    # Layout: shared experts, then task 0's, task 1's, task 2's.
    assert (mass[:n_shared] > 0).all()
    assert mass[n_shared] > 0
    assert (mass[n_shared + 1:] == 0).all()


def test_two_levels_share_through_the_shared_gate():
    module = PLE(n_shared_experts=1, n_task_experts=1, n_levels=2).build(F, T, (8,), "relu", 0.0)
    module(torch.randn(B, F))[:, 0].sum().backward()
    first, second = (_expert_grad_per_expert(level) for level in module.levels)
    # Level 1: shared expert and task 0's own only.
    assert first.shape == (1 + T,) and (second[:2] > 0).all() and (second[2:] == 0).all()
    # Level 0: every expert reaches task 0, the other tasks' via the shared stream.
    assert (first > 0).all()


def test_without_shared_experts_tasks_stay_separate():
    module = PLE(n_shared_experts=0, n_task_experts=2, n_levels=2).build(F, T, (8,), "relu", 0.0)
    module(torch.randn(B, F))[:, 1].sum().backward()
    for level in module.levels:
        mass = _expert_grad_per_expert(level)
        assert (mass[2:4] > 0).all()
        assert (mass[:2] == 0).all() and (mass[4:] == 0).all()


def test_gate_over_a_single_expert_has_no_parameters():
    module = PLE(n_shared_experts=1, n_task_experts=0, n_levels=2).build(F, T, (4,), "relu", 0.0)
    assert all(level.task_gates is None for level in module.levels)
    assert module.levels[0].shared_gate is None
    out = module(torch.randn(B, F))
    # One shared expert at each level and nothing else: every task reads the same thing.
    torch.testing.assert_close(out[:, 0], out[:, 2])
