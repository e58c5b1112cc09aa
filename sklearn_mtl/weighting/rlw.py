"""Random Loss Weighting (Lin et al. 2021)."""

import torch

from ._base import Step, Weighting, WeightingState
from ._utils import RANDOM_STATE, make_generator, masked_softmax, weighted_sum


def rlw_weights(z, present):
    """RLW weights from normal draws ``z``: ``k * softmax(z)`` over the ``k``
    present tasks (absent tasks 0)."""
    k = present.sum().to(z.dtype)
    return k * masked_softmax(z, present)


class RLWState(WeightingState):
    def __init__(self, static_weights, random_state):
        super().__init__(static_weights)
        self._generator = make_generator(random_state)

    def combine(self, losses, present, grads=None):
        # Drawn on the CPU (same numbers on every device), then moved.
        z = torch.randn(self.n_tasks, generator=self._generator, dtype=torch.float32)
        z = z.to(device=losses.device, dtype=losses.dtype, non_blocking=True)
        total, w = weighted_sum(self.static_weights * rlw_weights(z, present), losses, present)
        return Step(total, w.detach())


class RLW(Weighting):
    """Random Loss Weighting.

    Lin, Ye, Xu, Shi, Zhang & Kwok 2021, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning" (TMLR 2022). Each step
    draws ``z ~ N(0, I)`` and weights the present tasks by ``softmax(z)``.

    Difference from the paper: the softmax is multiplied by the number of
    present tasks ``k``, so the expected total weight equals the static
    default's (all ones) and switching strategy does not silently divide the
    learning rate by ``k``. Static weights act as priors (multiplied in).

    Parameters
    ----------
    random_state : None, int or numpy random generator, default=None
        Seed of the weight draws. None uses torch's global generator (which
        the estimator seeds), an int a private generator.
    """

    _parameter_constraints: dict = {"random_state": RANDOM_STATE}

    def __init__(self, random_state=None):
        self.random_state = random_state

    def build(self, static_weights, task_kinds=None):
        return RLWState(static_weights, self.random_state)
