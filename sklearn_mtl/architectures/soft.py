"""Soft parameter sharing: one tower per task, pulled together by a penalty."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._base import Architecture
from ._utils import ParallelMLP, zero_scalar


class SoftSharing(Architecture):
    """Soft parameter sharing: a separate tower per task, regularised together.

    Each task gets its own MLP tower; nothing is shared in the forward pass.
    Instead the towers' parameters are tied by an L2 penalty on their
    differences, as in Duong et al., "Low Resource Dependency Parsing:
    Cross-lingual Parameter Sharing in a Neural Network Parser" (ACL 2015)
    and the soft-sharing setting reviewed by Ruder, "An Overview of
    Multi-Task Learning in Deep Neural Networks" (2017). A small penalty lets
    the towers drift apart; a large one pushes them towards hard sharing.

    Parameters
    ----------
    penalty : float, default=1e-2
        Strength lambda (>= 0) of the penalty the engine adds to the training
        loss. 0 makes the towers fully independent.
    to : {"mean", "pairwise"}, default="mean"
        ``"mean"``: lambda * sum over towers t of ||theta_t - mean_s theta_s||^2.
        ``"pairwise"``: lambda * sum over pairs s < t of ||theta_s - theta_t||^2,
        which equals T times the ``"mean"`` value (computed that way, so it
        costs no more than ``"mean"``).

    Notes
    -----
    Each tower is an MLP with the estimator's ``hidden_layer_sizes``,
    ``activation`` and ``dropout``; the T towers run as one batched product
    per layer. The built module returns (B, T, D), D the last hidden size
    (``per_task=True``); with no hidden sizes every task reads the input and
    the penalty is 0. The penalty covers all tower weights and biases.
    """

    _parameter_constraints: dict = {
        "penalty": [Interval(Real, 0, None, closed="left")],
        "to": [StrOptions({"mean", "pairwise"})],
    }

    def __init__(self, penalty=1e-2, to="mean"):
        self.penalty = penalty
        self.to = to

    def build(self, n_features, n_tasks, hidden_layer_sizes, activation, dropout):
        n_features, n_tasks, sizes = self._check_build_args(n_features, n_tasks,
                                                            hidden_layer_sizes)
        return SoftSharingModule(n_features, n_tasks, sizes, activation, dropout,
                                 strength=float(self.penalty), to=self.to)


class SoftSharingModule(nn.Module):
    """The T towers of :class:`SoftSharing`; ``penalty()`` ties them."""

    per_task = True

    def __init__(self, n_features, n_tasks, hidden_layer_sizes, activation="relu", dropout=0.0,
                 strength=1e-2, to="mean"):
        super().__init__()
        self.n_tasks = n_tasks
        self.strength = strength
        # Not ``self.to``: that would shadow nn.Module.to().
        self.target = to
        self.towers = ParallelMLP(n_features, n_tasks, hidden_layer_sizes, activation, dropout)
        self.out_features = self.towers.out_features

    def forward(self, X):
        return self.towers(X)

    def shared_parameters(self):
        """None: each tower serves one task (the penalty ties them, not shared use).

        The gradient-combining strategies then reduce to the static weighted sum.
        """
        return []

    def distance(self):
        """Sum over towers of the squared distance of their parameters to the towers' mean.

        Unscaled (no lambda); a 0-d tensor that carries gradient.
        """
        linears = self.towers.linears()
        if not linears:
            return zero_scalar(self)
        # One (T, n_params) matrix, a row per tower: a handful of ops in total
        # instead of several per parameter tensor (per-op overhead dominates).
        rows = torch.cat([
            part
            for linear in linears
            for part in (linear.weight.transpose(0, 1).reshape(self.n_tasks, -1), linear.bias)
        ], dim=1)
        return (rows - rows.mean(0)).pow(2).sum()

    def penalty(self):
        """lambda times the mean or pairwise distance (see :class:`SoftSharing`)."""
        if self.strength == 0:
            # Skip the graph entirely: independent towers cost nothing extra.
            return zero_scalar(self)
        # sum_{s<t} ||a_s - a_t||^2 == T * sum_t ||a_t - mean(a)||^2
        scale = self.n_tasks if self.target == "pairwise" else 1
        return (self.strength * scale) * self.distance()

    def extra_repr(self):
        return f"n_tasks={self.n_tasks}, strength={self.strength}, to={self.target!r}"
