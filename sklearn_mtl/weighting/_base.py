"""The contract every loss-weighting strategy follows.

A strategy is split in two, as scikit-learn splits an estimator from its
fitted state:

* :class:`Weighting` holds only hyperparameters (a ``BaseEstimator``), so it
  clones, pickles and sits in a ``GridSearchCV`` grid like any parameter.
* :meth:`Weighting.build` returns a :class:`WeightingState`, a
  ``torch.nn.Module`` owned by the training engine for one fit. Learnable
  weights (uncertainty, GradNorm) are its parameters and are optimised with
  the network; running statistics are its buffers or attributes.

The engine calls the state once per training step with the per-task losses::

    total = state.combine(losses, present, grads)
    total.backward()

``losses``  float tensor (T,): each task's mean loss over its observed labels
            in the batch (0 for a task with no label in the batch).
``present`` bool tensor (T,): whether the task had any label in the batch.
            A task that is absent must drop out of the step: its weight is 0
            and it must not enter any normalisation, min-norm problem or
            inverse.
``grads``   ``None`` unless the class attribute ``needs_grads`` is set; then a
            float tensor (T, P) of per-task gradients of the shared parameters
            (``needs_grads = "params"``) or of the shared representation
            (``needs_grads = "representation"``), detached, rows of absent
            tasks all zero.

``combine`` returns the scalar to back-propagate. For gradient methods the
engine routes the shared part of the gradient itself: ``combine`` must then
set ``self.shared_coef`` (T,) to the coefficients c such that the shared
update is ``sum_t c_t g_t`` (every method here produces an update in the span
of the task gradients), and return the loss whose gradient the task-specific
parameters (the heads) should receive, usually ``sum_t w_t L_t`` over the
present tasks with the static weights ``w``.

``last_weights`` (T,) is the effective weight of each task at the last step;
the engine averages it per epoch into the history.

Gradient methods may also set ``head_weights`` (T,), the gradient of the
returned loss w.r.t. the losses (usually the static weights of the present
tasks), and declare it with the class attribute ``provides_head_weights``;
the engine then reads it instead of differentiating the returned loss (and
may call ``combine`` without gradient recording). The returned loss must
depend on the network only through ``losses``.

With loss normalisation (the estimator's ``loss_normalization``, see
:mod:`._normalization`) the losses passed to ``combine`` are already divided
by per-task scales; the engine sets ``loss_scale`` (T,) to this step's
divisors (None without normalisation). ``after_step`` receives raw losses:
a strategy that compares them with the ones ``combine`` saw divides them by
``loss_scale`` first (:meth:`WeightingState.scaled`).
"""

import torch
from sklearn.base import BaseEstimator


class WeightingState(torch.nn.Module):
    """Per-fit state of a weighting strategy; see the module docstring."""

    def __init__(self, static_weights):
        super().__init__()
        self.register_buffer("static_weights", torch.as_tensor(static_weights, dtype=torch.float32))
        self.register_buffer("last_weights", self.static_weights.clone())
        self.shared_coef = None
        self.head_weights = None
        self.loss_scale = None

    def scaled(self, losses):
        """``losses`` divided by this step's normalisation divisors (if any)."""
        if self.loss_scale is None:
            return losses
        return losses / self.loss_scale.to(device=losses.device, dtype=losses.dtype)

    @property
    def n_tasks(self):
        return self.static_weights.shape[0]

    def combine(self, losses, present, grads=None):
        raise NotImplementedError

    # Optional hooks. The defaults do nothing.
    def after_step(self, losses_after, present):
        """Called after the optimiser step with the same batch's losses re-evaluated
        without gradient (only when the strategy sets ``needs_losses_after_step``)."""

    def epoch_end(self, train_losses, valid_losses=None):
        """Called at the end of each epoch with numpy arrays (T,) of the epoch's mean
        per-task training losses and, when there is a validation set, validation
        losses."""


class Weighting(BaseEstimator):
    """Base class of the strategy configurations (hyperparameters only)."""

    #: None, "params" or "representation": what per-task gradients combine() needs.
    needs_grads = None
    #: True when after_step() needs the batch's losses after the optimiser step.
    needs_losses_after_step = False

    def build(self, static_weights, task_kinds=None):
        """Return a fresh :class:`WeightingState` for one fit.

        ``static_weights`` is a float array (T,) from the estimator's
        ``loss_weights``. Strategies that admit a prior use it as one.
        ``task_kinds`` lists each task's kind ('regression', 'binary',
        'multiclass'), for strategies whose rule depends on it (uncertainty).
        """
        raise NotImplementedError
