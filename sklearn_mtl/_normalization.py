"""Loss normalisation: put the task losses on a common scale before weighting.

A mean squared error of unscaled targets and a cross-entropy can differ by
orders of magnitude, so a plain sum lets one task dominate. The engine
(:mod:`sklearn_mtl._net`) divides each task's training loss by a per-task
scale before the losses reach the weighting strategy (and before the
per-task gradients of the gradient methods are taken); the losses a strategy
receives after the optimiser step are divided by the same step's scales, so
a strategy never sees a raw training loss during the step:

* ``"none"``: no change (scale 1).
* ``"initial"``: the task's first observed training loss ``L_t(0)`` (the loss
  of the first batch in which the task has a label and a finite, positive
  loss), kept as a buffer for the whole fit. The first step's normalised
  losses are therefore all 1, and a task's normalised loss is its progress
  ratio ``L_t / L_t(0)``.
* ``"running_mean"``: an exponential running mean of the task's training
  loss, ``m_t <- momentum * m_t + (1 - momentum) * L_t`` over the steps where
  the task is present, started at the first observed loss (no bias toward
  0) and updated *before* the division (the current batch is included).
  ``m_t`` is detached: the gradient of ``L_t / m_t`` is ``grad L_t / m_t``,
  so every task's gradient is scaled by the inverse of its current loss level
  (``momentum = 0`` is exactly the gradient of ``log L_t``). The default
  momentum 0.9 averages over about the last 10 steps.

Absent tasks (no label in the batch) are returned untouched and leave the
scales alone; non-finite losses never enter a scale; a scale is floored at
``eps`` so there is no division by zero. Everything stays on the device (no
host synchronisation). Validation losses are not normalised: the engine
reports them un-normalised and static-weighted.
"""

import torch

NORMALIZATIONS = ("none", "initial", "running_mean")
#: Default momentum of the ``"running_mean"`` normalisation (per training step).
RUNNING_MEAN_MOMENTUM = 0.9


def check_normalization(value):
    """``value`` if it is a valid ``loss_normalization``, else a clear ValueError."""
    if not isinstance(value, str) or value not in NORMALIZATIONS:
        raise ValueError(
            f"loss_normalization must be one of {list(NORMALIZATIONS)}; got {value!r}. "
            "'initial' divides each task's loss by its first training loss, 'running_mean' "
            "by an exponential running mean of it."
        )
    return value


class LossNormalization(torch.nn.Module):
    """Per-task loss scales for one fit (see the module docstring).

    Parameters
    ----------
    n_tasks : int
    mode : {'none', 'initial', 'running_mean'}
    momentum : float in [0, 1), default=0.9
        Only for ``'running_mean'``.
    eps : float, default=1e-8
        Floor of the scales; a loss must exceed it to start a scale.

    Buffers: ``scale`` (T,), the current divisors (1 until a task is first
    seen), and ``seen`` (T,) bool.
    """

    def __init__(self, n_tasks, mode="none", momentum=RUNNING_MEAN_MOMENTUM, eps=1e-8):
        super().__init__()
        self.mode = check_normalization(mode)
        if not (0.0 <= float(momentum) < 1.0):
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}.")
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("scale", torch.ones(int(n_tasks)))
        self.register_buffer("seen", torch.zeros(int(n_tasks), dtype=torch.bool))

    @property
    def active(self):
        return self.mode != "none"

    @torch.no_grad()
    def update(self, losses, present):
        """Update the scales with one training step's losses; return the divisors (T,)
        to use for this step (detached, 1 for absent or not yet seen tasks)."""
        loss = losses.detach().to(self.scale.dtype)
        finite = present & torch.isfinite(loss)
        # A scale starts at the first finite loss above eps (a zero loss cannot scale).
        first = finite & ~self.seen & (loss > self.eps)
        if self.mode == "initial":
            self.scale.copy_(torch.where(first, loss, self.scale))
        elif self.mode == "running_mean":
            b = self.momentum
            moving = finite & self.seen
            safe = torch.where(finite, loss, torch.zeros_like(loss))
            mixed = b * self.scale + (1.0 - b) * safe
            self.scale.copy_(torch.where(first, loss, torch.where(moving, mixed, self.scale)))
        self.seen.logical_or_(first)
        return self.divisors(present)

    def divisors(self, present):
        """The current divisors (T,) without updating (absent or unseen tasks: 1)."""
        use = present & self.seen
        scale = self.scale.clamp_min(self.eps)
        return torch.where(use, scale, torch.ones_like(scale))

    def forward(self, losses, present):
        """``(normalised losses, divisors)``; updates the scales (training steps only).

        ``losses / divisors`` for present tasks; absent entries are returned as
        they came (never divided, so a NaN placeholder stays where it is and is
        masked by the strategy as before).
        """
        if not self.active:
            return losses, None
        div = self.update(losses, present).to(losses.dtype)
        return torch.where(present, losses / div, losses), div

    def normalize(self, losses, present):
        """``losses`` divided by the current divisors, without updating the scales.

        After a training step's :meth:`forward` this is the same division, e.g.
        for the batch's losses re-evaluated after the optimiser step.
        """
        if not self.active:
            return losses
        div = self.divisors(present).to(losses.dtype)
        return torch.where(present, losses / div, losses)

    def extra_repr(self):
        extra = f", momentum={self.momentum}" if self.mode == "running_mean" else ""
        return f"mode={self.mode!r}{extra}"
