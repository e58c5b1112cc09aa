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
"""

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from torch.utils.data import Dataset

from .weighting._gradients import combine_with_gradients
from .weighting._normalization import LossNormalization


class TensorTable(Dataset):
    """Rows of an input tensor and (optionally) a target tensor, batched by slicing."""

    def __init__(self, X, y=None):
        self.X, self.y = X, y

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, i):  # for tools that index one row; the engine never does
        return self.X[i], (self.y[i] if self.y is not None else torch.zeros(0))


class BatchIterator:
    """Batches of a :class:`TensorTable` as (X, y) tensor slices.

    With ``shuffle`` a fresh permutation is drawn each epoch from a generator
    seeded by ``seed``; each batch is then one gather per tensor.
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

    def _move(self, tensor):
        if tensor is None or self.device is None or tensor.device == torch.device(self.device):
            return tensor
        return tensor.to(self.device, non_blocking=True)

    def __iter__(self):
        X, y = self.dataset.X, self.dataset.y
        n, size = X.shape[0], self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(X.device)
            for start in range(0, n, size):
                idx = order[start:start + size]
                yield self._move(X.index_select(0, idx)), self._move(
                    y.index_select(0, idx) if y is not None else None)
        else:
            for start in range(0, n, size):
                yield self._move(X[start:start + size]), self._move(
                    y[start:start + size] if y is not None else None)


class TaskLossLogger(Callback):
    """Writes ``train_loss_<task>``, ``valid_loss_<task>`` and ``weight_<task>`` to the
    history at the end of each epoch and tells the weighting strategy the epoch's losses."""

    def on_epoch_begin(self, net, **kwargs):
        net.reset_task_sums()

    def on_epoch_end(self, net, **kwargs):
        sums = {key: value.detach().cpu().numpy() for key, value in net.task_sums_.items()}
        means = {}
        for prefix in ("train", "valid"):
            if f"{prefix}_num" not in sums:
                continue
            den = sums[f"{prefix}_den"]
            mean = np.where(den > 0, sums[f"{prefix}_num"] / np.maximum(den, 1e-12), np.nan)
            means[prefix] = mean
            for name, value in zip(net.task_names, mean):
                net.history.record(f"{prefix}_loss_{name}", float(value))
        if "weight_sum" in sums and sums["steps"] > 0:
            weights = sums["weight_sum"] / sums["steps"]
            for name, value in zip(net.task_names, weights):
                net.history.record(f"weight_{name}", float(value))
        if "train" in means:
            net.weighting_.epoch_end(means["train"], means.get("valid"))


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
    loss_normalization : {'none', 'initial', 'running_mean'}, default='none'
        Per-task division of the training losses before the strategy sees them
        (see :mod:`sklearn_mtl.weighting._normalization`); validation losses
        are never normalised.
    """

    def __init__(self, module, *args, weighting=None, static_weights=None, task_names=(),
                 task_kinds=(), loss_normalization="none", **kwargs):
        super().__init__(module, *args, **kwargs)
        self.weighting = weighting
        self.static_weights = static_weights
        self.task_names = task_names
        self.task_kinds = task_kinds
        self.loss_normalization = loss_normalization

    def initialize_module(self):
        super().initialize_module()
        build_kwargs = {}
        if "task_kinds" in self.weighting.build.__code__.co_varnames:
            build_kwargs["task_kinds"] = list(self.task_kinds)
        # An attribute ending in "_" set here is registered by skorch as a module:
        # saved, pickled, moved to the device, and its parameters optimised.
        self.weighting_ = self.weighting.build(np.asarray(self.static_weights, dtype=np.float32),
                                               **build_kwargs).to(self.device)
        # Per-fit loss scales (buffers): saved, pickled and moved like the weighting state.
        self.loss_normalization_ = LossNormalization(
            len(self.static_weights), self.loss_normalization).to(self.device)
        self.module_.keep_representation = self.weighting.needs_grads is not None
        return self

    def reset_task_sums(self):
        self.task_sums_ = {}

    def _accumulate(self, prefix, losses, denominators):
        sums = getattr(self, "task_sums_", None)
        if sums is None:
            sums = self.task_sums_ = {}
        num = (losses.detach() * denominators)
        if f"{prefix}_num" in sums:
            sums[f"{prefix}_num"] += num
            sums[f"{prefix}_den"] += denominators
        else:
            sums[f"{prefix}_num"], sums[f"{prefix}_den"] = num, denominators.clone()

    def _accumulate_weights(self, weights):
        sums = self.task_sums_
        if "weight_sum" in sums:
            sums["weight_sum"] += weights.detach()
            sums["steps"] += 1
        else:
            sums["weight_sum"], sums["steps"] = weights.detach().clone(), torch.ones((), device=weights.device)

    def shared_parameters(self):
        """The trunk parameters every task shares: the gradient methods combine the task
        gradients of these. ``trunk.shared_parameters()`` when the trunk defines it
        (e.g. the experts of MMoE, none for soft sharing), else all trunk parameters;
        frozen parameters are left out."""
        trunk = self.module_.trunk
        own = getattr(trunk, "shared_parameters", None)
        params = own() if callable(own) else trunk.parameters()
        return [p for p in params if p.requires_grad]

    def get_loss(self, y_pred, y_true, X=None, training=False):
        losses, denominators = self.criterion_(y_pred, y_true)
        present = denominators > 0
        if not training:
            self._accumulate("valid", losses, denominators)
            return (self.weighting_.static_weights * losses).sum()
        self._accumulate("train", losses, denominators)
        state = self.weighting_
        # Normalised training losses for the strategy (the history keeps the raw ones).
        normalization = getattr(self, "loss_normalization_", None)
        if normalization is not None and normalization.active:
            losses, state.loss_scale = normalization(losses, present)
        mode = self.weighting.needs_grads
        if mode is None:
            total = state.combine(losses, present)
        else:
            shared = self.shared_parameters()
            n_trainable = sum(1 for p in self.module_.trunk.parameters() if p.requires_grad)
            total = combine_with_gradients(
                state, losses, present, self.module_.representation_, shared,
                all_shared=len(shared) == n_trainable, mode=mode)
        self._accumulate_weights(state.last_weights)
        penalty = self.module_.penalty()
        if penalty is not None:
            total = total + penalty
        return total

    def train_step(self, batch, **fit_params):
        step = super().train_step(batch, **fit_params)
        if self.weighting.needs_losses_after_step:
            Xi, yi = batch
            with torch.no_grad():
                self._set_training(False)
                losses, denominators = self.criterion_(self.infer(Xi), yi)
                self._set_training(True)
            self.weighting_.after_step(losses, denominators > 0)
        return step

    def get_default_callbacks(self):
        return super().get_default_callbacks() + [("task_losses", TaskLossLogger())]
