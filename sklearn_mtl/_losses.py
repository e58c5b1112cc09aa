"""Masked, weighted per-task losses.

:class:`MultiTaskLoss` maps the packed network output and the packed
label-and-weight matrix (see :mod:`sklearn_mtl._tasks`) to a vector of
per-task losses: task t's loss is ``sum_i w_it l_it / sum_i w_it``, the
weighted mean of its element losses over the rows where it has a label
(w_it = 0 where the label is missing). Single-output tasks that share a loss
are evaluated together in one call, because at tabular sizes the number of
torch calls, not the arithmetic, sets the time.

For the same reason, when every task's loss is a built-in one whose derivative
has a closed form (all but the multiclass hinge), training steps go through
:class:`_ClosedFormTaskLosses`: one autograd node that computes the element
losses and their derivatives w.r.t. the outputs together, instead of a graph of
a dozen slicing, masking and reducing nodes back-propagated one by one.
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


def _mse_grad(pred, target):
    return 2.0 * (pred - target)


def _mae_grad(pred, target):
    return (pred - target).sign()


def _huber_grad(pred, target):
    return (pred - target).clamp(-1.0, 1.0)


def _poisson_grad(pred, target):
    return pred.exp() - target


def _bce_grad(pred, target):
    return torch.sigmoid(pred) - target


def _binary_hinge_grad(pred, target):
    sign = 2.0 * target - 1.0
    # relu's derivative is 0 at 0, as autograd takes it.
    return torch.where(sign * pred < 1.0, -sign, torch.zeros((), dtype=pred.dtype))


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

#: Derivatives w.r.t. the prediction of the element losses that have a closed form.
ELEMENTWISE_GRAD = {_mse: _mse_grad, _mae: _mae_grad, _huber: _huber_grad,
                    _poisson: _poisson_grad, _bce: _bce_grad, _binary_hinge: _binary_hinge_grad}


def _cross_entropy_grad(logits, codes):
    grad = torch.softmax(logits, 1)
    grad[torch.arange(codes.shape[0], device=codes.device), codes] -= 1.0
    return grad


MULTICLASS_GRAD = {_cross_entropy: _cross_entropy_grad}


class _ClosedFormTaskLosses(torch.autograd.Function):
    """Per-task masked mean losses as one autograd node (see the module docstring).

    ``apply(criterion, y_pred, labels, weights)`` returns the (T,) losses and
    label-weight sums (the latter not differentiable). Backward: task t's loss is
    ``sum_i w_it l_it / sum_i w_it``, so its gradient w.r.t. row i's outputs is
    ``w_it / sum_i w_it`` times the element loss's derivative, which forward
    keeps (masked rows get exactly 0).
    """

    @staticmethod
    def forward(ctx, criterion, y_pred, labels, weights):
        losses, denominators, coef, D, multiclass = criterion.closed_form_terms(
            y_pred, labels, weights)
        ctx.criterion, ctx.shape = criterion, y_pred.shape
        ctx.save_for_backward(coef, D, *multiclass)
        ctx.mark_non_differentiable(denominators)
        return losses, denominators

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_losses, grad_denominators):
        coef, D, *multiclass = ctx.saved_tensors
        scale = coef * grad_losses.to(coef.dtype)
        return None, ctx.criterion.output_grad(scale, D, multiclass, ctx.shape), None, None


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
        # Whether every loss has a closed-form derivative (see _ClosedFormTaskLosses).
        self.closed_form = (all(fn in ELEMENTWISE_GRAD for fn, _ in self.groups)
                            and all(fn in MULTICLASS_GRAD for _, _, fn, _ in self.others))

    def element_losses_and_grads(self, y_pred, labels):
        """(E (B, T), D (B, T), multiclass): the element losses, the derivatives of the
        single-output ones w.r.t. their prediction (0 in multiclass columns), and
        per multiclass task the (B, K) derivative w.r.t. its logits; only for
        ``closed_form`` criteria. No graph is recorded."""
        with torch.no_grad():
            E_parts, D_parts, multiclass = [], [], []
            for j, (fn, _) in enumerate(self.groups):
                pred, target = self._group_operands(j, y_pred, labels)
                E_parts.append(fn(pred, target))
                D_parts.append(ELEMENTWISE_GRAD[fn](pred, target))
            for t, _, fn, _ in self.others:
                start = t * self.stride
                logits = y_pred[:, start:start + self.n_outputs[t]]
                codes = labels[:, t].long()
                E_parts.append(fn(logits, codes).unsqueeze(1))
                D_parts.append(torch.zeros_like(E_parts[-1]))
                multiclass.append(MULTICLASS_GRAD[fn](logits, codes))
            E, D = (E_parts[0], D_parts[0]) if len(E_parts) == 1 else (
                torch.cat(E_parts, 1), torch.cat(D_parts, 1))
            if not self._identity_order:
                E, D = E.index_select(1, self._inverse), D.index_select(1, self._inverse)
        return E, D, multiclass

    def closed_form_terms(self, y_pred, labels, weights):
        """What a step needs of the closed-form losses (``closed_form`` criteria; no
        graph is recorded): ``(losses, denominators, coef, D, multiclass)``.

        ``weights`` is (B, T), or (k, B, T) with a leading member axis (``y_pred``
        and ``labels`` then hold the k*B rows in that order). ``losses`` and the
        label-weight sums ``denominators`` are (T,) or (k, T); ``coef`` =
        ``w / sum w`` over each task's rows (0 where it has no label), shaped like
        ``weights``: times ``dLoss/dL_t`` it is the ``scale`` of :meth:`output_grad`.
        ``D`` and ``multiclass`` as :meth:`element_losses_and_grads`, masked rows 0.
        """
        E, D, multiclass = self.element_losses_and_grads(y_pred, labels)
        observed = weights > 0
        zero = torch.zeros((), dtype=E.dtype, device=E.device)
        E = torch.where(observed, E.view(weights.shape), zero)
        D = torch.where(observed.view(D.shape), D, zero)
        denominators = weights.sum(-2)
        safe = denominators.clamp_min(1e-12)
        coef = torch.where(observed, weights / safe.unsqueeze(-2), zero)
        return (weights * E).sum(-2) / safe, denominators, coef, D, multiclass

    def output_grad(self, scale, D, multiclass, shape):
        """The gradient w.r.t. the packed output ``shape`` from the per-(row, task)
        scale ``w_it / sum_i w_it * dLoss/dL_t`` (B, T) and the element derivatives."""
        G = scale * D
        if self.stride == 1 and not multiclass:
            return G  # one column per task, in task order
        grad = G.new_zeros(shape)
        for j, (fn, idx) in enumerate(self.groups):
            views = self._views[j]
            if views is not None:
                grad[:, views[0]] = G[:, views[1]]
            else:
                grad.index_copy_(1, getattr(self, f"_col_idx_{j}"),
                                 G.index_select(1, getattr(self, f"_task_idx_{j}")))
        for (t, *_), g in zip(self.others, multiclass):
            start = t * self.stride
            grad[:, start:start + self.n_outputs[t]] = scale[:, t:t + 1] * g
        return grad

    def _group_operands(self, j, y_pred, labels):
        """(prediction, target) columns of single-output group j."""
        views = self._views[j]
        if views is not None:
            return y_pred[:, views[0]], labels[:, views[1]]
        return (y_pred.index_select(1, getattr(self, f"_col_idx_{j}")),
                labels.index_select(1, getattr(self, f"_task_idx_{j}")))

    def element_losses(self, y_pred, labels, weights):
        """(B, T) element losses; entries of non-elementwise callables are 0 and
        their task losses come from :meth:`_reduced_losses`."""
        parts = [fn(*self._group_operands(j, y_pred, labels))
                 for j, (fn, _) in enumerate(self.groups)]
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
        if self.closed_form and y_pred.requires_grad and torch.is_grad_enabled():
            return _ClosedFormTaskLosses.apply(self, y_pred, labels, weights)
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
