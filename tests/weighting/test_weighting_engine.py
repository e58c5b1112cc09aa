"""The engine's side of the strategies: per-task gradients, the routed shared update,
shared parameters of the architectures, and loss normalisation -- against
references computed one backward pass per task."""

import numpy as np
import pytest
import torch
from torch import nn

import sklearn_mtl._net as engine
from sklearn_mtl import _gradients
from sklearn_mtl._gradients import naive_task_gradients, task_gradients
from sklearn_mtl._losses import MultiTaskLoss
from sklearn_mtl._modules import MLPTrunk, MultiTaskModule, TaskHeads
from sklearn_mtl._net import MultiTaskNet
from sklearn_mtl._normalization import LossNormalization, check_normalization
from sklearn_mtl.architectures import PLE, CrossStitch, MMoE, SoftSharing
from sklearn_mtl.weighting import (
    FAMO,
    IMTL,
    MGDA,
    MGDAUB,
    CAGrad,
    GradNorm,
    PCGrad,
    Static,
    Step,
    UPGrad,
    Weighting,
    WeightingState,
)

F, T, B = 5, 3, 24
KINDS = ["regression", "binary", "multiclass"]
N_OUT = [1, 1, 3]
STATIC = np.array([1.0, 2.0, 0.5])


class PlainHeads(nn.Module):
    """Task heads that are not the engine's TaskHeads: the generic (vmap + hook) route."""

    def __init__(self, d, n_outputs, width=4):
        super().__init__()
        self.max_out = max(n_outputs)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, self.max_out))
            for _ in n_outputs)

    def forward(self, z):
        outs = [head(z[:, t] if z.dim() == 3 else z) for t, head in enumerate(self.heads)]
        return torch.cat(outs, 1)


def build_module(arch, heads="task"):
    torch.manual_seed(0)
    trunk = MLPTrunk(F, (8, 6), "tanh") if arch == "hard" else arch.build(
        F, T, (8, 6), "tanh", 0.0)
    if heads == "task":
        head_module = TaskHeads(trunk.out_features, N_OUT, (4,), "tanh")
    else:
        head_module = PlainHeads(trunk.out_features, N_OUT)
    return MultiTaskModule(trunk, head_module)


def criterion():
    return MultiTaskLoss(KINDS, ["mse", "bce", "cross_entropy"], N_OUT, 3)


def make_net(module, weighting, normalization="none"):
    net = MultiTaskNet(module=module, criterion=criterion(), weighting=weighting,
                       static_weights=STATIC, task_names=["a", "b", "c"], task_kinds=KINDS,
                       optimizer=torch.optim.SGD, lr=0.0, loss_normalization=normalization)
    return net.initialize()


def make_batch(absent=(), seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(B, F, generator=gen)
    y = torch.zeros(B, 2 * T)
    y[:, 0] = torch.randn(B, generator=gen)
    y[:, 1] = (torch.rand(B, generator=gen) > 0.5).float()
    y[:, 2] = torch.randint(0, 3, (B,), generator=gen).float()
    y[:, T:] = (torch.rand(B, T, generator=gen) > 0.2).float()  # some missing labels
    for t in absent:
        y[:, T + t] = 0.0
    return X, y


ARCHS = {
    "hard": "hard",
    "mmoe": MMoE(n_experts=3),
    "ple2": PLE(n_levels=2),
    "cross_stitch": CrossStitch(),
    "soft": SoftSharing(penalty=0.1),
}


# --- per-task gradients ------------------------------------------------------------


@pytest.mark.parametrize("heads", ["task", "plain"])
@pytest.mark.parametrize("arch", ["hard", "mmoe", "ple2", "cross_stitch"])
def test_task_gradients_equal_one_backward_per_task(arch, heads):
    module = build_module(ARCHS[arch], heads)
    net = make_net(module, MGDA())
    X, y = make_batch(absent=(1,))
    out = net.module_(X)
    z = net.module_.representation_
    losses, _ = net.criterion_(out, y)
    shared = net.shared_parameters()
    head_arg = net.module_.heads
    G, J = task_gradients(losses, z, shared, "params", head_arg)
    assert torch.allclose(G, naive_task_gradients(losses, shared), rtol=1e-5, atol=1e-7)
    G_rep, J_rep = task_gradients(losses, z, shared, "representation", head_arg)
    assert torch.allclose(G_rep, naive_task_gradients(losses, [z]), rtol=1e-5, atol=1e-7)
    assert torch.equal(J, J_rep) and J.shape == (T,) + tuple(z.shape)
    assert G[1].abs().max() == 0  # the absent task has an exactly zero gradient


def test_fast_jacobian_needs_the_training_forward_output():
    module = build_module("hard")
    net = make_net(module, MGDAUB())
    probe = _gradients._probe(net.module_.heads.layers[0])
    assert probe is not None
    with torch.no_grad():
        net.module_(torch.randn(4, F))
    assert probe.output is None  # inference passes are not kept
    X, _ = make_batch()
    net.module_(X)
    assert probe.output is not None and probe.output.shape == (B, T, 4)
    # Attaching twice keeps a single probe.
    _gradients.attach_head_probe(net.module_)
    hooks = net.module_.heads.layers[0]._forward_hooks.values()
    assert sum(isinstance(h, _gradients.KeepOutput) for h in hooks) == 1


# --- the routed update ---------------------------------------------------------------


def step_gradients(net, X, y):
    """One training get_loss + backward; returns (loss, state, step, {param: grad}) with
    step the record the engine used (what the strategy, or the gradient routing for a
    gradient method, returned to get_loss)."""
    if net.weighting.needs_grads is None:
        owner, name = net.weighting_, "combine"  # an instance attribute shadows the method
    else:
        owner, name = engine, "combine_with_gradients"
    original, records = getattr(owner, name), []

    def spy(*args, **kwargs):
        records.append(original(*args, **kwargs))
        return records[-1]

    setattr(owner, name, spy)
    try:
        net.reset_task_sums()
        net.module_.train()
        net.module_.zero_grad(set_to_none=True)
        out = net.module_(X)
        loss = net.get_loss(out, y, X, training=True)
    finally:
        if owner is engine:
            setattr(engine, name, original)
        else:
            delattr(owner, name)
    loss.backward()
    (record,) = records
    assert isinstance(record, Step)
    # The step's weights are what the engine records for the history.
    assert torch.equal(net.task_sums_.totals["weight_sum"], record.weights)
    return loss, net.weighting_, record, {
        p: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for p in net.module_.parameters()}


def expected_gradients(net, X, y, coef, head_weights):
    """The reference: shared params get c @ G (G one backward per task), all others the
    gradient of sum_t a_t L_t (plus the architecture's penalty)."""
    module = net.module_
    out = module(X)
    losses, den = net.criterion_(out, y)
    present = den > 0
    shared = net.shared_parameters()
    params = list(module.parameters())
    others = [p for p in params if all(p is not s for s in shared)]
    expected = {}
    if shared:
        Gn = naive_task_gradients(losses, shared)
        flat = coef @ Gn
        start = 0
        for p in shared:
            expected[p] = flat[start:start + p.numel()].view_as(p)
            start += p.numel()
    head_loss = (head_weights * torch.where(present, losses, torch.zeros_like(losses))).sum()
    penalty = module.penalty()
    if penalty is not None:
        head_loss = head_loss + penalty
    grads = torch.autograd.grad(head_loss, others, allow_unused=True, retain_graph=True)
    for p, g in zip(others, grads):
        expected[p] = torch.zeros_like(p) if g is None else g
    if penalty is not None and shared:
        pen = torch.autograd.grad(penalty, shared, allow_unused=True)
        for p, g in zip(shared, pen):
            if g is not None:
                expected[p] = expected[p] + g
    return expected, losses, present


WEIGHTINGS = {
    "mgda": MGDA(),
    "mgda_ub": MGDAUB(),
    "pcgrad": PCGrad(random_state=0),
    "cagrad": CAGrad(),
    "imtl": IMTL(),
    "upgrad": UPGrad(),
    "gradnorm": GradNorm(),
}


@pytest.mark.parametrize("heads", ["task", "plain"])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name", ["mgda", "mgda_ub", "pcgrad", "gradnorm"])
def test_routed_update_is_the_combination_of_task_gradients(name, arch, heads):
    module = build_module(ARCHS[arch], heads)
    net = make_net(module, WEIGHTINGS[name])
    X, y = make_batch(absent=(1,))
    loss, state, rec, got = step_gradients(net, X, y)
    coef = rec.shared_coef.detach()
    a = state.static_weights * torch.tensor([1.0, 0.0, 1.0])
    if name == "gradnorm":
        a = rec.weights  # learned weights x static, used for heads and shared alike
    expected, losses, present = expected_gradients(net, X, y, coef, a)
    assert not present[1] and coef[1] == 0
    shared = net.shared_parameters()
    if arch == "soft":
        assert shared == []
        assert torch.allclose(coef, a)  # no shared parameter: the static weighted sum
    else:
        assert shared
    for p, g in got.items():
        assert torch.allclose(g, expected[p], rtol=1e-4, atol=1e-6), (name, arch, p.shape)
    # The value is the strategy's loss (the heads' weighted sum), penalty added.
    value = (a * torch.where(present, losses, torch.zeros_like(losses))).sum()
    penalty = net.module_.penalty()
    if penalty is not None:
        value = value + penalty
    assert loss.item() == pytest.approx(value.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["cagrad", "imtl", "upgrad", "mgda_ub"])
def test_routed_update_all_exact_methods_hard_and_mmoe(name):
    for arch in ("hard", "mmoe"):
        net = make_net(build_module(ARCHS[arch]), WEIGHTINGS[name])
        X, y = make_batch(seed=3)
        _, state, rec, got = step_gradients(net, X, y)
        a = state.static_weights.clone()
        expected, _, _ = expected_gradients(net, X, y, rec.shared_coef.detach(), a)
        for p, g in got.items():
            assert torch.allclose(g, expected[p], rtol=1e-4, atol=1e-6), (name, arch)


def test_naive_engine_gives_the_same_update(monkeypatch):
    for name in ("mgda", "mgda_ub", "pcgrad"):
        batched = make_net(build_module("hard"), WEIGHTINGS[name])
        X, y = make_batch(absent=(2,))
        _, _, s1, g1 = step_gradients(batched, X, y)
        monkeypatch.setattr(_gradients, "GRADIENT_ENGINE", "naive")
        naive = make_net(build_module("hard"), WEIGHTINGS[name])
        _, _, s2, g2 = step_gradients(naive, X, y)
        monkeypatch.setattr(_gradients, "GRADIENT_ENGINE", "batched")
        assert torch.allclose(s1.shared_coef, s2.shared_coef, rtol=1e-4, atol=1e-6)
        for (p1, a), (p2, b) in zip(g1.items(), g2.items()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


def test_no_label_for_a_task_in_the_batch_through_get_loss():
    # Every gradient and loss-based strategy, a batch where task 0 has no label.
    from sklearn_mtl.weighting import WEIGHTINGS as ALL

    for name, cls in ALL.items():
        net = make_net(build_module("hard"), cls())
        X, y = make_batch(absent=(0,))
        loss, _, rec, got = step_gradients(net, X, y)
        assert torch.isfinite(loss), name
        assert rec.weights[0] == 0, name
        assert all(torch.isfinite(g).all() for g in got.values()), name
        heads = net.module_.heads.layers
        assert heads[0].weight.grad[:, 0].abs().max() == 0, name  # task 0's head is untouched
        assert heads[-1].bias.grad[0].abs().max() == 0, name


# --- shared parameters ---------------------------------------------------------------


def test_shared_parameters_of_the_architectures():
    def ids(params):
        return {id(p) for p in params}

    hard = make_net(build_module("hard"), MGDA())
    assert ids(hard.shared_parameters()) == ids(hard.module_.trunk.parameters())
    mmoe = make_net(build_module(ARCHS["mmoe"]), MGDA())
    trunk = mmoe.module_.trunk
    assert ids(mmoe.shared_parameters()) == ids(trunk.experts.parameters())
    assert not ids(trunk.gate.parameters()) & ids(mmoe.shared_parameters())
    soft = make_net(build_module(ARCHS["soft"]), MGDA())
    assert soft.shared_parameters() == []
    cross = make_net(build_module(ARCHS["cross_stitch"]), MGDA())
    assert ids(cross.shared_parameters()) == ids(cross.module_.trunk.parameters())
    ple = PLE(n_shared_experts=1, n_task_experts=1, n_levels=2).build(F, T, (6,), "relu", 0.0)
    expected = ids(p for level in ple.levels for p in level.experts.parameters())
    expected |= ids(ple.levels[0].shared_gate.parameters())
    assert ids(ple.shared_parameters()) == expected
    assert PLE(n_shared_experts=0).build(F, T, (6,), "relu", 0.0).shared_parameters() == []
    # Frozen parameters are never combined.
    first = hard.module_.trunk.layers[0]
    first.weight.requires_grad_(False)
    assert ids(hard.shared_parameters()) == ids(hard.module_.trunk.parameters()) - {
        id(first.weight)}


def test_trunk_without_parameters_degrades_to_static():
    torch.manual_seed(0)
    module = MultiTaskModule(MLPTrunk(F, ()), TaskHeads(F, N_OUT, (4,)))
    net = make_net(module, PCGrad())
    X, y = make_batch()
    loss, state, rec, got = step_gradients(net, X, y)
    assert torch.allclose(rec.weights, state.static_weights)
    assert torch.allclose(rec.shared_coef, state.static_weights)
    assert torch.isfinite(loss)
    # The same step with Static gives the same gradients.
    torch.manual_seed(0)
    module = MultiTaskModule(MLPTrunk(F, ()), TaskHeads(F, N_OUT, (4,)))
    _, _, _, ref = step_gradients(make_net(module, Static()), X, y)
    for a, b in zip(got.values(), ref.values()):
        assert torch.allclose(a, b)


# --- loss normalisation --------------------------------------------------------------


def test_normalization_initial_known_answers():
    norm = LossNormalization(3, "initial")
    present = torch.tensor([True, False, True])
    out, div = norm(torch.tensor([2.0, float("nan"), 4.0]), present)
    assert out[0] == 1 and out[2] == 1 and torch.isnan(out[1])  # absent: untouched
    assert div.tolist() == [2.0, 1.0, 4.0]
    out, _ = norm(torch.tensor([1.0, 3.0, 8.0]), torch.ones(3, dtype=torch.bool))
    assert out.tolist() == [0.5, 1.0, 2.0]  # task 1's first loss is 3: its scale starts now
    out, _ = norm(torch.tensor([0.5, 6.0, 2.0]), torch.ones(3, dtype=torch.bool))
    assert out.tolist() == [0.25, 2.0, 0.5]
    assert norm.scale.tolist() == [2.0, 3.0, 4.0]  # kept as a buffer
    assert set(dict(norm.named_buffers())) == {"scale", "seen"}


def test_normalization_zero_first_loss_never_divides_by_zero():
    norm = LossNormalization(2, "initial")
    both = torch.ones(2, dtype=torch.bool)
    out, _ = norm(torch.tensor([0.0, 1.0]), both)
    assert out.tolist() == [0.0, 1.0] and not norm.seen[0]
    out, _ = norm(torch.tensor([0.5, 2.0]), both)
    assert out.tolist() == [1.0, 2.0]  # the first positive loss starts the scale
    rm = LossNormalization(1, "running_mean", momentum=0.5)
    rm(torch.tensor([1.0]), torch.ones(1, dtype=torch.bool))
    for _ in range(2000):  # the mean decays toward 0 but the divisor stays positive
        out, div = rm(torch.tensor([0.0]), torch.ones(1, dtype=torch.bool))
    assert div.item() > 0 and out.item() == 0.0
    out, _ = rm(torch.tensor([1.0]), torch.ones(1, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_normalization_running_mean_matches_hand_recursion():
    beta = 0.9
    norm = LossNormalization(2, "running_mean", momentum=beta)
    rng = np.random.default_rng(0)
    mean = [None, None]
    for _ in range(30):
        losses = rng.uniform(0.1, 5.0, size=2)
        present = rng.random(2) > 0.3
        out, _ = norm(torch.tensor(losses, dtype=torch.float32), torch.tensor(present))
        for t in range(2):
            if not present[t]:
                assert out[t].item() == pytest.approx(losses[t], rel=1e-6)
                continue
            mean[t] = losses[t] if mean[t] is None else beta * mean[t] + (1 - beta) * losses[t]
            assert out[t].item() == pytest.approx(losses[t] / mean[t], rel=1e-5)


def test_normalization_is_detached_and_none_is_identity():
    losses = torch.tensor([2.0, 4.0], requires_grad=True)
    out, _ = LossNormalization(2, "running_mean")(losses, torch.ones(2, dtype=torch.bool))
    out.sum().backward()
    assert losses.grad.tolist() == [0.5, 0.25]  # grad L / m with m detached
    same, div = LossNormalization(2, "none")(losses, torch.ones(2, dtype=torch.bool))
    assert same is losses and div is None
    with pytest.raises(ValueError, match="loss_normalization"):
        check_normalization("mean")
    with pytest.raises(ValueError, match="momentum"):
        LossNormalization(2, "running_mean", momentum=1.0)


class Recorder(Weighting):
    """Static weighting that records the losses it is given (for the tests)."""

    needs_losses_after_step = True

    def build(self, static_weights, task_kinds=None):
        return RecorderState(static_weights)


class RecorderState(WeightingState):
    def __init__(self, static_weights):
        super().__init__(static_weights)
        self.seen = []
        self.after = []

    def combine(self, losses, present, grads=None):
        self.seen.append(torch.where(present, losses.detach(), torch.nan).clone())
        w = torch.where(present, self.static_weights, torch.zeros_like(losses))
        return Step((w * torch.where(present, losses, torch.zeros_like(losses))).sum(), w)

    def after_step(self, losses_after, present):
        self.after.append(torch.where(present, losses_after, torch.nan).clone())


def test_engine_normalises_training_losses_only():
    net = make_net(build_module("hard"), Recorder(), normalization="initial")
    X, y = make_batch()
    y[:, T:] = 1.0
    for _ in range(2):
        step_gradients(net, X, y)
    first, second = net.weighting_.seen
    assert torch.allclose(first, torch.ones(T))  # first step: every loss is its own scale
    raw, _ = net.criterion_(net.module_(X), y)
    assert torch.allclose(net.loss_normalization_.scale, raw.detach(), rtol=1e-6)
    assert torch.allclose(second, torch.ones(T), rtol=1e-5)  # lr=0: the same losses again
    # Validation losses stay raw and static-weighted.
    net.reset_task_sums()
    with torch.no_grad():
        valid = net.get_loss(net.module_(X), y, X, training=False)
    raw, _ = net.criterion_(net.module_(X), y)
    assert valid.item() == pytest.approx((net.weighting_.static_weights * raw).sum().item())


@pytest.mark.parametrize("normalization", ["initial", "running_mean"])
def test_after_step_gets_the_losses_on_the_scale_combine_saw(normalization):
    net = make_net(build_module("hard"), Recorder(), normalization=normalization)
    X, y = make_batch(absent=(1,))
    for _ in range(3):
        net.train_step((X, y))
    state = net.weighting_
    assert len(state.seen) == len(state.after) == 3
    for seen, after in zip(state.seen, state.after):
        # lr=0: the same batch after the step gives the losses combine() saw.
        assert torch.allclose(after, seen, rtol=1e-6, equal_nan=True)
    assert not torch.allclose(state.after[-1][[0, 2]], net.criterion_(net.module_(X), y)[0][[0, 2]])


def test_famo_compares_losses_on_the_same_scale():
    state = FAMO(weight_decay=0.0).build(np.ones(2))
    both = torch.ones(2, dtype=torch.bool)
    scale = torch.tensor([10.0, 0.1])
    raw = torch.tensor([5.0, 0.2])
    state.combine(raw / scale, both)
    state.after_step(raw / scale, both)  # the same losses after the step: no change
    assert state.logits.tolist() == [0.0, 0.0]
    state.combine(raw / scale, both)
    state.after_step(raw.clone(), both)  # another scale: a spurious, large change
    assert state.logits.abs().max() > 0
    # Through the engine (lr=0, so the losses after the step are those before):
    # FAMO's logits stay put, with the losses normalised or not.
    for normalization in ("none", "initial", "running_mean"):
        net = make_net(build_module("hard"), FAMO(weight_decay=0.0),
                       normalization=normalization)
        X, y = make_batch()
        for _ in range(3):
            net.train_step((X, y))
        assert net.weighting_.logits.tolist() == [0.0, 0.0, 0.0], normalization
