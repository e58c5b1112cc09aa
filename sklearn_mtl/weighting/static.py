"""Static (fixed) loss weights: the default strategy."""

from ._base import Step, Weighting, WeightingState
from ._utils import weighted_sum


class StaticState(WeightingState):
    def combine(self, losses, present, grads=None):
        total, w = weighted_sum(self.static_weights, losses, present)
        return Step(total, w.detach())


class Static(Weighting):
    """Fixed weighted sum of the task losses, ``sum_t w_t L_t``.

    ``w`` are the estimator's ``loss_weights`` (equal by default). A tuned
    weighted sum is a strong baseline (Kurin et al. 2022, "In Defense of the
    Unitary Scalarization for Deep Multi-Task Learning"; Xin et al. 2022, "Do
    Current Multi-Task Optimization Methods in Deep Learning Even Help?"), so
    this is the default and ``loss_weights`` is meant to be grid-searched.

    Absent tasks (no label in the batch) get weight 0 for the step.
    """

    _parameter_constraints: dict = {}

    def build(self, static_weights, task_kinds=None):
        return StaticState(static_weights)
