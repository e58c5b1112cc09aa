"""Masked, weighted per-task losses.

:class:`MultiTaskLoss` maps the packed network output and the packed
label-and-weight matrix (see :mod:`sklearn_mtl._tasks`) to a vector of
per-task losses: task t's loss is ``sum_i w_it l_it / sum_i w_it``, the
weighted mean of its element losses over the rows where it has a label
(w_it = 0 where the label is missing). Single-output tasks that share a loss
are evaluated together in one call, because at tabular sizes the number of
torch calls, not the arithmetic, sets the time.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _mse(pred, target):
    return (pred - target).square()


def _mae(pred, target):
    return (pred - target).abs()


def _huber(pred, target):
    return F.huber_loss(pred, target, reduction="none", delta=1.0)


def _poisson(pred, target):
    # pred is the log of the rate.
    return F.poisson_nll_loss(pred, target, log_input=True, full=False, reduction="none")


def _bce(pred, target):
    return F.binary_cross_entropy_with_logits(pred, target, reduction="none")


def _binary_hinge(pred, target):
    return F.relu(1.0 - (2.0 * target - 1.0) * pred)


#: Element-wise losses of single-output tasks: (pred (B, G), target (B, G)) -> (B, G).
ELEMENTWISE = {
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
    "poisson": _poisson,
    "bce": _bce,
    "hinge": _binary_hinge,
}


def _cross_entropy(logits, codes):
    return F.cross_entropy(logits, codes, reduction="none")


def _multi_hinge(logits, codes):
    return F.multi_margin_loss(logits, codes, reduction="none")


#: Element-wise losses of multiclass tasks: (logits (B, K), codes (B,)) -> (B,).
MULTICLASS = {"cross_entropy": _cross_entropy, "hinge": _multi_hinge}


def _elementwise_callable(loss):
    """An element-wise copy of a torch loss module, or None if it has no reduction."""
    if isinstance(loss, nn.Module) and hasattr(loss, "reduction"):
        loss = copy.deepcopy(loss)
        loss.reduction = "none"
        return loss
    return None


class MultiTaskLoss(nn.Module):
    """Per-task masked weighted losses.

    Parameters
    ----------
    kinds : list of str
        Each task's kind ('regression', 'binary', 'multiclass').
    losses : list of (str or callable)
        Each task's loss name or torch loss callable.
    n_outputs : list of int
        Each task's number of output columns.
    stride : int
        Columns per task in the packed output (task t starts at ``t * stride``).

    ``forward(y_pred, y_true)`` returns ``(losses, denominators)``, two (T,)
    tensors: the per-task weighted mean losses and the per-task weight sums
    (0 for a task with no label in the batch, whose loss is then 0).
    With per-member outputs (B, k, width) both are (k, T), one per (member,
    task), and ``y_true`` may carry k member row masks after its 2T columns
    (see :mod:`sklearn_mtl._ensemble`).
    """

    def __init__(self, kinds, losses, n_outputs, stride):
        super().__init__()
        self.n_tasks = len(kinds)
        self.kinds, self.n_outputs, self.stride = list(kinds), list(n_outputs), stride
        groups = {}  # loss name -> task indices, for single-output built-in losses
        self.others = []  # (task index, kind, fn, elementwise?) evaluated one by one
        for t, (kind, loss) in enumerate(zip(kinds, losses)):
            if isinstance(loss, str) and kind != "multiclass":
                groups.setdefault(loss, []).append(t)
            elif isinstance(loss, str):
                self.others.append((t, kind, MULTICLASS[loss], True))
            else:
                elementwise = _elementwise_callable(loss)
                fn = elementwise if elementwise is not None else loss
                self.others.append((t, kind, fn, elementwise is not None))
        self.groups = [(ELEMENTWISE[name], idx) for name, idx in groups.items()]
        order = [t for _, idx in self.groups for t in idx] + [t for t, *_ in self.others]
        # Column j of the concatenated element losses belongs to task order[j].
        inverse = [0] * self.n_tasks
        for j, t in enumerate(order):
            inverse[t] = j
        # A group of consecutive tasks reads strided views (no copy); others gather.
        self._views = []
        for j, (fn, idx) in enumerate(self.groups):
            self.register_buffer(f"_task_idx_{j}", torch.tensor(idx), persistent=False)
            self.register_buffer(f"_col_idx_{j}", torch.tensor(idx) * stride, persistent=False)
            consecutive = idx == list(range(idx[0], idx[-1] + 1))
            self._views.append(
                (slice(idx[0] * stride, idx[-1] * stride + 1, stride), slice(idx[0], idx[-1] + 1))
                if consecutive else None)
        self.register_buffer("_inverse", torch.tensor(inverse), persistent=False)
        self._identity_order = order == list(range(self.n_tasks))

    def element_losses(self, y_pred, labels, weights):
        """(B, T) element losses; entries of non-elementwise callables are 0 and
        their task losses come from :meth:`_reduced_losses`."""
        parts = []
        for j, (fn, _) in enumerate(self.groups):
            views = self._views[j]
            if views is not None:
                parts.append(fn(y_pred[:, views[0]], labels[:, views[1]]))
                continue
            cols = getattr(self, f"_col_idx_{j}")
            tidx = getattr(self, f"_task_idx_{j}")
            parts.append(fn(y_pred.index_select(1, cols), labels.index_select(1, tidx)))
        for t, kind, fn, elementwise in self.others:
            start = t * self.stride
            pred = y_pred[:, start:start + self.n_outputs[t]]
            target = labels[:, t]
            if kind == "multiclass":
                target = target.long()
            else:
                target = target.unsqueeze(1)
            if elementwise:
                value = fn(pred, target)
                parts.append(value.reshape(value.shape[0], -1).mean(1, keepdim=True))
            else:
                parts.append(torch.zeros_like(labels[:, :1]))
        E = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        if not self._identity_order:
            E = E.index_select(1, self._inverse)
        return E

    def forward(self, y_pred, y_true):
        if y_pred.dim() == 3:  # a member axis: see sklearn_mtl._ensemble
            return self._member_forward(y_pred, y_true)
        T = self.n_tasks
        # Columns after the 2T (member row masks) belong to the member axis.
        labels, weights = y_true[:, :T], y_true[:, T:2 * T]
        E = self.element_losses(y_pred, labels, weights)
        # where(), not a product alone: a masked entry must not leak NaN or inf.
        E = torch.where(weights > 0, E, torch.zeros((), dtype=E.dtype, device=E.device))
        denominators = weights.sum(0)
        losses = (weights * E).sum(0) / denominators.clamp_min(1e-12)
        reduced = [(t, fn) for t, kind, fn, elementwise in self.others if not elementwise]
        if reduced:
            losses = self._reduced_losses(losses, reduced, y_pred, labels, weights)
        return losses, denominators

    def _member_forward(self, y_pred, y_true):
        """(k, T) losses and label-weight sums of per-member outputs (B, k, width).

        Row weights are the task weights times the member row masks (columns
        ``2T:2T + k`` of ``y_true`` when present, else all ones).
        """
        B, k, width = y_pred.shape
        T = self.n_tasks
        labels, weights = y_true[:, :T], y_true[:, T:2 * T]
        weights = weights.unsqueeze(1)
        if y_true.shape[1] > 2 * T:
            if y_true.shape[1] != 2 * T + k:
                raise ValueError(
                    f"The target matrix has {y_true.shape[1]} columns; with {T} task(s) and "
                    f"{k} member(s) it must have {2 * T} (no row masks) or {2 * T + k}.")
            weights = weights * y_true[:, 2 * T:].unsqueeze(2)
        weights = weights.expand(B, k, T)
        # Members as extra rows: the per-task code above runs unchanged on (B*k, width).
        flat_labels = labels.unsqueeze(1).expand(B, k, T).reshape(B * k, T)
        E = self.element_losses(y_pred.reshape(B * k, width), flat_labels, None).view(B, k, T)
        E = torch.where(weights > 0, E, torch.zeros((), dtype=E.dtype, device=E.device))
        denominators = weights.sum(0)
        losses = (weights * E).sum(0) / denominators.clamp_min(1e-12)
        reduced = [(t, fn) for t, kind, fn, elementwise in self.others if not elementwise]
        if reduced:
            losses = torch.stack([
                self._reduced_losses(losses[m], reduced, y_pred[:, m], labels, weights[:, m])
                for m in range(k)])
        return losses, denominators

    def _reduced_losses(self, losses, reduced, y_pred, labels, weights):
        """Losses of plain callables, called on the observed rows only (they reduce
        themselves, so per-row weights cannot be applied)."""
        values = list(losses.unbind(0))
        for t, fn in reduced:
            rows = weights[:, t] > 0
            start = t * self.stride
            pred = y_pred[rows, start:start + self.n_outputs[t]]
            target = labels[rows, t]
            target = target.long() if self.kinds[t] == "multiclass" else target.unsqueeze(1)
            if pred.shape[0] == 0:
                values[t] = losses[t] * 0.0
            else:
                values[t] = fn(pred, target).reshape(())
        return torch.stack(values)
