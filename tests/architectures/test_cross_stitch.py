import pytest
import torch

from sklearn_mtl.architectures import CrossStitch, CrossStitchModule, resolve_architecture


def test_units_start_at_the_configured_mix():
    module = CrossStitch(init_self=0.7).build(5, 4, (6, 3), "relu", 0.0)
    assert isinstance(module, CrossStitchModule)
    assert len(module.alphas) == 2  # one unit per hidden layer
    expected = torch.full((4, 4), 0.1)
    expected.fill_diagonal_(0.7)
    for alpha in module.alphas:
        assert alpha.shape == (4, 4)
        torch.testing.assert_close(alpha.detach(), expected)
        torch.testing.assert_close(alpha.detach().sum(1), torch.ones(4))


def test_single_task_unit_is_identity():
    module = CrossStitch(init_self=0.5).build(5, 1, (3,), "relu", 0.0)
    torch.testing.assert_close(module.alphas[0].detach(), torch.ones(1, 1))


def test_self_weight_one_gives_independent_towers():
    module = CrossStitch(init_self=1.0).build(5, 3, (6, 4), "relu", 0.0)
    X = torch.randn(7, 5)
    # The same towers without the units.
    h = X
    for block in module.blocks:
        h = block(h)
    torch.testing.assert_close(module(X), h)


def test_uniform_mix_makes_all_tasks_read_the_average():
    module = CrossStitch(init_self=1 / 3).build(5, 3, (6,), "relu", 0.0)
    out = module(torch.randn(7, 5))
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 0], out[:, 2])


def test_units_mix_tasks_and_learn():
    module = CrossStitch(init_self=0.9).build(5, 2, (6, 4), "relu", 0.0)
    out = module(torch.randn(7, 5))
    # Task 0's output now depends on task 1's tower, through the units.
    out[:, 0].sum().backward()
    assert module.blocks[0][0].weight.grad[:, 1].abs().sum() > 0
    for alpha in module.alphas:
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [-0.1, 1.1, "0.9", True])
def test_invalid_init_self(bad):
    with pytest.raises(ValueError, match="init_self"):
        resolve_architecture(CrossStitch(init_self=bad))
