import torch

from sklearn_mtl.architectures import MMoE, MMoEModule


def test_gates_are_on_the_simplex_and_differ_per_task():
    module = MMoE(n_experts=4).build(6, 3, (8,), "relu", 0.0)
    assert isinstance(module, MMoEModule)
    gates = module.gates(torch.randn(10, 6))
    assert gates.shape == (10, 3, 4)
    assert not gates.requires_grad
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(10, 3))
    assert not torch.allclose(gates[:, 0], gates[:, 1], atol=1e-3)
    assert not torch.allclose(gates[:, 1], gates[:, 2], atol=1e-3)
    # The gates depend on the input.
    assert not torch.allclose(gates[0], gates[1], atol=1e-3)


def test_output_is_the_gate_weighted_sum_of_experts():
    module = MMoE(n_experts=3).build(6, 2, (8, 5), "tanh", 0.0)
    X = torch.randn(4, 6)
    experts = module.experts(X)  # (B, E, D)
    gates = module.gates(X)
    expected = (gates.unsqueeze(-1) * experts.unsqueeze(1)).sum(2)
    torch.testing.assert_close(module(X), expected)


def test_keep_gates_flag():
    module = MMoE(n_experts=3).build(6, 2, (8,), "relu", 0.0)
    X = torch.randn(4, 6)
    module(X)
    assert module.last_gates_ is None
    module.keep_gates = True
    module(X)
    torch.testing.assert_close(module.last_gates_, module.gates(X))
    assert not module.last_gates_.requires_grad


def test_expert_hidden_overrides_the_estimator_sizes():
    module = MMoE(n_experts=2, expert_hidden=(7, 3)).build(6, 2, (50,), "relu", 0.0)
    assert module.out_features == 3
    assert [lin.out_features for lin in module.experts.linears()] == [7, 3]
    assert module(torch.randn(4, 6)).shape == (4, 2, 3)


def test_one_expert_is_hard_sharing_without_gate_parameters():
    module = MMoE(n_experts=1).build(6, 3, (5,), "relu", 0.0)
    assert module.gate is None
    X = torch.randn(4, 6)
    out = module(X)
    torch.testing.assert_close(out[:, 0], module.experts(X)[:, 0])
    torch.testing.assert_close(out[:, 0], out[:, 2])
    torch.testing.assert_close(module.gates(X), torch.ones(4, 3, 1))


def test_experts_are_shared_and_gates_per_task():
    module = MMoE(n_experts=3).build(6, 2, (5,), "relu", 0.0)
    module(torch.randn(4, 6))[:, 0].sum().backward()
    # Task 0's loss reaches every expert but only task 0's gate rows.
    assert (module.experts.linears()[0].weight.grad.abs().sum(dim=(0, 2)) > 0).all()
    grad = module.gate.weight.grad.view(2, 3, 6)
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0
