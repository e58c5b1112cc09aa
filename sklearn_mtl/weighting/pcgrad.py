"""PCGrad: projecting conflicting gradients (Yu et al. 2020)."""

import numpy as np
import torch

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._utils import RANDOM_STATE, make_generator, on_host

_TINY = np.finfo(np.float64).tiny


def pcgrad_coefficients_list(Mrows, orders):
    """:func:`pcgrad_coefficients` on a list of rows of floats (a list out).

    ``orders`` is a list of k lists (row ``i``: the order in which ``g_i`` is
    projected). Plain Python floats: k is a handful and the loop is k^3
    multiply-adds, far cheaper than one small tensor op per entry.
    """
    k = len(Mrows)
    sq = [Mrows[j][j] for j in range(k)]
    tiny = _TINY
    total = [0.0] * k
    for i in range(k):
        C = [0.0] * k
        C[i] = 1.0
        for j in orders[i]:
            if j == i:
                continue
            # g_i' . g_j = sum_m C[m] M[m, j] (M symmetric: row j).
            row = Mrows[j]
            dot = 0.0
            for m in range(k):
                dot += C[m] * row[m]
            # A zero-norm g_j has dot == 0 and never projects; the max only
            # keeps the division finite.
            if dot < 0:
                C[j] -= dot / max(sq[j], tiny)
        for m in range(k):
            total[m] += C[m]
    return total


def pcgrad_coefficients_np(gram, orders):
    """:func:`pcgrad_coefficients` on a float64 numpy Gram matrix (numpy out)."""
    return np.array(pcgrad_coefficients_list(np.asarray(gram, dtype=np.float64).tolist(),
                                             orders))


def pcgrad_coefficients(gram, order):
    """PCGrad's update as coefficients ``c`` with ``update = sum_t c_t g_t``.

    ``gram`` is ``G G^T`` (k, k). ``order`` is either one permutation (k,)
    used for every task or a (k, k) tensor whose row ``i`` is the order in
    which ``g_i`` is projected against the others (its own index is
    skipped). For each task ``i``, for ``j`` in order: if ``g_i' . g_j < 0``,
    ``g_i' <- g_i' - (g_i' . g_j / |g_j|^2) g_j``. Every projected vector
    stays in the span of the gradients, so it is tracked as a row of
    coefficients ``C[i]`` (``g_i' = sum_j C[i, j] g_j``) and inner products
    come from the Gram matrix: ``g_i' . g_j = (C[i] @ gram)[j]``. The update
    is the sum of the projected gradients, ``c = C.sum(0)``.
    """
    k = gram.shape[0]
    order = torch.as_tensor(order, dtype=torch.long)
    if order.dim() == 1:
        order = order.expand(k, k)
    return on_host(pcgrad_coefficients_np, gram, order.tolist())


class PCGradState(GradientWeightingState):
    uses_priors = True

    def __init__(self, static_weights, random_state):
        super().__init__(static_weights)
        self._generator = make_generator(random_state)

    def coefficients(self, gram, losses):
        k = len(gram)
        # Paper, Algorithm 1: each task visits the others in its own random order.
        order = torch.argsort(torch.rand(k, k, generator=self._generator), dim=1)
        return pcgrad_coefficients_list(gram, order.tolist())


class PCGrad(Weighting):
    """Projecting Conflicting Gradients.

    Yu, Kumar, Gupta, Levine, Hausman & Finn 2020, "Gradient Surgery for
    Multi-Task Learning" (NeurIPS). For each task, in a random order over
    the other tasks, the component of its gradient that conflicts (negative
    inner product) with another task's gradient is projected away; the
    shared update is the sum of the projected gradients. Non-conflicting
    gradients are left unchanged (plain sum).

    ``needs_grads = "params"``. Static weights are priors: each ``g_t`` is
    scaled by ``w_t`` before the projections. The step's ``weights`` and
    ``shared_coef`` are the coefficients of the update in the original
    gradients.

    Parameters
    ----------
    random_state : None, int or numpy random generator, default=None
        Seed of the projection orders. None uses torch's global generator.
    """

    needs_grads = "params"
    _parameter_constraints: dict = {"random_state": RANDOM_STATE}

    def __init__(self, random_state=None):
        self.random_state = random_state

    def build(self, static_weights, task_kinds=None):
        return PCGradState(static_weights, self.random_state)
