"""IMTL-G: impartial multi-task learning, gradient part (Liu et al. 2021)."""

import numpy as np
import torch

from ._base import Weighting
from ._gradient_state import GradientWeightingState


def imtl_g_coefficients(gram):
    """IMTL-G's closed-form coefficients ``alpha`` (summing to 1).

    The update ``d = sum_t alpha_t g_t`` has equal projections on every unit
    gradient ``u_t = g_t / |g_t|``. With task 1 as reference,
    ``D = [g_1 - g_t]_{t>1}`` and ``U = [u_1 - u_t]_{t>1}``:
    ``alpha_{2..k} = g_1 U^T (D U^T)^{-1}``, ``alpha_1 = 1 - sum alpha_{2..k}``.
    All products come from the Gram matrix ``M``: with ``n_t = |g_t|``,
    ``g_1 . (u_1 - u_j) = M_11/n_1 - M_1j/n_j`` and
    ``(g_1 - g_i) . (u_1 - u_j) = M_11/n_1 - M_1j/n_j - M_i1/n_1 + M_ij/n_j``.

    A pseudo-inverse handles linearly dependent gradients. Tasks with a zero
    gradient have no direction: they get ``alpha = 0`` and are left out
    (all zero: equal coefficients, the update is 0 anyway).
    """
    M = gram.detach().to("cpu", torch.float64).numpy()
    return torch.as_tensor(imtl_g_coefficients_np(M), dtype=gram.dtype, device=gram.device)


def imtl_g_coefficients_np(M):
    """:func:`imtl_g_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    k = M.shape[0]
    norms = np.sqrt(np.clip(np.diag(M), 0.0, None))
    alive = norms > 1e-12 * max(float(norms.max()), np.finfo(np.float64).tiny)
    idx = np.flatnonzero(alive)
    if idx.size == 0:
        return np.full(k, 1.0 / k)
    out = np.zeros(k)
    if idx.size == 1:
        out[idx] = 1.0
        return out
    Ms = M[np.ix_(idx, idx)]
    n = norms[idx]
    Mn = Ms / n  # Mn[i, j] = g_i . u_j
    gU = Mn[0, 0] - Mn[0, 1:]
    DU = Mn[0, 0] - Mn[0, 1:][None, :] - Mn[1:, 0:1] + Mn[1:, 1:]
    # Row vector times inverse: alpha^T = gU^T DU^{-1}  <=>  DU^T alpha = gU.
    alpha_rest = np.linalg.pinv(DU.T) @ gU
    out[idx[0]] = 1.0 - alpha_rest.sum()
    out[idx[1:]] = alpha_rest
    return out


class IMTLState(GradientWeightingState):
    def coefficients(self, gram, losses):
        return imtl_g_coefficients_np(gram)


class IMTL(Weighting):
    """IMTL-G: impartial gradient combination.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang 2021, "Towards Impartial
    Multi-task Learning" (ICLR), the gradient-balancing part IMTL-G. The
    shared update ``sum_t alpha_t g_t`` (``sum alpha = 1``) has the same
    projection on every task's unit gradient, so no task dominates the
    shared parameters; closed form, see :func:`imtl_g_coefficients`.

    ``needs_grads = "params"``. Rescaling a task's gradient changes only the
    length of IMTL-G's update, not its direction, so static weights cannot
    act as priors on the shared update; they weight the heads' loss only.
    The step's ``weights`` and ``shared_coef`` are ``alpha``.
    """

    needs_grads = "params"
    _parameter_constraints: dict = {}

    def build(self, static_weights, task_kinds=None):
        return IMTLState(static_weights)
