"""Early stopping per task: a validation split that keeps every task's labels, each task's
best epoch, and the network that predicts each task from its own best epoch.

With missing labels a task's validation loss is measured on the validation rows where
it has a label, so the split must give every task a fair share of its labelled rows:
:func:`validation_split` stratifies the rows by their pattern of labelled tasks and
guarantees a scarce task a minimum of validation labels.

Tasks overfit at different epochs (a task with few labels early, a well-labelled one
late). :class:`TaskEarlyStopping` tracks each task's own validation loss, keeps a copy
of the network at the epoch where that loss was best (the networks are small; one copy
serves every task that improved in the same epoch), and stops when no task has improved
for ``patience`` epochs. :class:`PerTaskSnapshots` is the module that then predicts:
task t's output columns come from the copy of task t's best epoch, so a task that
overfitted early does not cost another task its later best.
"""

import copy

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn

#: A task with n labelled rows gets at least min(this, n // 4) validation labels.
MIN_VALIDATION_LABELS = 25


def validation_split(weights, fraction, seed):
    """Training and validation row indices (sorted int64 arrays) of a label-weight matrix.

    Parameters
    ----------
    weights : ndarray of shape (n_samples, n_tasks)
        Label weights; 0 where a task has no label (or a zero sample weight).
    fraction : float
        The share of each group of rows with the same labelled tasks that goes to
        validation (at least one row of every group of two or more).
    seed : int
        Seed of the split.

    Each task then has at least ``min(MIN_VALIDATION_LABELS, n_t // 4)`` validation
    labels (n_t its labelled rows): a task with few labels is topped up from its
    labelled training rows, so that its best epoch is chosen on more than a handful.
    """
    n, T = weights.shape
    labelled = weights > 0
    rng = np.random.default_rng(seed)
    keys = rng.random(n)  # the order in which rows are drawn, within each group
    valid = np.zeros(n, dtype=bool)
    if n:
        # Group the rows by pattern (the packed bits of each row, compared as bytes),
        # randomly ordered within each group, and take each group's first rows.
        packed = np.ascontiguousarray(np.packbits(labelled, axis=1))
        pattern = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(),
                            return_inverse=True)[1].ravel()
        order = np.lexsort((keys, pattern))
        grouped = pattern[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        sizes = np.diff(np.r_[starts, n])
        take = np.where(sizes >= 2,
                        np.clip(np.rint(fraction * sizes), 1, np.maximum(sizes - 1, 1)), 0)
        rank = np.arange(n) - np.repeat(starts, sizes)
        valid[order[rank < np.repeat(take, sizes)]] = True
    for t in range(T):
        rows = np.flatnonzero(labelled[:, t])
        wanted = min(MIN_VALIDATION_LABELS, len(rows) // 4)
        missing = wanted - int(valid[rows].sum())
        if missing > 0:
            candidates = rows[~valid[rows]]
            valid[candidates[np.argsort(keys[candidates], kind="stable")[:missing]]] = True
    return np.flatnonzero(~valid), np.flatnonzero(valid)


def check_split(task_names, weights, train, valid, source):
    """A ValueError naming the task when the split leaves it without training labels."""
    for t, name in enumerate(task_names):
        if weights[train, t].sum() <= 0 and weights[:, t].sum() > 0:
            raise ValueError(
                f"Task {name!r} has {int((weights[:, t] > 0).sum())} labelled row(s), all of "
                f"them in the validation data ({source}); it needs labelled training rows. "
                "Use a smaller validation_fraction, early_stopping=False, or more labels.")


def deciding_tasks(monitored, weights):
    """The tasks whose validation losses decide when to stop (bool (T,)): the
    ``monitored`` ones with a loss weight above 0, or every monitored one when none
    has (or ``weights`` is None). A task of weight 0 is not trained, and its
    validation loss only drifts with the shared layers."""
    if weights is None:
        return monitored
    trained = monitored & (np.asarray(weights) > 0)
    return trained if trained.any() else monitored


def state_copy(module):
    # On the host: a snapshot pickles and saves anywhere, and the GPU keeps no copies.
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class TaskEarlyStopping(Callback):
    """Stop when no task's validation loss has improved for ``patience`` epochs, keeping
    each task's best epoch.

    Parameters
    ----------
    patience : int
        Epochs without an improvement of more than ``tol`` (relative) of any monitored
        task after which training stops.
    tol : float
        Relative improvement of a task's best validation loss that counts as progress.
    monitored : sequence of bool or None
        Which tasks decide when to stop (auxiliary tasks, which are not predicted, do
        not); None: all. Of these, tasks with loss weight 0 do not decide either (unless
        every one has weight 0).
    sink : callable
        Where the message at the stop goes (``print`` when verbose).

    Attributes
    ----------
    best_epochs_ : ndarray of int
        Each task's epoch (1-based, of this fit call) of its lowest validation loss; a
        task without validation labels takes the epoch of the lowest total ``valid_loss``.
    best_epoch_, best_model_weights_ :
        The epoch of the lowest total ``valid_loss`` and the network's weights then
        (what skorch's ``EarlyStopping(load_best=True)`` would restore).
    stopped_epoch_ : int or None
        The epoch at which training stopped early, None when it ran to ``max_epochs``.
    deciding_ : ndarray of bool
        The tasks that decided at the last epoch (see ``monitored``).
    """

    def __init__(self, patience=10, tol=1e-4, monitored=None, sink=print):
        self.patience = patience
        self.tol = tol
        self.monitored = monitored
        self.sink = sink

    def on_train_begin(self, net, **kwargs):
        T = len(net.task_names)
        self.best_losses_ = np.full(T, np.inf)
        self.progress_losses_ = np.full(T, np.inf)
        self.best_epochs_ = np.zeros(T, dtype=int)
        self.waits_ = np.zeros(T, dtype=int)
        self.best_total_ = np.inf
        self.best_epoch_ = None
        self.best_model_weights_ = None
        self.snapshots_ = {}  # epoch -> weights, for the epochs some task still uses
        self.stopped_epoch_ = None
        self.epochs_ = 0

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if "valid_loss" not in row:
            return
        self.epochs_ += 1
        epoch = self.epochs_
        losses = np.array([row.get(f"valid_loss_{name}", np.nan) for name in net.task_names],
                          dtype=float)
        observed = np.isfinite(losses)
        improved = observed & (losses < self.best_losses_)
        total = row["valid_loss"]
        total_improved = np.isfinite(total) and total < self.best_total_
        weights = state_copy(net.module_) if (improved.any() or total_improved) else None
        if total_improved:
            self.best_total_, self.best_epoch_ = float(total), epoch
            self.best_model_weights_ = weights
        if improved.any():
            self.best_losses_[improved] = losses[improved]
            self.best_epochs_[improved] = epoch
            self.snapshots_[epoch] = weights
        previous = self.progress_losses_
        seen = np.isfinite(previous)
        # Relative threshold; the first finite loss of a task always counts as progress.
        threshold = np.where(seen, previous - self.tol * np.abs(np.where(seen, previous, 0)),
                             np.inf)
        progress = observed & (losses < threshold)
        self.progress_losses_[progress] = losses[progress]
        self.waits_ = np.where(progress, 0, self.waits_ + 1)
        in_use = set(self.best_epochs_.tolist())
        self.snapshots_ = {e: w for e, w in self.snapshots_.items() if e in in_use}
        deciding = self.deciding_ = self._deciding(net, len(losses))
        watched = deciding & (self.best_epochs_ > 0)
        if not watched.any():
            watched = deciding
        if (self.waits_[watched] >= self.patience).all():
            self.stopped_epoch_ = epoch
            self.sink(f"Stopping at epoch {len(net.history)}: no task's validation loss has "
                      f"improved for {self.patience} epochs.")
            raise KeyboardInterrupt

    def _deciding(self, net, n_tasks):
        """:func:`deciding_tasks` of the net's loss weights, read each epoch (continued
        training may change them)."""
        monitored = np.ones(n_tasks, bool) if self.monitored is None \
            else np.asarray(self.monitored, bool)
        weights = getattr(getattr(net, "weighting_", None), "static_weights", None)
        return deciding_tasks(monitored, None if weights is None
                              else weights.detach().cpu().numpy())

    def on_train_end(self, net, **kwargs):
        if self.best_model_weights_ is None:
            return
        # Tasks without validation labels follow the best total loss.
        epochs = np.where(self.best_epochs_ > 0, self.best_epochs_, self.best_epoch_)
        self.best_epochs_ = epochs
        states = dict(self.snapshots_)
        states[self.best_epoch_] = self.best_model_weights_
        net.set_task_snapshots([states[e] for e in epochs.tolist()],
                               self.best_model_weights_)

    def plain_state(self):
        """Best epochs and the stopping epoch, for a saved model (the weights themselves
        are saved as the net's snapshots)."""
        if not hasattr(self, "best_epochs_"):
            return {}
        return {"best_epochs": self.best_epochs_.tolist(), "best_epoch": self.best_epoch_,
                "stopped_epoch": self.stopped_epoch_, "epochs": self.epochs_}

    def load_plain_state(self, state):
        if not state:
            return
        self.best_epochs_ = np.asarray(state["best_epochs"], dtype=int)
        self.best_epoch_ = state["best_epoch"]
        self.stopped_epoch_ = state["stopped_epoch"]
        self.epochs_ = int(state.get("epochs", 0))

    def __getstate__(self):
        # The weight copies belong to the net (its task snapshots), not to a pickle of
        # the callback.
        state = dict(self.__dict__)
        state.pop("snapshots_", None)
        state.pop("best_model_weights_", None)
        return state


class PerTaskSnapshots(nn.Module):
    """Copies of one network, each predicting the output columns of the tasks whose best
    epoch it holds; optionally, some tasks predicted by the mean of two copies.

    ``columns[s]`` (bool, (width,)) marks the packed output columns copy ``s`` provides.
    ``torch.where`` picks them exactly (no arithmetic on the values, so a copy's
    non-finite output in columns it does not provide cannot leak), and exports to ONNX.
    ``partners[s]`` (bool masks too, or None) marks the columns for which copy ``s`` is
    the second network of a blend: there the output is ``combination`` (a
    :class:`~._ensemble.MemberMean`) of the two copies' outputs (see :mod:`._sharing`).
    """

    def __init__(self, modules, columns, partners=None, combination=None):
        super().__init__()
        self.copies = nn.ModuleList(modules)
        for s, mask in enumerate(columns):
            self.register_buffer(f"columns_{s}", torch.as_tensor(mask, dtype=torch.bool))
        self.blended = partners is not None
        if self.blended:
            for s, mask in enumerate(partners):
                self.register_buffer(f"partners_{s}", torch.as_tensor(mask, dtype=torch.bool))
            self.register_buffer("blend_columns",
                                 torch.as_tensor(np.any(partners, axis=0), dtype=torch.bool))
            self.combination = combination

    def forward(self, X):
        values = [module(X) for module in self.copies]
        out = values[0]
        for s in range(1, len(values)):
            out = torch.where(getattr(self, f"columns_{s}"), values[s], out)
        if not self.blended:
            return out
        other = out
        for s, value in enumerate(values):
            other = torch.where(getattr(self, f"partners_{s}"), value, other)
        mean = self.combination(torch.stack([out, other], 1))
        return torch.where(self.blend_columns, mean, out)


def distinct_states(task_states):
    """``(distinct, owner)``: the different state dicts of a per-task list (tasks of one
    epoch share the same dict object; None entries stay None) and, per task, the index
    of its own."""
    distinct, owner = [], []
    for state in task_states:
        if state is None:
            owner.append(None)
            continue
        index = next((i for i, seen in enumerate(distinct) if seen is state), None)
        if index is None:
            index = len(distinct)
            distinct.append(state)
        owner.append(index)
    return distinct, owner


def snapshot_module(module, task_states, stride, partners=None, combination=None):
    """A :class:`PerTaskSnapshots` from ``module`` and each task's weights (a list, one
    state dict per task; tasks with the same dict share a copy). ``partners``: None,
    or per task None or the state dict of a second network whose outputs are averaged
    with the first's by ``combination``."""
    n_tasks = len(task_states)
    states = list(task_states) + list(partners or [None] * n_tasks)
    distinct, owner = distinct_states(states)
    width = stride * n_tasks
    copies, columns, partner_columns = [], [], []
    for s, state in enumerate(distinct):
        copy_ = copy.deepcopy(module)
        copy_.load_state_dict(state)
        masks = np.zeros((2, width), dtype=bool)
        for i, o in enumerate(owner):
            if o == s:
                t = i % n_tasks
                masks[i // n_tasks, t * stride:(t + 1) * stride] = True
        copies.append(copy_)
        columns.append(masks[0])
        partner_columns.append(masks[1])
    blended = any(p is not None for p in (partners or []))
    if len(copies) == 1 and not blended:
        return copies[0]
    return PerTaskSnapshots(copies, columns, partner_columns if blended else None,
                            combination if blended else None)
