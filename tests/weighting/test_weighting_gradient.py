"""Hand-computed checks of the gradient-combining strategies."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from sklearn_mtl.weighting import IMTL, MGDA, MGDAUB, CAGrad, GradNorm, PCGrad, UPGrad
from sklearn_mtl.weighting.cagrad import (
    _dual_slsqp, cagrad_coefficients, cagrad_coefficients_list, cagrad_dual_weights)
from sklearn_mtl.weighting.gradnorm import gradnorm_weight_gradient
from sklearn_mtl.weighting.imtl import imtl_g_coefficients
from sklearn_mtl.weighting.mgda import mgda_coefficients, mgda_min_norm_weights, min_norm_2
from sklearn_mtl.weighting.pcgrad import pcgrad_coefficients
from sklearn_mtl.weighting.upgrad import upgrad_coefficients


def T(x):
    return torch.tensor(np.asarray(x, dtype=float))


def gram(G):
    G = T(G)
    return G @ G.T


def combine(weighting, G, present=None, static=None, losses=None):
    G = torch.tensor(G, dtype=torch.float32)
    n = G.shape[0]
    present = torch.ones(n, dtype=torch.bool) if present is None else torch.tensor(present)
    losses = torch.ones(n) if losses is None else torch.tensor(losses, dtype=torch.float32)
    state = weighting.build(np.ones(n) if static is None else np.asarray(static, dtype=float))
    return state, state.combine(losses, present, G)


# --- MGDA ----------------------------------------------------------------------


def test_min_norm_2_closed_form():
    for g1, g2 in [([1, 0], [0, 1]), ([1, 0], [1, 1]), ([3, 1], [-1, 2]), ([1, 2], [1, 2])]:
        g1, g2 = np.array(g1, float), np.array(g2, float)
        d = g1 - g2
        expected = 0.5 if d @ d == 0 else np.clip(((g2 - g1) @ g2) / (d @ d), 0, 1)
        gamma = min_norm_2(g1 @ g1, g1 @ g2, g2 @ g2)
        assert gamma == pytest.approx(expected)
        lam = mgda_min_norm_weights(gram([g1, g2]))
        assert lam.tolist() == pytest.approx([gamma, 1 - gamma])
    assert min_norm_2(1.0, 0.0, 1.0) == 0.5
    assert (
        min_norm_2(1.0, 1.0, 2.0) == 1.0
    )  # g1 = (1,0) is the closest point of the segment to (1,1)


def _scipy_min_norm(M):
    k = M.shape[0]
    res = minimize(
        lambda w: w @ M @ w,
        np.full(k, 1 / k),
        jac=lambda w: 2 * M @ w,
        method="SLSQP",
        bounds=[(0, 1)] * k,
        constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return res.x


def test_min_norm_three_vectors_against_scipy():
    # Orthonormal vectors: the centroid.
    assert mgda_min_norm_weights(torch.eye(3, dtype=torch.float64)).tolist() == pytest.approx(
        [1 / 3] * 3
    )
    # A case whose solution lies on an edge of the simplex, and random ones.
    G = np.array([[1.0, 0.0], [-1.0, 0.2], [0.0, 2.0]])
    cases = [G] + [np.random.default_rng(s).normal(size=(3, 4)) for s in range(5)]
    for G in cases:
        M = G @ G.T
        lam = mgda_min_norm_weights(torch.tensor(M)).numpy()
        ref = _scipy_min_norm(M)
        assert lam.min() >= 0 and lam.sum() == pytest.approx(1)
        assert lam @ M @ lam <= ref @ M @ ref + 1e-12
        assert lam == pytest.approx(ref, abs=1e-4)
    lam = mgda_min_norm_weights(torch.tensor(cases[0] @ cases[0].T)).numpy()
    assert lam[2] == pytest.approx(0, abs=1e-12)  # (0, 2) is not needed


def test_min_norm_many_tasks_degenerate_cases():
    rng = np.random.default_rng(0)
    for k, P in [(5, 2), (6, 3), (4, 10)]:
        G = rng.normal(size=(k, P))
        G[1] = G[0]  # duplicate gradient
        M = G @ G.T
        lam = mgda_min_norm_weights(torch.tensor(M)).numpy()
        ref = _scipy_min_norm(M)
        assert lam @ M @ lam <= ref @ M @ ref + 1e-10
    # A zero gradient is itself the min-norm point.
    lam = mgda_min_norm_weights(gram([[1, 0], [0, 0], [0, 1]]))
    assert lam.tolist() == [0.0, 1.0, 0.0]


def test_mgda_normalizations():
    G = [[2.0, 0.0], [0.0, 1.0]]
    M = gram(G)
    c = mgda_coefficients(M, T([1.0, 1.0]), "l2")
    # Unit vectors -> lambda = (1/2, 1/2); c = lambda / |g| = (1/4, 1/2); update (1/2, 1/2).
    assert c.tolist() == pytest.approx([0.25, 0.5])
    c = mgda_coefficients(M, T([4.0, 1.0]), "loss")
    # g/L = (0.5, 0), (0, 1): gamma = 1 / 1.25 = 0.8 -> c = (0.8 / 4, 0.2 / 1).
    assert c.tolist() == pytest.approx([0.2, 0.2])
    c = mgda_coefficients(M, T([4.0, 1.0]), "loss+")
    # Both become unit/L: (0.25, 0), (0, 1): gamma = 1/1.0625; c = lambda / (L |g|).
    gam = 1 / 1.0625
    assert c.tolist() == pytest.approx([gam / 8, (1 - gam) / 1])
    assert mgda_coefficients(M, None, "none").tolist() == pytest.approx([0.2, 0.8])


def test_mgda_state_is_common_descent_and_skips_absent_zero_row():
    G = [[1.0, 0.0], [0.0, 0.0], [-0.5, 1.0]]
    state, rec = combine(
        MGDA(), G, present=[True, False, True], static=[2.0, 1.0, 3.0], losses=[1, 0, 2]
    )
    g1, g3 = np.array(G[0]), np.array(G[2])
    gamma = min_norm_2(g1 @ g1, g1 @ g3, g3 @ g3)
    assert rec.shared_coef.tolist() == pytest.approx([gamma, 0.0, 1 - gamma])
    assert rec.loss.item() == pytest.approx(2 * 1 + 3 * 2)  # heads: static weights
    d = gamma * g1 + (1 - gamma) * g3
    assert d @ g1 >= d @ d - 1e-6 and d @ g3 >= d @ d - 1e-6
    assert MGDAUB().needs_grads == "representation"
    _, ub_rec = combine(MGDAUB(), G, present=[True, False, True])
    assert torch.allclose(ub_rec.shared_coef, rec.shared_coef)


# --- PCGrad ---------------------------------------------------------------------


def _pcgrad_reference(G, orders):
    G = np.asarray(G, float)
    out = []
    for i in range(len(G)):
        g = G[i].copy()
        for j in orders[i]:
            if j != i and g @ G[j] < 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        out.append(g)
    return np.sum(out, 0)


def test_pcgrad_hand_cases():
    # Conflict: g1' = g1 + g2/2, g2' = g2 + g1 -> update = 2 g1 + 1.5 g2.
    c = pcgrad_coefficients(gram([[1, 0], [-1, 1]]), torch.tensor([0, 1]))
    assert c.tolist() == pytest.approx([2.0, 1.5])
    # No conflict: plain sum.
    c = pcgrad_coefficients(gram([[1, 0], [1, 1]]), torch.tensor([1, 0]))
    assert c.tolist() == [1.0, 1.0]
    # Three vectors, fixed order 0, 1, 2 (worked by hand):
    # rows: g1'' = g1 + g2/2 + g3/2, g2'' = g1 + g2 + g3/2, g3'' = g1 + g2/2 + g3.
    G = [[1, 0], [-1, 1], [-1, -1]]
    c = pcgrad_coefficients(gram(G), torch.tensor([0, 1, 2]))
    assert c.tolist() == pytest.approx([3.0, 2.0, 2.0])
    assert (c.numpy() @ np.array(G, float)).tolist() == pytest.approx([-1.0, 0.0])


def test_pcgrad_matches_vector_reference_with_per_task_orders():
    rng = np.random.default_rng(3)
    for _ in range(10):
        G = rng.normal(size=(4, 3))
        orders = np.array([rng.permutation(4) for _ in range(4)])
        c = pcgrad_coefficients(gram(G), torch.tensor(orders)).numpy()
        assert c @ G == pytest.approx(_pcgrad_reference(G, orders), abs=1e-10)


def test_pcgrad_state_priors_and_seed():
    # Priors (2, 1) scale g1 to (2, 0) first; update (1, 2) = 3 g1 + 2 g2.
    _, rec = combine(PCGrad(random_state=0), [[1, 0], [-1, 1]], static=[2.0, 1.0])
    assert rec.shared_coef.tolist() == pytest.approx([3.0, 2.0])
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [0.2, -1.0]])
    runs = []
    for seed in (5, 5, 6):
        st = PCGrad(random_state=seed).build(np.ones(4))
        coefs = []
        for _ in range(4):
            rec = st.combine(torch.ones(4), torch.ones(4, dtype=torch.bool), G)
            coefs.append(rec.shared_coef.clone())
        runs.append(torch.stack(coefs))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])  # the order is random and matters here


# --- CAGrad ----------------------------------------------------------------------


def test_cagrad_c0_is_average():
    G = np.random.default_rng(1).normal(size=(3, 4))
    assert cagrad_coefficients(gram(G), c=0.0).tolist() == pytest.approx([1 / 3] * 3)


def test_cagrad_orthogonal_hand_case():
    # g1 = e1, g2 = e2: g_w . g0 = 1/2 for every w, so w = (1/2, 1/2), |g_w| = |g0|,
    # lam = c, d = (1 + c) g0; rescale 1 divides by 1 + c^2.
    M = gram([[1, 0], [0, 1]])
    c = 0.4
    assert cagrad_dual_weights(M, c).tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    assert cagrad_coefficients(M, c, rescale=0).tolist() == pytest.approx([0.5 * 1.4] * 2, abs=1e-6)
    assert cagrad_coefficients(M, c, rescale=1).tolist() == pytest.approx(
        [0.7 / 1.16] * 2, abs=1e-6
    )
    assert cagrad_coefficients(M, c, rescale=2).tolist() == pytest.approx([0.5] * 2, abs=1e-6)


def test_cagrad_dual_against_grid_and_primal_optimality():
    rng = np.random.default_rng(2)
    c = 0.4
    for _ in range(3):
        G = rng.normal(size=(3, 4))
        M = G @ G.T
        b = np.full(3, 1 / 3)
        g0n = math.sqrt(b @ M @ b)

        def F(w, M=M, b=b, g0n=g0n):
            return w @ M @ b + c * g0n * math.sqrt(max(w @ M @ w, 0))

        w = cagrad_dual_weights(torch.tensor(M), c).numpy()
        n = 60
        grid = min(
            F(np.array([i, j, n - i - j]) / n) for i in range(n + 1) for j in range(n + 1 - i)
        )
        assert F(w) <= grid + 1e-9
        # Primal: d maximises min_t g_t . d over the ball |d - g0| <= c |g0|.
        d = cagrad_coefficients(torch.tensor(M), c, rescale=0).numpy() @ G
        g0 = G.mean(0)
        assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-6)
        u = rng.normal(size=(4000, 4))
        cand = g0 + c * np.linalg.norm(g0) * u / np.linalg.norm(u, axis=1, keepdims=True)
        assert (G @ d).min() >= (cand @ G.T).min(1).max() - 1e-6


def test_cagrad_warm_start_changes_no_result():
    # A drifting sequence of conflicting gradients, as in training: the solver's
    # warm start (the last optimal face and s, tried first) must give the same
    # coefficients as a cold solve at every step, and as good an objective as SLSQP.
    rng = np.random.default_rng(5)
    c = 0.4
    G = rng.normal(size=(5, 12))
    G[1] = -0.8 * G[0] + 0.3 * rng.normal(size=12)  # a conflicting pair
    hint, faces_seen = {}, set()
    for _ in range(150):
        G = G + 0.25 * rng.normal(size=G.shape)
        M = (G @ G.T).tolist()
        warm = cagrad_coefficients_list(M, c, 1, hint)
        cold = cagrad_coefficients_list(M, c, 1)
        assert warm == pytest.approx(cold, abs=1e-9)
        faces_seen.add(tuple(hint["faces"][5]))
        Mn = np.array(M)
        b = np.full(5, 0.2)
        g0 = math.sqrt(b @ Mn @ b)

        def F(w, Mn=Mn, b=b, g0=g0):
            return w @ Mn @ b + c * g0 * math.sqrt(max(w @ Mn @ w, 0.0))

        w = cagrad_dual_weights(torch.tensor(Mn), c).numpy()
        reference = _dual_slsqp_scaled(Mn, c)
        assert F(w) <= F(reference) + 1e-9 * (1 + abs(F(reference)))
    assert len(faces_seen) >= 5  # the sequence moves across faces


def _dual_slsqp_scaled(M, c):
    scale = M.diagonal().max()
    A = M / scale
    k = len(M)
    a = A.mean(1)
    rho = c * math.sqrt(a.mean())
    return np.clip(_dual_slsqp(A, a, rho, np.full(k, 1 / k)), 0, None)


def test_cagrad_state_priors():
    # Priors scale the gradients: (2 e1, e2) with c = 0 gives the average of the scaled ones.
    _, rec = combine(CAGrad(c=0.0), [[1, 0], [0, 1]], static=[2.0, 1.0])
    assert rec.shared_coef.tolist() == pytest.approx([1.0, 0.5])


# --- IMTL-G --------------------------------------------------------------------------


def test_imtl_hand_case():
    # g1 = (1, 0), g2 = (0, 2): D = (1, -2), U = (1, -1), alpha2 = 1 / 3.
    a = imtl_g_coefficients(gram([[1, 0], [0, 2]]))
    assert a.tolist() == pytest.approx([2 / 3, 1 / 3])
    # Opposite gradients g2 = -2 g1: d must be orthogonal to both: alpha = (2/3, 1/3), d = 0.
    a = imtl_g_coefficients(gram([[1, 1], [-2, -2]]))
    assert a.tolist() == pytest.approx([2 / 3, 1 / 3])


def test_imtl_equal_projections():
    rng = np.random.default_rng(4)
    for k in (3, 4):
        G = rng.normal(size=(k, 6)) * rng.uniform(0.1, 10, size=(k, 1))
        a = imtl_g_coefficients(gram(G)).numpy()
        d = a @ G
        proj = G @ d / np.linalg.norm(G, axis=1)
        assert a.sum() == pytest.approx(1)
        assert proj == pytest.approx(np.full(k, proj[0]), rel=1e-8)


def test_imtl_zero_gradient_task_dropped():
    a = imtl_g_coefficients(gram([[1, 0], [0, 0], [0, 2]]))
    assert a.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3])
    _, rec = combine(IMTL(), [[1, 0], [5, 5], [0, 2]], present=[True, False, True])
    assert rec.shared_coef.tolist() == pytest.approx([2 / 3, 0.0, 1 / 3], rel=1e-6)


# --- UPGrad ---------------------------------------------------------------------------


def test_upgrad_hand_case():
    # g1 = (1, 0), g2 = (-1, 1). proj(g1) = g1 + g2 / 2 = (.5, .5); proj(g2) = g2 + g1 = (0, 1).
    # Mean of projections: (g1 + g2/2 + g1 + g2) / 2 = g1 + 0.75 g2.
    c = upgrad_coefficients(gram([[1, 0], [-1, 1]]))
    assert c.tolist() == pytest.approx([1.0, 0.75], abs=1e-9)
    # Non-conflicting gradients are averaged unchanged.
    c = upgrad_coefficients(gram([[1, 0], [1, 1]]))
    assert c.tolist() == pytest.approx([0.5, 0.5], abs=1e-12)


def test_upgrad_never_conflicts_and_priors():
    rng = np.random.default_rng(5)
    for _ in range(5):
        G = rng.normal(size=(4, 3))
        d = upgrad_coefficients(gram(G)).numpy() @ G
        assert (G @ d).min() >= -1e-9
    # Priors (2, 1) on non-conflicting gradients: the mean of the scaled gradients.
    _, rec = combine(UPGrad(), [[1, 0], [1, 1]], static=[2.0, 1.0])
    assert rec.shared_coef.tolist() == pytest.approx([1.0, 0.5])


# --- GradNorm ---------------------------------------------------------------------------


def test_gradnorm_first_step_by_hand():
    state = GradNorm(alpha=1.5, lr=0.1).build(np.ones(2))
    G = torch.tensor([[1.0, 0.0], [0.0, 10.0]])  # norms 1 and 10
    losses = torch.tensor([1.0, 1.0], requires_grad=True)
    both = torch.tensor([True, True])
    rec = state.combine(losses, both, G)
    # Step uses the weights before the update: (1, 1).
    assert rec.loss.item() == pytest.approx(2.0)
    assert rec.shared_coef.tolist() == [1.0, 1.0]
    # G = (1, 10), target = mean 5.5 * r^alpha with r = (1, 1): gradient (-1, +10);
    # Adam's first step is lr * sign: (1.1, 0.9), which already sums to 2.
    g, target, Gn = gradnorm_weight_gradient(
        torch.ones(2), torch.tensor([1.0, 10.0]), torch.ones(2), torch.ones(2), both, 1.5
    )
    assert g.tolist() == [-1.0, 10.0] and target.tolist() == [5.5, 5.5]
    assert state.weights.tolist() == pytest.approx([1.1, 0.9], rel=1e-6)
    assert not state.weights.requires_grad


def test_gradnorm_balances_gradient_norms():
    state = GradNorm(lr=0.02).build(np.ones(2))
    G = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    both = torch.tensor([True, True])
    for _ in range(300):
        state.combine(torch.ones(2), both, G)
    w = state.weights.detach()
    assert w.sum().item() == pytest.approx(2.0, rel=1e-5)
    # Balanced when w1 * 1 == w2 * 10, i.e. w = (20/11, 2/11).
    assert w.tolist() == pytest.approx([20 / 11, 2 / 11], abs=0.05)


def test_gradnorm_slower_task_gets_larger_target():
    state = GradNorm(lr=0.05).build(np.array([1.0, 2.0]))
    G = torch.eye(2)  # equal gradient norms
    both = torch.tensor([True, True])
    state.combine(torch.tensor([1.0, 1.0]), both, G)  # records L(0)
    for _ in range(5):
        state.combine(torch.tensor([0.5, 1.0]), both, G)  # task 1 trains slower
    w = state.weights.detach().clone()
    assert w[1] > 1 > w[0] and w.sum().item() == pytest.approx(2.0, rel=1e-6)
    # Static weights are priors on top of the learned weights.
    rec = state.combine(torch.tensor([0.5, 1.0]), both, G)
    assert torch.allclose(rec.shared_coef, torch.tensor([1.0, 2.0]) * w)


def test_gradnorm_stays_positive_and_keeps_sum_with_absent_tasks():
    gen = torch.Generator().manual_seed(0)
    state = GradNorm(lr=0.2).build(np.ones(3))
    for _ in range(100):
        present = torch.rand(3, generator=gen) > 0.3
        G = torch.randn(3, 4, generator=gen) * torch.tensor([[0.01], [1.0], [100.0]])
        G = torch.where(present[:, None], G, torch.zeros_like(G))
        frozen = state.weights.detach().clone()
        state.combine(torch.rand(3, generator=gen), present, G)
        w = state.weights.detach()
        assert (w > 0).all() and w.sum().item() == pytest.approx(3.0, rel=1e-5)
        assert torch.equal(w[~present], frozen[~present])


def test_gradnorm_host_path_matches_torch_path(monkeypatch):
    # Without gradient recording on the CPU (how the engine calls it) combine
    # takes a host path; with recording it runs the torch ops. Same rule, to
    # float32 rounding (the weights sum to 4, hence the absolute tolerance).
    gen = torch.Generator().manual_seed(0)
    torch_state = GradNorm(lr=0.05).build(np.array([1.0, 2.0, 0.5, 1.0]))
    host_state = GradNorm(lr=0.05).build(np.array([1.0, 2.0, 0.5, 1.0]))
    host_calls = []
    host_path = host_state._combine_host

    def counted_host_path(*args):
        host_calls.append(1)
        return host_path(*args)

    monkeypatch.setattr(host_state, "_combine_host", counted_host_path)
    scale = torch.tensor([[0.1], [1.0], [3.0], [10.0]])
    for i in range(60):
        present = torch.rand(4, generator=gen) > 0.3
        if i < 3:  # tasks first seen at different steps; the first step has one task
            present &= torch.arange(4) <= i
        if i == 10:
            present[:] = False
        G = torch.randn(4, 50, generator=gen) * scale
        G = torch.where(present[:, None], G, 0.0)
        losses = torch.where(present, torch.rand(4, generator=gen), 0.0)
        expected = torch_state.combine(losses.clone().requires_grad_(), present, G)
        with torch.no_grad():
            got = host_state.combine(losses, present, G)
        assert len(host_calls) == i + 1
        for name in ("loss", "weights", "shared_coef", "head_weights"):
            a, b = getattr(got, name), getattr(expected, name).detach()
            assert isinstance(a, torch.Tensor) and not a.requires_grad
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # checks dtype, shape
        for name in ("weights", "exp_avg", "exp_avg_sq", "adam_steps", "initial_losses",
                     "has_initial"):
            a, b = getattr(host_state, name), getattr(torch_state, name)
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5)
    assert not host_state.weights.requires_grad
    assert host_state.weights.sum().item() == pytest.approx(4.0, rel=1e-5)
