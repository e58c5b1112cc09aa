"""CAGrad: conflict-averse gradient descent (Liu et al. 2021)."""

import numpy as np
import torch
from scipy.optimize import minimize

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._utils import check_positive

RESCALES = (0, 1, 2)


def cagrad_dual_weights(gram, c=0.4):
    """Solve CAGrad's dual over the simplex.

    ``w* = argmin_{w in simplex} g_w . g_0 + c |g_0| |g_w|`` with
    ``g_w = sum_t w_t g_t`` and ``g_0`` the average gradient, written with
    the Gram matrix ``M``: ``w^T M b + c sqrt(b^T M b) sqrt(w^T M w)``,
    ``b = 1/k``. The problem is convex and k is tiny; it is solved by SLSQP
    on the Gram matrix scaled to unit diagonal maximum (scale-free
    tolerances), started from ``b``. Returns a tensor (k,) like ``gram``.
    """
    M = gram.detach().to("cpu", torch.float64).numpy()
    k = M.shape[0]
    b = np.full(k, 1.0 / k)
    scale = float(np.diag(M).max())
    if k == 1 or c == 0 or scale <= 0:
        return torch.as_tensor(b, dtype=gram.dtype, device=gram.device)
    A = M / scale
    Ab = A @ b
    cn = c * np.sqrt(max(b @ Ab, 0.0))
    tiny = 1e-12  # keeps sqrt differentiable at g_w = 0

    def fun(w):
        Aw = A @ w
        return float(w @ Ab + cn * np.sqrt(max(w @ Aw, 0.0) + tiny))

    def jac(w):
        Aw = A @ w
        return Ab + cn * Aw / np.sqrt(max(w @ Aw, 0.0) + tiny)

    res = minimize(
        fun,
        b,
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=(
            {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},
        ),
        options={"ftol": 1e-12, "maxiter": 200},
    )
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else b
    # SLSQP can stop early on hard cases: never return worse than the start.
    if fun(w) > fun(b):
        w = b
    return torch.as_tensor(w, dtype=gram.dtype, device=gram.device)


def cagrad_coefficients(gram, c=0.4, rescale=1):
    """CAGrad update ``d = g_0 + (c |g_0| / |g_w|) g_w`` as coefficients.

    ``d = sum_t coef_t g_t`` with ``coef = b + lam * w``, ``b = 1/k``,
    ``lam = c |g_0| / |g_w|`` and ``w`` from :func:`cagrad_dual_weights`.
    ``rescale`` divides by 1 (0), ``1 + c^2`` (1) or ``1 + c`` (2), as in the
    authors' code. ``c = 0`` gives the average gradient. If the optimum has
    ``g_w = 0`` (0 in the hull and no better w) the update falls back to
    ``g_0``: the direction term is undefined there.
    """
    k = gram.shape[0]
    M = gram.detach().to(torch.float64)
    b = torch.full((k,), 1.0 / k, dtype=torch.float64, device=gram.device)
    w = cagrad_dual_weights(M, c).to(torch.float64)
    g0_norm = torch.sqrt((b @ M @ b).clamp_min(0))
    gw_norm = torch.sqrt((w @ M @ w).clamp_min(0))
    ok = gw_norm > 1e-8 * g0_norm
    lam = torch.where(
        ok,
        c * g0_norm / torch.where(ok, gw_norm, torch.ones_like(gw_norm)),
        torch.zeros_like(gw_norm),
    )
    coef = b + lam * w
    coef = coef / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
    return coef.to(gram.dtype)


class CAGradState(GradientWeightingState):
    uses_priors = True

    def __init__(self, static_weights, c, rescale):
        super().__init__(static_weights)
        self.c, self.rescale = c, rescale

    def coefficients(self, gram, losses):
        return cagrad_coefficients(gram, self.c, self.rescale)


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
    ``last_weights``/``shared_coef`` are the update's coefficients.

    Parameters
    ----------
    c : float, default=0.4
        Radius of the conflict-averse ball, relative to ``|g_0|``.
    rescale : {0, 1, 2}, default=1
        Divide the update by 1, ``1 + c^2`` or ``1 + c`` (authors' code,
        default 1).
    """

    needs_grads = "params"

    def __init__(self, c=0.4, rescale=1):
        self.c = c
        self.rescale = rescale

    def build(self, static_weights, task_kinds=None):
        c = check_positive("c", self.c, strict=False)
        if self.rescale not in RESCALES or isinstance(self.rescale, bool):
            raise ValueError(f"rescale must be one of {list(RESCALES)}; got {self.rescale!r}.")
        return CAGradState(static_weights, c, int(self.rescale))
