"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018)."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval

from ._base import Step, Weighting, WeightingState
from ._utils import check_task_kinds, masked_losses


def uncertainty_terms(losses, log_vars, scales):
    """Per-task terms ``scale_t * exp(-s_t) * L_t + 0.5 * s_t``.

    ``s_t`` is the log-variance. ``scale_t`` is 0.5 for a regression task
    (Gaussian likelihood: ``L/(2 sigma^2) + log sigma``) and 1 for a
    classification task (scaled softmax: ``L/sigma^2 + log sigma``).
    """
    return scales * torch.exp(-log_vars) * losses + 0.5 * log_vars


class UncertaintyState(WeightingState):
    def __init__(self, static_weights, task_kinds=None, init_log_variance=0.0):
        super().__init__(static_weights)
        kinds = check_task_kinds(task_kinds, self.n_tasks)
        self.task_kinds = kinds
        self.register_buffer(
            "scales",
            torch.tensor([0.5 if k == "regression" else 1.0 for k in kinds], dtype=torch.float32),
        )
        # Learned with the network by the engine's optimiser.
        self.log_vars = torch.nn.Parameter(torch.full((self.n_tasks,), float(init_log_variance)))

    def combine(self, losses, present, grads=None):
        loss = masked_losses(losses, present)
        s = self.log_vars.to(loss.dtype)
        prior = self.static_weights.to(loss.dtype)
        terms = prior * uncertainty_terms(loss, s, self.scales.to(loss.dtype))
        # An absent task's s_t gets no gradient: it has no data this step.
        total = torch.where(present, terms, torch.zeros_like(terms)).sum()
        eff = prior * self.scales.to(loss.dtype) * torch.exp(-s.detach())
        return Step(total, torch.where(present, eff, torch.zeros_like(eff)))


class Uncertainty(Weighting):
    """Learned homoscedastic-uncertainty weights.

    Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty to
    Weigh Losses for Scene Geometry and Semantics" (CVPR). Each task has a
    learned log-variance ``s_t = log sigma_t^2`` (a parameter of the state,
    optimised with the network) and contributes

    * regression: ``0.5 * exp(-s_t) * L_t + 0.5 * s_t``
    * classification: ``exp(-s_t) * L_t + 0.5 * s_t``

    For a mean-squared-error loss the optimum is ``exp(s_t) = L_t``, the
    task's residual variance. Static weights act as priors multiplying each
    task's whole term. The step's ``weights`` report the effective weight on
    ``L_t`` (prior * 0.5 or 1 * exp(-s_t)).

    Parameters
    ----------
    init_log_variance : float, default=0.0
        Initial value of every ``s_t``.

    Notes
    -----
    ``build(static_weights, task_kinds=None)``: ``task_kinds`` is an optional
    list with one of ``'regression'``, ``'binary'``, ``'multiclass'`` per task
    and selects each task's form; None treats every task as regression.
    """

    _parameter_constraints: dict = {
        "init_log_variance": [Interval(Real, None, None, closed="neither")],
    }

    def __init__(self, init_log_variance=0.0):
        self.init_log_variance = init_log_variance

    def build(self, static_weights, task_kinds=None):
        return UncertaintyState(
            static_weights, task_kinds=task_kinds, init_log_variance=self.init_log_variance
        )
