"""FAMO: Fast Adaptive Multitask Optimization (Liu et al. 2023)."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval

from ._base import Step, Weighting, WeightingState
from ._utils import adam_masked_step, masked_losses, masked_softmax


def famo_loss_weights(logits, losses, present, eps=1e-8, prior=None):
    """FAMO's weights on the raw losses for one step.

    The paper's update direction is the gradient of
    ``sum_t z_t log(L_t + eps) / c`` with ``z = softmax(logits)`` and
    ``c = sum_t z_t / (L_t + eps)``, i.e. ``sum_t w_t grad L_t`` with
    ``w_t = z_t / ((L_t + eps) c)``; these ``w`` sum to 1. ``z`` is taken over
    the present tasks only. A ``prior`` multiplies ``z`` before the
    normalisation. Returns ``w`` (absent tasks 0), detached.
    """
    loss = masked_losses(losses.detach(), present)
    z = masked_softmax(logits.detach().to(loss.dtype), present)
    if prior is not None:
        z = z * prior.to(loss.dtype)
    q = z / (loss + eps)
    c = q.sum()
    return q / torch.where(c > 0, c, torch.ones_like(c))


def famo_logits_gradient(logits, losses_before, losses_after, present, eps=1e-8):
    """Gradient of FAMO's logit objective ``z^T delta`` w.r.t. the logits.

    ``delta_t = log(L_t(before) + eps) - log(L_t(after) + eps)`` is each
    task's log-loss decrease over the step; with ``z = softmax(logits)`` over
    the present tasks the gradient is ``z * (delta - z^T delta)`` (softmax
    Jacobian). Descending it moves weight toward tasks whose loss fell least.
    Absent tasks get 0.
    """
    before = masked_losses(losses_before, present)
    after = masked_losses(losses_after, present)
    delta = torch.log(before + eps) - torch.log(after + eps)
    delta = torch.where(present, delta, torch.zeros_like(delta))
    z = masked_softmax(logits.to(delta.dtype), present)
    return z * (delta - (z * delta).sum())


class FAMOState(WeightingState):
    def __init__(self, static_weights, lr, weight_decay, eps):
        super().__init__(static_weights)
        n = self.n_tasks
        self.lr, self.weight_decay, self.eps = lr, weight_decay, eps
        # A parameter so it is saved and listed, but updated by FAMO's own
        # rule in after_step, never by back-propagation.
        self.logits = torch.nn.Parameter(torch.zeros(n), requires_grad=False)
        self.register_buffer("prev_losses", torch.zeros(n))
        self.register_buffer("prev_present", torch.zeros(n, dtype=torch.bool))
        # Adam moments of the logits (the official code optimises them with Adam).
        self.register_buffer("exp_avg", torch.zeros(n))
        self.register_buffer("exp_avg_sq", torch.zeros(n))
        self.register_buffer("adam_steps", torch.zeros(n))

    def combine(self, losses, present, grads=None):
        prior = self.static_weights
        w = famo_loss_weights(self.logits, losses, present, self.eps, prior=prior)
        # Scaled by k (number of present tasks) so that equal losses and logits
        # reduce to the static default sum_t L_t; the paper's w sums to 1.
        w = w * present.sum().to(w.dtype)
        self.prev_losses = masked_losses(losses.detach(), present).to(self.prev_losses.dtype)
        self.prev_present = present.clone()
        # Same gradient as the paper's log form; the value stays a weighted loss.
        return Step((w * masked_losses(losses, present)).sum(), w)

    @torch.no_grad()
    def after_step(self, losses_after, present):
        mask = present & self.prev_present
        # On the scale combine() saw (the engine normalises both alike).
        g = famo_logits_gradient(self.logits, self.prev_losses, losses_after.detach(), mask,
                                 self.eps)
        g = g.to(self.logits.dtype) + self.weight_decay * self.logits  # Adam's L2 weight decay
        adam_masked_step(
            self.logits, g, mask, self.exp_avg, self.exp_avg_sq, self.adam_steps, self.lr
        )


class FAMO(Weighting):
    """Fast Adaptive Multitask Optimization.

    Liu, Liu, Jin, Stone & Liu 2023, "FAMO: Fast Adaptive Multitask
    Optimization" (NeurIPS). Task logits ``xi`` give ``z = softmax(xi)``; the
    step descends ``sum_t z_t log L_t`` normalised by ``c = sum_t z_t / L_t``,
    i.e. weights ``w_t = z_t / (L_t c)`` on the raw losses. After the
    optimiser step the same batch's losses are re-evaluated and ``xi`` takes
    an Adam step (learning rate ``lr``, L2 decay ``weight_decay``) along the
    gradient of ``z^T delta``, ``delta_t`` the decrease of ``log L_t``: the
    weight moves toward tasks whose loss decreased least. One backward pass
    and one extra no-grad forward per step.

    Differences from the paper, on purpose: softmax and normalisation run
    over the tasks present in the batch; the weights are multiplied by the
    number ``k`` of present tasks (equal logits and losses then give the
    static default ``sum_t L_t``; the paper's sum to 1); static weights act as
    priors multiplying ``z``. ``combine`` returns ``sum_t w_t L_t`` with ``w``
    detached, which has the same gradient as the paper's log form.

    Parameters
    ----------
    lr : float, default=0.025
        Learning rate of the logits (the authors' default).
    weight_decay : float, default=0.01
        L2 decay ``gamma`` of the logits toward equal weights.
    eps : float, default=1e-8
        Added to each loss inside the log and the inverse (a task at zero
        loss stays finite).
    """

    needs_losses_after_step = True

    _parameter_constraints: dict = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "eps": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, lr=0.025, weight_decay=0.01, eps=1e-8):
        self.lr = lr
        self.weight_decay = weight_decay
        self.eps = eps

    def build(self, static_weights, task_kinds=None):
        return FAMOState(static_weights, float(self.lr), float(self.weight_decay),
                         float(self.eps))
