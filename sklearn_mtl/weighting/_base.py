"""The contract every loss-weighting strategy follows.

A strategy is split in two, as scikit-learn splits an estimator from its
fitted state:

* :class:`Weighting` holds only hyperparameters (a ``BaseEstimator``), so it
  clones, pickles and sits in a ``GridSearchCV`` grid like any parameter. It
  declares them in ``_parameter_constraints``; the estimator validates them
  once per fit through :func:`~sklearn_mtl.weighting.resolve_weighting`.
* :meth:`Weighting.build` returns a :class:`WeightingState`, a
  ``torch.nn.Module`` owned by the training engine for one fit. It keeps the
  strategy's own running statistics and learned weights (uncertainty's
  log-variances, GradNorm's weights, FAMO's logits, DWA's loss history) as
  parameters, buffers or attributes; learnable ones are optimised with the
  network.

The engine calls the state once per training step with the per-task losses::

    step = state.combine(losses, present, grads)
    step.loss.backward()

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
            tasks all zero. The engine may reuse its memory from step to
            step: a strategy that keeps it beyond the call keeps a copy.

``combine`` returns a :class:`Step`, an immutable record of that step; the
strategy reports through it and sets no attribute for the engine to read:

``loss``          the scalar to back-propagate.
``weights``       (T,) the effective weight of each task in this step,
                  detached (0 for absent tasks); the engine averages it per
                  epoch into the history.
``shared_coef``   (T,) gradient methods only: the coefficients ``c`` of the
                  shared update ``sum_t c_t g_t``, detached (every method here
                  produces an update in the span of the task gradients). The
                  engine routes that update to the shared parameters itself;
                  ``loss`` is then the loss whose gradient the task-specific
                  parameters (the heads) receive, usually ``sum_t w_t L_t``
                  over the present tasks with the static weights ``w``, and
                  must depend on the network only through ``losses``.
``head_weights``  (T,) optional, the gradient of ``loss`` w.r.t. ``losses``
                  (usually the static weights of the present tasks). A state
                  that always fills it declares the class attribute
                  ``provides_head_weights``; the engine then reads it instead
                  of differentiating ``loss`` and may call ``combine`` without
                  gradient recording.

Loss normalisation (the estimator's ``loss_normalization``, see
:mod:`sklearn_mtl._normalization`) is the engine's: the losses passed to
``combine`` are already divided by per-task scales, and so are those passed
to ``after_step``, with the same step's divisors. The engine passes losses
rather than the scales because the scales are a fact of the engine: a
strategy then works on one kind of loss throughout, cannot mix raw and
normalised values, and no per-step value of the engine lives on the state.
``epoch_end`` receives the epoch's raw mean losses (strategies that use it
compare a task with itself over epochs, which a per-task scale leaves alone
or only shifts).
"""

from typing import NamedTuple

import torch

from .._params import Configuration


class Step(NamedTuple):
    """What :meth:`WeightingState.combine` returns for one step (see the module
    docstring). A named tuple: built once per training step, it costs a tuple."""

    loss: torch.Tensor
    weights: torch.Tensor
    shared_coef: torch.Tensor | None = None
    head_weights: torch.Tensor | None = None


class WeightingState(torch.nn.Module):
    """Per-fit state of a weighting strategy; see the module docstring."""

    #: True when every Step this state returns carries head_weights.
    provides_head_weights = False

    def __init__(self, static_weights):
        super().__init__()
        self.register_buffer("static_weights", torch.as_tensor(static_weights, dtype=torch.float32))

    @property
    def n_tasks(self):
        return self.static_weights.shape[0]

    def combine(self, losses, present, grads=None):
        """Return this step's :class:`Step`."""
        raise NotImplementedError

    # Optional hooks. The defaults do nothing.
    def after_step(self, losses_after, present):
        """Called after the optimiser step with the same batch's losses re-evaluated
        without gradient, on the scale ``combine`` saw (only when the strategy sets
        ``needs_losses_after_step``)."""

    def epoch_end(self, train_losses, valid_losses=None):
        """Called at the end of each epoch with numpy arrays (T,) of the epoch's mean
        per-task training losses and, when there is a validation set, validation
        losses."""


class Weighting(Configuration):
    """Base class of the strategy configurations (hyperparameters only).

    Subclasses declare every constructor parameter in ``_parameter_constraints``
    (scikit-learn's ``sklearn.utils._param_validation`` constraints).
    """

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
        The hyperparameters are validated before (``resolve_weighting``);
        what depends on these arguments is checked here.
        """
        raise NotImplementedError
