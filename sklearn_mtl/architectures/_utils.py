"""Shared building blocks of the architectures, and their layer-size parameters."""

from numbers import Integral

import torch
from sklearn.utils._param_validation import Interval, InvalidParameterError
from torch import nn

from .._modules import TaskParallelLinear, make_activation

#: Declared constraints of a layer-size parameter: an int (one layer) or a
#: sequence; its entries are checked by :func:`check_layer_sizes`.
LAYER_SIZES = ["array-like", Interval(Integral, 1, None, closed="left")]


def check_layer_sizes(name, value, caller_name):
    """Raise ``InvalidParameterError`` naming ``name`` unless ``value`` (an int or
    a sequence, see :data:`LAYER_SIZES`) has only ints >= 1."""
    sizes = (value,) if isinstance(value, Integral) else value
    if any(isinstance(w, bool) or not isinstance(w, Integral) or w < 1 for w in sizes):
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller_name} must be an int in the range [1, inf) "
            f"or a sequence of such ints. Got {value!r} instead."
        )


def layer_sizes(value):
    """A checked layer-size value as a tuple of ints (a bare int is one layer)."""
    if isinstance(value, Integral):
        return (int(value),)
    return tuple(int(w) for w in value)


class ParallelMLP(nn.Module):
    """``n_parallel`` independent MLPs of identical shape, evaluated together.

    Each layer is one :class:`~sklearn_mtl._modules.TaskParallelLinear`, so a
    forward pass costs one batched product per layer whatever ``n_parallel``.
    Input (B, n_in) -- the same input for every MLP, the first layer is then a
    single ``addmm`` -- or (B, n_parallel, n_in); output (B, n_parallel,
    out_features). With no hidden sizes it is the identity (a shared input is
    broadcast, as a view, to every MLP).
    """

    def __init__(self, n_in, n_parallel, hidden_layer_sizes, activation="relu", dropout=0.0):
        super().__init__()
        self.n_parallel = n_parallel
        blocks = []
        for width in hidden_layer_sizes:
            block = [TaskParallelLinear(n_in, n_parallel, width), make_activation(activation)]
            if dropout:
                block.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*block))
            n_in = width
        self.blocks = nn.ModuleList(blocks)
        self.out_features = n_in

    def linears(self):
        """The TaskParallelLinear of each layer, input side first."""
        return [block[0] for block in self.blocks]

    def forward(self, x):
        if not len(self.blocks):
            return broadcast(x, self.n_parallel)
        for block in self.blocks:
            x = block(x)
        return x


def broadcast(x, n):
    """(B, F) -> (B, n, F) view; a (B, n, F) input is returned as is."""
    if x.dim() == 2:
        return x.unsqueeze(1).expand(x.shape[0], n, x.shape[1])
    return x


def zero_scalar(module):
    """A 0-d zero on the device and dtype of ``module``'s parameters."""
    param = next(module.parameters(), None)
    if param is None:
        return torch.zeros(())
    return param.new_zeros(())
