"""A training step of the built-in network with its gradients written out.

At tabular sizes a step is a few dozen small kernels, and autograd's
bookkeeping around them (recording the graph, scheduling its nodes,
accumulating into ``.grad``) costs as much as the kernels themselves. For the
network the estimator builds -- an :class:`~sklearn_mtl._modules.MLPTrunk` and
:class:`~sklearn_mtl._modules.TaskHeads` of linear layers and element-wise
activations -- the backward pass is short to write out: per layer one product
for the weight gradient, one sum for the bias and one product for the input
gradient. :class:`DirectStep` runs the forward pass keeping what the backward
pass needs, the losses and their derivatives in closed form
(:meth:`~sklearn_mtl._losses.MultiTaskLoss.element_losses_and_grads`), and
writes every parameter's gradient into ``.grad``: the same values autograd
computes (tested against it), from about half the time per step.

The loss-weighting strategy stays generic: its ``combine`` runs under autograd
on a leaf copy of the (T,) task losses, which gives ``dLoss/dL_t`` and the
gradients of any parameters it has (a graph of a few nodes, not of the
network). Strategies that need per-task gradients, user modules, frozen
parameters, hooks, other activations, bf16 and compiled modules keep the
autograd step: :meth:`DirectStep.for_net` returns None for them.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_globals

from ._modules import MLPTrunk, MultiTaskModule, TaskHeads, TaskParallelLinear
from .weighting.static import StaticState


def _relu_grad(out, module):
    return out > 0


def _tanh_grad(out, module):
    return 1.0 - out * out


def _sigmoid_grad(out, module):
    return out * (1.0 - out)


def _leaky_relu_grad(out, module):
    # out > 0 exactly where the input is > 0 (the slope is positive).
    return torch.where(out > 0, 1.0, module.negative_slope).to(out.dtype)


def _elu_grad(out, module):
    return torch.where(out > 0, torch.ones((), dtype=out.dtype), out + module.alpha)


#: Activation module type -> (forward, derivative from the output). Identity is 1.
_ACTIVATIONS = {
    nn.ReLU: (torch.relu, _relu_grad),
    nn.Tanh: (torch.tanh, _tanh_grad),
    nn.Sigmoid: (torch.sigmoid, _sigmoid_grad),
    nn.LeakyReLU: (lambda x, m: F.leaky_relu(x, m.negative_slope), _leaky_relu_grad),
    nn.ELU: (lambda x, m: F.elu(x, m.alpha), _elu_grad),
}
_ONE_ARG = (nn.ReLU, nn.Tanh, nn.Sigmoid)


def _plan_layers(sequential, linear_type):
    """[(kind, module)] for a Sequential of linear layers, supported activations and
    dropout, or None when a layer is anything else."""
    plan = []
    for layer in sequential:
        kind = type(layer)
        if kind is linear_type:
            if linear_type is nn.Linear and layer.bias is None:
                return None
            plan.append(("linear", layer))
        elif kind in _ACTIVATIONS and not getattr(layer, "inplace", False):
            plan.append(("activation", layer))
        elif kind is nn.Identity:
            continue
        elif kind is nn.Dropout and not layer.inplace:
            plan.append(("dropout", layer))
        else:
            return None
    return plan


def _hooked(module):
    if (_module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks
            or _module_globals._global_backward_hooks
            or _module_globals._global_backward_pre_hooks):
        return True
    for m in module.modules():
        if (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or m._backward_pre_hooks):
            return True
    return any(p._backward_hooks for p in module.parameters())


class DirectStep:
    """Forward, closed-form losses and written-out backward of the built-in network
    (see the module docstring). Call it with a batch's ``(X, y)``; it returns
    the step's per-task losses, label-weight sums, strategy weights, total loss
    and outputs, and leaves every parameter's gradient in ``.grad``."""

    def __init__(self, net, trunk_plan, head_plan):
        self.net = net
        self.device = next(net.module_.parameters()).device
        self.trunk_plan, self.head_plan = trunk_plan, head_plan
        self.criterion = net.criterion_
        self.n_tasks = self.criterion.n_tasks
        self.state = net.weighting_
        self.static = type(self.state) is StaticState
        self.strategy_params = [p for p in self.state.parameters() if p.requires_grad]
        self.l1_weights = ([p for name, p in net.module_.named_parameters()
                            if name.rsplit(".", 1)[-1] == "weight"] if net.l1 else [])

    @classmethod
    def for_net(cls, net):
        """A :class:`DirectStep` for ``net`` in its current configuration, or None."""
        module = getattr(net, "module_", None)
        if (type(module) is not MultiTaskModule or module.check_rows
                or module.keep_representation or net.compile or net.precision != "float32"
                or type(module.trunk) is not MLPTrunk or type(module.heads) is not TaskHeads
                or net.weighting.needs_grads is not None or not net.criterion_.closed_form
                or net.member_weights is not None or _hooked(module)
                or not all(p.requires_grad and p.dtype == torch.float32
                           for p in module.parameters())):
            return None
        trunk_plan = _plan_layers(module.trunk.layers, nn.Linear)
        head_plan = _plan_layers(module.heads.layers, TaskParallelLinear)
        if trunk_plan is None or head_plan is None:
            return None
        return cls(net, trunk_plan, head_plan)

    # ------------------------------------------------------------------
    # Layers: forward keeps (kind, module, kept) per layer, backward pops it.

    @staticmethod
    def _forward(plan, h, tape):
        for kind, layer in plan:
            if kind == "linear":
                tape.append((kind, layer, h))
                if isinstance(layer, nn.Linear):
                    h = torch.addmm(layer.bias, h, layer.weight.t())
                elif h.dim() == 2:
                    h = torch.addmm(layer.bias.view(-1), h, layer.weight.view(layer.in_features, -1)
                                    ).view(h.shape[0], layer.n_tasks, layer.out_features)
                else:
                    h = torch.baddbmm(layer.bias.unsqueeze(1), h.transpose(0, 1),
                                      layer.weight.transpose(0, 1)).transpose(0, 1)
            elif kind == "activation":
                forward, _ = _ACTIVATIONS[type(layer)]
                h = forward(h) if type(layer) in _ONE_ARG else forward(h, layer)
                tape.append((kind, layer, h))
            elif layer.p > 0:  # dropout, as torch draws it: a Bernoulli mask scaled by 1/(1-p)
                if layer.p >= 1:
                    mask = torch.zeros_like(h)
                else:
                    mask = torch.empty_like(h).bernoulli_(1 - layer.p).div_(1 - layer.p)
                h = h * mask
                tape.append((kind, layer, mask))
        return h

    @staticmethod
    def _backward(tape, g, grads, need_input_grad):
        """Back through ``tape`` from the output gradient ``g``; parameter gradients
        go to ``grads`` (param -> tensor). Returns the input's gradient (None when
        not needed)."""
        while tape:
            kind, layer, kept = tape.pop()
            if kind == "activation":
                _, derivative = _ACTIVATIONS[type(layer)]
                d = derivative(kept, layer)
                g = g * d
            elif kind == "dropout":
                g = g * kept
            elif isinstance(layer, nn.Linear):
                grads[layer.weight] = g.t().mm(kept)
                grads[layer.bias] = g.sum(0)
                g = g.mm(layer.weight) if (tape or need_input_grad) else None
            elif kept.dim() == 2:
                flat = g.reshape(g.shape[0], -1)
                W = layer.weight.view(layer.in_features, -1)
                grads[layer.weight] = kept.t().mm(flat).view_as(layer.weight)
                grads[layer.bias] = flat.sum(0).view_as(layer.bias)
                g = flat.mm(W.t()) if (tape or need_input_grad) else None
            else:
                gT, xT = g.transpose(0, 1), kept.transpose(0, 1)  # (T, B, out), (T, B, in)
                grads[layer.weight] = torch.bmm(xT.transpose(1, 2), gT).transpose(0, 1).contiguous()
                grads[layer.bias] = g.sum(0)
                g = torch.bmm(gT, layer.weight.permute(1, 2, 0)).transpose(0, 1) \
                    if (tape or need_input_grad) else None
        return g

    # ------------------------------------------------------------------

    def _strategy(self, losses, present):
        """(total loss, dLoss/dL (T,), the strategy's weights) of this step."""
        normalization = getattr(self.net, "loss_normalization_", None)
        normalized = normalization is not None and normalization.active
        if self.static and not normalized:
            step = self.state.combine(losses, present)
            return step.loss, step.weights, step.weights
        leaf = losses.detach().requires_grad_()
        with torch.enable_grad():
            scaled = normalization(leaf, present)[0] if normalized else leaf
            step = self.state.combine(scaled, present)
            grads = torch.autograd.grad(step.loss, [leaf] + self.strategy_params,
                                        allow_unused=True)
        for p, g in zip(self.strategy_params, grads[1:]):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        a = torch.zeros_like(losses) if grads[0] is None else grads[0]
        return step.loss.detach(), a, step.weights

    def __call__(self, X, y):
        net = self.net
        T = self.n_tasks
        labels, weights = y[:, :T], y[:, T:2 * T]
        with torch.no_grad():
            trunk_tape, head_tape = [], []
            z = self._forward(self.trunk_plan, X, trunk_tape)
            out = self._forward(self.head_plan, z, head_tape)
            y_pred = out.reshape(out.shape[0], -1)
            E, D, multiclass = self.criterion.element_losses_and_grads(y_pred, labels)
            observed = weights > 0
            zero = torch.zeros((), dtype=E.dtype, device=E.device)
            E, D = torch.where(observed, E, zero), torch.where(observed, D, zero)
            denominators = weights.sum(0)
            safe = denominators.clamp_min(1e-12)
            losses = (weights * E).sum(0) / safe
            present = denominators > 0
            total, a, step_weights = self._strategy(losses, present)
            coef = torch.where(observed, weights / safe, zero)
            G = self.criterion.output_grad(coef * a, D, multiclass, y_pred.shape)
            grads = {}
            gz = self._backward(head_tape, G.view(out.shape), grads, need_input_grad=True)
            self._backward(trunk_tape, gz, grads, need_input_grad=False)
            if self.l1_weights:
                total = total + net.l1 * torch.stack([w.abs().sum() for w in self.l1_weights]).sum()
                for w in self.l1_weights:
                    grads[w] = grads[w] + net.l1 * w.sign()
            for p, g in grads.items():
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
        return losses, denominators, step_weights, total, y_pred
