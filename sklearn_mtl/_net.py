"""The engine: a skorch ``NeuralNet`` whose loss is the combination of masked task losses.

skorch runs the loop (epochs, batches, callbacks, history, device, early
stopping, checkpoints); this module adds behaviour only through its hooks:

* ``get_loss`` computes the per-task losses and hands them to the weighting
  strategy (so accelerate-based training keeps working);
* ``iterator_train`` / ``iterator_valid`` slice batches from tensors prepared
  once, instead of indexing one sample at a time;
* the :class:`TaskLossLogger` callback writes per-task losses and weights
  into the history once per epoch, from sums kept on the device (one host
  synchronisation per epoch, not per batch).

The training fast path (see :meth:`MultiTaskNet.run_single_epoch`) runs when
no callback listens to per-batch events: then there is no per-batch host
synchronisation, no per-batch callback dispatch, and the batch rows of the
history are written once per epoch, with the same keys and values skorch
writes. With a per-batch callback (a progress bar, a batch-level LR
scheduler, gradient clipping...) skorch's own loop runs unchanged.

Step hooks: a callback that needs the network at some training steps only
(e.g. :class:`sklearn_mtl.callbacks.TaskAffinity`) defines an integer
attribute ``every`` and one or both of

* ``on_step(net, batch, step)``: before the training step, with the
  parameters the step starts from;
* ``on_step_end(net, batch, step, loss)``: after the optimizer step, with
  the batch's (device) loss.

``step`` counts the net's training steps since it was initialised (0, 1,
...; continued training goes on counting); the hooks are called when
``step % every == 0``, on both the fast path and skorch's loop. Defining
them does not turn the fast path off: the other steps pay one integer test.

Per-epoch validation scores: when there is validation data, the validation
pass also keeps, per task, the counts of correct predictions (classification)
or the sums R² needs (regression) on the device, and
:class:`TaskScoreLogger` writes ``valid_score_<task>`` (accuracy or R², over
the validation rows where the task has a label, unweighted) once per epoch.
"""

import contextlib
import copy
import inspect
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.helper import predefined_split
from skorch.history import History
from skorch.utils import to_tensor
from torch.utils.data import Dataset

from ._epoch_scores import TaskScoreLogger, score_layout, score_terms
from ._gradients import (
    attach_head_probe,
    combine_with_gradients,
    trunk_shared_parameters,
)
from ._early_stopping import distinct_states, snapshot_module
from ._ensemble import MemberMean, check_member_weights, member_task_losses
from ._direct_step import DirectStep
from ._fused_optim import FusedAdamStep
from ._threads import SMALL_STEP_MACS, ThreadTuner, step_macs
from ._normalization import LossNormalization
from ._onednn import OneDNNProducts

PRECISIONS = ("float32", "bf16")
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
# Rows per inference forward pass.
PREDICT_BATCH_SIZE = 8192

# Rows gathered per shuffle chunk: the batches of one chunk are then plain slices
# of it. Bounded so that the shuffle never holds a second copy of a large X.
_HOST_CHUNK_BYTES = 16 << 20
_DEVICE_CHUNK_BYTES = 128 << 20
# Per-step values kept before they are folded into the epoch's running sums.
_FOLD_EVERY = 256


def inference_only(module):
    """Stop a (copied) module, and the networks inside it, from keeping representations
    for the gradient methods."""
    for part in module.modules():
        if hasattr(part, "keep_representation"):
            part.keep_representation = False
    return module


class TensorTable(Dataset):
    """Rows of an input tensor and (optionally) a target tensor, batched by slicing.

    ``rows`` (optional int64 tensor) selects and orders a subset of the rows
    without copying them, e.g. the training and validation parts of one X.
    """

    def __init__(self, X, y=None, rows=None):
        self.X, self.y, self.rows = X, y, rows

    def __len__(self):
        return self.X.shape[0] if self.rows is None else self.rows.shape[0]

    def __getitem__(self, i):  # for tools that index one row; the engine never does
        i = i if self.rows is None else self.rows[i]
        return self.X[i], (self.y[i] if self.y is not None else torch.zeros(0))


def _is_cuda(device):
    return device is not None and torch.device(device).type == "cuda"


def fit_seeds(random_state, epochs_done=None):
    """Seeds of one fit call: (initialisation and dropout, validation split, shuffling).

    A continued call (``epochs_done`` epochs so far) draws fresh ones, the same for
    the same random_state and epoch count: otherwise every partial_fit call would
    replay the first epoch's batch order.
    """
    seeds = check_random_state(random_state).randint(np.iinfo(np.int32).max, size=3)
    if epochs_done is not None:
        seeds = np.random.default_rng([int(v) for v in seeds] + [epochs_done]).integers(
            np.iinfo(np.int32).max, size=3)
    return [int(s) for s in seeds]


@contextlib.contextmanager
def seeded_torch(random_state, seed, device):
    """Seed torch inside a forked RNG when ``random_state`` is set: reproducible
    initialisation and dropout, and the caller's global torch RNG is left as it was."""
    seeded = random_state is not None
    cuda = [torch.device(device).index or 0] if _is_cuda(device) else []
    with torch.random.fork_rng(devices=cuda, enabled=seeded):
        if seeded:
            torch.manual_seed(seed)
        yield


def split_tables(X, targets, rows, device):
    """Training and validation :class:`TensorTable` (None without validation) of float32
    X and the target matrix, for the (training, validation) row indices ``rows``, on the
    training device when they fit there."""
    # from_numpy shares X's memory, and on the CPU .to() is a no-op: the fit holds no
    # second copy of X.
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(targets)
    place = data_device(X_t, y_t, device)
    X_t, y_t = X_t.to(place), y_t.to(place)
    train, valid = rows
    if valid is None and len(train) == X.shape[0]:
        return TensorTable(X_t, y_t), None
    # Row indices into the one table rather than two copies of the rows.
    train_table = TensorTable(X_t, y_t, rows=torch.from_numpy(np.asarray(train, np.int64)))
    if valid is None:
        return train_table, None
    return train_table, TensorTable(X_t, y_t, rows=torch.from_numpy(np.asarray(valid, np.int64)))


def data_device(X_t, y_t, device):
    """Where a fit's data live: on the GPU for the whole fit when they fit comfortably,
    otherwise on the host, copied batch by batch."""
    if not _is_cuda(device):
        return "cpu"
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    needed = X_t.numel() * X_t.element_size() + y_t.numel() * y_t.element_size()
    return device if needed < 0.5 * free else "cpu"


class BatchIterator:
    """Batches of a :class:`TensorTable` as (X, y) tensor slices.

    With ``shuffle`` a fresh permutation is drawn each epoch from a generator
    seeded by ``seed``. Rows are then gathered a chunk at a time (one gather
    per tensor per chunk, not per batch) and each batch is a slice of its
    chunk; the batches are exactly ``order[i:i + batch_size]``, as if the whole
    table had been permuted at once, without a second copy of it.

    When the data live on the host and ``device`` is CUDA, each chunk is
    gathered into pinned memory and copied with ``non_blocking=True``.
    """

    def __init__(self, dataset, batch_size=256, shuffle=False, seed=None, device=None):
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), shuffle
        self.device = device
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    def __len__(self):
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size

    def _transfer(self, X):
        """Whether batches of X must be copied host -> CUDA."""
        return _is_cuda(self.device) and X.device.type == "cpu"

    def _chunk_rows(self, X, y):
        row_bytes = X[:1].numel() * X.element_size()
        if y is not None:
            row_bytes += y[:1].numel() * y.element_size()
        budget = _HOST_CHUNK_BYTES if X.device.type == "cpu" else _DEVICE_CHUNK_BYTES
        batches = max(1, budget // max(1, row_bytes * self.batch_size))
        return batches * self.batch_size

    def _take(self, tensor, idx, start, stop, transfer):
        """Rows ``idx`` (or ``start:stop`` when idx is None) of tensor, on the target device."""
        if tensor is None:
            return None
        if not transfer:
            return tensor[start:stop] if idx is None else tensor.index_select(0, idx)
        n = stop - start if idx is None else idx.shape[0]
        # Pinned host buffers come from torch's caching host allocator, which does
        # not reuse a block before the copy reading it has finished.
        staged = torch.empty((n,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        if idx is None:
            staged.copy_(tensor[start:stop])
        else:
            torch.index_select(tensor, 0, idx, out=staged)
        return staged.to(self.device, non_blocking=True)

    def __iter__(self):
        table = self.dataset
        X, y, rows = table.X, table.y, table.rows
        n, size = len(table), self.batch_size
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            if rows is not None:
                order = rows.index_select(0, order.to(rows.device))
        elif rows is not None:
            order = rows
        if order is not None:
            order = order.to(X.device)
        transfer = self._transfer(X)
        chunk = self._chunk_rows(X, y)
        for c0 in range(0, n, chunk):
            c1 = min(n, c0 + chunk)
            idx = None if order is None else order[c0:c1]
            if idx is None and not transfer:
                Xc, yc = X, y  # plain slices of the table, no chunk copy
                lo, hi = c0, c1
            else:
                Xc = self._take(X, idx, c0, c1, transfer)
                yc = self._take(y, idx, c0, c1, transfer)
                lo, hi = 0, c1 - c0
            for b0 in range(lo, hi, size):
                b1 = min(hi, b0 + size)
                yield Xc[b0:b1], (yc[b0:b1] if yc is not None else None)


class _TaskSums:
    """One epoch's per-task loss sums, kept on the device.

    Each step appends its (detached) per-task losses and label-weight sums;
    every ``_FOLD_EVERY`` steps they are stacked and folded into running sums
    in a few calls, instead of several small in-place additions per step. The
    strategy's weights are added at once (one call). Nothing here reads a
    value back to the host.
    """

    def __init__(self):
        self.pending = {}
        self.totals = {}
        self.steps = 0

    def add_losses(self, prefix, losses, denominators):
        pending = self.pending.setdefault(prefix, ([], []))
        # detach() only where needed: each call is one more op per step.
        pending[0].append(losses.detach() if losses.requires_grad else losses)
        pending[1].append(denominators.detach() if denominators.requires_grad else denominators)
        if len(pending[0]) >= _FOLD_EVERY:
            self._fold(prefix)

    def add_weights(self, weights):
        # Added at once: a strategy may keep updating the tensor it exposes.
        total = self.totals.get("weight_sum")
        if total is None:
            self.totals["weight_sum"] = weights.detach().clone()
        else:
            total.add_(weights.detach() if weights.requires_grad else weights)
        self.steps += 1

    def _fold(self, prefix):
        losses, denominators = self.pending[prefix]
        if not losses:
            return
        L, D = torch.stack(losses), torch.stack(denominators)
        num, den = (L * D).sum(0), D.sum(0)
        if f"{prefix}_num" in self.totals:
            self.totals[f"{prefix}_num"].add_(num)
            self.totals[f"{prefix}_den"].add_(den)
        else:
            self.totals[f"{prefix}_num"], self.totals[f"{prefix}_den"] = num, den
        losses.clear()
        denominators.clear()

    def to_numpy(self):
        """All sums as numpy arrays, read back in one device-to-host copy."""
        for prefix in list(self.pending):
            self._fold(prefix)
        if not self.totals:
            return {}
        keys = list(self.totals)
        flat = torch.cat([self.totals[k].reshape(-1).float() for k in keys]).cpu().numpy()
        out, at = {}, 0
        for k in keys:
            size = self.totals[k].numel()
            out[k] = flat[at:at + size].astype(np.float64)
            at += size
        out["steps"] = self.steps
        return out


class TrainingDivergedError(ValueError, FloatingPointError):
    """Training produced a non-finite loss; ``epoch`` and ``tasks`` say where."""

    def __init__(self, message, epoch, tasks):
        super().__init__(message)
        self.epoch, self.tasks = epoch, tasks


def _divergence(net, sums, means):
    """A TrainingDivergedError when this epoch's losses are not finite, else None.

    Read from the epoch's running sums (already on the host): no per-batch check.
    """
    bad, where = [], None
    for prefix in ("train", "valid"):
        if prefix not in means:
            continue
        present = sums[f"{prefix}_den"] > 0
        broken = present & ~np.isfinite(means[prefix])
        if broken.any():
            bad = [name for name, b in zip(net.task_names, broken) if b]
            where = prefix
            break
    if not bad:
        loss = net.history[-1].get("train_loss")
        if loss is None or np.isfinite(loss):
            return None
        bad, where = list(net.task_names), "train"  # e.g. a penalty term went non-finite
    epoch = len(net.history)
    names = ", ".join(repr(n) for n in bad)
    kind = "training" if where == "train" else "validation"
    return TrainingDivergedError(
        f"Training diverged at epoch {epoch}: the {kind} loss of task(s) {names} is not "
        f"finite (NaN or inf). Try a smaller lr (now {net.lr!r}), standardised inputs, "
        "loss_normalization='running_mean', or another optimizer; with early_stopping=True "
        "the best finite epoch is kept.", epoch, bad)


class TaskLossLogger(Callback):
    """Writes ``train_loss_<task>``, ``valid_loss_<task>`` and ``weight_<task>`` to the
    history at the end of each epoch, tells the weighting strategy the epoch's losses,
    and stops the fit with :class:`TrainingDivergedError` when a loss is not finite."""

    def on_epoch_begin(self, net, **kwargs):
        net.reset_task_sums()

    def on_epoch_end(self, net, **kwargs):
        sums = net.task_sums_.to_numpy() if getattr(net, "task_sums_", None) is not None else {}
        means = {}
        for prefix in ("train", "valid"):
            if f"{prefix}_num" not in sums:
                continue
            den = sums[f"{prefix}_den"]
            mean = np.where(den > 0, sums[f"{prefix}_num"] / np.maximum(den, 1e-12), np.nan)
            means[prefix] = mean
            for name, value in zip(net.task_names, mean):
                net.history.record(f"{prefix}_loss_{name}", float(value))
        diverged = _divergence(net, sums, means)
        if diverged is not None:
            raise diverged
        if "weight_sum" in sums and sums["steps"] > 0:
            weights = sums["weight_sum"] / sums["steps"]
            for name, value in zip(net.task_names, weights):
                net.history.record(f"weight_{name}", float(value))
        if "train" in means:
            net.weighting_.epoch_end(means["train"], means.get("valid"))


def _overrides(obj, base, name):
    return getattr(type(obj), name, None) is not getattr(base, name)


def _needs_closure(optimizer):
    """Whether ``optimizer.step`` requires a closure (e.g. LBFGS)."""
    try:
        param = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):
        return True
    return param is not None and param.default is inspect.Parameter.empty


class MultiTaskNet(NeuralNet):
    """skorch ``NeuralNet`` for a :class:`~sklearn_mtl._modules.MultiTaskModule`.

    Parameters beyond ``NeuralNet``'s
    ---------------------------------
    weighting : :class:`~sklearn_mtl.weighting.Weighting`
        The strategy that combines the task losses.
    static_weights : array (T,)
        The ``loss_weights`` in task order.
    task_names : list of str
        For the history keys.
    task_kinds : list of str
        Passed to strategies that treat kinds differently.
    precision : {"float32", "bf16"}
        "bf16": the module's forward runs under bfloat16 autocast; its output is
        cast back to float32 before the losses.
    n_threads : "auto", None or int
        Intra-op CPU threads during ``fit``, restored afterwards. "auto": one
        thread when the per-step work is small (tabular networks, where thread
        synchronisation costs more than it saves); for large steps, one thread or
        the caller's count, whichever trains faster in the first steps
        (:mod:`sklearn_mtl._threads`). None: unchanged.
    loss_normalization : {'none', 'initial', 'running_mean'}, default='none'
        Per-task division of the training losses before the strategy sees them
        (see :mod:`sklearn_mtl._normalization`); validation losses
        are never normalised.
    member_weights : array (k, T) or None, default=None
        With a module that has a member axis (:mod:`sklearn_mtl._ensemble`):
        each member's task loss weights (None: all ones). Member row masks
        are extra columns of the target matrix (see that module).

    ``compile=True`` (skorch's parameter; ``compile__*`` passes options) runs
    ``torch.compile`` on the module for the forward passes while ``module_``
    stays the plain module (state dicts, pickling and attribute access are
    those of the uncompiled module).
    """

    def __init__(self, module, *args, weighting=None, static_weights=None, task_names=(),
                 task_kinds=(), precision="float32", n_threads="auto", loss_normalization="none",
                 l1=0.0, member_weights=None, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.l1 = l1
        self.weighting = weighting
        self.static_weights = static_weights
        self.task_names = task_names
        self.task_kinds = task_kinds
        self.precision = precision
        self.n_threads = n_threads
        self.loss_normalization = loss_normalization
        self.member_weights = member_weights

    # ------------------------------------------------------------------
    # Initialisation

    def initialize_module(self):
        super().initialize_module()
        # An attribute ending in "_" set here is registered by skorch as a module:
        # saved, pickled, moved to the device, and its parameters optimised.
        self.weighting_ = self.weighting.build(np.asarray(self.static_weights, dtype=np.float32),
                                               task_kinds=list(self.task_kinds)).to(self.device)
        # Per-fit loss scales (buffers): saved, pickled and moved like the weighting state.
        self.loss_normalization_ = LossNormalization(
            len(self.static_weights), self.loss_normalization).to(self.device)
        self.module_.keep_representation = self.weighting.needs_grads is not None
        if self.module_.keep_representation:
            # Keeps the heads' first-layer output: per-task gradients in one backward.
            attach_head_probe(self.module_)
        self.__dict__.pop("_compiled", None)
        self.__dict__["_train_steps"] = 0  # the step index of the step hooks
        return self

    def torch_compile(self, module, name):
        # skorch would replace module_ by the compiled wrapper; compilation happens
        # lazily in infer() instead, so that module_ stays the plain module.
        return module

    def _compiled_module(self):
        cached = self.__dict__.get("_compiled")
        if cached is not None and cached[0] is self.module_:
            return cached[1]
        module = self.module_
        if getattr(module, "keep_representation", False):
            # The gradient strategies read module_.representation_, a side effect
            # that a compiled graph does not reproduce reliably.
            warnings.warn("compile=True is ignored with gradient-based weighting strategies; "
                          "training runs eagerly.", UserWarning, stacklevel=3)
            compiled = module
        else:
            compiled = torch.compile(module, **self.get_params_for("compile"))
        # A tuple, so that skorch does not register the compiled wrapper as a module.
        self.__dict__["_compiled"] = (module, compiled)
        return compiled

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)
        state.pop("_inference", None)
        state.pop("_snapshots", None)
        state.pop("_member_weights", None)
        state.pop("_direct_buffers", None)
        return state

    def set_static_weights(self, weights):
        """New ``loss_weights`` for continued training."""
        self.set_params(static_weights=weights)
        self.weighting_.static_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))

    def use_tables(self, train, valid):
        """Train on ``train`` next, validating on ``valid`` (None: no validation)."""
        self.set_params(train_split=None if valid is None else predefined_split(valid))
        return train

    def restore_best(self):
        """Load early stopping's best weights and return their epoch (None when there
        are none), e.g. after :class:`TrainingDivergedError`."""
        stopper = dict(self.callbacks_).get("early_stopping")
        if getattr(stopper, "best_model_weights_", None) is None:
            return None
        stopper.on_train_end(self)  # module_ and each task's snapshot, as after a stop
        self.initialize_optimizer()  # its moments belong to the steps being undone
        return stopper.best_epoch_

    # ------------------------------------------------------------------
    # Per-task best epochs (see :mod:`._early_stopping`)

    def set_task_snapshots(self, task_states, best):
        """Predict each task from its own weights (``task_states``, one state dict per
        task, shared between tasks of the same epoch); ``module_`` takes ``best``, the
        weights of the best total validation loss (as skorch's ``load_best``)."""
        self.module_.load_state_dict(best)
        if all(state is task_states[0] for state in task_states):
            task_states = None  # every task's best is the same epoch: module_ predicts
        self.__dict__["task_states"] = task_states

    def clear_task_snapshots(self):
        """Back to predicting every task from ``module_`` (training goes on)."""
        self.__dict__["task_states"] = None
        self.__dict__["task_partners"] = None
        self.__dict__["task_sources"] = None

    def set_task_sources(self, task_states, partners, sources):
        """Predict task t from ``task_states[t]`` or, where ``partners[t]`` is a state
        dict, from the mean of the two networks' predictions; ``sources``: each task's
        source ('shared', 'single', 'blend'; see :mod:`._sharing`)."""
        blended = any(p is not None for p in partners)
        self.__dict__["task_states"] = list(task_states)
        self.__dict__["task_partners"] = list(partners) if blended else None
        self.__dict__["task_sources"] = list(sources)

    def _per_task_module(self):
        """A :class:`~._early_stopping.PerTaskSnapshots` (or a copy of ``module_``) from
        the task states and partners."""
        states = self.__dict__.get("task_states")
        partners = self.__dict__.get("task_partners")
        combination = None
        if partners:
            c = self.criterion_
            combination = MemberMean(c.kinds, c.n_outputs, c.stride)
        return snapshot_module(self.module_, states, self.module_.heads.max_out, partners,
                               combination)

    def prediction_module(self):
        """The module whose outputs are the predictions: ``module_``, or the per-task
        best-epoch copies of it after early stopping (not a copy: do not modify)."""
        states = self.__dict__.get("task_states")
        if not states:
            return self.module_
        partners = self.__dict__.get("task_partners")
        cached = self.__dict__.get("_snapshots")
        if (cached is not None and cached[0] is states and cached[1] is self.module_
                and cached[3] is partners):
            return cached[2]
        module = self._per_task_module()
        self.__dict__["_snapshots"] = (states, self.module_, module, partners)
        return module

    def snapshot_record(self, to_array):
        """The task snapshots as plain data (None without them), for saving."""
        states = self.__dict__.get("task_states")
        if not states:
            return None
        partners = self.__dict__.get("task_partners") or [None] * len(states)
        distinct, owner = distinct_states(list(states) + list(partners))
        T = len(states)
        return {"owner": owner[:T], "partners": owner[T:],
                "sources": self.__dict__.get("task_sources"),
                "states": [{k: to_array(v) for k, v in state.items()} for state in distinct]}

    def load_snapshot_record(self, record, to_tensor):
        """Restore :meth:`snapshot_record`'s data (a loaded model)."""
        self.clear_task_snapshots()
        if not record:
            return
        distinct = [{k: to_tensor(v) for k, v in state.items()} for state in record["states"]]
        self.__dict__["task_states"] = [distinct[i] for i in record["owner"]]
        partners = [None if i is None else distinct[i] for i in record.get("partners") or []]
        if any(p is not None for p in partners):
            self.__dict__["task_partners"] = partners
        self.__dict__["task_sources"] = record.get("sources")

    def load_weights(self, state_dict):
        """Load module weights; the optimizer restarts (its moments belong to the
        steps that are being undone)."""
        self.module_.load_state_dict(state_dict)
        self.initialize_optimizer()

    # ------------------------------------------------------------------
    # Inference

    def _inference_module(self, dtype):
        """A copy of ``module_`` in eval mode and in ``dtype``, made once per trained
        state (the tensors' version counters tell when the weights changed in place)."""
        state = list(self.module_.parameters()) + list(self.module_.buffers())
        snapshots = self.__dict__.get("task_states")
        # The step count too: the fused updates write the weights through views of
        # flat buffers, which leaves the parameters' own version counters unchanged.
        key = (id(self.module_), id(snapshots), id(self.__dict__.get("task_partners")), dtype,
               self.__dict__.get("_train_steps", 0), tuple(t._version for t in state))
        cached = self.__dict__.get("_inference")
        if cached is not None and cached[0] == key:
            return cached[1]
        # snapshot_module copies the module itself: no second copy of its copies.
        module = self._per_task_module() if snapshots else copy.deepcopy(self.module_)
        inference_only(module)
        module.eval().to(dtype)
        self.__dict__["_inference"] = (key, module)
        return module

    def raw_outputs(self, X):
        """The packed network outputs for float32 rows ``X`` (numpy), as a float64
        numpy array (n, width).

        Inference runs in float64: float32 kernels choose their blocking by batch
        size (AVX-512 CPUs in particular), so float32 outputs differ by ~1e-7
        relative with the number of rows predicted at once; in float64 by ~1e-16.
        A module that cannot run in float64 is run in float32.
        """
        X_t = torch.from_numpy(X)
        # An empty X: one row of zeros gives the outputs' width.
        rows = X_t.new_zeros((1,) + tuple(X_t.shape[1:])) if X_t.shape[0] == 0 else X_t
        dtype = torch.float32 if self.__dict__.get("_float32_inference") else torch.float64
        try:
            out = self._forward_rows(rows, dtype)
        except RuntimeError:
            if dtype is torch.float32:
                raise
            self.__dict__["_float32_inference"] = True  # e.g. a float32 constant in forward
            out = self._forward_rows(rows, torch.float32)
        return out[:X_t.shape[0]].numpy()

    def _forward_rows(self, rows, dtype):
        module = self._inference_module(dtype)
        with torch.no_grad():
            parts = [module(rows[i:i + PREDICT_BATCH_SIZE].to(self.device, dtype))
                     .to("cpu", torch.float64)
                     for i in range(0, rows.shape[0], PREDICT_BATCH_SIZE)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    # ------------------------------------------------------------------
    # Per-task loss sums

    def reset_task_sums(self):
        self.task_sums_ = _TaskSums()

    def _sums(self):
        sums = getattr(self, "task_sums_", None)
        if sums is None:
            sums = self.task_sums_ = _TaskSums()
        return sums

    def _accumulate(self, prefix, losses, denominators):
        self._sums().add_losses(prefix, losses, denominators)

    def _accumulate_weights(self, weights):
        self._sums().add_weights(weights)

    def shared_parameters(self):
        """The trunk parameters every task shares: the gradient methods combine the task
        gradients of these. ``trunk.shared_parameters()`` when the trunk defines it
        (e.g. the experts of MMoE, none for soft sharing), else all trunk parameters;
        frozen parameters are left out."""
        return trunk_shared_parameters(self.module_.trunk)[0]

    # ------------------------------------------------------------------
    # Forward and loss

    def infer(self, x, **fit_params):
        if not torch.is_tensor(x):
            if isinstance(x, Mapping):
                return super().infer(x, **fit_params)
            x = to_tensor(x, device=self.device)
        elif not (self.device == "cpu" and x.device.type == "cpu"):
            x = x.to(self.device)  # a no-op when the iterator already put it there
        module = self._compiled_module() if self.compile else self.module_
        if self.precision == "bf16":
            device_type = "cuda" if _is_cuda(self.device) else "cpu"
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                out = module(x, **fit_params)
            # The losses are computed in float32.
            return out.float()
        return module(x, **fit_params)

    def task_losses(self, y_pred, y_true):
        """Per-task mean losses over the observed labels and their label-weight sums
        (the denominators), each (T,) ((k, T) for an ensemble); the one call site of ``criterion_`` (a
        data-parallel net reduces them over its processes here)."""
        return self.criterion_(y_pred, y_true)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        losses, denominators = self.task_losses(y_pred, y_true)
        logged = losses
        if losses.dim() == 2:  # per (member, task): see ._ensemble
            logged, losses, denominators = member_task_losses(
                losses, denominators, self._member_weights_tensor(losses))
        present = denominators > 0
        if not training:
            self._accumulate("valid", logged, denominators)
            return (self.weighting_.static_weights * losses).sum()
        self._accumulate("train", logged, denominators)
        state = self.weighting_
        # Normalised training losses for the strategy (the history keeps the raw ones).
        normalization = getattr(self, "loss_normalization_", None)
        if normalization is not None and normalization.active:
            losses = normalization(losses, present)[0]
        mode = self.weighting.needs_grads
        if mode is None:
            step = state.combine(losses, present)
        else:
            shared, all_shared = trunk_shared_parameters(self.module_.trunk)
            step = combine_with_gradients(
                state, losses, present, self.module_.representation_, shared,
                all_shared=all_shared, mode=mode, heads=getattr(self.module_, "heads", None))
        self._accumulate_weights(step.weights)
        total = step.loss
        penalty = self.module_.penalty()
        if penalty is not None:
            total = total + penalty
        if self.l1:
            total = total + self.l1 * self.l1_penalty()
        return total

    def l1_penalty(self):
        """``sum(|w|)`` over the module's weights: the layers' weight matrices, not their
        biases, nor the scales of an ensemble's member adapters or the frequencies of a
        periodic embedding (which are not connection weights)."""
        weights = [p for name, p in self.module_.named_parameters()
                   if p.requires_grad and name.rsplit(".", 1)[-1] == "weight"]
        return torch.stack([w.abs().sum() for w in weights]).sum()

    def _member_weights_tensor(self, losses):
        """``member_weights`` on the losses' device (None: all ones), made once per
        value set (``set_params``; an array changed in place is not seen)."""
        if self.member_weights is None:
            return None
        cached = self.__dict__.get("_member_weights")
        if (cached is None or cached[0] is not self.member_weights
                or cached[1] != (losses.device, losses.shape)):
            weights = check_member_weights(self.member_weights, *losses.shape)
            cached = (self.member_weights, (losses.device, losses.shape),
                      torch.from_numpy(weights).to(losses.device))
            self.__dict__["_member_weights"] = cached
        return cached[2]

    # ------------------------------------------------------------------
    # Training loop

    def _set_training(self, training=True):
        # Inside a fast epoch the mode is set once; skorch's per-step calls are
        # then no-ops (each one walks every submodule).
        held = self.__dict__.get("_held_mode")
        if held is not None and held == training:
            return
        super()._set_training(training)
        if held is not None:
            self.__dict__["_held_mode"] = training

    def _fast_epoch_ok(self):
        """True when nothing needs per-batch callbacks or per-batch history rows."""
        if type(self.history) is not History:  # e.g. skorch's DistributedHistory
            return False
        for name in ("on_batch_begin", "on_batch_end", "on_grad_computed"):
            if _overrides(self, NeuralNet, name):
                return False
            for _, cb in self.callbacks_:
                if _overrides(cb, Callback, name):
                    return False
        return True

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """One pass over ``iterator``; skorch's loop unless the fast path applies.

        The fast path keeps each batch's loss on the device and writes the
        history's batch rows (``<prefix>_loss``, ``<prefix>_batch_size``) after
        the pass, from one device-to-host copy: the same rows skorch writes,
        without a host synchronisation per batch.
        """
        if iterator is None:
            return
        hooked = training and self._with_step_hooks(step_fn)
        if hooked:
            step_fn = hooked
        if not self._fast_epoch_ok():
            super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
            if training and not hooked:
                self._count_steps(self.history[-1, prefix + "_batch_count"])
            return
        super()._set_training(training)
        self.__dict__["_held_mode"] = training
        self.__dict__["_lean_step"] = training and not any(
            _needs_closure(getattr(self, name + "_")) for name in self._optimizers)
        # The fused update is planned after the optimizer's own first step of the
        # epoch, once its state exists (see ._fused_optim).
        self.__dict__["_fused_update"] = None
        # A subclass that changes how losses are computed or reduced (e.g. across
        # data-parallel processes) keeps the autograd step.
        direct = (DirectStep.for_net(self) if self.__dict__["_lean_step"] and not any(
            _overrides(self, MultiTaskNet, name)
            for name in ("task_losses", "get_loss", "train_step_single", "infer")) else None)
        if direct is not None:
            # The buffers of the previous epoch's step, when they fit this network.
            direct.reuse_buffers(self.__dict__.get("_direct_buffers"))
            self.__dict__["_direct_buffers"] = direct.buffers()
        self.__dict__["_direct_step"] = direct
        losses, sizes = [], []
        try:
            for batch in iterator:
                step = step_fn(batch, **fit_params)
                losses.append(step["loss"].detach())
                sizes.append(batch[0].shape[0])
        finally:
            self.__dict__["_held_mode"] = None
            self.__dict__["_lean_step"] = False
            self.__dict__["_fused_update"] = None
            self.__dict__["_direct_step"] = None
        values = torch.stack(losses).float().cpu().tolist() if losses else []
        loss_key, size_key = prefix + "_loss", prefix + "_batch_size"
        self.history[-1]["batches"].extend(
            {loss_key: value, size_key: size} for value, size in zip(values, sizes))
        self.history.record(prefix + "_batch_count", len(sizes))
        if training and not hooked:
            self._count_steps(len(sizes))

    def _count_steps(self, n):
        self.__dict__["_train_steps"] = self.__dict__.get("_train_steps", 0) + int(n)

    def _step_hooks(self):
        """(every, on_step, on_step_end) of the callbacks with step hooks (see the
        module docstring)."""
        hooks = []
        for name, cb in self.callbacks_:
            before, after = getattr(cb, "on_step", None), getattr(cb, "on_step_end", None)
            if before is None and after is None:
                continue
            every = getattr(cb, "every", None)
            if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
                raise ValueError(f"Callback {name!r} defines on_step/on_step_end, so it needs an "
                                 f"integer attribute every >= 1 (call it every k-th training "
                                 f"step); it has every={every!r}.")
            hooks.append((int(every), before, after))
        return hooks

    def _with_step_hooks(self, step_fn):
        """``step_fn`` calling the step hooks on their steps, or None when no callback
        has any."""
        hooks = self._step_hooks()
        if not hooks:
            return None

        def hooked_step(batch, **fit_params):
            step = self.__dict__.get("_train_steps", 0)
            due = [(before, after) for every, before, after in hooks if step % every == 0]
            for before, _ in due:
                if before is not None:
                    before(self, batch=batch, step=step)
            out = step_fn(batch, **fit_params)
            for _, after in due:
                if after is not None:
                    after(self, batch=batch, step=step, loss=out["loss"])
            self.__dict__["_train_steps"] = step + 1
            return out

        return hooked_step

    def validation_step(self, batch, **fit_params):
        step = super().validation_step(batch, **fit_params)
        state = self.__dict__.get("_score_state")
        if state is not None:  # TaskScoreLogger listens this epoch
            if state[0] is None:
                state[0] = score_layout(self)
            with torch.no_grad():
                terms = score_terms(state[0], self, step["y_pred"], batch[1])
            state[1] = terms if state[1] is None else state[1].add_(terms)
        return step

    def train_step(self, batch, **fit_params):
        tuner = self.__dict__.get("_thread_tuner")
        if tuner is None or not tuner.active:
            return self._train_step(batch, **fit_params)
        tuner.before_step()
        step = self._train_step(batch, **fit_params)
        tuner.after_step()
        return step

    def _train_step(self, batch, **fit_params):
        if self.__dict__.get("_lean_step"):
            # skorch's step without the closure and the on_grad_computed dispatch,
            # which no callback listens to here (checked once per epoch).
            update = self.__dict__.get("_fused_update")
            if update:
                update.zero_grad()
            else:
                self._zero_grad_optimizer(set_to_none=True)
            step = self._direct_or_autograd_step(batch, **fit_params)
            if update:
                update.step()
            else:
                self._step_optimizer(None)
                if update is None:  # planned once per epoch; False: does not apply
                    self.__dict__["_fused_update"] = (
                        len(self._optimizers) == 1
                        and FusedAdamStep.for_optimizer(getattr(self, self._optimizers[0] + "_"))
                        or False)
        else:
            step = super().train_step(batch, **fit_params)
        if self.weighting.needs_losses_after_step:
            Xi, yi = batch
            with torch.no_grad():
                self._set_training(False)
                losses, denominators = self.task_losses(self.infer(Xi), yi)
                self._set_training(True)
            present = denominators > 0
            normalization = getattr(self, "loss_normalization_", None)
            if normalization is not None:
                # On the scale combine() saw: this step's divisors, not updated again.
                losses = normalization.normalize(losses, present)
            self.weighting_.after_step(losses, present)
        return step

    def _direct_or_autograd_step(self, batch, **fit_params):
        """skorch's ``train_step_single``, or the same step with the gradients written
        out (:class:`~sklearn_mtl._direct_step.DirectStep`) where that applies."""
        direct = self.__dict__.get("_direct_step")
        Xi, yi = batch
        if (direct is None or fit_params or not torch.is_tensor(Xi) or Xi.dtype != torch.float32
                or Xi.device != yi.device or Xi.device != direct.device):
            return self.train_step_single(batch, **fit_params)
        losses, denominators, weights, total, y_pred = direct(Xi, yi)
        self._accumulate("train", losses, denominators)
        self._accumulate_weights(weights)
        return {"loss": total, "y_pred": y_pred}

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        # The epochs this call runs, for epoch-level progress bars (skorch tells the
        # callbacks nothing of them).
        self.__dict__["_planned_epochs"] = fit_params.get("epochs") or self.max_epochs
        return super().partial_fit(X, y, classes=classes, **fit_params)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            with self._thread_scope(X), self._products_scope(X):
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
        finally:
            # The written-out step's buffers live for one fit call (see ._direct_step).
            self.__dict__.pop("_direct_buffers", None)

    @contextlib.contextmanager
    def _thread_scope(self, X):
        """Intra-op threads for this fit (see ``n_threads`` and :mod:`._threads`); the
        caller's setting is restored afterwards. ``threads_`` is the count used."""
        wanted = self._wanted_threads(X)
        previous = torch.get_num_threads()
        tuner = None
        if isinstance(wanted, tuple):
            tuner = ThreadTuner(wanted)
        elif wanted is not None and wanted != previous:
            torch.set_num_threads(wanted)
        self.__dict__["_thread_tuner"] = tuner
        try:
            yield
        finally:
            self.__dict__["_thread_tuner"] = None
            self.threads_ = (tuner.chosen if tuner is not None and tuner.chosen is not None
                             else torch.get_num_threads())
            torch.set_num_threads(previous)

    @contextlib.contextmanager
    def _products_scope(self, X):
        """Large steps' float32 products through oneDNN where that pays (see
        :mod:`._onednn`); the caller's setting is restored afterwards."""
        with OneDNNProducts(self.device) as products:
            products.use(step_macs(self.module_, self._train_batch(X)))
            yield

    def _train_batch(self, X):
        batch = self.get_params_for("iterator_train").get("batch_size", self.batch_size)
        if batch == -1 and hasattr(X, "__len__"):
            batch = len(X)
        return batch

    def _wanted_threads(self, X):
        """None (leave the setting), a thread count, or a tuple of candidate counts to
        choose from by timing steps (:class:`~sklearn_mtl._threads.ThreadTuner`)."""
        n_threads = self.n_threads
        if n_threads is None:
            return None
        if n_threads != "auto":
            return int(n_threads)
        if _is_cuda(self.device):
            return None
        available = torch.get_num_threads()
        if available == 1 or step_macs(self.module_, self._train_batch(X)) < SMALL_STEP_MACS:
            return 1
        return (1, available)

    def get_default_callbacks(self):
        return super().get_default_callbacks() + [("task_losses", TaskLossLogger()),
                                                  ("task_scores", TaskScoreLogger())]
