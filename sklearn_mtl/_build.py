"""Building the network and the skorch net of one fit from the estimator's parameters.

The estimator's parameters are validated already (``_parameter_constraints``)
and its task-keyed parameters resolved into a
:class:`~sklearn_mtl._task_params.TaskParams`; this module turns them into
torch modules, trial-runs what the user supplied (a trunk ``module=``, loss
callables) so that a mistake there is reported with its name before training
starts, and assembles the :class:`~sklearn_mtl._net.MultiTaskNet`.
"""

import copy

import numpy as np
import torch
from skorch.callbacks import Callback, LRScheduler

from ._early_stopping import TaskEarlyStopping
from ._embeddings import EmbeddedTrunk, build_embedding
from ._ensemble import EnsembleModule, check_ensemble_options, check_ensemble_weighting
from ._data_parallel import data_parallel_net
from ._losses import MultiTaskLoss
from .callbacks import EpochProgressBar, EpochTable
from ._modules import MultiTaskModule, TaskHeads
from ._net import OPTIMIZERS, PREDICT_BATCH_SIZE, BatchIterator
from ._task_graph import GraphHeads, LayerOutputsTrunk, dependency_order
from ._validation import as_sizes
from .architectures import HardSharing, resolve_architecture
from .weighting import resolve_weighting

# Optimisers with a fused CPU/CUDA kernel: one kernel for all parameters instead
# of several small ones per tensor.
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)
# Rows of the trial runs of user code.
_TRIAL_ROWS = 3
# batch_size='auto': n_rows // 16 rows, within these bounds.
AUTO_BATCH_MIN, AUTO_BATCH_MAX = 64, 256
_TRIAL_LOSS_ROWS = 64
_TARGETS = {"regression": "standardised values", "binary": "0/1 floats",
            "multiclass": "int64 class codes"}
#: The estimator parameters :func:`build_net` reads, besides ``module`` and
#: ``callbacks``. Each net keeps their values at build time (``net.build_params``),
#: so that a saved model is rebuilt as it was fitted (see :mod:`._persistence`).
BUILD_PARAMS = ("hidden_layer_sizes", "head_hidden_sizes", "activation", "dropout",
                "architecture", "weighting", "loss_normalization", "optimizer",
                "optimizer_kwargs", "alpha", "l1", "lr", "lr_schedule", "max_epochs",
                "batch_size", "early_stopping", "patience", "tol", "verbose", "precision",
                "compile", "feature_embedding", "n_bins", "embedding_dim", "ensemble_size")


def _silent(*args, **kwargs):
    return None


def _module_name(module):
    return type(module).__name__


def user_trunk(module, X):
    """A private copy of the user's trunk (instance or class), trial-run on a few rows of X."""
    if isinstance(module, torch.nn.Module):
        trunk = copy.deepcopy(module)  # the user's instance is never trained in place
    elif not (isinstance(module, type) and issubclass(module, torch.nn.Module)):
        raise TypeError(f"module must be a torch.nn.Module instance or class mapping X to a "
                        f"representation; got {module!r}.")
    else:
        try:
            trunk = module()
        except Exception as exc:
            raise TypeError(f"module={module.__name__} could not be built without arguments "
                            f"({exc}); pass an instance instead.") from None
    sample = torch.from_numpy(X[:_TRIAL_ROWS])
    # In training mode too (dropout, batch norm behave differently there), on a copy
    # and in a forked RNG: the trial changes neither the trunk nor the random stream.
    trial = copy.deepcopy(trunk)
    for training in (False, True):
        try:
            with torch.no_grad(), torch.random.fork_rng():
                out = trial.train(training)(sample)
        except Exception as exc:  # the user's module rejected our input: say what it got
            raise ValueError(
                f"module {_module_name(trunk)} failed in {'training' if training else 'eval'} "
                f"mode on a float32 batch of shape {tuple(sample.shape)}: "
                f"{type(exc).__name__}: {exc}. It must map (batch, n_features) to (batch, D)."
            ) from None
        _check_trunk_output(trunk, out, sample)
    trunk.out_features = int(out.shape[-1])
    trunk.per_task = bool(getattr(trunk, "per_task", False))
    return trunk


def _check_trunk_output(trunk, out, sample):
    per_task = bool(getattr(trunk, "per_task", False))
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or out.dim() != (3 if per_task else 2):
        raise ValueError(
            f"module {_module_name(trunk)} returned {shape} for a batch of shape "
            f"{tuple(sample.shape)}; it must return one tensor (batch, D) (flatten feature "
            "maps first).")
    if out.shape[0] != sample.shape[0]:
        raise ValueError(
            f"module {_module_name(trunk)} returned {out.shape[0]} row(s) for a batch of "
            f"{sample.shape[0]}; it must return one row per input row (batch, D).")
    if not out.is_floating_point():
        raise ValueError(f"module {_module_name(trunk)} returned a {out.dtype} tensor; it "
                         "must return floating-point features.")


def build_module(estimator, params, n_outputs, X, kinds=None, fit_rows=None):
    """The MultiTaskModule (representation module + task heads) of one fit; with
    ``ensemble_size > 1`` an :class:`~._ensemble.EnsembleModule` (``kinds``: the
    tasks' kinds).

    ``fit_rows`` (int array, None: all) are the rows of X that training uses:
    what is fitted on the data before training (the bins of a feature
    embedding) sees only those.
    """
    # getattr: nets saved before ensemble_size existed are rebuilt with one member.
    n_members = getattr(estimator, "ensemble_size", 1)
    if n_members > 1:
        check_ensemble_options(params)
    names = params.names
    head_sizes = as_sizes("head_hidden_sizes", estimator.head_hidden_sizes)
    trunk_sizes = as_sizes("hidden_layer_sizes", estimator.hidden_layer_sizes)
    architecture = resolve_architecture(estimator.architecture)
    depths = [params.depths.get(n, len(trunk_sizes)) - 1 for n in names] \
        if params.depths else None
    if estimator.module is not None:
        if not isinstance(architecture, HardSharing):
            raise ValueError("Pass either module= (your own trunk) or architecture=, not both: "
                             "the architecture builds the trunk that module= replaces.")
        if depths is not None:
            raise ValueError("task_depth needs the built-in MLP trunk; it cannot reach inside "
                             "a custom module.")
        if _feature_embedding(estimator) is not None:
            raise ValueError(
                f"feature_embedding={estimator.feature_embedding!r} cannot be combined with "
                "module=: your module takes the raw features. Embed the features inside "
                "your module, or leave feature_embedding=None.")
        trunk, embedding = user_trunk(estimator.module, X), None
    elif depths is not None:
        if not isinstance(architecture, HardSharing):
            raise ValueError(
                f"task_depth works with architecture='hard' only (got "
                f"{type(architecture).__name__}): other architectures have no single stack "
                "of shared layers.")
        embedding = _embedding(estimator, X, fit_rows)
        n_in = X.shape[1] if embedding is None else embedding.out_features
        trunk = LayerOutputsTrunk(n_in, trunk_sizes, estimator.activation, estimator.dropout)
    else:
        embedding = _embedding(estimator, X, fit_rows)
        n_in = X.shape[1] if embedding is None else embedding.out_features
        trunk = architecture.build(n_in, len(names), trunk_sizes, estimator.activation,
                                   estimator.dropout)
    if embedding is not None:
        trunk = EmbeddedTrunk(embedding, trunk)
    if params.head_inputs or depths is not None:
        order, sources = dependency_order(names, params.head_inputs)
        widths = ([trunk_sizes[d] for d in depths] if depths is not None
                  else [trunk.out_features] * len(names))
        heads = GraphHeads(widths, n_outputs, head_sizes, estimator.activation,
                           estimator.dropout, order, sources, depths)
    else:
        # Member m's task t is head m*T + t.
        heads = TaskHeads(trunk.out_features, list(n_outputs) * n_members, head_sizes,
                          estimator.activation, estimator.dropout)
    module = (MultiTaskModule(trunk, heads) if n_members == 1 else
              EnsembleModule(trunk, heads, n_members, X.shape[1], kinds, n_outputs))
    module.check_rows = estimator.module is not None
    return module


def _feature_embedding(estimator):
    # getattr: the build parameters of a model saved before embeddings existed lack it.
    return getattr(estimator, "feature_embedding", None)


def _embedding(estimator, X, fit_rows):
    """The feature embedding module of one fit, or None."""
    kind = _feature_embedding(estimator)
    if kind is None:
        return None
    return build_embedding(kind, X, int(estimator.n_bins), int(estimator.embedding_dim),
                           fit_rows=fit_rows)


def _callbacks(estimator, tasks):
    for cb in estimator.callbacks or []:
        named = isinstance(cb, tuple) and len(cb) == 2 and isinstance(cb[0], str)
        if not isinstance(cb[1] if named else cb, Callback):
            raise TypeError(f"callbacks must hold skorch callbacks (instances of "
                            f"skorch.callbacks.Callback, or (name, callback) pairs); got {cb!r}.")
    callbacks = [copy.deepcopy(cb) for cb in (estimator.callbacks or [])]
    if estimator.early_stopping:
        callbacks.append(("early_stopping", TaskEarlyStopping(
            patience=estimator.patience, tol=estimator.tol,
            monitored=[not task.auxiliary for task in tasks],
            sink=print if estimator.verbose else _silent)))
    schedule = _lr_schedule(estimator)
    if schedule is not None:
        callbacks.append(("lr_schedule", schedule))
    if estimator.verbose >= 2:
        callbacks.append(("progress_bar", EpochProgressBar()))
    return callbacks


def _lr_schedule(estimator):
    """skorch's LRScheduler for ``lr_schedule`` (None: a constant lr)."""
    schedule = getattr(estimator, "lr_schedule", None)
    if schedule == "cosine":
        return LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                           T_max=estimator.max_epochs, step_every="epoch")
    if schedule == "plateau":
        return LRScheduler(policy=torch.optim.lr_scheduler.ReduceLROnPlateau,
                           monitor=_Monitor("valid_loss"), factor=0.5,
                           patience=max(1, estimator.patience // 3))
    return None


class _Monitor:
    """The latest value of a history key, falling back to the training loss in an epoch
    without it (a fit given no validation data)."""

    def __init__(self, key):
        self.key = key

    def __call__(self, net):
        row = net.history[-1]
        return row[self.key] if self.key in row else row["train_loss"]


def _optimizer(estimator):
    optimizer = estimator.optimizer
    optimizer = OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(f"optimizer must be a name ({sorted(OPTIMIZERS)}) or a "
                        f"torch.optim.Optimizer class (not an instance); got {optimizer!r}.")
    kwargs = dict(estimator.optimizer_kwargs or {})
    if issubclass(optimizer, _FUSABLE) and "foreach" not in kwargs:
        kwargs.setdefault("fused", True)
    groups = {}
    if estimator.alpha != 0 or "weight_decay" in kwargs:
        # The bias group (no weight decay) only when there is decay to exempt them
        # from: one group is one fused optimizer call per step, not two.
        groups["optimizer__param_groups"] = [("*bias", {"weight_decay": 0.0})]
    return optimizer, {**groups, **{f"optimizer__{k}": v for k, v in kwargs.items()}}


def resolve_batch_size(batch_size, n_rows):
    """``batch_size``, with 'auto' resolved for ``n_rows`` training rows: about 16 steps
    per epoch, between 64 and 256 rows (see benchmarks/RESULTS.md)."""
    if batch_size == "auto":
        return int(min(AUTO_BATCH_MAX, max(AUTO_BATCH_MIN, n_rows // 16)))
    return int(batch_size)


def build_net(estimator, tasks, params, X, device, seeds, fit_rows=None):
    """The skorch net of one fit (not initialised).

    ``fit_rows`` (int array, None: all) are the rows of X that training uses
    (see :func:`build_module`).
    """
    n_outputs = [t.n_outputs for t in tasks]
    weighting = copy.deepcopy(resolve_weighting(estimator.weighting))
    check_ensemble_weighting(getattr(estimator, "ensemble_size", 1), weighting)
    if params.depths and weighting.needs_grads is not None:
        raise ValueError(
            "task_depth cannot be combined with a gradient-based weighting: tasks read "
            "different layers, so there is no one shared representation to combine their "
            "gradients on. Use a loss-based weighting (e.g. 'static', 'uncertainty').")
    module = build_module(estimator, params, n_outputs, X, [t.kind for t in tasks],
                          fit_rows=fit_rows)
    batch_size = resolve_batch_size(estimator.batch_size,
                                    X.shape[0] if fit_rows is None else len(fit_rows))
    criterion = MultiTaskLoss([t.kind for t in tasks], [t.loss for t in tasks], n_outputs,
                              module.heads.max_out)
    optimizer, optimizer_params = _optimizer(estimator)
    # Inside sklearn_mtl.distributed.data_parallel: the net class that trains on a
    # shard of each batch per process.
    net_class, net_extra = data_parallel_net(estimator, weighting, device)
    net = net_class(
        module=module,
        criterion=criterion,
        optimizer=optimizer,
        lr=estimator.lr,
        max_epochs=estimator.max_epochs,
        batch_size=batch_size,
        iterator_train=BatchIterator,
        iterator_train__shuffle=True,
        iterator_train__seed=int(seeds[2]),
        iterator_train__device=device,
        iterator_valid=BatchIterator,
        iterator_valid__batch_size=max(PREDICT_BATCH_SIZE, batch_size),
        iterator_valid__device=device,
        callbacks=_callbacks(estimator, tasks),
        device=device,
        verbose=int(bool(estimator.verbose)),
        # Silent fits skip the epoch table: skorch's is formatted even when not
        # printed (~1.5 ms per epoch, a few % of an epoch at large batches).
        callbacks__print_log=EpochTable() if estimator.verbose else None,
        weighting=weighting,
        static_weights=params.weights,
        task_names=[t.name for t in tasks],
        task_kinds=[t.kind for t in tasks],
        loss_normalization=estimator.loss_normalization,
        precision=estimator.precision,
        compile=bool(estimator.compile),
        # L2 on weights only (not biases), as weight decay, like scikit-learn's alpha.
        optimizer__weight_decay=estimator.alpha,
        l1=getattr(estimator, "l1", 0.0),
        **optimizer_params,
        **net_extra,
    )
    net.build_params = {name: copy.deepcopy(getattr(estimator, name)) for name in BUILD_PARAMS}
    # As resolved for this fit: a saved model is rebuilt with the batch size it trained with.
    net.build_params["batch_size"] = batch_size
    return net


def initialize(net, estimator):
    """``net.initialize()``, reporting optimizer arguments the optimizer rejects by name."""
    try:
        net.initialize()
    except (TypeError, ValueError) as exc:
        if getattr(net, "module_", None) is None or hasattr(net, "optimizer_"):
            raise
        raise ValueError(
            f"optimizer={estimator.optimizer!r} rejected its arguments "
            f"(optimizer_kwargs={estimator.optimizer_kwargs!r}, lr={estimator.lr!r}, "
            f"alpha={estimator.alpha!r}): {exc}") from None
    return net


def trial_losses(net, tasks, X, targets):
    """Call each task's user-supplied loss once on the untrained network's outputs for
    some of the task's labelled rows, so that a loss that fails, returns the wrong
    shape or a non-finite value is reported with its task's name before training."""
    T = len(tasks)
    stride = net.module_.heads.max_out
    user_fns = {t: (fn, elementwise) for t, _, fn, elementwise in net.criterion_.others
                if not isinstance(tasks[t].loss, str)}
    for t, (fn, elementwise) in user_fns.items():
        task = tasks[t]
        rows = torch.from_numpy(np.flatnonzero(targets[:, T + t] > 0)[:_TRIAL_LOSS_ROWS])
        if not len(rows):
            continue
        with torch.no_grad():
            net.module_.eval()
            try:
                out = net.module_(torch.from_numpy(X)[rows].to(net.device)).float()
            finally:
                net.module_.train()
        pred = out[:, t * stride:t * stride + task.n_outputs]
        target = torch.from_numpy(targets[rows.numpy(), t]).to(net.device)
        target = target.long() if task.kind == "multiclass" else target.unsqueeze(1)
        try:
            value = fn(pred, target)
        except Exception as exc:
            raise ValueError(
                f"losses[{task.name!r}] failed when called as loss(y_pred, y_true) with "
                f"y_pred of shape {tuple(pred.shape)} and y_true of shape "
                f"{tuple(target.shape)} ({_TARGETS[task.kind]}): {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"losses[{task.name!r}] returned {type(value).__name__}; it must "
                             "return a torch tensor.")
        if not elementwise and value.numel() != 1:
            raise ValueError(
                f"losses[{task.name!r}] returned a tensor of shape {tuple(value.shape)}; a "
                "loss callable must return the mean loss over the rows it is given (a "
                "scalar). For per-row losses pass a torch loss module with a 'reduction' "
                "attribute.")
        if elementwise and (value.dim() == 0 or value.shape[0] != pred.shape[0]):
            raise ValueError(f"losses[{task.name!r}] with reduction='none' returned shape "
                             f"{tuple(value.shape)} for {pred.shape[0]} rows.")
        if not torch.isfinite(value).all():
            raise ValueError(f"losses[{task.name!r}] returned a non-finite value "
                             f"({value.flatten()[:3].tolist()}) on the untrained network's "
                             "outputs; check the loss function.")
