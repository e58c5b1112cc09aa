"""Contract checks that every architecture must pass."""

import copy
import pickle

import pytest
import torch
from sklearn.base import clone

from sklearn_mtl.architectures import (
    ARCHITECTURES,
    Architecture,
    CrossStitch,
    HardSharing,
    MMoE,
    PLE,
    SoftSharing,
    resolve_architecture,
)

from _arch_cases import ALL_ARCHITECTURES

N_FEATURES, N_TASKS, BATCH = 6, 3, 5


def _expected_width(arch, hidden):
    if isinstance(arch, MMoE) and arch.expert_hidden is not None:
        hidden = arch.expert_hidden
    return hidden[-1] if hidden else N_FEATURES


@pytest.mark.parametrize("hidden", [(8, 4), (7,), ()])
@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_output_shape_and_attributes(arch, per_task, hidden):
    module = arch.build(N_FEATURES, N_TASKS, hidden, "relu", 0.0)
    out = module(torch.randn(BATCH, N_FEATURES))
    width = _expected_width(arch, hidden)
    assert module.per_task is per_task
    assert module.out_features == width
    expected = (BATCH, N_TASKS, width) if per_task else (BATCH, width)
    assert out.shape == expected
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_every_parameter_gets_a_gradient(arch, per_task):
    module = arch.build(N_FEATURES, N_TASKS, (8, 4), "tanh", 0.0)
    out = module(torch.randn(BATCH, N_FEATURES))
    loss = out.pow(2).sum()
    penalty = getattr(module, "penalty", None)
    if penalty is not None:
        loss = loss + penalty()
    loss.backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_single_task_and_single_row(arch, per_task):
    module = arch.build(N_FEATURES, 1, (4,), "relu", 0.0)
    out = module(torch.randn(1, N_FEATURES))
    width = _expected_width(arch, (4,))
    assert out.shape == ((1, 1, width) if per_task else (1, width))


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_dropout_active_in_train_only(arch, per_task):
    hidden = (32,)
    module = arch.build(N_FEATURES, N_TASKS, hidden, "relu", 0.5)
    assert any(isinstance(m, torch.nn.Dropout) for m in module.modules())
    X = torch.randn(BATCH, N_FEATURES)
    module.eval()
    torch.testing.assert_close(module(X), module(X))
    module.train()
    assert not torch.equal(module(X), module(X))


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_clone_and_params_round_trip(arch, per_task):
    params = arch.get_params()
    twin = clone(arch)
    assert twin is not arch
    assert type(twin) is type(arch)
    assert twin.get_params() == params
    assert isinstance(twin, Architecture)
    restored = pickle.loads(pickle.dumps(arch))
    assert restored.get_params() == params
    # The module pickles too (skorch pickles the whole net).
    module = arch.build(N_FEATURES, N_TASKS, (4,), "relu", 0.0)
    X = torch.randn(BATCH, N_FEATURES)
    torch.testing.assert_close(pickle.loads(pickle.dumps(module))(X), module(X))


def test_get_params_names_and_set_params():
    assert HardSharing().get_params() == {}
    assert SoftSharing().get_params() == {"penalty": 1e-2, "to": "mean"}
    assert CrossStitch().get_params() == {"init_self": 0.9}
    assert MMoE().get_params() == {"n_experts": 4, "expert_hidden": None}
    assert PLE().get_params() == {"n_shared_experts": 2, "n_task_experts": 1, "n_levels": 1}
    arch = MMoE().set_params(n_experts=7)
    assert arch.n_experts == 7
    assert clone(arch).n_experts == 7
    assert "n_experts=7" in repr(arch)


def test_registry_covers_every_class():
    assert set(ARCHITECTURES) == {"hard", "soft", "cross_stitch", "mmoe", "ple"}
    for cls in ARCHITECTURES.values():
        assert issubclass(cls, Architecture)


@pytest.mark.parametrize("arch, match", [
    (SoftSharing(penalty=-1.0), "penalty"),
    (SoftSharing(to="median"), "'to' parameter of SoftSharing must be"),
    (CrossStitch(init_self=1.5), "init_self"),
    (MMoE(n_experts=0), "n_experts"),
    (MMoE(expert_hidden=(4, 0)), "expert_hidden"),
    (PLE(n_levels=0), "n_levels"),
    (PLE(n_shared_experts=0, n_task_experts=0), "at least one expert"),
    (PLE(n_task_experts=1.5), "n_task_experts"),
])
def test_invalid_hyperparameters_raise_at_resolve(arch, match):
    with pytest.raises(ValueError, match=match):
        resolve_architecture(arch)


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_invalid_build_arguments(arch, per_task):
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        arch.build(N_FEATURES, N_TASKS, (4, -2), "relu", 0.0)
    with pytest.raises(ValueError, match="n_tasks"):
        arch.build(N_FEATURES, 0, (4,), "relu", 0.0)


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_follows_the_module_device_and_dtype(arch, per_task):
    # "meta" stands in for a GPU: any tensor made on the CPU inside forward,
    # penalty or gates would clash with it.
    for device, dtype in (("meta", torch.float32), ("cpu", torch.float64)):
        module = arch.build(N_FEATURES, N_TASKS, (8, 4), "relu", 0.1).to(device, dtype)
        X = torch.randn(BATCH, N_FEATURES, device=device, dtype=dtype)
        outputs = [module(X)]
        if hasattr(module, "penalty"):
            outputs.append(module.penalty())
        if hasattr(module, "gates"):
            gates = module.gates(X)
            outputs.extend(gates if isinstance(gates, list) else [gates])
        for out in outputs:
            assert out.device.type == device and out.dtype == dtype


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_runs_on_cuda(arch, per_task):
    module = arch.build(N_FEATURES, N_TASKS, (8, 4), "relu", 0.1).cuda()
    X = torch.randn(BATCH, N_FEATURES, device="cuda")
    out = module(X)
    assert out.device.type == "cuda"
    loss = out.sum()
    if hasattr(module, "penalty"):
        penalty = module.penalty()
        assert penalty.device.type == "cuda"
        loss = loss + penalty
    loss.backward()
    gates = getattr(module, "gates", None)
    if gates is not None:
        result = gates(X)
        for g in result if isinstance(result, list) else [result]:
            assert g.device.type == "cuda"
    # Same numbers as on CPU.
    module.eval()
    cpu_module = copy.deepcopy(module).cpu()
    torch.testing.assert_close(module(X).cpu(), cpu_module(X.cpu()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch, per_task", ALL_ARCHITECTURES)
def test_plugs_into_the_task_heads(arch, per_task):
    from sklearn_mtl._modules import MultiTaskModule, TaskHeads

    trunk = arch.build(N_FEATURES, N_TASKS, (8,), "relu", 0.0)
    net = MultiTaskModule(trunk, TaskHeads(trunk.out_features, [1, 2, 4], (5,)))
    out = net(torch.randn(BATCH, N_FEATURES))
    assert out.shape == (BATCH, N_TASKS * 4)
    penalty = net.penalty()
    assert (penalty is not None) == hasattr(trunk, "penalty")
