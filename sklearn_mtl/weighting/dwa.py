"""Dynamic Weight Average (Liu, Johns & Davison 2019)."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval

from ._base import Step, Weighting, WeightingState
from ._utils import epoch_array, weighted_sum


def dwa_weights(prev_losses, prev_prev_losses, temperature=2.0):
    """DWA weights ``n * softmax(r / T)`` with ``r_t = L_t(e-1) / L_t(e-2)``.

    ``prev_losses`` and ``prev_prev_losses`` are the mean training losses of
    the last two epochs. A task whose ratio is undefined (a non-finite or
    non-positive loss, e.g. no label in an epoch) gets ``r_t = 1``, the
    neutral "not moving" value, rather than poisoning the softmax.
    """
    ok = torch.isfinite(prev_losses) & torch.isfinite(prev_prev_losses) & (prev_prev_losses > 0)
    safe_den = torch.where(ok, prev_prev_losses, torch.ones_like(prev_prev_losses))
    r = torch.where(ok, prev_losses / safe_den, torch.ones_like(prev_losses))
    return r.numel() * torch.softmax(r / temperature, dim=0)


class DWAState(WeightingState):
    def __init__(self, static_weights, temperature):
        super().__init__(static_weights)
        self.temperature = temperature
        n = self.n_tasks
        self.register_buffer("epoch_weights", torch.ones(n))
        self.register_buffer("prev_losses", torch.full((n,), float("nan")))
        self.register_buffer("prev_prev_losses", torch.full((n,), float("nan")))
        self.register_buffer("n_epochs", torch.zeros((), dtype=torch.long))

    def combine(self, losses, present, grads=None):
        total, w = weighted_sum(self.static_weights * self.epoch_weights, losses, present)
        return Step(total, w.detach())

    def epoch_end(self, train_losses, valid_losses=None):
        cur = epoch_array(train_losses, self.prev_losses)
        self.prev_prev_losses = self.prev_losses.clone()
        self.prev_losses = cur
        self.n_epochs += 1
        # Two finished epochs are needed for a ratio; until then weights stay 1.
        if int(self.n_epochs) >= 2:
            self.epoch_weights = dwa_weights(
                self.prev_losses, self.prev_prev_losses, self.temperature
            )


class DWA(Weighting):
    """Dynamic Weight Average.

    Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
    Attention" (CVPR). For epoch ``e`` the weight of task ``t`` is
    ``n_tasks * softmax_t(r_t / T)`` with ``r_t = L_t(e-1) / L_t(e-2)``, the
    ratio of the last two epochs' mean training losses: a task whose loss
    falls slowly gets more weight. The first two epochs use weight 1.
    Static weights act as priors (multiplied in). Absent tasks get weight 0.

    Parameters
    ----------
    temperature : float, default=2.0
        Softmax temperature ``T``; larger is closer to equal weights.
    """

    _parameter_constraints: dict = {"temperature": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, temperature=2.0):
        self.temperature = temperature

    def build(self, static_weights, task_kinds=None):
        return DWAState(static_weights, float(self.temperature))
