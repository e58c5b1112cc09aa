"""skorch callbacks for the multi-task estimators' ``callbacks=[...]``.

* :class:`TaskAffinity` records how a step on one task's loss changes the
  other tasks' losses (or how their gradients align) every few training
  steps; the fitted estimator then has ``task_affinity_``.
* :class:`EpochProgressBar` is the epoch-level progress bar of
  ``verbose=2`` (tqdm: a widget in Jupyter when ipywidgets is installed,
  text otherwise).
* :class:`EpochTable` is the epoch table of ``verbose>=1``, kept narrow for
  many tasks.

None of them listens to per-batch events, so the engine's fast training
path stays on (see :mod:`sklearn_mtl._net`); :class:`TaskAffinity` uses the
engine's step hooks, which cost only the steps they are called on.
"""

import sys
import textwrap
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from skorch.callbacks import Callback, PrintLog

__all__ = ["EpochProgressBar", "EpochTable", "TaskAffinity"]

AFFINITY_METHODS = ("lookahead", "gradient_cosine")
AVERAGES = ("loss", "uniform")


def _task_index(names, name):
    # tupleize_cols=False: tuple task labels stay labels, not a MultiIndex.
    return pd.Index(list(names), name=name, tupleize_cols=False)


def _check_every(owner, every):
    if isinstance(every, (bool, np.bool_)) or not isinstance(every, Integral) or every < 1:
        raise ValueError(f"{owner}(every={every!r}): every must be an integer >= 1 (record "
                         "one training step in every `every`).")
    return int(every)


def _check_method(owner, method):
    if not isinstance(method, str) or method not in AFFINITY_METHODS:
        raise ValueError(f"{owner}(method={method!r}): method must be one of "
                         f"{list(AFFINITY_METHODS)}.")
    return method


# ---------------------------------------------------------------------------
# Task affinity


def per_task_gradients(losses, params):
    """(T, P): the gradient of each task's loss w.r.t. ``params``, flattened in order.

    One vectorised backward pass (``is_grads_batched``) when the network's
    operations allow it, else one backward pass per task.
    """
    T = losses.shape[0]
    eye = torch.eye(T, dtype=losses.dtype, device=losses.device)
    try:
        grads = torch.autograd.grad(losses, params, grad_outputs=eye, retain_graph=True,
                                    is_grads_batched=True, allow_unused=True)
    except RuntimeError:  # an operation without a batching rule
        rows = [torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
                for t in range(T)]
        grads = [None if all(r[k] is None for r in rows) else torch.stack([
            r[k] if r[k] is not None else torch.zeros_like(p) for r in rows])
            for k, p in enumerate(params)]
    return torch.cat([
        (g if g is not None else p.new_zeros((T,) + tuple(p.shape))).reshape(T, -1)
        for g, p in zip(grads, params, strict=True)], 1)


def gradient_cosines(G, present):
    """(T, T) cosines between the rows of G and the mask of the pairs where both
    tasks had labels and a non-zero gradient."""
    norms = G.norm(dim=1)
    ok = present & (norms > 0)
    C = (G @ G.T) / (norms[:, None] * norms[None, :]).clamp_min(torch.finfo(G.dtype).tiny)
    C = C.clamp(-1.0, 1.0)
    C.diagonal().fill_(1.0)  # exactly, not up to rounding
    return C, ok[:, None] & ok[None, :]


def _learning_rates(optimizer, params):
    """The learning rate of each of ``params`` in the optimizer's parameter groups."""
    by_id = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return [float(by_id.get(id(p), optimizer.param_groups[0]["lr"])) for p in params]


def _moved(params, G, rows, lrs):
    """Per parameter, the (S, *shape) values after one SGD step along each row of G."""
    out, at = [], 0
    for p, lr in zip(params, lrs):
        n = p.numel()
        step = G[rows, at:at + n].reshape((len(rows),) + tuple(p.shape))
        out.append(p.detach().unsqueeze(0) - lr * step)
        at += n
    return out


def lookahead_affinity(forward_losses, losses, present, G, params, lrs, batched=None):
    """(T, T) lookahead affinities ``1 - L_j(theta - lr g_i) / L_j(theta)`` and the mask
    of the defined pairs.

    ``forward_losses()`` gives the (T,) task losses of the batch at the current
    values of ``params``; ``G`` (T, P) holds the task gradients. Each source task
    i moves ``params`` by one plain SGD step along its own gradient, the batch is
    evaluated, and ``params`` are restored bit for bit. ``batched(values)``, when
    given, evaluates all the moved parameter sets at once instead (``values``: per
    parameter a (S, *shape) tensor; returns (S, T) losses) and may raise to fall
    back to the one-by-one evaluation.
    """
    T = losses.shape[0]
    base = losses.detach()
    targets = present & torch.isfinite(base) & (base > 0)
    sources = present & (G.abs().sum(1) > 0)
    rows = torch.nonzero(sources).flatten().tolist()
    A = torch.zeros((T, T), dtype=base.dtype, device=base.device)
    tiny = torch.finfo(base.dtype).tiny
    with torch.no_grad():
        moved = _moved(params, G, rows, lrs) if rows else []
        done = False
        if batched is not None and rows:
            try:
                A[rows] = 1.0 - batched(moved).to(base.dtype) / base.clamp_min(tiny)
                done = True
            except Exception:  # an operation vmap cannot batch: one at a time
                done = False
        if not done:
            originals = [p.detach().clone() for p in params]
            try:
                for k, i in enumerate(rows):
                    for p, values in zip(params, moved):
                        p.data.copy_(values[k])
                    A[i] = 1.0 - forward_losses() / base.clamp_min(tiny)
            finally:
                for p, original in zip(params, originals):
                    p.data.copy_(original)
    mask = sources[:, None] & targets[None, :] & torch.isfinite(A)
    return A, mask


def _batched_losses(module, criterion, params, Xi, yi):
    """A function evaluating the task losses of the batch for S sets of values of
    ``params`` in one vectorised forward pass (``torch.func``), or None."""
    try:
        from torch.func import functional_call, vmap
    except ImportError:  # pragma: no cover - torch < 2.0
        return None
    ids = {id(p) for p in params}
    names = [n for n, p in module.named_parameters() if id(p) in ids]
    if len(names) != len(params):
        return None
    fixed = {n: p for n, p in module.named_parameters() if id(p) not in ids}
    buffers = dict(module.named_buffers())
    by_id = {id(p): n for n, p in module.named_parameters()}
    order = [by_id[id(p)] for p in params]

    def evaluate(values):
        def one(*moved):
            state = {**fixed, **dict(zip(order, moved)), **buffers}
            return criterion(functional_call(module, state, (Xi,)), yi)[0]

        keep = getattr(module, "keep_representation", False)
        module.keep_representation = False  # no batched tensor left on the module
        try:
            return vmap(one)(*values)
        finally:
            module.keep_representation = keep

    return evaluate


class TaskAffinity(Callback):
    """Record task affinity every ``every`` training steps.

    ``method='lookahead'`` (TAG: Fifty et al. 2021, "Efficiently Identifying
    Task Groupings for Multi-Task Learning"): on the step's batch, the shared
    parameters are moved by one plain SGD step along task i's gradient alone,
    ``theta_s - lr * g_i`` (``lr`` is the optimizer's current learning rate of
    each parameter; no momentum or adaptive scaling; the heads stay as they
    are), and the affinity of i onto j is the relative drop of task j's loss,
    ``Z_ij = 1 - L_j(theta_s - lr g_i) / L_j(theta_s)``: positive when a step
    for i also helps j. ``method='gradient_cosine'``: the cosine between task
    i's and task j's gradients on the shared parameters (symmetric, 1 on the
    diagonal).

    The losses are each task's own mean loss over the batch's labelled rows,
    unweighted (no ``loss_weights``, no normalisation); a step where a task has
    no label leaves that task's pairs out. The network is evaluated in eval
    mode (no dropout, batch-norm statistics untouched), its parameters are
    restored exactly and no gradient is left in ``.grad``: recording does not
    change the fit.

    Averaging over the recorded steps (``average``). ``'loss'`` (default): each
    step's value of the pair (i, j) weighs in proportion to ``L_i * L_j``, the
    product of the two tasks' losses on its batch. For the lookahead this is the
    ratio ``sum_t L_i (L_j - L_j') / sum_t L_i L_j``: the relative drop of j's
    pooled loss, with the steps where i still has something to learn counting
    most. The reason: once tasks are fitted, their batch gradients are mostly
    noise and the balance every converged fit reaches (at a minimum of the
    summed loss the task gradients on the shared parameters cancel out, so
    they are pulled towards negative alignment whatever the tasks), and a
    task whose loss is near zero on a batch (a few labelled rows, or labels
    memorised) turns ratios of tiny numbers into large noise. In long fits
    (the default 100 epochs on a few thousand rows) such steps are most of the
    steps, and a uniform mean can rank unrelated tasks above related ones.
    ``'uniform'``: the plain mean over the recorded steps, TAG's own average.

    The computation runs through the engine's step hooks (see
    :mod:`sklearn_mtl._net`) before the optimizer step of every ``every``-th
    training step; the other steps stay on the fast path and cost nothing.

    Parameters
    ----------
    method : {'lookahead', 'gradient_cosine'}, default='lookahead'
    every : int, default=10
        Record one training step in every ``every`` (steps counted over the
        whole fit).
    average : {'loss', 'uniform'}, default='loss'
        How the recorded steps are averaged (see above).

    Attributes
    ----------
    affinity_ : DataFrame (T, T)
        Rows: source task i; columns: target task j. NaN for a pair never
        recorded. ``attrs`` holds the method and the number of recorded steps.
    n_steps_ : int
        Steps recorded.
    """

    def __init__(self, method="lookahead", every=10, average="loss"):
        self.method = method
        self.every = every
        self.average = average

    def initialize(self):
        _check_method(type(self).__name__, self.method)
        _check_every(type(self).__name__, self.every)
        if self.average not in AVERAGES:
            raise ValueError(f"TaskAffinity(average={self.average!r}): average must be one of "
                             f"{list(AVERAGES)}.")
        self.sums_ = None
        self.task_names_ = None
        self.n_steps_ = 0
        self._vectorised = True  # the lookahead's batched forward, until it fails
        return self

    def on_train_begin(self, net, **kwargs):
        if not net.shared_parameters():
            raise ValueError(
                f"TaskAffinity measures the tasks' effect on the parameters they share, and "
                f"this network's trunk ({type(net.module_.trunk).__name__}) shares none "
                "(e.g. architecture='soft' gives every task its own tower). Use "
                "architecture='hard' or another architecture with shared layers.")
        names = list(net.task_names)
        if self.sums_ is None or self.task_names_ != names:
            T = len(names)
            self.task_names_ = names
            # Weighted sum and weight sum, plain sum and count, per pair.
            self.sums_ = torch.zeros((4, T, T), dtype=torch.float64)
            self.n_steps_ = 0

    def on_step(self, net, batch, step, **kwargs):
        Xi, yi = batch
        module, criterion = net.module_, net.criterion_
        params = net.shared_parameters()
        training = module.training
        module.train(False)
        try:
            with torch.enable_grad():
                losses, denominators = criterion(module(Xi), yi)
            present = (denominators > 0) & torch.isfinite(losses)
            G = per_task_gradients(losses, params)
            if self.method == "gradient_cosine":
                values, mask = gradient_cosines(G, present)
            else:
                def forward_losses():
                    return criterion(module(Xi), yi)[0]
                batched = None
                if getattr(self, "_vectorised", True):
                    batched = _batched_losses(module, criterion, params, Xi, yi)
                values, mask = lookahead_affinity(
                    forward_losses, losses, present, G, params,
                    _learning_rates(net.optimizer_, params),
                    batched=self._remember_failure(batched))
        finally:
            module.train(training)
        self._add(values.detach().double().cpu(), mask.cpu(),
                  losses.detach().double().cpu().clamp_min(0.0))

    def _remember_failure(self, batched):
        """``batched``, turned off for the rest of the fit once it fails."""
        if batched is None:
            return None

        def guarded(values):
            try:
                return batched(values)
            except Exception:
                self._vectorised = False
                raise

        return guarded

    def _add(self, values, mask, losses):
        zero = torch.zeros((), dtype=values.dtype)
        weights = torch.where(mask, losses[:, None] * losses[None, :], zero)
        values = torch.where(mask, values, zero)
        self.sums_[0] += weights * values
        self.sums_[1] += weights
        self.sums_[2] += values
        self.sums_[3] += mask
        self.n_steps_ += 1

    def plain_state(self):
        """What was recorded, as builtins and numpy arrays (for saving the model)."""
        if self.task_names_ is None:
            return {}
        return {"task_names": list(self.task_names_), "sums": self.sums_.numpy().copy(),
                "n_steps": int(self.n_steps_), "vectorised": bool(self._vectorised)}

    def load_plain_state(self, state):
        """Restore what :meth:`plain_state` returned (a model being loaded)."""
        if not state:
            return
        self.task_names_ = list(state["task_names"])
        self.sums_ = torch.as_tensor(np.array(state["sums"], dtype=np.float64))
        self.n_steps_ = int(state["n_steps"])
        self._vectorised = bool(state.get("vectorised", True))

    @property
    def affinity_(self):
        if self.task_names_ is None:
            raise AttributeError("TaskAffinity has recorded nothing yet: fit the estimator "
                                 "with it in callbacks=[...].")
        weighted, weights, total, counts = self.sums_.numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            uniform = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
            values = uniform if self.average == "uniform" else np.where(
                weights > 0, weighted / np.where(weights > 0, weights, 1), uniform)
        frame = pd.DataFrame(values, index=_task_index(self.task_names_, "source"),
                             columns=_task_index(self.task_names_, "target"))
        frame.attrs.update(method=self.method, every=int(self.every), average=self.average,
                           n_steps=self.n_steps_)
        return frame


# ---------------------------------------------------------------------------
# Progress


def _in_notebook():
    """Whether we run in a Jupyter kernel whose front end shows widgets (tqdm's test)."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython().__class__.__name__.lower()
    except Exception:
        return False
    return "qt" not in shell and "spyder" not in shell


def progress_bar_class():
    """``tqdm.notebook.tqdm`` in Jupyter when ipywidgets is installed, else the text
    ``tqdm`` (which also works in Jupyter, without widgets)."""
    if _in_notebook():
        try:
            from tqdm import notebook
        except ImportError:
            notebook = None
        if notebook is not None and getattr(notebook, "IProgress", None) is not None:
            return notebook.tqdm
    from tqdm.std import tqdm

    return tqdm


def _short(name, width=12):
    """``name`` cut to ``width`` characters in the middle ('outc~ask_0'), so that names
    that differ at their start or at their end stay apart."""
    text = str(name)
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "~" + text[len(text) - (width - 1 - head):]


def short_labels(names, width=8):
    """Labels of at most ``width`` characters, one per task, distinct: the names cut in
    the middle, or ``t0, t1, ...`` when cutting makes two of them alike."""
    labels = [_short(n, width) for n in names]
    if len(set(labels)) == len(labels):
        return labels
    return [f"t{i}" for i in range(len(names))]


def _number(value, digits=3):
    if value is None or not np.isfinite(value):
        return "nan"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.2e}"


def _epoch_summary(row, names, max_tasks=8):
    """'loss 0.41/0.52 | a 0.12/0.15 b ...': training/validation loss, overall and per
    task (the first ``max_tasks`` tasks)."""
    has_valid = "valid_loss" in row

    def pair(key):
        train = row.get(f"train_{key}")
        if has_valid:
            return f"{_number(train)}/{_number(row.get(f'valid_{key}'))}"
        return _number(train)

    shown = names[:max_tasks]
    labels = short_labels(shown, 10)
    tasks = " ".join(f"{label} {pair(f'loss_{n}')}" for label, n in zip(labels, shown))
    if len(names) > len(shown):
        tasks += f" (+{len(names) - len(shown)} tasks)"
    return " | ".join([f"loss {pair('loss')}"] + ([tasks] if tasks else []))


class EpochProgressBar(Callback):
    """An epoch-level progress bar: epochs done, time left, and in the postfix the
    training (/validation) loss overall and per task.

    tqdm draws it: a widget in Jupyter when ipywidgets is installed, a text bar
    otherwise (terminal, or Jupyter without ipywidgets). Nothing per batch.

    Parameters
    ----------
    max_tasks : int, default=8
        Tasks shown in the postfix (the first ones; the others are counted).
    tqdm_kwargs : dict, default=None
        Passed to tqdm (e.g. ``file``, ``ncols``, ``mininterval``).
    """

    def __init__(self, max_tasks=8, tqdm_kwargs=None):
        self.max_tasks = max_tasks
        self.tqdm_kwargs = tqdm_kwargs

    def on_train_begin(self, net, **kwargs):
        self.close()
        total = int(net.__dict__.get("_planned_epochs") or net.max_epochs)
        options = dict(total=total, unit="epoch", desc="training", leave=True)
        options.update(self.tqdm_kwargs or {})
        bar_class = progress_bar_class()
        try:
            self.bar_ = bar_class(**options)
        except ImportError:  # a widget front end that cannot draw (old ipywidgets)
            from tqdm.std import tqdm

            self.bar_ = tqdm(**options)

    def on_epoch_end(self, net, **kwargs):
        bar = getattr(self, "bar_", None)
        if bar is None:
            return
        bar.set_postfix_str(_epoch_summary(net.history[-1], list(net.task_names),
                                           self.max_tasks), refresh=False)
        bar.update(1)

    def on_train_end(self, net, **kwargs):
        self.close()

    def close(self):
        bar = self.__dict__.pop("bar_", None)
        if bar is not None:
            bar.close()

    def write(self, text):
        """Print a line above the bar (or plainly when no bar is showing)."""
        bar = getattr(self, "bar_", None)
        if bar is None:
            print(text, flush=True)
        else:
            bar.write(text)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("bar_", None)  # a live bar is neither copied nor pickled
        return state


# ---------------------------------------------------------------------------
# Epoch table


class EpochTable(PrintLog):
    """The per-epoch table of ``verbose>=1``, narrow whatever the number of tasks.

    Columns: the epoch, the training and (with validation data) validation
    loss with ``*`` on the best epoch so far, the per-task losses (validation
    losses when there is validation data, else training losses; one column
    per task up to ``max_task_columns`` tasks, beyond that the smallest,
    median and largest task loss with the worst task's name), the range of
    the task weights when a weighting strategy moves them, and the epoch's
    duration. Columns that never change (static weights, batch counts) are
    left out; everything stays in ``history_``.

    Parameters
    ----------
    max_task_columns : int, default=8
        Up to this many tasks, one column per task; beyond, one summary column.
    sink : callable, default=None
        Where the lines go (e.g. a logger's ``info``). None: stdout, or above the
        epoch progress bar when one is showing.
    """

    # A PrintLog so that skorch runs it after every other callback of the epoch.

    def __init__(self, max_task_columns=8, sink=None):
        self.max_task_columns = max_task_columns
        self.sink = sink

    def initialize(self):
        self.columns_ = None
        return self

    def _columns(self, net, row):
        """[(key, header, width, separator before)] of the table."""
        from .weighting import Static

        names = list(net.task_names)
        prefix = "valid" if "valid_loss" in row else "train"
        columns = [("epoch", "epoch", 5, ""), ("train_loss", "train_loss", 10, "  ")]
        if "valid_loss" in row:
            columns.append(("valid_loss", "valid_loss", 10, "  "))
        legend = None
        if names and len(names) <= self.max_task_columns:
            labels = short_labels(names, 8)
            if labels[0] == "t0" and str(names[0]) != "t0":
                legend = textwrap.fill(", ".join(f"{label} = {name}" for label, name
                                                 in zip(labels, names)),
                                       width=100, initial_indent="tasks: ",
                                       subsequent_indent="       ")
            columns += [(("task", prefix, n), label, max(6, len(label)), "  " if j == 0 else " ")
                        for j, (n, label) in enumerate(zip(names, labels))]
        elif names:
            columns.append((("tasks", prefix), f"{prefix} loss min/med/max (worst)", 30, "  "))
        if not isinstance(net.weighting, Static):
            columns.append(("weights", "weights", 11, "  "))
        columns.append(("dur", "dur", 5, "  "))
        title = (f"per-task {'validation' if prefix == 'valid' else 'training'} losses; "
                 "* marks the best epoch so far")
        return columns, [line for line in (legend, title) if line]

    @staticmethod
    def _cell(key, row, names):
        if key == "epoch":
            return str(row.get("epoch", ""))
        if key in ("train_loss", "valid_loss"):
            best = row.get(f"{key}_best")
            return _number(row.get(key), 4) + ("*" if best else " ")
        if key == "dur":
            return f"{row.get('dur', float('nan')):.2f}"
        if key == "weights":
            weights = [row.get(f"weight_{n}") for n in names]
            weights = [w for w in weights if w is not None]
            return f"{_number(min(weights))}-{_number(max(weights))}" if weights else ""
        if key[0] == "task":
            return _number(row.get(f"{key[1]}_loss_{key[2]}"))
        losses = np.array([row.get(f"{key[1]}_loss_{n}", np.nan) for n in names], float)
        if not np.isfinite(losses).any():
            return ""
        worst = names[int(np.nanargmax(losses))]
        return (f"{_number(np.nanmin(losses))}/{_number(np.nanmedian(losses))}/"
                f"{_number(np.nanmax(losses))} ({_short(worst, 8)})")

    def _emit(self, net, text):
        if self.sink is not None:
            self.sink(text)
            return
        for _, cb in net.callbacks_:
            if isinstance(cb, EpochProgressBar) and getattr(cb, "bar_", None) is not None:
                cb.write(text)
                return
        print(text, flush=True)

    def on_epoch_end(self, net, **kwargs):
        if not net.verbose and self.sink is None:
            return
        row = net.history[-1]
        names = list(net.task_names)
        if self.columns_ is None:
            self.columns_, notes = self._columns(net, row)
            self.widths_ = [max(width, len(header)) for _, header, width, _ in self.columns_]
            for note in notes:
                self._emit(net, note)
            self._emit(net, self._line([c[1] for c in self.columns_]))
            self._emit(net, self._line(["-" * w for w in self.widths_]))
        self._emit(net, self._line([self._cell(c[0], row, names) for c in self.columns_]))

    def _line(self, cells):
        return "".join(sep + cell.rjust(width) for cell, width, (_, _, _, sep)
                       in zip(cells, self.widths_, self.columns_))
