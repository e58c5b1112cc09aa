"""GradNorm: gradient normalisation (Chen et al. 2018)."""

import functools
import math
from numbers import Real

import numpy as np
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


#: Dtypes the host path of ``GradNormState.combine`` reads and writes through numpy.
_HOST_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


@functools.lru_cache(maxsize=16)
def _host_constants(dtype, lr, alpha, betas=(0.9, 0.999), eps=1e-8, min_weight=1e-3):
    """The scalars of the torch path's update as it applies them, for the host path.

    torch casts a Python scalar to the dtype of the tensor it meets, so in a
    float32 state Adam's ``betas`` are float32 numbers. The moments average
    hundreds of steps, which makes that rounding visible, so the host path
    rounds the same way. The defaults are those of :func:`adam_masked_step`
    and :func:`renormalize_present`. Returns the rounded ``b1, b2, 1 - b1,
    1 - b2, eps, min_weight, lr, alpha``, the dtype's smallest normal number
    and the rounding function.
    """
    np_type = _HOST_DTYPES[dtype]

    def rnd(x):
        return float(np_type(x))

    b1, b2 = betas
    scalars = (b1, b2, 1 - b1, 1 - b2, eps, min_weight, lr, alpha)
    return (*map(rnd, scalars), float(torch.finfo(dtype).tiny), rnd)


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
        weights = self.weights
        if (
            not torch.is_grad_enabled()
            and losses.is_cpu and present.is_cpu and grads.is_cpu and weights.is_cpu
            and losses.dtype in _HOST_DTYPES and weights.dtype in _HOST_DTYPES
        ):
            return self._combine_host(losses, present, grads, weights)
        w_now = weights.detach().clone()
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

    def _combine_host(self, losses, present, grads, weights):
        """:meth:`combine` on CPU tensors without gradient recording.

        The same rule as the torch path (:func:`gradnorm_weight_gradient`,
        :func:`adam_masked_step`, :func:`renormalize_present`), task by task in
        Python floats: on (T,) tensors each torch op costs far more in dispatch
        than in arithmetic. The state is read as lists and written back in
        place through numpy views of its tensors.
        """
        b1, b2, c1, c2, eps, min_weight, lr, alpha, tiny, rnd = _host_constants(
            weights.dtype, self.lr, self.alpha
        )
        # Looked up once: a module attribute lookup costs more than a task's arithmetic.
        buf = self._buffers
        pres = present.tolist()
        loss = [x if p else 0.0 for x, p in zip(losses.tolist(), pres)]
        norms = torch.linalg.vector_norm(grads, dim=1, dtype=torch.float32).tolist()
        w_now = weights.tolist()
        eff = [s * w if p else 0.0 for s, w, p in zip(buf["static_weights"].tolist(), w_now, pres)]
        total = sum(e * x for e, x in zip(eff, loss))

        # L_t(0): the first loss seen for each task.
        init, has = buf["initial_losses"].tolist(), buf["has_initial"].tolist()
        if any(p and not h for p, h in zip(pres, has)):
            init = [x if p and not h else i for x, i, p, h in zip(loss, init, pres, has)]
            buf["initial_losses"].numpy()[:] = init
            buf["has_initial"].numpy()[:] = [p or h for p, h in zip(pres, has)]

        idx = [t for t, p in enumerate(pres) if p]
        n = max(len(idx), 1)
        G = [w_now[t] * norms[t] for t in idx]
        ltilde = [loss[t] / max(init[t], tiny) for t in idx]
        mean_lt = sum(ltilde) / n
        r = [x / (mean_lt if mean_lt > 0 else 1.0) for x in ltilde]
        mean_G = sum(G) / n

        # One Adam step on sign(G_t - target_t) |g_t| for the present tasks.
        m, v, k = (buf[b].tolist() for b in ("exp_avg", "exp_avg_sq", "adam_steps"))
        w = list(w_now)
        for j, t in enumerate(idx):
            d = G[j] - mean_G * max(r[j], 0.0) ** alpha
            g = ((d > 0) - (d < 0)) * norms[t]
            k[t] += 1.0
            m[t] = b1 * m[t] + c1 * g
            v[t] = b2 * v[t] + c2 * g * g
            # The bias corrections cancel digits: take the powers as the state's
            # dtype holds them, as the torch path does.
            m_hat = m[t] / (1.0 - rnd(b1 ** k[t]))
            v_hat = v[t] / (1.0 - rnd(b2 ** k[t]))
            w[t] = max(w[t] - lr * m_hat / (math.sqrt(v_hat) + eps), min_weight)

        # Rescale the present weights to their old sum.
        new_sum = sum(w[t] for t in idx)
        factor = sum(w_now[t] for t in idx) / (new_sum if new_sum > 0 else 1.0)
        for t in idx:
            w[t] *= factor
        weights.detach().numpy()[:] = w
        buf["exp_avg"].numpy()[:] = m
        buf["exp_avg_sq"].numpy()[:] = v
        buf["adam_steps"].numpy()[:] = k

        dtype = _HOST_DTYPES[losses.dtype]
        eff = torch.from_numpy(np.array(eff, dtype=dtype))
        coef = eff if grads.dtype == eff.dtype else eff.to(grads.dtype)
        return Step(torch.from_numpy(np.array(total, dtype=dtype)), eff, shared_coef=coef,
                    head_weights=coef)


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
