"""Adam and AdamW updates issued straight to torch's fused kernel.

``torch.optim.Adam(fused=True).step()`` spends most of its time, at the sizes
of tabular networks, in Python around one kernel: the step wrapper (hooks,
profiler records, grad-mode switching), rebuilding the lists of parameters and
states, and grouping them by device and dtype. None of that changes from one
step to the next inside an epoch, so :class:`FusedAdamStep` builds the lists
once and each step makes the same two calls torch's fused path makes
(``_foreach_add_`` on the step counters, then ``_fused_adam_`` or
``_fused_adamw_``) on the optimizer's own state tensors: the parameters, the
moments and the step counts are the ones ``optimizer.state_dict()`` holds, and
the update is bit for bit the one ``optimizer.step()`` makes.

It applies only where nothing could observe the difference: exactly
``torch.optim.Adam`` or ``AdamW`` (not a subclass), ``fused=True`` in every
group, no step hooks, every parameter's state already initialised (the
optimizer's own first step does that), real dense parameters on one device and
dtype per group. Otherwise :meth:`FusedAdamStep.for_optimizer` returns None and
the engine calls ``optimizer.step()``. The learning rate and the other group
settings are read at every step, so schedulers keep working.
"""

import torch
from torch.optim.optimizer import (
    _global_optimizer_post_hooks,
    _global_optimizer_pre_hooks,
)

_STATE_KEYS = ("exp_avg", "exp_avg_sq", "step")


def _hooked(optimizer):
    return bool(optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or _global_optimizer_pre_hooks or _global_optimizer_post_hooks)


class _Group:
    """One parameter group's tensor lists, built once."""

    __slots__ = ("settings", "params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "steps")

    def __init__(self, settings, params, state):
        self.settings = settings
        self.params = params
        self.exp_avgs = [state[p]["exp_avg"] for p in params]
        self.exp_avg_sqs = [state[p]["exp_avg_sq"] for p in params]
        self.max_exp_avg_sqs = ([state[p]["max_exp_avg_sq"] for p in params]
                                if settings["amsgrad"] else [])
        self.steps = [state[p]["step"] for p in params]


class FusedAdamStep:
    """``optimizer.step()`` and ``zero_grad(set_to_none=True)`` for a fused
    Adam/AdamW, without the per-step Python around the kernel (see the module
    docstring)."""

    def __init__(self, optimizer, groups):
        self.optimizer = optimizer
        self.groups = groups
        self.all_params = [p for g in groups for p in g.params]

    @classmethod
    def for_optimizer(cls, optimizer):
        """A :class:`FusedAdamStep` for ``optimizer``, or None where it does not apply."""
        if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or _hooked(optimizer):
            return None
        groups = []
        for settings in optimizer.param_groups:
            if (not settings.get("fused") or settings.get("differentiable")
                    or settings.get("capturable") or torch.is_tensor(settings["lr"])
                    or torch.is_tensor(settings["betas"][0])):
                return None
            params = [p for p in settings["params"] if p.requires_grad]
            if not params:
                continue
            if len({(p.device, p.dtype) for p in params}) != 1:
                return None
            for p in params:
                state = optimizer.state.get(p)
                if (p.is_complex() or p.is_sparse or not state
                        or any(key not in state for key in _STATE_KEYS)
                        or (settings["amsgrad"] and "max_exp_avg_sq" not in state)):
                    return None
            groups.append(_Group(settings, params, optimizer.state))
        return cls(optimizer, groups) if groups else None

    def zero_grad(self):
        for p in self.all_params:
            p.grad = None

    def step(self):
        """One update; falls back to ``optimizer.step()`` when a parameter has no
        gradient this step (the optimizer then skips it, as torch does)."""
        grads = [p.grad for p in self.all_params]
        if any(g is None or g.is_sparse for g in grads):
            self.optimizer.step()
            return
        at = 0
        for group in self.groups:
            s = group.settings
            n = len(group.params)
            beta1, beta2 = s["betas"]
            decoupled = s.get("decoupled_weight_decay", type(self.optimizer) is torch.optim.AdamW)
            kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
            torch._foreach_add_(group.steps, 1)
            kernel(group.params, grads[at:at + n], group.exp_avgs, group.exp_avg_sqs,
                   group.max_exp_avg_sqs, group.steps, amsgrad=s["amsgrad"], lr=s["lr"],
                   beta1=beta1, beta2=beta2, weight_decay=s["weight_decay"], eps=s["eps"],
                   maximize=s["maximize"], grad_scale=None, found_inf=None)
            at += n
