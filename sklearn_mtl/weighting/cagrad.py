"""CAGrad: conflict-averse gradient descent (Liu et al. 2021)."""

from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from sklearn.utils._param_validation import Interval, Options

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._utils import on_host

RESCALES = (0, 1, 2)


def _dual_objective(A, a, rho):
    tiny = 1e-12  # keeps sqrt differentiable at g_w = 0

    def fun(w):
        return float(w @ a + rho * np.sqrt(max(w @ A @ w, 0.0) + tiny))

    def jac(w):
        Aw = A @ w
        return a + rho * Aw / np.sqrt(max(w @ Aw, 0.0) + tiny)

    return fun, jac


def _dual_slsqp(A, a, rho, start):
    """The dual by SLSQP (the authors' approach): the fallback of :func:`_dual_exact`."""
    fun, jac = _dual_objective(A, a, rho)
    k = A.shape[0]
    res = minimize(
        fun,
        start,
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=(
            {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},
        ),
        options={"ftol": 1e-12, "maxiter": 200},
    )
    return res.x


def _face_solution(A, a, support):
    """On the face ``support`` of the simplex, the minimiser of
    ``|g_w + s g_0|^2`` is affine in s: return ``(w0, w1)`` with
    ``w(s) = w0 + s w1`` (zeros off the support), or None when the support's
    points are affinely dependent."""
    m = len(support)
    kkt = np.empty((m + 1, m + 1))
    kkt[:m, :m] = A[np.ix_(support, support)]
    kkt[:m, m] = 1.0
    kkt[m, :m] = 1.0
    kkt[m, m] = 0.0
    rhs = np.zeros((m + 1, 2))
    rhs[m, 0] = 1.0
    rhs[:m, 1] = -a[support]
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(sol)) or np.abs(sol).max() > 1e8:
        return None
    k = A.shape[0]
    w0, w1 = np.zeros(k), np.zeros(k)
    w0[support], w1[support] = sol[:m, 0], sol[:m, 1]
    return w0, w1


def _dual_exact(A, a, g0sq, rho, s0=None, supports=None, max_iter=60, tol=1e-10):
    """CAGrad's dual solved exactly through a scalar equation (numpy; None if it fails).

    The KKT conditions of ``min_{w in simplex} a.w + rho |g_w|`` (at a point
    with ``g_w != 0``) are those of the min-norm problem
    ``min_w |g_w + s g_0|^2`` with ``s = |g_w| / rho``: the min-norm point of
    the shifted gradients ``g_t + s g_0``, whose Gram matrix is
    ``A + s (a 1^T + 1 a^T) + s^2 |g_0|^2`` (``a = A b``). So the dual is the
    root of ``phi(s) = |g_w(s)| - rho s`` with ``w(s)`` from Wolfe's
    algorithm. ``phi(0) >= 0`` and ``phi(1 / rho) <= 0`` (A has unit maximum
    diagonal), and on a fixed support ``w(s) = w0 + s w1`` is affine, so
    ``|g_w(s)| = rho s`` is a quadratic equation: a bracketed Newton-like
    iteration that jumps to that root (bisecting when it leaves the bracket)
    ends, usually after one to three min-norm problems, at a point where the
    dual's KKT conditions hold; the problem being convex, it is optimal.

    Returns ``(w, s)``, or ``(None, None)`` when ``0`` is in the hull of the
    gradients (``phi(0) = 0``: the optimum may be the non-smooth point
    ``g_w = 0``) or when the iteration fails; the caller then uses SLSQP.
    """
    from .mgda import min_norm_weights_np

    k = A.shape[0]
    ones = np.ones(k)
    aa = np.outer(a, ones)
    aa += aa.T

    if supports is None:
        supports = {}  # warm start of the min-norm solver from one s to the next

    def w_of(s):
        return min_norm_weights_np(A + s * aa + (s * s) * g0sq, hint=supports)

    lo, hi = 0.0, 1.0 / rho
    # Start at the previous step's s when given (successive Gram matrices are
    # close: usually one min-norm problem then suffices), else at the s of
    # w = b (|g_0| / rho = 1 / c), kept inside the bracket.
    s = s0 if s0 is not None and 0.0 < s0 < hi else min(np.sqrt(g0sq) / rho, 0.5 * hi)
    for it in range(max_iter):
        if it == 4:
            # Slow progress: check for the degenerate case (0 in the hull) once.
            w = w_of(0.0)
            if float(w @ A @ w) <= 1e-18:
                return None, None
        w = w_of(s)
        n = np.sqrt(max(float(w @ A @ w), 0.0))
        if n - rho * s > 0:
            lo = s
        else:
            hi = s
        support = np.flatnonzero(w > 1e-12)
        face = _face_solution(A, a, support)
        roots = []
        if face is not None:
            w0, w1 = face
            Aw1 = A @ w1
            alpha = float(w1 @ Aw1) - rho * rho
            beta = 2.0 * float(w0 @ Aw1)
            gamma = float(w0 @ A @ w0)
            if abs(alpha) > 1e-14:
                disc = beta * beta - 4.0 * alpha * gamma
                if disc >= 0:
                    r = np.sqrt(disc)
                    roots = [(-beta - r) / (2.0 * alpha), (-beta + r) / (2.0 * alpha)]
            elif beta != 0:
                roots = [-gamma / beta]
        nxt = None
        for root in sorted(x for x in roots if x > 0):
            cand = w0 + root * w1
            if cand.min() < -1e-10:
                continue
            cand = np.clip(cand, 0.0, None)
            cand /= cand.sum()
            Aw = A @ cand
            n = np.sqrt(max(float(cand @ Aw), 0.0))
            if n <= 1e-12:
                continue
            grad = a + rho * Aw / n
            nu = float(grad @ cand)
            # KKT: no vertex lowers the objective (A has unit max diagonal: absolute tol).
            if grad.min() >= nu - tol:
                return cand, root
            if lo < root < hi:
                nxt = root
        if hi - lo <= 1e-13 * (1.0 / rho):
            return None, None
        s = nxt if nxt is not None and nxt != s else 0.5 * (lo + hi)
    return None, None


def cagrad_dual_weights_np(M, c=0.4, hint=None):
    """:func:`cagrad_dual_weights` on a float64 numpy Gram matrix (numpy out).

    ``hint`` (optional dict) carries the scalar ``s`` and the support of the
    last solution from one call to the next (a warm start; the result does
    not depend on it).
    """
    k = M.shape[0]
    b = np.full(k, 1.0 / k)
    scale = float(np.diag(M).max())
    if k == 1 or c == 0 or scale <= 0:
        return b
    A = M / scale
    a = A @ b
    g0sq = max(float(b @ a), 0.0)
    if g0sq <= 0:
        return b  # g_0 = 0: the objective is constant, nothing to improve on b
    rho = c * np.sqrt(g0sq)
    if hint is None:
        w, s = _dual_exact(A, a, g0sq, rho)
    else:
        w, s = _dual_exact(A, a, g0sq, rho, s0=hint.get("s"),
                           supports=hint.setdefault("supports", {}))
    if hint is not None and s is not None:
        hint["s"] = s
    if w is None:
        w = _dual_slsqp(A, a, rho, b)
        w = np.clip(w, 0.0, None)
        w = w / w.sum() if w.sum() > 0 else b
    # Never return worse than the start.
    fun, _ = _dual_objective(A, a, rho)
    if fun(w) > fun(b):
        w = b
    return w


def cagrad_dual_weights(gram, c=0.4):
    """Solve CAGrad's dual over the simplex.

    ``w* = argmin_{w in simplex} g_w . g_0 + c |g_0| |g_w|`` with
    ``g_w = sum_t w_t g_t`` and ``g_0`` the average gradient, written with
    the Gram matrix ``M``: ``w^T M b + c sqrt(b^T M b) sqrt(w^T M w)``,
    ``b = 1/k``. The problem is convex and k is tiny. It is solved exactly on
    the Gram matrix scaled to unit diagonal maximum (scale-free tolerances)
    by reduction to a scalar equation over min-norm problems
    (:func:`_dual_exact`, Wolfe's algorithm inside), with SLSQP (the
    authors' solver, 10-50x slower) as the fallback. Returns a tensor (k,)
    like ``gram``.
    """
    return on_host(cagrad_dual_weights_np, gram, c)


def cagrad_coefficients_np(M, c=0.4, rescale=1, hint=None):
    """:func:`cagrad_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    k = M.shape[0]
    b = np.full(k, 1.0 / k)
    w = cagrad_dual_weights_np(M, c, hint)
    g0_norm = np.sqrt(max(float(b @ M @ b), 0.0))
    gw_norm = np.sqrt(max(float(w @ M @ w), 0.0))
    lam = c * g0_norm / gw_norm if gw_norm > 1e-8 * g0_norm else 0.0
    coef = b + lam * w
    return coef / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]


def cagrad_coefficients(gram, c=0.4, rescale=1):
    """CAGrad update ``d = g_0 + (c |g_0| / |g_w|) g_w`` as coefficients.

    ``d = sum_t coef_t g_t`` with ``coef = b + lam * w``, ``b = 1/k``,
    ``lam = c |g_0| / |g_w|`` and ``w`` from :func:`cagrad_dual_weights`.
    ``rescale`` divides by 1 (0), ``1 + c^2`` (1) or ``1 + c`` (2), as in the
    authors' code. ``c = 0`` gives the average gradient. If the optimum has
    ``g_w = 0`` (0 in the hull and no better w) the update falls back to
    ``g_0``: the direction term is undefined there.
    """
    return on_host(cagrad_coefficients_np, gram, c, rescale)


class CAGradState(GradientWeightingState):
    uses_priors = True

    def __init__(self, static_weights, c, rescale):
        super().__init__(static_weights)
        self.c, self.rescale = c, rescale
        self._hint = {}  # warm start of the dual solver (not state: results do not depend on it)

    def coefficients(self, gram, losses):
        return cagrad_coefficients_np(gram, self.c, self.rescale, self._hint)


class CAGrad(Weighting):
    """Conflict-Averse Gradient descent.

    Liu, Liu, Jin, Stone & Liu 2021, "Conflict-Averse Gradient Descent for
    Multi-task Learning" (NeurIPS). The update maximises the worst task's
    improvement ``min_t g_t . d`` within a ball of radius ``c |g_0|`` around
    the average gradient ``g_0``; through its dual it is
    ``d = g_0 + (c |g_0| / |g_w|) g_w`` with ``w`` minimising
    ``g_w . g_0 + c |g_0| |g_w|`` over the simplex (solved on the host from
    the Gram matrix). ``c = 0`` is plain gradient averaging.

    ``needs_grads = "params"``. Static weights are priors: each ``g_t`` is
    scaled by ``w_t`` first (so ``g_0`` is the prior-weighted average).
    The step's ``weights`` and ``shared_coef`` are the update's coefficients.

    Parameters
    ----------
    c : float, default=0.4
        Radius of the conflict-averse ball, relative to ``|g_0|``.
    rescale : {0, 1, 2}, default=1
        Divide the update by 1, ``1 + c^2`` or ``1 + c`` (authors' code,
        default 1).
    """

    needs_grads = "params"
    _parameter_constraints: dict = {
        "c": [Interval(Real, 0, None, closed="left")],
        "rescale": [Options(Integral, set(RESCALES))],
    }

    def __init__(self, c=0.4, rescale=1):
        self.c = c
        self.rescale = rescale

    def build(self, static_weights, task_kinds=None):
        return CAGradState(static_weights, float(self.c), int(self.rescale))
