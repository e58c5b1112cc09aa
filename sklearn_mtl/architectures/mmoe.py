"""Multi-gate mixture of experts."""

from numbers import Integral

import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from ._base import Architecture
from ._utils import LAYER_SIZES, ParallelMLP, check_layer_sizes, layer_sizes


class MMoE(Architecture):
    """Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships
    in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018).

    A pool of expert networks is shared by all tasks; each task has its own
    softmax gate, a linear map of the input, that weighs the experts. Task
    t's representation is ``sum_e g_t(x)[e] * expert_e(x)``, so tasks that
    need different things can rely on different experts.

    Parameters
    ----------
    n_experts : int, default=4
        Number of experts (>= 1).
    expert_hidden : tuple of int or None, default=None
        Layer sizes of each expert. None uses the estimator's
        ``hidden_layer_sizes``; when given it replaces them (the estimator's
        sizes are then unused by this architecture).

    Notes
    -----
    Every expert is an MLP with those sizes and the estimator's
    ``activation`` and ``dropout``; the experts run as one batched product
    per layer, all gates as one ``Linear(n_features, T * n_experts)`` (none
    with a single expert, whose weight is then always 1). The
    built module returns (B, T, D), D the experts' last hidden size
    (``per_task=True``). Gate weights: ``module.gates(X)`` returns them
    (B, T, n_experts); setting ``module.keep_gates = True`` keeps the last
    forward pass's (detached) in ``module.last_gates_``.
    """

    _parameter_constraints: dict = {
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "expert_hidden": [None, *LAYER_SIZES],
    }

    def __init__(self, n_experts=4, expert_hidden=None):
        self.n_experts = n_experts
        self.expert_hidden = expert_hidden

    def build(self, n_features, n_tasks, hidden_layer_sizes, activation, dropout):
        n_features, n_tasks, sizes = self._check_build_args(n_features, n_tasks,
                                                            hidden_layer_sizes)
        if self.expert_hidden is not None:
            sizes = layer_sizes(self.expert_hidden)
        return MMoEModule(n_features, n_tasks, int(self.n_experts), sizes, activation, dropout)

    def _check_params(self):
        if self.expert_hidden is not None:
            check_layer_sizes("expert_hidden", self.expert_hidden, type(self).__name__)


class MMoEModule(nn.Module):
    """Shared experts mixed by one softmax gate per task."""

    per_task = True

    def __init__(self, n_features, n_tasks, n_experts, hidden_layer_sizes, activation="relu",
                 dropout=0.0):
        super().__init__()
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.experts = ParallelMLP(n_features, n_experts, hidden_layer_sizes, activation, dropout)
        # A softmax over one expert is constantly 1: no gate parameters then.
        self.gate = nn.Linear(n_features, n_tasks * n_experts) if n_experts > 1 else None
        self.out_features = self.experts.out_features
        self.keep_gates = False
        self.last_gates_ = None

    def _gates(self, X):
        if self.gate is None:
            return X.new_ones(X.shape[0], self.n_tasks, 1)
        logits = self.gate(X).view(X.shape[0], self.n_tasks, self.n_experts)
        return torch.softmax(logits, dim=-1)

    def forward(self, X):
        gates = self._gates(X)
        if self.keep_gates:
            self.last_gates_ = gates.detach()
        # (B, T, E) @ (B, E, D): every task's mixture in one bmm.
        return torch.bmm(gates, self.experts(X))

    def shared_parameters(self):
        """The parameters every task's loss depends on: the experts.

        Each task's gate (its rows of ``gate``) only moves its own task, so
        the gradient-combining strategies leave it to that task's gradient.
        """
        return list(self.experts.parameters())

    @torch.no_grad()
    def gates(self, X):
        """Gate weights (B, T, n_experts) for input X; each row is on the simplex."""
        return self._gates(X)

    def extra_repr(self):
        return f"n_tasks={self.n_tasks}, n_experts={self.n_experts}"
