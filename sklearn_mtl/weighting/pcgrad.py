"""PCGrad: projecting conflicting gradients (Yu et al. 2020)."""

import torch

from ._base import Weighting
from ._gradient_state import GradientWeightingState
from ._utils import make_generator


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
    C = torch.eye(k, dtype=gram.dtype, device=gram.device)
    sq = torch.diagonal(gram)
    for i in range(k):
        for j in order[i].tolist():
            if j == i:
                continue
            dot = C[i] @ gram[:, j]
            # A zero-norm g_j has dot == 0 and never projects; the clamp only
            # keeps the division finite.
            conflict = dot < 0
            coef = torch.where(
                conflict, dot / sq[j].clamp_min(torch.finfo(gram.dtype).tiny), torch.zeros_like(dot)
            )
            C[i, j] = C[i, j] - coef
    return C.sum(0)


class PCGradState(GradientWeightingState):
    uses_priors = True

    def __init__(self, static_weights, random_state):
        super().__init__(static_weights)
        self._generator = make_generator(random_state)

    def coefficients(self, gram, losses):
        k = gram.shape[0]
        # Paper, Algorithm 1: each task visits the others in its own random order.
        order = torch.argsort(torch.rand(k, k, generator=self._generator), dim=1)
        return pcgrad_coefficients(gram, order)


class PCGrad(Weighting):
    """Projecting Conflicting Gradients.

    Yu, Kumar, Gupta, Levine, Hausman & Finn 2020, "Gradient Surgery for
    Multi-Task Learning" (NeurIPS). For each task, in a random order over
    the other tasks, the component of its gradient that conflicts (negative
    inner product) with another task's gradient is projected away; the
    shared update is the sum of the projected gradients. Non-conflicting
    gradients are left unchanged (plain sum).

    ``needs_grads = "params"``. Static weights are priors: each ``g_t`` is
    scaled by ``w_t`` before the projections. ``last_weights``/
    ``shared_coef`` are the coefficients of the update in the original
    gradients.

    Parameters
    ----------
    random_state : None, int or numpy random generator, default=None
        Seed of the projection orders. None uses torch's global generator.
    """

    needs_grads = "params"

    def __init__(self, random_state=None):
        self.random_state = random_state

    def build(self, static_weights, task_kinds=None):
        return PCGradState(static_weights, self.random_state)
