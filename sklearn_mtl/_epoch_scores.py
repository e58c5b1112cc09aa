"""Per-epoch validation scores: accuracy or R² per task, from the validation pass.

:meth:`sklearn_mtl._net.MultiTaskNet.validation_step` adds each validation
batch's :func:`score_terms` (per-task counts and sums, on the device) to the
epoch's state, and :class:`TaskScoreLogger` turns them into
``valid_score_<task>`` history entries once per epoch: one device-to-host copy
per epoch, no extra forward pass.
"""

import torch
from skorch.callbacks import Callback

from ._losses import ELEMENTWISE


class TaskScoreLogger(Callback):
    """Writes ``valid_score_<task>`` to the history at the end of each epoch that had
    validation data: accuracy (classification) or R² (regression) over the validation
    rows where the task has a label, from sums the validation pass kept on the device
    (see :meth:`sklearn_mtl._net.MultiTaskNet.validation_step`). Nothing is recorded
    without validation."""

    def on_epoch_begin(self, net, **kwargs):
        # The validation pass accumulates into this epoch's [layout, sums]; nothing of it
        # outlives the epoch (or is pickled with the net).
        net.__dict__["_score_state"] = [None, None]

    def on_epoch_end(self, net, **kwargs):
        _, sums = net.__dict__.pop("_score_state", (None, None))
        if sums is None:
            return
        hits, n, total, squares = sums.double().cpu().numpy()
        for t, (name, kind) in enumerate(zip(net.task_names, net.task_kinds)):
            if n[t] == 0:
                score = float("nan")
            elif kind == "regression":
                # hits holds the squared error; R² as r2_score computes it (a constant
                # target scores 1 when predicted exactly, else 0).
                spread = squares[t] - total[t] ** 2 / n[t]
                if spread > 1e-12 * max(1.0, squares[t]):
                    score = 1.0 - hits[t] / spread
                else:
                    score = 1.0 if hits[t] == 0 else 0.0
            else:
                score = hits[t] / n[t]
            net.history.record(f"valid_score_{name}", float(score))


def score_layout(net):
    """Index tensors for :func:`score_terms` (made once per epoch)."""
    criterion = net.criterion_
    kinds, stride = list(net.task_kinds), criterion.stride
    log_rate = {t for fn, idx in criterion.groups if fn is ELEMENTWISE["poisson"] for t in idx}
    reg = [t for t, k in enumerate(kinds) if k == "regression"]
    binary = [t for t, k in enumerate(kinds) if k == "binary"]
    multi = [(t, t * stride, criterion.n_outputs[t]) for t, k in enumerate(kinds)
             if k == "multiclass"]
    device = net.device

    def index(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    layout = {
        "reg": (index(reg), index([t * stride for t in reg]),
                torch.tensor([t in log_rate for t in reg], device=device)) if reg else None,
        "binary": (index(binary), index([t * stride for t in binary])) if binary else None,
        "multi": multi,
        "order": index(reg + binary + [t for t, _, _ in multi]),
    }
    return layout


def score_terms(layout, net, y_pred, y_true):
    """(4, T) per-task sums of one validation batch: correct predictions (classification)
    or squared error (regression), labelled rows, and the sum and sum of squares of the
    regression targets (standardised scale: R² does not depend on it)."""
    T = len(net.task_kinds)
    labels, observed = y_true[:, :T], (y_true[:, T:] > 0)
    y_pred = y_pred.float()
    columns = []
    if layout["reg"] is not None:
        idx, cols, log_rate = layout["reg"]
        pred = y_pred.index_select(1, cols)
        pred = torch.where(log_rate, pred.exp(), pred)
        y, m = labels.index_select(1, idx), observed.index_select(1, idx)
        zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
        error = torch.where(m, (pred - y).square(), zero)
        y = torch.where(m, y, zero)
        columns.append(torch.stack([error.sum(0), m.sum(0).to(pred.dtype), y.sum(0),
                                    y.square().sum(0)]))
    if layout["binary"] is not None:
        idx, cols = layout["binary"]
        m = observed.index_select(1, idx)
        hit = ((y_pred.index_select(1, cols) > 0) == (labels.index_select(1, idx) > 0.5)) & m
        count = m.sum(0).to(y_pred.dtype)
        columns.append(torch.stack([hit.sum(0).to(y_pred.dtype), count,
                                    torch.zeros_like(count), torch.zeros_like(count)]))
    for t, start, k in layout["multi"]:
        m = observed[:, t]
        hit = (y_pred[:, start:start + k].argmax(1) == labels[:, t].long()) & m
        column = torch.stack([hit.sum(), m.sum()]).to(y_pred.dtype)
        columns.append(torch.cat([column, column.new_zeros(2)]).unsqueeze(1))
    terms = columns[0] if len(columns) == 1 else torch.cat(columns, 1)
    out = terms.new_empty(terms.shape)
    out[:, layout["order"]] = terms
    return out
