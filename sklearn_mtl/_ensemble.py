"""Parameter-efficient ensembles: k members trained at once in one network.

``ensemble_size=k`` (k > 1) trains k members in one batched network over
mostly shared weights, after TabM-mini (Gorishniy, Kotelnikov and Babenko
2024, "TabM: Advancing Tabular Deep Learning with Parameter-Efficient
Ensembling"), itself a reduced BatchEnsemble (Wen et al. 2020):

* member m scales the input features by its own multiplicative adapter
  ``r_m`` (a vector of F entries, initialised with random signs so that the
  members differ from the first step; all ones would make them differ only
  through their heads);
* the representation module (any architecture, or a ``module=`` trunk) runs
  once on the (B*k, F) stacked member inputs, its weights shared by all
  members;
* every member has its own task heads: one
  :class:`~sklearn_mtl._modules.TaskHeads` with k*T heads (member m's task
  t is head ``m*T + t``).

Every member sees every training row, and the members' predictions are
combined at inference.

Output contract of :class:`EnsembleModule`
-------------------------------------------
* eval mode: the combined prediction in the plain network's packed layout
  (B, T*max_out): regression tasks the member mean (of the standardised
  value; of the log-rate for 'poisson'); binary tasks the logit of the mean
  probability; multiclass tasks the log of the mean softmax (a
  softmax of it is the mean of the members' probabilities). So validation
  losses, early stopping, predict, predict_proba, ONNX export and
  persistence read it as they read a plain network.
* training mode: per-member outputs (B, k, T*max_out).
* ``member_outputs(X)``: per-member outputs (B, k, T*max_out) in either mode.

The member axis in the engine
-----------------------------
The member axis is general: members need not be an ensemble of equals (a
search can train candidates x folds as the members of one network). Two
engine-level inputs make a member differ from the others besides its
initialisation:

* **member loss weights**: ``MultiTaskNet(member_weights=W)``, W of shape
  (k, T), non-negative (default: all ones). Member m's loss for task t is
  multiplied by ``W[m, t]``; a weight 0 leaves head (m, t) untrained.
* **member row masks**: k extra columns of the target matrix, after its 2T
  label and weight columns (:func:`with_member_masks`): (n, 2T + k), column
  ``2T + m`` is 1 where member m trains on the row, 0 where it does not. They
  travel with the shuffled batches because they are part of the targets.
  Without them (2T columns) every member trains on every row.

In training mode :class:`~sklearn_mtl._losses.MultiTaskLoss` then returns
(k, T) losses and label-weight sums, one per (member, task): the weighted
mean over the rows where the task has a label and the member's row mask is
1. :func:`member_task_losses` reduces them to what the rest of the engine
expects: the weighting strategy combines the (T,) member means of the
member-weighted task losses; the per-task losses of the history are the
member means (each (member, row) pair counted once, unweighted).

Validation runs in eval mode, so the validation losses (and early stopping)
are those of the combined prediction, computed on all validation rows.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._modules import MultiTaskModule

# Selector codes of the combination (see MemberMean).
_MEAN, _BINARY, _MULTICLASS = 0, 1, 2


class EnsembleModule(MultiTaskModule):
    """k members over a shared representation module, each with its own input
    adapter and task heads (see the module docstring).

    Parameters
    ----------
    trunk : torch.nn.Module
        The representation module, shared by the members: maps (B*k, F) to
        (B*k, D) or, with ``per_task``, (B*k, T, D).
    heads : TaskHeads
        The heads of all members: k*T tasks, member m's task t is head
        ``m*T + t``.
    n_members : int
        k.
    n_features : int
        F, the width of the adapters.
    kinds : list of str
        Each task's kind ('regression', 'binary', 'multiclass'), for the
        combination of the members' outputs.
    n_outputs : list of int
        Each task's number of output columns.
    """

    def __init__(self, trunk, heads, n_members, n_features, kinds, n_outputs):
        super().__init__(trunk, heads)
        self.n_members, self.n_tasks = int(n_members), len(kinds)
        if heads.n_outputs != tuple(n_outputs) * self.n_members:
            raise ValueError("heads must hold n_members * n_tasks heads, member-major.")
        # TabM-mini's adapter: random signs.
        self.adapter = nn.Parameter(
            torch.randint(0, 2, (self.n_members, n_features)).float().mul_(2).sub_(1))
        self.kinds = list(kinds)
        self.combination = MemberMean(kinds, n_outputs, heads.max_out)

    def member_outputs(self, X):
        """Per-member outputs (B, k, T*max_out), in training and eval mode alike."""
        B, k = X.shape[0], self.n_members
        stacked = (X.unsqueeze(1) * self.adapter).reshape(B * k, X.shape[1])
        representation = self.trunk(stacked)
        if self.check_rows and representation.shape[0] != stacked.shape[0]:
            raise ValueError(
                f"module {type(self.trunk).__name__} returned {representation.shape[0]} rows "
                f"for a batch of {stacked.shape[0]}; it must return one row per input row.")
        if self.keep_representation:
            self.representation_ = representation
        T = self.n_tasks
        if representation.dim() == 3:  # one representation per task: (B*k, T, D)
            per_head = representation.reshape(B, k * T, representation.shape[-1])
        else:  # one shared by the tasks of a member: (B*k, D)
            D = representation.shape[-1]
            per_head = representation.view(B, k, 1, D).expand(B, k, T, D).reshape(B, k * T, D)
        return self.heads(per_head).view(B, k, -1)

    def forward(self, X):
        out = self.member_outputs(X)
        return out if self.training else self.combine(out)

    def combine(self, out):
        """The members' outputs (B, k, T*max_out) combined into (B, T*max_out) (see the
        module docstring)."""
        return self.combination(out)


class MemberMean(nn.Module):
    """The mean prediction of k networks' packed outputs: (B, k, T*stride) -> (B,
    T*stride). Regression tasks: the mean output (of the standardised value; of the
    log-rate for 'poisson'); binary tasks: the logit of the mean probability;
    multiclass tasks: the log of the mean softmax, which a softmax maps back to the
    mean probabilities.

    Parameters
    ----------
    kinds : list of str
        Each task's kind ('regression', 'binary', 'multiclass').
    n_outputs : list of int
        Each task's number of output columns.
    stride : int
        Columns per task in the packed output.
    """

    def __init__(self, kinds, n_outputs, stride):
        super().__init__()
        self.n_tasks = len(kinds)
        selector = torch.full((self.n_tasks, stride), _MEAN, dtype=torch.int64)
        pad = torch.zeros((self.n_tasks, stride), dtype=torch.bool)
        for t, (kind, n) in enumerate(zip(kinds, n_outputs)):
            if kind == "binary":
                selector[t, 0] = _BINARY
            elif kind == "multiclass":
                selector[t, :n] = _MULTICLASS
                pad[t, n:] = True
        self.register_buffer("_selector", selector, persistent=False)
        self.register_buffer("_pad", pad, persistent=False)
        self._has_multiclass = "multiclass" in kinds
        self._has_binary = "binary" in kinds

    def forward(self, out):
        B, k = out.shape[0], out.shape[1]
        if k == 1:  # one network: its outputs as they are
            return out[:, 0]
        per_task = out.view(B, k, self.n_tasks, -1)
        result = per_task.mean(1)
        if self._has_binary:
            # logit of the mean probability, from log-probabilities (no overflow).
            logit = (torch.logsumexp(F.logsigmoid(per_task), 1)
                     - torch.logsumexp(F.logsigmoid(-per_task), 1))
            result = torch.where(self._selector == _BINARY, logit, result)
        if self._has_multiclass:
            # Padded columns take no part in a task's softmax.
            masked = per_task.masked_fill(self._pad, float("-inf"))
            log_mean = torch.logsumexp(torch.log_softmax(masked, -1), 1) - math.log(k)
            result = torch.where(self._selector == _MULTICLASS, log_mean, result)
        return result.reshape(B, -1)


def check_ensemble_options(params):
    """Raise ValueError for the task options an ensemble does not support."""
    if params.head_inputs or params.depths:
        option = "head_inputs" if params.head_inputs else "task_depth"
        raise ValueError(
            f"ensemble_size > 1 cannot be combined with {option}: those heads run one task "
            "at a time, with no member axis. Use ensemble_size=1 with it, or drop it.")


def check_ensemble_weighting(n_members, weighting):
    """Raise ValueError when a gradient-based weighting meets more than one member."""
    if n_members > 1 and weighting.needs_grads is not None:
        raise ValueError(
            f"ensemble_size={n_members} cannot be combined with the gradient-based weighting "
            f"{type(weighting).__name__}: it combines per-task gradients of one shared "
            "representation, and the members' task gradients are not separable from it. Use "
            "a loss-based weighting (e.g. 'static', 'uncertainty', 'dwa') or ensemble_size=1.")


def member_task_losses(losses, denominators, member_weights=None):
    """Reduce per-(member, task) losses to per-task ones.

    Parameters
    ----------
    losses, denominators : tensors (k, T)
        The criterion's per-(member, task) weighted mean losses and label-weight
        sums.
    member_weights : tensor (k, T) or None
        The member loss weights (None: all ones).

    Returns
    -------
    logged : tensor (T,)
        Per-task member means, each (member, row) pair counted once: what the
        history records.
    combined : tensor (T,)
        The member means of the member-weighted task losses: what the weighting
        strategy combines.
    denominators : tensor (T,)
        The member mean of the label-weight sums (0: no member has a label of the
        task in the batch).
    """
    k = losses.shape[0]
    total = denominators.sum(0)
    logged = (losses * denominators).sum(0) / total.clamp_min(1e-12)
    weighted = losses if member_weights is None else losses * member_weights
    return logged, weighted.mean(0), total / k


def check_member_weights(member_weights, n_members, n_tasks):
    """``member_weights`` as a float32 (k, T) array, or None for all ones."""
    if member_weights is None:
        return None
    weights = np.asarray(member_weights, dtype=np.float32)
    if weights.shape != (n_members, n_tasks):
        raise ValueError(f"member_weights must have shape (n_members, n_tasks) = "
                         f"({n_members}, {n_tasks}); got {weights.shape}.")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("member_weights must be finite and non-negative.")
    return weights


def with_member_masks(targets, masks):
    """The target matrix (n, 2T) with member row masks (n, k) appended: (n, 2T + k).

    ``masks[i, m]`` is 1 where member m trains on row i, 0 where it does not.
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim != 2 or masks.shape[0] != targets.shape[0]:
        raise ValueError(f"masks must have shape (n_rows, n_members) with n_rows = "
                         f"{targets.shape[0]}; got {masks.shape}.")
    if not np.isin(masks, (0.0, 1.0)).all():
        raise ValueError("masks must hold 0 (row left out) or 1 (row trained on) only.")
    return np.hstack([np.asarray(targets, dtype=np.float32), masks])
