"""Shared building blocks and argument checks of the architectures."""

import numbers

import torch
from torch import nn

from .._modules import TaskParallelLinear, make_activation


def check_int(name, value, minimum):
    """``value`` as an int, or ValueError when not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_sizes(name, sizes):
    """Layer sizes as a tuple of positive ints (a bare int means one layer)."""
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {sizes!r}.") from None
    for width in sizes:
        check_int(f"each entry of {name}", width, 1)
    return tuple(int(w) for w in sizes)


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
