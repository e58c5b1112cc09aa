"""CAGrad: conflict-averse gradient descent (Liu et al. 2021)."""

import math
from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from sklearn.utils._param_validation import Interval, Options

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._utils import on_host
from ._small_linalg import solve_small
from .mgda import min_norm_weights

RESCALES = (0, 1, 2)

# The dual is solved in plain Python floats and lists: k is a handful, so
# numpy's per-call overhead, not arithmetic, would set the cost. numpy is
# used at the public boundary and by the SLSQP fallback only.


def _matvec(A, support, v):
    """``A x`` (a list) for ``x`` equal to ``v`` on ``support`` and zero elsewhere."""
    pairs = list(zip(support, v))
    out = []
    for row in A:
        t = 0.0
        for q, x in pairs:
            t += row[q] * x
        out.append(t)
    return out


def _dot(support, v, u):
    """``x . u`` for ``x`` equal to ``v`` on ``support`` and zero elsewhere."""
    t = 0.0
    for q, x in zip(support, v):
        t += x * u[q]
    return t


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
    ``w(s) = w0 + s w1`` (lists of the values on ``support``, zero off it),
    or None when the support's points are affinely dependent.

    Its KKT conditions say that ``A w + s a`` is constant on the support.
    With ``w = e_r + sum_p z_p (e_p - e_r)`` (r the first index), rows p
    minus row r leave ``|support| - 1`` unknowns, ``H z = h0 + s h1``,
    solved in closed form for up to two of them.
    """
    r, rest = support[0], support[1:]
    if not rest:
        return [1.0], [0.0]
    Ar = A[r]
    Arr = Ar[r]
    ar = a[r]
    H = [[A[p][q] - A[p][r] - Ar[q] + Arr for q in rest] for p in rest]
    h0 = [Arr - A[p][r] for p in rest]
    h1 = [ar - a[p] for p in rest]
    n = len(rest)
    if n == 1:
        h = H[0][0]  # |g_p - g_r|^2
        if not h > 1e-13 * (A[rest[0]][rest[0]] + Arr):
            return None
        z0, z1 = [h0[0] / h], [h1[0] / h]
    elif n == 2:
        (p, q), (u, v) = H
        det = p * v - q * u
        if not abs(det) > 1e-13 * (abs(p * v) + abs(q * u)):
            return None
        z0 = [(v * h0[0] - q * h0[1]) / det, (p * h0[1] - u * h0[0]) / det]
        z1 = [(v * h1[0] - q * h1[1]) / det, (p * h1[1] - u * h1[0]) / det]
    else:
        scale = max([H[i][i] for i in range(n)])
        z = solve_small(H, (h0, h1), scale)
        if z is None:
            return None
        z0, z1 = z
    w0 = [1.0 - sum(z0)] + z0
    w1 = [-sum(z1)] + z1
    if not max(max(map(abs, w0)), max(map(abs, w1))) <= 1e8:  # also catches nan
        return None
    return w0, w1


_NO_ROOT = (None, None, None, None, None)


def _face_root(A, a, rho, support, lo, hi, tol, near=None):
    """The dual's optimum on the face ``support``, if it is there.

    Solves ``|g_w(s)| = rho s`` for ``w(s)`` of :func:`_face_solution` (a
    quadratic in s) and checks the dual's KKT conditions at each positive
    root. Returns ``(w, s, gw2, nxt, move)``: the optimum (a full list), its
    s and ``|g_w|^2``, or three None, the last root that failed the check
    inside ``(lo, hi)`` (or None: the next point of a bracketed search) and
    a neighbouring support to try instead (or None): without the most
    negative weight, or with the vertex that most violates the KKT
    conditions. When the face has no root at all, the support without its
    most negative weight at ``s = near`` (if given) is the one to try.
    """
    face = _face_solution(A, a, support)
    if face is None:
        return _NO_ROOT
    w0, w1 = face
    trip = list(zip(support, w0, w1))
    Aw0, Aw1 = [], []
    for row in A:
        u = v = 0.0
        for q, x, y in trip:
            r = row[q]
            u += r * x
            v += r * y
        Aw0.append(u)
        Aw1.append(v)
    # |g_w(s)|^2 = gamma + beta s + (alpha + rho^2) s^2. Both cross terms are
    # kept: a float32 G G^T is not exactly symmetric, and with one of them
    # doubled |g_w| at the root misses rho s enough to fail the KKT check.
    gamma = beta = alpha = 0.0
    for q, x, y in trip:
        u, v = Aw0[q], Aw1[q]
        gamma += x * u
        beta += x * v + y * u
        alpha += y * v
    alpha -= rho * rho
    if abs(alpha) > 1e-14:
        disc = beta * beta - 4.0 * alpha * gamma
        if disc < 0:
            if near is None or len(support) < 2:
                return _NO_ROOT
            # No root on this face: leave it by its most negative weight at s = near.
            cand = [x + near * y for x, y in zip(w0, w1)]
            drop = cand.index(min(cand))
            return None, None, None, None, support[:drop] + support[drop + 1:]
        r = math.sqrt(disc)
        roots = sorted(((-beta - r) / (2.0 * alpha), (-beta + r) / (2.0 * alpha)))
    elif beta != 0:
        roots = [-gamma / beta]
    else:
        return _NO_ROOT
    nxt = move = None
    for root in roots:
        if not root > 0:
            continue
        cand = [x + root * y for x, y in zip(w0, w1)]
        low = min(cand)
        if low < -1e-10:
            if move is None and len(support) > 1:
                drop = cand.index(low)
                move = support[:drop] + support[drop + 1:]
            continue
        if low < 0.0:
            cand = [x if x > 0.0 else 0.0 for x in cand]
            Aw = _matvec(A, support, cand)
        else:
            Aw = [x + root * y for x, y in zip(Aw0, Aw1)]  # w(s) is affine in s
        total = sum(cand)
        cand = [x / total for x in cand]
        gw2 = max(_dot(support, cand, Aw) / total, 0.0)
        n = math.sqrt(gw2)
        if n <= 1e-7:
            # |g_w| at rounding level (about sqrt(eps) on the unit scale):
            # a spurious root near s = 0 when 0 is in the face's affine hull.
            continue
        f = rho / (n * total)
        grad = [x + f * y for x, y in zip(a, Aw)]
        nu = _dot(support, cand, grad)
        # KKT: no vertex lowers the objective (A has unit max diagonal: absolute tol).
        low = min(grad)
        if low >= nu - tol:
            w = [0.0] * len(A)
            for q, x in zip(support, cand):
                w[q] = x
            return w, root, gw2, None, None
        j = grad.index(low)
        if move is None and j not in support:
            move = sorted(support + [j])
        if lo < root < hi:
            nxt = root
    return None, None, None, nxt, move


def _dual_exact(A, a, g0sq, rho, s0=None, supports=None, face0=None, max_iter=60, tol=1e-10):
    """CAGrad's dual solved exactly through a scalar equation (None if it fails).

    ``A`` (unit maximum diagonal) and ``a = A b`` are lists. The KKT
    conditions of ``min_{w in simplex} a.w + rho |g_w|`` (at a point with
    ``g_w != 0``) are those of the min-norm problem ``min_w |g_w + s g_0|^2``
    with ``s = |g_w| / rho``: the min-norm point of the shifted gradients
    ``g_t + s g_0``, whose Gram matrix is
    ``A + s (a 1^T + 1 a^T) + s^2 |g_0|^2``. So the dual is the root of
    ``phi(s) = |g_w(s)| - rho s`` with ``w(s)`` from Wolfe's algorithm.
    ``phi(0) >= 0`` and ``phi(1 / rho) <= 0`` (A has unit maximum diagonal),
    and on a fixed support ``w(s) = w0 + s w1`` is affine, so
    ``|g_w(s)| = rho s`` is a quadratic equation: a bracketed Newton-like
    iteration that jumps to that root (bisecting when it leaves the bracket)
    ends, usually after one to three min-norm problems, at a point where the
    dual's KKT conditions hold; the problem being convex, it is optimal.

    ``face0`` (optional) is a support to try first, e.g. the optimum's at
    the previous training step: when the KKT conditions hold at its root,
    or at that of a neighbouring support (a vertex dropped or added, four
    times at most; a face with no root is left at ``s0``), that is the
    optimum and no min-norm problem is needed. ``s0`` starts the iteration
    (else the s of ``w = b``) and ``supports`` warm-starts Wolfe's algorithm.
    None of them changes the result.

    Returns ``(w, s, gw2, support)``: ``w`` a list, ``gw2 = |g_w|^2`` and the
    face it was found on; or four None when ``0`` is in the hull of the
    gradients (``phi(0) = 0``: the optimum may be the non-smooth point
    ``g_w = 0``) or when the iteration fails; the caller then uses SLSQP.
    """
    fail = (None, None, None, None)
    k = len(A)
    lo, hi = 0.0, 1.0 / rho
    support = face0
    near = s0 if s0 is not None and 0.0 < s0 < hi else None
    for _ in range(5 if face0 is not None else 0):
        w, s, gw2, _, move = _face_root(A, a, rho, support, lo, hi, tol, near)
        if w is not None:
            return w, s, gw2, support
        if move is None:
            break
        support = move
    if supports is None:
        supports = {}
    two_a = [[x + y for y in a] for x in a]

    def w_of(s):
        ss = s * s * g0sq
        return min_norm_weights(
            [[x + s * y + ss for x, y in zip(row, arow)] for row, arow in zip(A, two_a)],
            supports,
        )

    # Start at the previous step's s when given (successive Gram matrices are
    # close: usually one min-norm problem then suffices), else at the s of
    # w = b (|g_0| / rho = 1 / c), kept inside the bracket.
    s = s0 if s0 is not None and 0.0 < s0 < hi else min(math.sqrt(g0sq) / rho, 0.5 * hi)
    full = range(k)
    for it in range(max_iter):
        if it == 4:
            # Slow progress: check for the degenerate case (0 in the hull) once.
            w = w_of(0.0)
            if _dot(full, w, _matvec(A, full, w)) <= 1e-18:
                return fail
        w = w_of(s)
        n = math.sqrt(max(_dot(full, w, _matvec(A, full, w)), 0.0))
        if n - rho * s > 0:
            lo = s
        else:
            hi = s
        support = [i for i in full if w[i] > 1e-12]
        cand, root, gw2, nxt, _ = _face_root(A, a, rho, support, lo, hi, tol)
        if cand is not None:
            return cand, root, gw2, support
        if hi - lo <= 1e-13 * (1.0 / rho):
            return fail
        s = nxt if nxt is not None and nxt != s else 0.5 * (lo + hi)
    return fail


def _dual_weights(M, c, hint):
    """:func:`cagrad_dual_weights_np` on a list of rows.

    Returns ``(w, g0sq, gwsq)``: the weights (a list), and ``|g_0|^2`` and
    ``|g_w|^2`` in the units of ``M``, which the update needs as well.
    """
    k = len(M)
    b = 1.0 / k
    start = [b] * k
    bMb = sum([sum(row) for row in M]) * b * b
    scale = max([M[i][i] for i in range(k)])
    if k == 1 or c == 0 or not scale > 0:
        return start, bMb, bMb
    if not math.isfinite(bMb) and not all(math.isfinite(x) for row in M for x in row):
        return start, bMb, bMb  # nothing to solve on a non-finite Gram matrix
    A = [[x / scale for x in row] for row in M]
    a = [sum(row) * b for row in A]
    g0sq = max(sum(a) * b, 0.0)
    if g0sq <= 0:
        return start, bMb, bMb  # g_0 = 0: the objective is constant, b is optimal
    rho = c * math.sqrt(g0sq)
    if hint is None:
        w, s, gw2, support = _dual_exact(A, a, g0sq, rho)
    else:
        faces = hint.setdefault("faces", {})
        w, s, gw2, support = _dual_exact(
            A, a, g0sq, rho, s0=hint.get("s"), supports=hint.setdefault("supports", {}),
            face0=faces.get(k),
        )
        if w is not None:
            hint["s"], faces[k] = s, support
    if w is None:
        wn = np.clip(_dual_slsqp(np.array(A), np.array(a), rho, np.full(k, b)), 0.0, None)
        w = (wn / wn.sum()).tolist() if wn.sum() > 0 else start
        gw2 = max(_dot(range(k), w, _matvec(A, range(k), w)), 0.0)
    # Never return worse than the start (tiny as in the SLSQP objective).
    fw = _dot(range(k), w, a) + rho * math.sqrt(gw2 + 1e-12)
    if fw > g0sq + rho * math.sqrt(g0sq + 1e-12):
        w, gw2 = start, g0sq
    return w, g0sq * scale, gw2 * scale


def cagrad_dual_weights_np(M, c=0.4, hint=None):
    """:func:`cagrad_dual_weights` on a float64 numpy Gram matrix (numpy out).

    ``hint`` (optional dict) carries the scalar ``s`` and the supports of the
    last solution from one call to the next (a warm start; the result does
    not depend on it).
    """
    return np.array(_dual_weights(np.asarray(M, dtype=np.float64).tolist(), c, hint)[0])


def cagrad_dual_weights(gram, c=0.4):
    """Solve CAGrad's dual over the simplex.

    ``w* = argmin_{w in simplex} g_w . g_0 + c |g_0| |g_w|`` with
    ``g_w = sum_t w_t g_t`` and ``g_0`` the average gradient, written with
    the Gram matrix ``M``: ``w^T M b + c sqrt(b^T M b) sqrt(w^T M w)``,
    ``b = 1/k``. The problem is convex and k is tiny. It is solved exactly on
    the Gram matrix scaled to unit diagonal maximum (scale-free tolerances)
    by reduction to a scalar equation over min-norm problems
    (:func:`_dual_exact`, Wolfe's algorithm inside), with SLSQP (the
    authors' solver, much slower) as the fallback. Returns a tensor (k,)
    like ``gram``.
    """
    return on_host(cagrad_dual_weights_np, gram, c)


def cagrad_coefficients_list(M, c=0.4, rescale=1, hint=None):
    """:func:`cagrad_coefficients` on a list of rows of floats (a list out)."""
    w, g0sq, gwsq = _dual_weights(M, c, hint)
    b = 1.0 / len(w)
    g0_norm = math.sqrt(max(g0sq, 0.0))
    gw_norm = math.sqrt(max(gwsq, 0.0))
    lam = c * g0_norm / gw_norm if gw_norm > 1e-8 * g0_norm else 0.0
    div = {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
    return [(b + lam * x) / div for x in w]


def cagrad_coefficients_np(M, c=0.4, rescale=1, hint=None):
    """:func:`cagrad_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    return np.array(cagrad_coefficients_list(np.asarray(M, dtype=np.float64).tolist(), c,
                                             rescale, hint))


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
        return cagrad_coefficients_list(gram, self.c, self.rescale, self._hint)


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
