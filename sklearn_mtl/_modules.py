"""Torch building blocks: the MLP trunk, the task heads and the multi-task module."""

import math

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}

ACTIVATION_NAMES = tuple(sorted(_ACTIVATIONS))


def make_activation(activation):
    """A fresh activation module from its name (the names of ``ACTIVATION_NAMES``)."""
    return _ACTIVATIONS[activation]()


def make_mlp(n_in, hidden_layer_sizes, activation="relu", dropout=0.0):
    """Linear -> activation (-> dropout) for each hidden size.

    Returns ``(module, n_out)``; with no hidden sizes the module is the identity.
    """
    layers = []
    for width in hidden_layer_sizes:
        layers.append(nn.Linear(n_in, width))
        layers.append(make_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
        n_in = width
    return nn.Sequential(*layers), n_in


class MLPTrunk(nn.Module):
    """The hard-sharing trunk: one MLP whose output every head reads."""

    per_task = False

    def __init__(self, n_features, hidden_layer_sizes, activation="relu", dropout=0.0):
        super().__init__()
        self.layers, self.out_features = make_mlp(n_features, hidden_layer_sizes, activation, dropout)

    def forward(self, X):
        return self.layers(X)


class TaskParallelLinear(nn.Module):
    """T independent linear maps evaluated as one batched product.

    Weight (in_features, T, out_features): task t's map is ``weight[:, t, :]``,
    initialised like ``nn.Linear(in_features, out_features)``. Input is either
    shared (B, in) -- one ``addmm`` against the (in, T*out) view -- or per task
    (B, T, in). Output is (B, T, out). One product instead of T small ones is
    what makes many small heads cheap: at these sizes each torch call costs more
    than its arithmetic.
    """

    def __init__(self, in_features, n_tasks, out_features):
        super().__init__()
        self.in_features, self.n_tasks, self.out_features = in_features, n_tasks, out_features
        self.weight = nn.Parameter(torch.empty(in_features, n_tasks, out_features))
        self.bias = nn.Parameter(torch.empty(n_tasks, out_features))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.dim() == 2:
            flat = torch.addmm(
                self.bias.view(-1), x, self.weight.view(self.in_features, -1)
            )
            return flat.view(x.shape[0], self.n_tasks, self.out_features)
        # One baddbmm over the task axis (bias fused in); einsum's planning and
        # permutes made this layer about 1.5x slower forward+backward at tabular sizes.
        # The result is a transposed view of (T, B, out): no copy is made here.
        return torch.baddbmm(
            self.bias.unsqueeze(1), x.transpose(0, 1), self.weight.transpose(0, 1)
        ).transpose(0, 1)

    def extra_repr(self):
        return f"in_features={self.in_features}, n_tasks={self.n_tasks}, out_features={self.out_features}"


class TaskHeads(nn.Module):
    """One small MLP per task, all evaluated together.

    Every head has the same hidden sizes; the output layer is padded to the
    widest task (``max_out``) and each task reads its first ``n_outputs[t]``
    columns. The padded columns receive no gradient from the losses.
    Output (B, T * max_out), task t in columns ``t*max_out : t*max_out+n_outputs[t]``.
    """

    def __init__(self, in_features, n_outputs, hidden_layer_sizes=(20,), activation="relu",
                 dropout=0.0):
        super().__init__()
        self.n_outputs = tuple(int(k) for k in n_outputs)
        self.max_out = max(self.n_outputs)
        n_tasks = len(self.n_outputs)
        layers = []
        for width in hidden_layer_sizes:
            layers.append(TaskParallelLinear(in_features, n_tasks, width))
            layers.append(make_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_features = width
        layers.append(TaskParallelLinear(in_features, n_tasks, self.max_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, representation):
        out = self.layers(representation)
        return out.reshape(out.shape[0], -1)


class MultiTaskModule(nn.Module):
    """Representation module (trunk or architecture) followed by the task heads.

    Returns one packed tensor rather than a dict: skorch's batched ``forward``
    and ``predict_proba`` concatenate tensors natively, and the engine knows
    the layout. When ``keep_representation`` is set, the last representation
    is kept in ``representation_`` for per-task gradient methods.
    """

    #: Whether forward checks that the trunk keeps the batch's rows (user trunks).
    check_rows = False

    def __init__(self, trunk, heads):
        super().__init__()
        self.trunk = trunk
        self.heads = heads
        self.keep_representation = False
        self.representation_ = None

    def forward(self, X):
        representation = self.trunk(X)
        if self.check_rows and representation.shape[0] != X.shape[0]:
            # A user trunk that drops or adds rows would otherwise train on broadcast
            # outputs; one integer comparison per step.
            raise ValueError(
                f"module {type(self.trunk).__name__} returned {representation.shape[0]} rows "
                f"for a batch of {X.shape[0]}; it must return one row per input row.")
        if self.keep_representation:
            self.representation_ = representation
        return self.heads(representation)

    def __getstate__(self):
        # The kept representation belongs to one training step's graph: copies and
        # pickles leave it out.
        state = super().__getstate__()
        state["representation_"] = None
        return state

    def penalty(self):
        penalty = getattr(self.trunk, "penalty", None)
        return penalty() if penalty is not None else None
