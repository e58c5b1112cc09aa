"""Heads that read other heads or shallower layers: hierarchical multi-task learning.

``head_inputs={'stay': ['disease']}`` feeds the disease head's raw output
(logits, or the standardised regression value) to the stay head together
with the representation, trained end to end, so a higher-level task builds
on lower-level ones. ``task_depth={'easy': 1}`` supervises a task at the
first shared layer instead of the last, lower-level tasks at lower layers
(Søgaard & Goldberg 2016, "Deep multi-task learning with low level tasks
supervised at lower layers"; Hashimoto et al. 2017, "A Joint Many-Task
Model").

These heads run one task at a time in dependency order; the plain fused
:class:`~sklearn_mtl._modules.TaskHeads` is used whenever neither option is set.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ._modules import MLPTrunk, make_mlp


def dependency_order(names, head_inputs):
    """Task indices in an order where every head comes after the heads it reads.

    Raises ValueError naming a cycle, an unknown task or a self-reference.
    """
    index = {name: i for i, name in enumerate(names)}
    inputs = {}
    for task, sources in (head_inputs or {}).items():
        if task not in index:
            raise ValueError(
                f"head_inputs names unknown task '{task}'; the tasks are {list(names)}."
            )
        if isinstance(sources, str):
            sources = [sources]
        for source in sources:
            if source not in index:
                raise ValueError(
                    f"head_inputs['{task}'] names unknown task '{source}'; the tasks are "
                    f"{list(names)}."
                )
            if source == task:
                raise ValueError(f"head_inputs['{task}'] names the task itself; a head cannot "
                                 "read its own output.")
        inputs[task] = list(sources)
    order, state = [], {}  # state: 1 visiting, 2 done

    def visit(name, path):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ValueError(
                f"head_inputs has a cycle: {' reads '.join(cycle)}; heads must form a hierarchy "
                "(no head may depend on its own output)."
            )
        state[name] = 1
        for source in inputs.get(name, []):
            visit(source, path + [name])
        state[name] = 2
        order.append(index[name])

    for name in names:
        visit(name, [])
    return order, {index[t]: [index[s] for s in src] for t, src in inputs.items()}


class LayerOutputsTrunk(MLPTrunk):
    """An MLP trunk that returns the output of every hidden layer (for ``task_depth``):
    a list, entry k the output of block k+1 (Linear -> activation (-> dropout))."""

    def forward(self, X):
        outputs = []
        layers = list(self.layers)
        for i, layer in enumerate(layers):
            X = layer(X)
            if i + 1 == len(layers) or isinstance(layers[i + 1], nn.Linear):
                outputs.append(X)
        return outputs


class GraphHeads(nn.Module):
    """One head per task, each reading its representation and the outputs it names.

    Parameters
    ----------
    in_features : list of int
        Width of the representation each task reads.
    n_outputs : list of int
        Output columns of each task.
    hidden_layer_sizes, activation, dropout
        Each head's hidden layers.
    order : list of int
        Evaluation order (see :func:`dependency_order`).
    sources : dict int -> list of int
        The heads whose outputs each task also reads.
    depths : list of int or None
        Which trunk layer (0-based index into the trunk's layer outputs) each
        task reads; None: the trunk returns one representation.

    Output: (B, T * max_out), task t in columns ``t*max_out : t*max_out + n_outputs[t]``,
    the same packed layout as :class:`~sklearn_mtl._modules.TaskHeads`.
    """

    def __init__(self, in_features, n_outputs, hidden_layer_sizes, activation, dropout, order,
                 sources, depths=None):
        super().__init__()
        self.n_outputs = tuple(int(k) for k in n_outputs)
        self.max_out = max(self.n_outputs)
        self.order, self.sources, self.depths = list(order), dict(sources), depths
        heads = []
        for t, width in enumerate(in_features):
            extra = sum(self.n_outputs[s] for s in self.sources.get(t, []))
            mlp, n_in = make_mlp(width + extra, hidden_layer_sizes, activation, dropout)
            heads.append(nn.Sequential(mlp, nn.Linear(n_in, self.n_outputs[t])))
        self.heads = nn.ModuleList(heads)

    def _representation(self, representation, t):
        if self.depths is not None:
            return representation[self.depths[t]]
        if representation.dim() == 3:
            return representation[:, t]
        return representation

    def forward(self, representation):
        outputs = [None] * len(self.heads)
        for t in self.order:
            parts = [self._representation(representation, t)]
            parts += [outputs[s] for s in self.sources.get(t, [])]
            x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            outputs[t] = self.heads[t](x)
        padded = [F.pad(out, (0, self.max_out - out.shape[1])) if out.shape[1] < self.max_out
                  else out for out in outputs]
        return torch.cat(padded, 1)
