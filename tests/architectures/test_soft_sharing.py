import itertools

import pytest
import torch

from sklearn_mtl.architectures import SoftSharing, SoftSharingModule


def _tower_vectors(module):
    """(T, n_params) matrix: each row is one tower's parameters, flattened."""
    rows = []
    for linear in module.towers.linears():
        rows.append(linear.weight.detach().permute(1, 0, 2).reshape(module.n_tasks, -1))
        rows.append(linear.bias.detach())
    return torch.cat(rows, dim=1)


def _brute_distances(module):
    vectors = _tower_vectors(module)
    to_mean = (vectors - vectors.mean(0)).pow(2).sum()
    pairwise = sum((vectors[s] - vectors[t]).pow(2).sum()
                   for s, t in itertools.combinations(range(len(vectors)), 2))
    return to_mean, pairwise


def test_module_and_penalty_values():
    module = SoftSharing(penalty=0.3).build(4, 3, (5, 2), "relu", 0.0)
    assert isinstance(module, SoftSharingModule)
    to_mean, pairwise = _brute_distances(module)
    assert to_mean > 0  # towers start from independent draws
    torch.testing.assert_close(module.distance(), to_mean)
    torch.testing.assert_close(module.penalty(), 0.3 * to_mean)
    pairwise_module = SoftSharing(penalty=0.3, to="pairwise").build(4, 3, (5, 2), "relu", 0.0)
    _, pairwise = _brute_distances(pairwise_module)
    torch.testing.assert_close(pairwise_module.penalty(), 0.3 * pairwise)


def test_towers_are_independent_in_the_forward_pass():
    module = SoftSharing().build(4, 3, (6, 5), "relu", 0.0)
    out = module(torch.randn(8, 4))
    out[:, 1].sum().backward()
    for linear in module.towers.linears():
        grad = linear.weight.grad  # (in, T, out)
        assert grad[:, 1].abs().sum() > 0
        assert grad[:, 0].abs().sum() == 0 and grad[:, 2].abs().sum() == 0


def _fit(strength, steps=250):
    """Adam on a two-task regression: each task reads its tower through its own linear head."""
    torch.manual_seed(0)
    X = torch.randn(64, 3)
    Y = torch.stack([torch.sin(2 * X[:, 0]), X[:, 1] * X[:, 2] - X[:, 0]], dim=1)
    module = SoftSharing(penalty=strength).build(3, 2, (16,), "tanh", 0.0)
    head_w = torch.nn.Parameter(0.1 * torch.randn(2, 16))
    head_b = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([*module.parameters(), head_w, head_b], lr=1e-2)
    start = module.distance().item()
    for _ in range(steps):
        optimizer.zero_grad()
        prediction = (module(X) * head_w).sum(-1) + head_b  # (B, T)
        loss = (prediction - Y).pow(2).mean(0).sum() + module.penalty()
        loss.backward()
        optimizer.step()
    return module, start, module.distance().item()


def test_large_penalty_pulls_the_towers_together():
    module, start, end = _fit(strength=10.0)
    assert end < 0.05 * start


def test_zero_penalty_leaves_the_towers_independent():
    module, start, end = _fit(strength=0.0)
    assert module.penalty().item() == 0.0
    assert end > 0.8 * start
    # The towers' gradients differ: each answers to its own task only.
    X = torch.randn(32, 3)
    module(X).pow(2).sum(dim=(0, 2)).mul(torch.tensor([1.0, 3.0])).sum().backward()
    grad = module.towers.linears()[0].weight.grad
    assert not torch.allclose(grad[:, 0], grad[:, 1])


def test_no_hidden_layers_means_no_penalty():
    module = SoftSharing(penalty=1.0).build(4, 2, (), "relu", 0.0)
    X = torch.randn(3, 4)
    torch.testing.assert_close(module(X), X.unsqueeze(1).expand(3, 2, 4))
    assert module.penalty().item() == 0.0


@pytest.mark.parametrize("to", ["mean", "pairwise"])
def test_single_task_penalty_is_zero(to):
    module = SoftSharing(penalty=5.0, to=to).build(4, 1, (3,), "relu", 0.0)
    assert module.penalty().item() == pytest.approx(0.0, abs=1e-12)
