"""Per-epoch weights from each task's (validation) loss trend."""

from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval

from ._base import Step, Weighting, WeightingState
from ._utils import weighted_sum


def trend_ratios(history, window):
    """Per-task ratio ``rho_t = mean(last window) / mean(window before)``.

    ``history`` is (E, T), one row per epoch. ``rho_t`` is clipped at 1 and
    set to 1 where undefined (fewer than ``2 * window`` epochs, a non-finite
    entry, e.g. an epoch not yet seen, or a non-positive earlier mean).
    """
    if history.shape[0] < 2 * window:
        return torch.ones(history.shape[1], dtype=history.dtype, device=history.device)
    recent = history[-window:].mean(0)
    earlier = history[-2 * window : -window].mean(0)
    ok = torch.isfinite(recent) & torch.isfinite(earlier) & (earlier > 0)
    rho = torch.where(
        ok, recent / torch.where(ok, earlier, torch.ones_like(earlier)), torch.ones_like(recent)
    )
    return rho.clamp(max=1.0)


def trend_weights(rho, temperature):
    """``n_tasks * softmax(rho / temperature)``: slow improvers weigh more."""
    return rho.numel() * torch.softmax(rho / temperature, dim=0)


class ValidationTrendState(WeightingState):
    def __init__(self, static_weights, window, temperature):
        super().__init__(static_weights)
        self.window, self.temperature = window, temperature
        n = self.n_tasks
        self.register_buffer("epoch_weights", torch.ones(n))
        # Last 2 * window epochs, oldest first; NaN marks "not yet seen" (fixed
        # shapes keep state_dict loadable into a fresh state).
        self.register_buffer("train_history", torch.full((2 * window, n), float("nan")))
        self.register_buffer("valid_history", torch.full((2 * window, n), float("nan")))

    def combine(self, losses, present, grads=None):
        total, w = weighted_sum(self.static_weights * self.epoch_weights, losses, present)
        return Step(total, w.detach())

    def epoch_end(self, train_losses, valid_losses=None):
        dev, n = self.epoch_weights.device, self.n_tasks
        train = torch.as_tensor(train_losses, dtype=torch.float32, device=dev).reshape(1, n)
        if valid_losses is None:
            valid = torch.full((1, n), float("nan"), device=dev)
        else:
            valid = torch.as_tensor(valid_losses, dtype=torch.float32, device=dev).reshape(1, n)
        self.train_history = torch.cat([self.train_history[1:], train])
        self.valid_history = torch.cat([self.valid_history[1:], valid])
        rho_valid = trend_ratios(self.valid_history, self.window)
        rho_train = trend_ratios(self.train_history, self.window)
        # Per task: the validation trend when its whole window is finite,
        # otherwise the training trend.
        valid_ok = torch.isfinite(self.valid_history).all(0)
        rho = torch.where(valid_ok, rho_valid, rho_train)
        self.epoch_weights = trend_weights(rho, self.temperature)


class ValidationTrend(Weighting):
    """Epoch-level weights from each task's validation-loss trend.

    A variant of Dynamic Weight Average (Liu, Johns & Davison 2019, "End-to-End
    Multi-Task Learning with Attention") driven by held-out loss, in the
    spirit of loss-progress balancing (Guo et al. 2018, "Dynamic Task
    Prioritization for Multitask Learning"). At the end of each epoch, with
    ``h_t(e)`` task ``t``'s mean validation loss at epoch ``e``:

    * ``rho_t = mean(h_t(e-w+1..e)) / mean(h_t(e-2w+1..e-w))``, ``w = window``:
      the ratio of the recent to the preceding mean loss, so ``rho_t`` near 1
      means stagnating and small ``rho_t`` improving fast;
    * ``rho_t`` is clipped at 1: a task whose validation loss rises is
      overfitting and is treated as stagnating rather than pushed harder;
    * next epoch's weights are ``T * softmax(rho / temperature)`` (sum ``T``,
      the number of tasks): stagnating tasks get more weight.

    Until ``2 * window`` epochs have passed weights are 1. A task uses its
    training-loss history instead when there is no validation set or its
    validation loss is not finite over the window (no validation labels).
    Static weights act as priors (multiplied in); absent tasks get 0.

    Parameters
    ----------
    window : int, default=2
        Number of epochs averaged on each side of the ratio (smooths noise).
    temperature : float, default=0.2
        Softmax temperature on ``rho``; a ratio gap of ``temperature`` gives a
        weight ratio of ``e``.
    """

    _parameter_constraints: dict = {
        "window": [Interval(Integral, 1, None, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, window=2, temperature=0.2):
        self.window = window
        self.temperature = temperature

    def build(self, static_weights, task_kinds=None):
        return ValidationTrendState(static_weights, int(self.window), float(self.temperature))
