"""Cross-stitch networks: per-task towers that exchange activations."""

from numbers import Real

import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from ._base import Architecture
from ._utils import ParallelMLP, broadcast


class CrossStitch(Architecture):
    """Cross-stitch networks (Misra et al., "Cross-stitch Networks for
    Multi-task Learning", CVPR 2016).

    One MLP tower per task. After every hidden layer a learned cross-stitch
    unit replaces each task's activations by a linear combination of all
    tasks' activations at that layer: ``h'_t = sum_s alpha[t, s] h_s`` with
    one T x T matrix alpha per layer (one scalar per task pair, shared by all
    units of the layer). The network learns how much to share at each depth.

    Parameters
    ----------
    init_self : float, default=0.9
        Initial diagonal of every alpha, in [0, 1]. The off-diagonal entries
        start at ``(1 - init_self) / (T - 1)`` so each row sums to 1 (with a
        single task alpha is [[1]]). ``init_self=1`` starts from independent
        towers, ``1 / T`` from towers that all read the average.

    Notes
    -----
    Each tower is an MLP with the estimator's ``hidden_layer_sizes``,
    ``activation`` and ``dropout`` (layer order: linear, activation, dropout,
    cross-stitch). The T towers run as one batched product per layer and each
    unit is one product. The alphas are trained like any parameter and
    are not constrained. The built module returns (B, T, D), D the last hidden
    size (``per_task=True``); its ``alphas`` (a ``ParameterList``, one (T, T)
    matrix per hidden layer) can be inspected after fitting.
    """

    _parameter_constraints: dict = {"init_self": [Interval(Real, 0, 1, closed="both")]}

    def __init__(self, init_self=0.9):
        self.init_self = init_self

    def build(self, n_features, n_tasks, hidden_layer_sizes, activation, dropout):
        n_features, n_tasks, sizes = self._check_build_args(n_features, n_tasks,
                                                            hidden_layer_sizes)
        return CrossStitchModule(n_features, n_tasks, sizes, activation, dropout,
                                 init_self=float(self.init_self))


def initial_alpha(n_tasks, init_self):
    """T x T mix with ``init_self`` on the diagonal and rows summing to 1."""
    if n_tasks == 1:
        return torch.ones(1, 1)
    alpha = torch.full((n_tasks, n_tasks), (1.0 - init_self) / (n_tasks - 1))
    alpha.fill_diagonal_(init_self)
    return alpha


class CrossStitchModule(nn.Module):
    """Per-task towers with a cross-stitch unit after each hidden layer."""

    per_task = True

    def __init__(self, n_features, n_tasks, hidden_layer_sizes, activation="relu", dropout=0.0,
                 init_self=0.9):
        super().__init__()
        self.n_tasks = n_tasks
        towers = ParallelMLP(n_features, n_tasks, hidden_layer_sizes, activation, dropout)
        # The towers' blocks, applied one at a time so a cross-stitch unit sits between them.
        self.blocks = towers.blocks
        n_in = towers.out_features
        self.alphas = nn.ParameterList(
            nn.Parameter(initial_alpha(n_tasks, init_self)) for _ in hidden_layer_sizes
        )
        self.out_features = n_in

    def forward(self, X):
        h = X
        for block, alpha in zip(self.blocks, self.alphas, strict=True):
            # One call mixes every task. einsum folds the batch into a single
            # (T, T) x (T, B*D) product; a broadcast matmul would run B small
            # products and is 2-3x slower forward + backward.
            h = torch.einsum("ts,bsd->btd", alpha, block(h))
        return broadcast(h, self.n_tasks)

    def shared_parameters(self):
        """Every parameter: the cross-stitch units feed each tower's activations to
        every task, so all towers and units move every task's loss."""
        return list(self.parameters())

    def extra_repr(self):
        return f"n_tasks={self.n_tasks}"
