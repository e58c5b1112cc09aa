"""MGDA and MGDA-UB (Sener & Koltun 2018)."""

import math

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._small_linalg import solve_small, spd_block_solve

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
_TINY = np.finfo(float).tiny
# LDL^T pivots below this fraction of the largest diagonal entry send the affine
# minimiser to the KKT system (nearly dependent gradients).
_DEFINITE_RTOL = 1e-6


def min_norm_2(g11, g12, g22):
    """Closed-form min-norm point of the segment between two vectors.

    With ``g11 = |g1|^2``, ``g12 = g1.g2``, ``g22 = |g2|^2``, the minimiser of
    ``|gamma g1 + (1 - gamma) g2|`` over ``gamma in [0, 1]`` is
    ``clip((g22 - g12) / (g11 - 2 g12 + g22), 0, 1)`` (Sener & Koltun 2018,
    Algorithm 1). Returns ``gamma``, the weight of ``g1``. Equal vectors
    give 0.5.
    """
    denom = g11 - 2.0 * g12 + g22
    if denom <= 1e-15 * max(g11, g22, _TINY):
        return 0.5
    return min(max((g22 - g12) / denom, 0.0), 1.0)  # nan stays nan, as np.clip


def _affine_minimizer(M, S, scale=1.0):
    """argmin ``a^T M_SS a`` subject to ``sum(a) = 1`` (a unconstrained in sign).

    ``M`` is a list of rows, ``S`` the indices. When ``M_SS`` is positive
    definite (linearly independent points, the usual case) the minimiser is
    ``x / sum(x)`` with ``M_SS x = 1``, solved by LDL^T; otherwise by the
    (|S| + 1) KKT system, and by least squares (minimum-norm coefficients)
    when the points are affinely dependent or nearly so.
    """
    x = spd_block_solve(M, S, [-1.0] * len(M), _DEFINITE_RTOL * scale)
    if x is not None:
        total = sum(x)
        if total > 0.0:
            a = [v / total for v in x]
            if max(map(abs, a)) < 1e6:
                return a
    m = len(S)
    kkt = [[M[p][q] for q in S] + [1.0] for p in S]
    kkt.append([1.0] * m + [0.0])
    rhs = [0.0] * m + [1.0]
    sol = solve_small(kkt, rhs, max(scale, 1.0))
    if sol is None or max(abs(x) for x in sol[:m]) >= 1e6:
        sol = np.linalg.lstsq(np.array(kkt), np.array(rhs), rcond=None)[0].tolist()
    return sol[:m]


def _wolfe_corral(M, tol=1e-12, max_iter=1000, start=None):
    """Wolfe's nearest-point algorithm on a Gram matrix ``M`` (a list of rows).

    Wolfe 1976, "Finding the nearest point in a polytope" (Math.
    Programming). Keeps a "corral" S of vertices whose affine hull's
    minimum-norm point lies inside their convex hull; exact in a finite
    number of steps, unlike Frank-Wolfe's sublinear convergence. Plain
    Python floats: k is a handful, and per-call overhead, not arithmetic,
    sets the cost. Returns the final corral and its weights ``(S, ws)``.

    ``start`` (optional list of indices) is a warm start, e.g. the support
    of the previous training step's solution: used as the first corral when
    its affine minimiser lies inside its hull, which usually leaves a single
    optimality check (the result is the same minimum).
    """
    k = len(M)
    diag = [M[i][i] for i in range(k)]
    scale = max(max(diag), _TINY)
    wtol = 1e-12
    j = min(range(k), key=diag.__getitem__)
    S, ws = [j], [1.0]
    if start is not None and 1 < len(start) <= k and all(0 <= i < k for i in start):
        a = _affine_minimizer(M, list(start), scale)
        if min(a) > wtol:
            S, ws = list(start), a
    for _ in range(max_iter):
        Mw = [0.0] * k
        for s, w in zip(S, ws, strict=True):
            row = M[s]
            for i in range(k):
                Mw[i] += w * row[i]
        xx = 0.0
        for s, w in zip(S, ws, strict=True):
            xx += w * Mw[s]
        j = min(range(k), key=Mw.__getitem__)
        # Optimal when no vertex reaches further along -x than x itself.
        if xx - Mw[j] <= tol * scale or j in S:
            break
        S_new, ws_new = S + [j], ws + [0.0]
        while True:  # minor cycle: move toward the affine minimiser of S
            a = _affine_minimizer(M, S_new, scale)
            if min(a) > wtol:
                ws_new = a
                break
            theta = 1.0
            for x, y in zip(ws_new, a, strict=True):
                if y <= wtol:
                    theta = min(theta, x / max(x - y, _TINY))
            ws_new = [theta * y + (1.0 - theta) * x for x, y in zip(ws_new, a, strict=True)]
            keep = [i for i, x in enumerate(ws_new) if x > wtol]
            S_new, ws_new = [S_new[i] for i in keep], [ws_new[i] for i in keep]
            if not S_new:  # numerical breakdown; keep the last iterate
                break
        if not S_new:
            break
        total = sum(ws_new)
        ws_new = [x / total for x in ws_new]
        value = 0.0
        for s, w in zip(S_new, ws_new, strict=True):
            row = M[s]
            for t, v in zip(S_new, ws_new, strict=True):
                value += w * v * row[t]
        if value >= xx - 1e-15 * scale:
            break  # no progress (numerical limit reached)
        S, ws = S_new, ws_new
    return S, ws


def min_norm_weights(M, hint=None, tol=1e-12, max_iter=1000):
    """Min-norm weights on the simplex for a Gram matrix ``M`` (a list of rows
    of floats); a list out. Two tasks use the closed form, more Wolfe's
    algorithm.

    ``hint`` (optional dict) carries the support of the last solution from one
    call to the next as a warm start (the result does not depend on it).
    """
    k = len(M)
    if k == 1:
        return [1.0]
    if k == 2:
        g = min_norm_2(M[0][0], M[0][1], M[1][1])
        return [g, 1.0 - g]
    S, ws = _wolfe_corral(M, tol, max_iter, None if hint is None else hint.get(k))
    w = [0.0] * k
    for i, x in zip(S, ws, strict=True):
        w[i] = x if x > 0.0 else 0.0
    total = sum(w)
    w = [x / total for x in w]
    if hint is not None:
        hint[k] = [i for i in range(k) if w[i] > 0.0]
    return w


def min_norm_weights_np(M, tol=1e-12, max_iter=1000, hint=None):
    """:func:`min_norm_weights` on a float64 numpy Gram matrix (numpy out)."""
    return np.array(min_norm_weights(np.asarray(M, dtype=np.float64).tolist(), hint, tol,
                                     max_iter))


def mgda_min_norm_weights(gram, tol=1e-12, max_iter=1000):
    """Weights ``lambda`` on the simplex minimising ``|sum_t lambda_t g_t|^2``.

    ``gram`` is ``G G^T`` (k, k) for task gradients ``G`` (k, P). Two tasks
    use the closed form (:func:`min_norm_2`), more use Wolfe's algorithm.
    Returns a tensor (k,) on ``gram``'s device and dtype.
    """
    M = gram.detach().to("cpu", torch.float64).numpy()
    lam = min_norm_weights_np(M, tol=tol, max_iter=max_iter)
    return torch.as_tensor(lam, dtype=gram.dtype, device=gram.device)


def _normalizers(M, losses, normalization, eps=1e-8):
    """Per-task divisors ``n_t`` (a list) of MGDA's gradient normalisation.

    'none': 1; 'l2': ``|g_t|``; 'loss': ``L_t``; 'loss+': ``L_t |g_t|``
    (Sener & Koltun 2018, released code). Clamped at ``eps`` so a zero
    gradient or loss gives a finite value.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {list(NORMALIZATIONS)}; got {normalization!r}."
        )
    k = len(M)
    norms = [math.sqrt(max(M[i][i], 0.0)) for i in range(k)]  # nan stays nan
    if normalization == "none":
        n = [1.0] * k
    elif normalization == "l2":
        n = norms
    elif normalization == "loss":
        n = [float(x) for x in losses]
    else:
        n = [float(x) * y for x, y in zip(losses, norms, strict=True)]
    return [max(x, eps) for x in n]  # nan stays nan, as np.maximum


def mgda_coefficients_list(M, losses=None, normalization="none", hint=None):
    """:func:`mgda_coefficients` on a list of rows (and a list of losses); a list out."""
    if normalization == "none":
        return min_norm_weights(M, hint)
    n = _normalizers(M, losses, normalization)
    scaled = [[x / (a * b) for x, b in zip(row, n, strict=True)]
              for row, a in zip(M, n, strict=True)]
    lam = min_norm_weights(scaled, hint)
    return [x / a for x, a in zip(lam, n, strict=True)]


def mgda_coefficients_np(M, losses=None, normalization="none", hint=None):
    """:func:`mgda_coefficients` on float64 numpy arrays (numpy out)."""
    M = np.asarray(M, dtype=np.float64).tolist()
    losses = None if losses is None else np.asarray(losses, dtype=np.float64).tolist()
    return np.array(mgda_coefficients_list(M, losses, normalization, hint))


def mgda_coefficients(gram, losses=None, normalization="none"):
    """MGDA's shared-update coefficients ``c`` (update ``= sum_t c_t g_t``).

    The gradients are normalised ``g~_t = g_t / n_t``, the min-norm point
    ``sum_t lambda_t g~_t`` of their convex hull is the update, hence
    ``c_t = lambda_t / n_t``. That point is a common descent direction:
    ``d . g~_t >= |d|^2`` for every task.
    """
    M = gram.detach().to("cpu", torch.float64).numpy()
    loss = None if losses is None else losses.detach().to("cpu", torch.float64).numpy()
    c = mgda_coefficients_np(M, loss, normalization)
    return torch.as_tensor(c, dtype=gram.dtype, device=gram.device)


class MGDAState(GradientWeightingState):
    def __init__(self, static_weights, normalization):
        super().__init__(static_weights)
        self.normalization = normalization
        # The losses travel to the host only for the loss-based normalisations.
        self.needs_losses = normalization in ("loss", "loss+")
        self._hint = {}  # warm start of the min-norm solver (the result does not depend on it)

    def coefficients(self, gram, losses):
        return mgda_coefficients_list(gram, losses, self.normalization, self._hint)


class MGDA(Weighting):
    """Multiple-gradient descent: the min-norm point of the task gradients.

    Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective
    Optimization" (NeurIPS), after Désidéri 2012. The shared update is the
    minimum-norm element of the convex hull of the (optionally normalised)
    per-task gradients of the shared parameters, a direction that decreases
    every present task's loss (or is zero at a Pareto-stationary point).

    The simplex problem is solved exactly: closed form for two tasks, Wolfe's
    nearest-point algorithm for more, on the host in float64 from the Gram
    matrix. ``needs_grads = "params"``. Static weights do not enter the
    shared update (MGDA has no natural prior); they weight the heads' loss.
    The step's ``weights`` and ``shared_coef`` are ``c_t = lambda_t / n_t``.

    Parameters
    ----------
    normalization : {'none', 'l2', 'loss', 'loss+'}, default='none'
        Gradient normalisation before the min-norm problem: none, by the
        gradient norm, by the loss, or by both.
    """

    needs_grads = "params"
    _parameter_constraints: dict = {"normalization": [StrOptions(set(NORMALIZATIONS))]}

    def __init__(self, normalization="none"):
        self.normalization = normalization

    def build(self, static_weights, task_kinds=None):
        return MGDAState(static_weights, self.normalization)


class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients of the shared representation.

    Sener & Koltun 2018, Section 3.3: the min-norm problem uses the per-task
    gradients of the shared representation Z (an upper bound of the
    parameter version), which needs a single backward pass through the
    trunk. ``needs_grads = "representation"``; otherwise as :class:`MGDA`.
    """

    needs_grads = "representation"
