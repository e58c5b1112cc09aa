"""Data-parallel training over processes with Hugging Face accelerate: the engine's side.

:func:`sklearn_mtl.distributed.data_parallel` sets the accelerator of the fits
inside it; :func:`data_parallel_net` (called by ``build_net``) then builds a
:class:`DataParallelNet` instead of a plain :class:`~sklearn_mtl._net.MultiTaskNet`.

How a step is split. Every process holds the same data, the same seeds (hence
the same initial weights, validation split and batch order) and trains on its
own slice of each batch. The per-task losses are masked means over the
labelled rows, so the mean of per-process means is not the batch's loss when
the processes see different numbers of labels; instead each process's
label-weighted loss sums and label-weight sums are added over the processes
(an all-reduce of two (T,) vectors whose backward is an all-reduce too), and
every process then holds the batch's exact per-task losses. The weighting
strategy combines those, identically on every process; the parameter
gradients are then averaged over the processes. The update is therefore the
one-process update on the whole batch, up to float summation order, for every
strategy that reads losses only (static, uncertainty, dwa, rlw, famo,
validation_trend, alternating), with missing labels and sample weights.
Validation runs on every process on the whole validation set (it is
forward-only): losses, scores and early stopping decide the same everywhere.

Why skorch's ``AccelerateMixin`` is used with some of its steps replaced:

* it wraps ``module_`` in ``DistributedDataParallel``: the engine reads
  ``module_.trunk``, ``module_.heads`` and ``module_.representation_``, and
  early stopping keeps ``module_``'s state dicts, which the wrapper would
  prefix with ``module.``; and DDP synchronises ``module_``'s gradients only,
  not those of a strategy's own parameters (uncertainty's log-variances),
  which live outside it. Here the gradients of every optimised parameter are
  all-reduced after ``accelerator.backward``, in one flat buffer.
* it hands the batch iterator to ``accelerator.prepare``, which shards torch
  ``DataLoader``s only and returns the engine's slicing iterator unchanged:
  every process would train on every row. Here each batch is sliced by rank.
* its evaluation step gathers predictions over processes; validation here is
  replicated, so there is nothing to gather.
* it keeps the accelerator in the net, which then cannot be pickled; here the
  accelerator is dropped on pickling, and a fitted model saves, loads and
  predicts as one fitted in one process.

Gradient-based strategies (``needs_grads``) compute per-task gradients on
each process's rows and would need those all-reduced before their min-norm or
projection step; they are refused with more than one process.
"""

import contextvars

import torch
from skorch.hf import AccelerateMixin
from skorch.net import NeuralNet

from ._net import MultiTaskNet

#: The accelerator of the fits inside ``data_parallel`` (None outside).
ACTIVE = contextvars.ContextVar("sklearn_mtl_data_parallel", default=None)


def data_parallel_net(estimator, weighting, device):
    """``(net class, extra arguments)`` of a fit: a :class:`DataParallelNet` inside
    ``data_parallel``, else the plain engine."""
    accelerator = ACTIVE.get()
    if accelerator is None:
        return MultiTaskNet, {}
    check_fit(accelerator, estimator, weighting, device)
    return DataParallelNet, {"accelerator": accelerator}


def check_fit(accelerator, estimator, weighting, device):
    """Refuse, with the reason, a fit that data-parallel training cannot run exactly."""
    if torch.device(device).type != accelerator.device.type:
        raise ValueError(
            f"device={estimator.device!r} but the accelerator runs on "
            f"{accelerator.device.type!r}; pass device={accelerator.device.type!r} (each "
            "process trains on the device accelerate assigns it).")
    if accelerator.num_processes == 1:
        return
    if estimator.random_state is None:
        raise ValueError(
            f"data_parallel with {accelerator.num_processes} processes needs an integer "
            "random_state: every process must draw the same initial weights, validation "
            "split and batch order. Pass random_state=0 (or any int).")
    if weighting.needs_grads is not None:
        raise ValueError(
            f"weighting={type(weighting).__name__}() combines per-task gradients, which each "
            f"process computes on its own rows only; data_parallel with "
            f"{accelerator.num_processes} processes would need them all-reduced before the "
            "combination, which is not supported. Use a loss-based weighting ('static', "
            "'uncertainty', 'dwa', 'rlw', 'famo', 'validation_trend', 'alternating'), or "
            "train in one process.")


class _GlobalSum(torch.autograd.Function):
    """Sum over processes; the backward is the sum of the upstream gradients."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad


class _Shard:
    """This process's slice of each batch of ``iterator``; ``sizes`` are the whole
    batches' row counts of the last pass."""

    def __init__(self, iterator, rank, world):
        self.iterator, self.rank, self.world = iterator, rank, world
        self.sizes = []

    def __len__(self):
        return len(self.iterator)

    def __iter__(self):
        self.sizes = []
        for Xb, yb in self.iterator:
            n = Xb.shape[0]
            lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
            self.sizes.append(n)
            yield Xb[lo:hi], (yb[lo:hi] if yb is not None else None)


class DataParallelNet(AccelerateMixin, MultiTaskNet):
    """:class:`~sklearn_mtl._net.MultiTaskNet` training on one slice of each batch per
    process of an ``accelerate.Accelerator`` (see the module docstring).

    Built by the estimators inside :func:`sklearn_mtl.distributed.data_parallel`;
    not meant to be built directly.
    """

    def __init__(self, *args, accelerator=None, **kwargs):
        # Not AccelerateMixin.__init__: it sets a print_log sink, which skorch refuses
        # when the (silent) estimator has no print_log callback; and the engine keeps
        # its device (accelerate's device placement is not used).
        MultiTaskNet.__init__(self, *args, **kwargs)
        self.accelerator = accelerator
        self.unwrap_after_train = True
        self._wrapped_with_accelerator = False

    def _world(self):
        accelerator = self.accelerator
        return 1 if accelerator is None else accelerator.num_processes

    def _validate_params(self):
        NeuralNet._validate_params(self)

    def _initialize_callbacks(self):
        NeuralNet._initialize_callbacks(self)
        if self.accelerator is not None:
            for name, cb in self.callbacks_:
                if name == "print_log" and hasattr(cb, "sink"):
                    cb.sink = self.accelerator.print  # the epoch table once, not per process
        return self

    def _initialize_accelerator(self):
        # Nothing is wrapped (see the module docstring).
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        active = ACTIVE.get()
        if active is not None:
            self.accelerator = active  # continued training inside data_parallel
        elif self.accelerator is None:
            from accelerate import Accelerator  # an unpickled net trained further
            self.accelerator = Accelerator(cpu=torch.device(self.device).type == "cpu")
        return super().partial_fit(X, y, classes=classes, **fit_params)

    def get_iterator(self, dataset, training=False):
        iterator = NeuralNet.get_iterator(self, dataset, training=training)
        if training and self._world() > 1:
            iterator = _Shard(iterator, self.accelerator.process_index, self._world())
        return iterator

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        if isinstance(iterator, _Shard) and iterator.sizes:
            # The history counts the whole batches (as one process would), so that the
            # epoch's train_loss is the same on every process.
            key = prefix + "_batch_size"
            rows = self.history[-1]["batches"][-len(iterator.sizes):]
            for row, size in zip(rows, iterator.sizes):
                row[key] = size

    def train_step(self, batch, **fit_params):
        self.__dict__["_reduce_losses"] = self._world() > 1
        try:
            return super().train_step(batch, **fit_params)
        finally:
            self.__dict__["_reduce_losses"] = False

    def task_losses(self, y_pred, y_true):
        losses, denominators = super().task_losses(y_pred, y_true)
        if not self.__dict__.get("_reduce_losses"):
            return losses, denominators
        # The batch's losses: label-weighted sums and label-weight sums over processes.
        sums = _GlobalSum.apply(torch.cat([losses * denominators, denominators]))
        n = losses.shape[0]  # T tasks, or k members of an ensemble (k, T)
        numerators, denominators = sums[:n], sums[n:]
        return numerators / denominators.clamp_min(1e-12), denominators

    def train_step_single(self, batch, **fit_params):
        step = super().train_step_single(batch, **fit_params)  # accelerator.backward
        if self._world() > 1 and self.accelerator.sync_gradients:
            self._average_gradients()
        return step

    def _average_gradients(self):
        """Average the gradients of every optimised parameter over the processes, in
        one all-reduce; a parameter no process has a gradient for keeps None (as in one
        process, where the optimizer then skips it)."""
        params = [p for name in self._optimizers
                  for group in getattr(self, name + "_").param_groups for p in group["params"]]
        if not params:
            return
        flat = torch.cat([torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                                     .reshape(-1) for p in params]),
                          torch.tensor([float(p.grad is not None) for p in params],
                                       device=params[0].device, dtype=params[0].dtype)])
        torch.distributed.all_reduce(flat)
        flat /= self._world()
        seen = flat[flat.numel() - len(params):].tolist()
        at = 0
        for p, some in zip(params, seen):
            grad = flat[at:at + p.numel()].view_as(p)
            at += p.numel()
            if p.grad is not None:
                p.grad.copy_(grad)
            elif some > 0:  # another process's rows reached it
                p.grad = grad.clone()

    def _step_optimizer(self, step_fn):
        # The engine's lean step passes no closure (it has run the step already).
        if step_fn is not None:
            step_fn()
        for name in self._optimizers:
            getattr(self, name + "_").step()

    def evaluation_step(self, batch, training=False):
        return NeuralNet.evaluation_step(self, batch, training=training)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return NeuralNet.on_train_end(self, net, X=X, y=y, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state["accelerator"] = None  # a process-group handle: not part of the model
        return state
