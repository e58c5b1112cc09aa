"""UPGrad: unconflicting projection of gradients (Quinton & Rey 2024)."""

import numpy as np
from scipy.optimize import nnls

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._utils import on_host


def _gram_root(M):
    """``A`` with ``A^T A = M`` (symmetric PSD square root from an eigendecomposition)."""
    evals, evecs = np.linalg.eigh(M)
    return np.sqrt(np.clip(evals, 0.0, None))[:, None] * evecs.T


def dual_cone_projection_weights(A, i, u=1.0):
    """Weights ``v`` with ``sum_j v_j g_j`` the projection of ``u g_i`` onto
    the dual cone ``{x : g_j . x >= 0 for all j}``.

    By duality the projection is ``G^T v`` with
    ``v = argmin_{v >= u e_i} v^T M v`` (``M = G G^T``). Writing
    ``v = u e_i + z``, ``z >= 0``, and ``M = A^T A`` (``A`` the symmetric
    square root of :func:`_gram_root`), this is the non-negative
    least-squares problem ``min_{z >= 0} |A z + u A e_i|^2``, solved exactly
    by Lawson-Hanson (``scipy.optimize.nnls``). numpy float64 in and out.
    """
    z, _ = nnls(A, -u * A[:, i])
    v = z
    v[i] += u
    return v


def upgrad_coefficients_np(M, pref=None):
    """:func:`upgrad_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    k = M.shape[0]
    scale = float(np.diag(M).max())
    p = np.full(k, 1.0 / k) if pref is None else np.asarray(pref, dtype=np.float64)
    if scale <= 0:
        return p.copy()
    # One square root for all k projections; scale-free tolerances inside NNLS.
    A = _gram_root(M / scale)
    coef = np.zeros(k)
    for i in range(k):
        if p[i] != 0:
            coef += dual_cone_projection_weights(A, i, p[i])
    return coef


def upgrad_coefficients(gram, pref=None):
    """UPGrad's update coefficients: ``sum_i pref_i * proj(g_i)``.

    Each gradient is projected onto the dual cone of all the gradients (so
    the projection conflicts with no task) and the projections are summed
    with preference weights ``pref`` (default ``1/k``: their mean). The
    projection is positively homogeneous, so ``pref_i proj(g_i) =
    proj(pref_i g_i)``. Returns a tensor (k,) like ``gram``.
    """
    return on_host(upgrad_coefficients_np, gram, pref)


class UPGradState(GradientWeightingState):
    uses_priors = True

    def coefficients(self, gram, losses):
        return upgrad_coefficients_np(gram)


class UPGrad(Weighting):
    """Unconflicting Projection of Gradients.

    Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"
    (arXiv:2406.16232). Each task gradient is projected onto the dual cone
    of the task gradients, ``{x : g_t . x >= 0 for all t}``, and the update is
    the mean of the projections. The update therefore conflicts with no
    task, and gradients that already do not conflict are averaged
    unchanged. Each projection is a small non-negative least-squares
    problem on the Gram matrix, solved on the host.

    ``needs_grads = "params"``. Static weights are priors (the paper's
    preference vector): each ``g_t`` is scaled by ``w_t`` before the
    projection. The step's ``weights`` and ``shared_coef`` are the update's
    coefficients.
    """

    needs_grads = "params"
    _parameter_constraints: dict = {}

    def build(self, static_weights, task_kinds=None):
        return UPGradState(static_weights)
