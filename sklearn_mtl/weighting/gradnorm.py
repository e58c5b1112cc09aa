"""GradNorm: gradient normalisation (Chen et al. 2018)."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval

from ._base import Step, Weighting, WeightingState
from ._utils import adam_masked_step, masked_losses, masked_mean, weighted_sum


def gradnorm_weight_gradient(weights, grad_norms, losses, initial_losses, present, alpha=1.5):
    """Gradient of GradNorm's loss w.r.t. the task weights.

    ``L_grad = sum_t |G_t - mean(G) * r_t^alpha|`` over the present tasks,
    with ``G_t = w_t |g_t|`` the weighted gradient norm,
    ``r_t = Ltilde_t / mean(Ltilde)`` the relative inverse training rate and
    ``Ltilde_t = L_t / L_t(0)``. As in the paper the target
    ``mean(G) r_t^alpha`` is a constant, so ``dL_grad/dw_t =
    sign(G_t - target_t) |g_t|``. Absent tasks get 0. Returns
    ``(gradient, target, G)``.
    """
    norms = torch.where(present, grad_norms, torch.zeros_like(grad_norms))
    G = weights * norms
    loss = masked_losses(losses, present)
    init = torch.where(present, initial_losses, torch.ones_like(initial_losses))
    ltilde = loss / init.clamp_min(torch.finfo(loss.dtype).tiny)
    mean_lt = masked_mean(ltilde, present)
    r = ltilde / torch.where(mean_lt > 0, mean_lt, torch.ones_like(mean_lt))
    target = masked_mean(G, present) * r.clamp_min(0) ** alpha
    grad = torch.where(present, torch.sign(G - target) * norms, torch.zeros_like(norms))
    return grad, target, G


def renormalize_present(new_weights, old_weights, present, min_weight=1e-3):
    """Clamp weights positive and rescale the present ones to their old sum.

    Absent tasks keep their weight, so the total (``T`` from the start)
    never drifts.
    """
    w = torch.where(present, new_weights.clamp_min(min_weight), old_weights)
    old_sum = torch.where(present, old_weights, torch.zeros_like(old_weights)).sum()
    new_sum = torch.where(present, w, torch.zeros_like(w)).sum()
    factor = old_sum / torch.where(new_sum > 0, new_sum, torch.ones_like(new_sum))
    return torch.where(present, w * factor, w)


class GradNormState(WeightingState):
    #: The Step's head_weights are the gradient of its loss w.r.t. the losses.
    provides_head_weights = True

    def __init__(self, static_weights, alpha, lr):
        super().__init__(static_weights)
        n = self.n_tasks
        self.alpha, self.lr = alpha, lr
        # A parameter (saved, listed) updated by GradNorm's own loss inside
        # combine; the engine's loss uses it detached, so its optimiser
        # never sees a gradient for it.
        self.weights = torch.nn.Parameter(torch.ones(n), requires_grad=False)
        self.register_buffer("initial_losses", torch.ones(n))
        self.register_buffer("has_initial", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("exp_avg", torch.zeros(n))
        self.register_buffer("exp_avg_sq", torch.zeros(n))
        self.register_buffer("adam_steps", torch.zeros(n))

    def combine(self, losses, present, grads=None):
        if grads is None:
            raise ValueError("GradNorm needs per-task gradients; the engine passed grads=None.")
        w_now = self.weights.detach().clone()
        total, eff = weighted_sum(self.static_weights * w_now, losses, present)
        with torch.no_grad():
            loss = masked_losses(losses.detach(), present).to(self.initial_losses.dtype)
            # L_t(0): the first loss seen for each task.
            first = present & ~self.has_initial
            self.initial_losses.copy_(torch.where(first, loss, self.initial_losses))
            self.has_initial.logical_or_(present)
            norms = torch.linalg.vector_norm(grads.detach(), dim=1, dtype=torch.float32).to(
                w_now.dtype
            )
            g, _, _ = gradnorm_weight_gradient(
                w_now, norms, loss, self.initial_losses, present, self.alpha
            )
            adam_masked_step(
                self.weights, g, present, self.exp_avg, self.exp_avg_sq, self.adam_steps, self.lr
            )
            self.weights.copy_(renormalize_present(self.weights, w_now, present))
        coef = eff.detach().to(grads.dtype)  # same dtype as the gradients it scales
        return Step(total, eff.detach(), shared_coef=coef, head_weights=coef)


class GradNorm(Weighting):
    """GradNorm: learn weights that balance the tasks' gradient norms.

    Chen, Badrinarayanan, Lee & Rabinovich 2018, "GradNorm: Gradient
    Normalization for Adaptive Loss Balancing in Deep Multitask Networks"
    (ICML). Learned weights ``w_t`` (start 1, sum ``T``) scale the losses.
    Each step the weighted gradient norms ``G_t = w_t |g_t|`` on the shared
    parameters are pulled toward ``mean(G) * r_t^alpha``, where
    ``r_t = (L_t / L_t(0)) / mean_s(L_s / L_s(0))``: tasks that train slower
    get larger gradients. The weights take one Adam step (learning rate
    ``lr``) on ``sum_t |G_t - target_t|`` (analytic gradient, target held
    constant), are clamped positive and renormalised over the present tasks
    to keep their sum; the new weights apply from the next step, as in the
    paper.

    ``needs_grads = "params"``: ``g_t`` are the per-task gradients of all
    shared parameters (the paper uses the last shared layer; this is the
    same rule on a larger layer set). ``L_t(0)`` is the first loss seen for
    task ``t``. Static weights are priors: the effective weight is
    ``static_t * w_t``, used for the shared update (``shared_coef``) and for
    the heads (the paper weights the whole loss).

    Parameters
    ----------
    alpha : float, default=1.5
        Asymmetry: strength of the pull toward balanced training rates.
    lr : float, default=0.025
        Adam learning rate of the weights.
    """

    needs_grads = "params"

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, alpha=1.5, lr=0.025):
        self.alpha = alpha
        self.lr = lr

    def build(self, static_weights, task_kinds=None):
        return GradNormState(static_weights, float(self.alpha), float(self.lr))
