"""MGDA and MGDA-UB (Sener & Koltun 2018)."""

import numpy as np
import torch

from ._base import Weighting
from ._gradient_state import GradientWeightingState

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def min_norm_2(g11, g12, g22):
    """Closed-form min-norm point of the segment between two vectors.

    With ``g11 = |g1|^2``, ``g12 = g1.g2``, ``g22 = |g2|^2``, the minimiser of
    ``|gamma g1 + (1 - gamma) g2|`` over ``gamma in [0, 1]`` is
    ``clip((g22 - g12) / (g11 - 2 g12 + g22), 0, 1)`` (Sener & Koltun 2018,
    Algorithm 1). Returns ``gamma``, the weight of ``g1``. Equal vectors
    give 0.5.
    """
    denom = g11 - 2.0 * g12 + g22
    if denom <= 1e-15 * max(g11, g22, np.finfo(float).tiny):
        return 0.5
    return float(np.clip((g22 - g12) / denom, 0.0, 1.0))


def _affine_minimizer(M):
    """argmin ``a^T M a`` subject to ``sum(a) = 1`` (a unconstrained in sign)."""
    k = M.shape[0]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = M
    kkt[:k, k] = 1.0
    kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    # lstsq, not solve: affinely dependent points make the system singular.
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:k]


def _wolfe_min_norm(M, tol=1e-12, max_iter=1000):
    """Wolfe's nearest-point algorithm on a Gram matrix (numpy, float64).

    Wolfe 1976, "Finding the nearest point in a polytope" (Math.
    Programming). Keeps a "corral" S of vertices whose affine hull's
    minimum-norm point lies inside their convex hull; exact in a finite
    number of steps, unlike Frank-Wolfe's sublinear convergence.
    """
    k = M.shape[0]
    diag = np.diag(M)
    scale = max(float(diag.max()), np.finfo(float).tiny)
    j = int(np.argmin(diag))
    S, ws = [j], np.ones(1)
    wtol = 1e-12
    for _ in range(max_iter):
        w = np.zeros(k)
        w[S] = ws
        Mw = M @ w
        xx = float(w @ Mw)
        j = int(np.argmin(Mw))
        # Optimal when no vertex reaches further along -x than x itself.
        if xx - Mw[j] <= tol * scale or j in S:
            break
        S_new, ws_new = S + [j], np.append(ws, 0.0)
        while True:  # minor cycle: move toward the affine minimiser of S
            a = _affine_minimizer(M[np.ix_(S_new, S_new)])
            if np.all(a > wtol):
                ws_new = a
                break
            neg = a <= wtol
            step = ws_new[neg] / np.maximum(ws_new[neg] - a[neg], np.finfo(float).tiny)
            theta = float(min(1.0, step.min()))
            ws_new = theta * a + (1.0 - theta) * ws_new
            keep = ws_new > wtol
            S_new, ws_new = [s for s, kp in zip(S_new, keep, strict=True) if kp], ws_new[keep]
            if not S_new:  # numerical breakdown; keep the last iterate
                break
        if not S_new:
            break
        ws_new = ws_new / ws_new.sum()
        if float(ws_new @ M[np.ix_(S_new, S_new)] @ ws_new) >= xx - 1e-15 * scale:
            break  # no progress (numerical limit reached)
        S, ws = S_new, ws_new
    w = np.zeros(k)
    w[S] = np.clip(ws, 0.0, None)
    return w / w.sum()


def mgda_min_norm_weights(gram, tol=1e-12, max_iter=1000):
    """Weights ``lambda`` on the simplex minimising ``|sum_t lambda_t g_t|^2``.

    ``gram`` is ``G G^T`` (k, k) for task gradients ``G`` (k, P). Two tasks
    use the closed form (:func:`min_norm_2`), more use Wolfe's algorithm.
    Returns a tensor (k,) on ``gram``'s device and dtype.
    """
    M = gram.detach().to("cpu", torch.float64).numpy()
    k = M.shape[0]
    if k == 1:
        lam = np.ones(1)
    elif k == 2:
        g = min_norm_2(M[0, 0], M[0, 1], M[1, 1])
        lam = np.array([g, 1.0 - g])
    else:
        lam = _wolfe_min_norm(M, tol=tol, max_iter=max_iter)
    return torch.as_tensor(lam, dtype=gram.dtype, device=gram.device)


def gradient_normalizers(gram, losses, normalization, eps=1e-8):
    """Per-task divisors ``n_t`` of MGDA's gradient normalisation.

    'none': 1; 'l2': ``|g_t|``; 'loss': ``L_t``; 'loss+': ``L_t |g_t|``
    (Sener & Koltun 2018, released code). Clamped at ``eps`` so a zero
    gradient or loss gives a finite value.
    """
    norms = torch.sqrt(torch.diagonal(gram).clamp_min(0))
    if normalization == "none":
        n = torch.ones_like(norms)
    elif normalization == "l2":
        n = norms
    elif normalization == "loss":
        n = losses.to(norms)
    elif normalization == "loss+":
        n = losses.to(norms) * norms
    else:
        raise ValueError(
            f"normalization must be one of {list(NORMALIZATIONS)}; got {normalization!r}."
        )
    return n.clamp_min(eps)


def mgda_coefficients(gram, losses=None, normalization="none"):
    """MGDA's shared-update coefficients ``c`` (update ``= sum_t c_t g_t``).

    The gradients are normalised ``g~_t = g_t / n_t``, the min-norm point
    ``sum_t lambda_t g~_t`` of their convex hull is the update, hence
    ``c_t = lambda_t / n_t``. That point is a common descent direction:
    ``d . g~_t >= |d|^2`` for every task.
    """
    n = gradient_normalizers(gram, losses, normalization)
    lam = mgda_min_norm_weights(gram / torch.outer(n, n))
    return lam / n


class MGDAState(GradientWeightingState):
    needs_losses = True

    def __init__(self, static_weights, normalization):
        super().__init__(static_weights)
        self.normalization = normalization

    def coefficients(self, gram, losses):
        return mgda_coefficients(gram, losses, self.normalization)


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
    ``last_weights``/``shared_coef`` are ``c_t = lambda_t / n_t``.

    Parameters
    ----------
    normalization : {'none', 'l2', 'loss', 'loss+'}, default='none'
        Gradient normalisation before the min-norm problem: none, by the
        gradient norm, by the loss, or by both.
    """

    needs_grads = "params"

    def __init__(self, normalization="none"):
        self.normalization = normalization

    def build(self, static_weights, task_kinds=None):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {list(NORMALIZATIONS)}; got {self.normalization!r}."
            )
        return MGDAState(static_weights, self.normalization)


class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients of the shared representation.

    Sener & Koltun 2018, Section 3.3: the min-norm problem uses the per-task
    gradients of the shared representation Z (an upper bound of the
    parameter version), which needs a single backward pass through the
    trunk. ``needs_grads = "representation"``; otherwise as :class:`MGDA`.
    """

    needs_grads = "representation"
