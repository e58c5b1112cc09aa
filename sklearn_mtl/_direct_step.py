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
network). Strategies that combine per-task gradients get them the same way as
from :mod:`sklearn_mtl._gradients`, without its vmapped passes: each head
carries only its task's gradient, so one pass through the heads gives every
task's gradient of the representation (T, B, D), and one pass of that stack
through the trunk gives every task's gradient of the shared parameters, two
products per layer. User modules, frozen parameters, hooks, other
activations, bf16, compiled modules and loss normalisation with a gradient
method keep the autograd step: :meth:`DirectStep.for_net` returns None for them.

An ensemble of this network (:class:`~sklearn_mtl._ensemble.EnsembleModule`:
k members' scaled inputs through the shared trunk as k*B rows, k*T heads)
takes the same step with a member axis: the members' losses from the same
closed forms (member-major rows), their mean combined by the strategy, the
heads' input gradients summed over each member's tasks, and the adapters'
gradients from the trunk's input gradient.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_globals

from . import _gradients
from ._ensemble import EnsembleModule, member_task_losses
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
#: In-place forms, applied to a linear layer's output buffer.
_IN_PLACE = {
    nn.ReLU: lambda x, m: x.relu_(),
    nn.Tanh: lambda x, m: x.tanh_(),
    nn.Sigmoid: lambda x, m: x.sigmoid_(),
    nn.LeakyReLU: lambda x, m: F.leaky_relu_(x, m.negative_slope),
    nn.ELU: lambda x, m: F.elu_(x, m.alpha),
}


def _tanh_grad_into(out, buf):
    return torch.mul(out, out, out=buf).neg_().add_(1.0)


def _sigmoid_grad_into(out, buf):
    torch.mul(out, out, out=buf)
    return torch.sub(out, buf, out=buf)


#: Derivatives written into a buffer (ReLU's backward writes into the gradient instead).
_DERIVATIVE_INTO = {nn.Tanh: _tanh_grad_into, nn.Sigmoid: _sigmoid_grad_into}


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
        # The engine's own probe (KeepOutput) serves the autograd step only.
        forward = [h for h in m._forward_hooks.values()
                   if not isinstance(h, _gradients.KeepOutput)]
        if forward or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
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
        self.mode = net.weighting.needs_grads
        self.shared = _gradients.trunk_shared_parameters(net.module_.trunk)[0]
        self.head_linears = [layer for kind, layer in head_plan if kind == "linear"]
        self.static = type(self.state) is StaticState
        self.strategy_params = [p for p in self.state.parameters() if p.requires_grad]
        self.l1_weights = ([p for name, p in net.module_.named_parameters()
                            if name.rsplit(".", 1)[-1] == "weight"] if net.l1 else [])
        self._workspaces = {}  # batch rows -> {key: buffer}
        self._grads = {}  # parameter -> its gradient buffer
        self._flat = {}  # "shared" -> the flat buffer the shared gradient buffers view
        # Per-task gradients (T, P) of the shared parameters are laid out in the
        # order of ``shared``; the shared gradients are views of one flat buffer in
        # that layout, so the combined update is one product written in place.
        self._offsets, at = {}, 0
        for p in self.shared:
            self._offsets[p] = at
            at += p.numel()
        self.n_shared = at
        module = net.module_
        self.n_members = module.n_members if isinstance(module, EnsembleModule) else None

    @classmethod
    def for_net(cls, net):
        """A :class:`DirectStep` for ``net`` in its current configuration, or None."""
        module = getattr(net, "module_", None)
        mode = net.weighting.needs_grads
        normalization = getattr(net, "loss_normalization_", None)
        ensemble = type(module) is EnsembleModule
        if ((type(module) is not MultiTaskModule and not ensemble) or module.check_rows
                or net.compile or net.precision != "float32"
                or type(module.trunk) is not MLPTrunk or type(module.heads) is not TaskHeads
                or mode not in (None, "params", "representation")
                or (ensemble and mode is not None)
                or (mode is not None and (_gradients.GRADIENT_ENGINE != "batched" or (
                    normalization is not None and normalization.active)))
                or not net.criterion_.closed_form
                or (net.member_weights is not None and not ensemble) or _hooked(module)
                or not all(p.requires_grad and p.dtype == torch.float32
                           for p in module.parameters())):
            return None
        trunk_plan = _plan_layers(module.trunk.layers, nn.Linear)
        head_plan = _plan_layers(module.heads.layers, TaskParallelLinear)
        if trunk_plan is None or head_plan is None:
            return None
        return cls(net, trunk_plan, head_plan)

    # ------------------------------------------------------------------
    # Layers. Forward keeps (position, kind, module, kept) per layer on a tape,
    # backward pops it. Every batch-sized intermediate is written into a buffer of
    # the batch size's workspace (``out=`` and in-place ops), and the parameters'
    # gradients into buffers kept from step to step: no step allocates memory for
    # them, so none pays for the fresh pages a large allocation gets from the OS
    # (at batch 4096 that was about half of a step).

    @staticmethod
    def _buffer(ws, key, shape, like):
        buf = ws.get(key)
        if buf is None or buf.shape != shape:
            buf = ws[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def _forward(self, plan, h, tape, ws, prefix):
        owned = False  # whether h is a workspace buffer this pass may overwrite
        for i, (kind, layer) in enumerate(plan):
            key = (prefix, i)
            if kind == "linear":
                tape.append((key, kind, layer, h))
                B = h.shape[0]
                if isinstance(layer, nn.Linear):
                    h = torch.addmm(layer.bias, h, layer.weight.t(),
                                    out=self._buffer(ws, key, (B, layer.out_features), h))
                elif h.dim() == 2:
                    W = layer.weight.view(layer.in_features, -1)
                    h = torch.addmm(layer.bias.view(-1), h, W,
                                    out=self._buffer(ws, key, (B, W.shape[1]), h)
                                    ).view(B, layer.n_tasks, layer.out_features)
                else:
                    buf = self._buffer(ws, key, (layer.n_tasks, B, layer.out_features), h)
                    h = torch.baddbmm(layer.bias.unsqueeze(1), h.transpose(0, 1),
                                      layer.weight.transpose(0, 1), out=buf).transpose(0, 1)
                owned = True
            elif kind == "activation":
                forward, _ = _ACTIVATIONS[type(layer)]
                if owned and type(layer) in _IN_PLACE:
                    h = _IN_PLACE[type(layer)](h, layer)
                else:
                    h = forward(h) if type(layer) in _ONE_ARG else forward(h, layer)
                tape.append((key, kind, layer, h))
            elif layer.p > 0:  # dropout, as torch draws it: a Bernoulli mask scaled by 1/(1-p)
                # Laid out as h (torch's dropout draws into empty_like(h)), so that a
                # transposed h gets the masks autograd's step draws.
                mask = ws.get((prefix, i, "mask"))
                if mask is None or mask.shape != h.shape or mask.stride() != h.stride():
                    mask = ws[(prefix, i, "mask")] = torch.empty_like(h)
                if layer.p >= 1:
                    mask.zero_()
                else:
                    mask.bernoulli_(1 - layer.p).div_(1 - layer.p)
                h = torch.mul(h, mask, out=self._buffer(ws, (prefix, i, "out"), h.shape, h))
                tape.append((key, kind, layer, mask))
                owned = True
        return h

    def _backward(self, tape, g, ws, need_input_grad, per_task_input=False):
        """Back through ``tape`` from the output gradient ``g`` (which this pass may
        overwrite); parameter gradients go to the gradient buffers. Returns the
        input's gradient (None when not needed); with ``per_task_input`` (heads
        whose first layer reads a shared input) each task's part of it, (T, B, D)."""
        while tape:
            key, kind, layer, kept = tape.pop()
            more = bool(tape) or need_input_grad
            if per_task_input and not tape:
                # Task t's head reads the input through slice t of its first layer.
                flat = g.reshape(g.shape[0], layer.n_tasks, layer.out_features)
                torch.mm(kept.t(), flat.reshape(flat.shape[0], -1),
                         out=self._grad(layer.weight).view(layer.in_features, -1))
                torch.sum(flat, 0, out=self._grad(layer.bias))
                # g is usually the transpose of a (T, B, out) buffer: read it as that
                # (a product faster than one writing across the rows); the result is
                # laid out (T, B, D), the layout of the trunk's per-task pass.
                B, T, D = kept.shape[0], layer.n_tasks, layer.in_features
                return torch.bmm(g.transpose(0, 1), layer.weight.permute(1, 2, 0),
                                 out=self._buffer(ws, key + ("per_task",), (T, B, D), kept))
            if kind == "activation":
                derivative = _DERIVATIVE_INTO.get(type(layer))
                if derivative is not None:
                    g = g.mul_(derivative(kept, self._buffer(ws, key + ("d",), kept.shape, kept)))
                elif type(layer) is nn.ReLU:  # torch's own ReLU backward, into g
                    g = torch.ops.aten.threshold_backward.grad_input(g, kept, 0.0, grad_input=g)
                else:
                    g = g.mul_(_ACTIVATIONS[type(layer)][1](kept, layer))
            elif kind == "dropout":
                g = g.mul_(kept)
            elif isinstance(layer, nn.Linear):
                torch.mm(g.t(), kept, out=self._grad(layer.weight))
                torch.sum(g, 0, out=self._grad(layer.bias))
                g = torch.mm(g, layer.weight, out=self._buffer(
                    ws, key + ("in",), kept.shape, kept)) if more else None
            elif kept.dim() == 2:
                flat = g.reshape(g.shape[0], -1)
                W = layer.weight.view(layer.in_features, -1)
                torch.mm(kept.t(), flat, out=self._grad(layer.weight).view(W.shape))
                torch.sum(flat, 0, out=self._grad(layer.bias).view(-1))
                g = torch.mm(flat, W.t(), out=self._buffer(ws, key + ("in",), kept.shape, kept)) \
                    if more else None
            else:
                gT, xT = g.transpose(0, 1), kept.transpose(0, 1)  # (T, B, out), (T, B, in)
                per_task = self._buffer(ws, key + ("w",), (layer.n_tasks, layer.in_features,
                                                           layer.out_features), kept)
                torch.bmm(xT.transpose(1, 2), gT, out=per_task)
                self._grad(layer.weight).copy_(per_task.transpose(0, 1))
                torch.sum(g, 0, out=self._grad(layer.bias))
                if more:
                    buf = self._buffer(ws, key + ("in",), xT.shape, kept)
                    g = torch.bmm(gT, layer.weight.permute(1, 2, 0), out=buf).transpose(0, 1)
                else:
                    g = None
        return g

    def _per_task_backward(self, tape, J, ws):
        """Each task's gradients of the trunk's parameters from its part ``J`` (T, B, D)
        of the representation's gradient (overwritten), T backward passes run as one:
        the rows of a (T, P) buffer, parameters in the order of ``shared``. Each
        layer's T weight gradients are one batched product written straight into
        their rows, its T input gradients one product."""
        T, B = J.shape[:2]
        G = self._buffer(ws, "per_task", (T, self.n_shared), J)
        while tape:
            key, kind, layer, kept = tape.pop()
            if kind == "activation":
                derivative = _DERIVATIVE_INTO.get(type(layer))
                if derivative is not None:
                    d = derivative(kept, self._buffer(ws, key + ("d",), kept.shape, kept))
                    J.mul_(d)
                elif type(layer) is nn.ReLU:
                    torch.ops.aten.threshold_backward.grad_input(J, kept, 0.0, grad_input=J)
                else:
                    J.mul_(_ACTIVATIONS[type(layer)][1](kept, layer))
            elif kind == "dropout":
                J.mul_(kept)
            else:
                n_out, n_in = layer.weight.shape
                weight_rows, bias_rows = self._per_task_rows(ws, G, layer)
                torch.bmm(J.transpose(1, 2), kept.expand(T, B, n_in), out=weight_rows)
                torch.sum(J, 1, out=bias_rows)
                if tape:
                    J = torch.mm(J.view(T * B, n_out), layer.weight, out=self._buffer(
                        ws, key + ("per_task",), (T * B, n_in), kept)).view(T, B, n_in)
        return G

    def _per_task_rows(self, ws, G, layer):
        """The column blocks of ``G`` holding a layer's weight gradients, as
        (T, out, in), and its bias gradients, (T, out) (views made once per buffer)."""
        key = ("per_task_rows", layer)
        views = ws.get(key)
        if views is None or views[0] is not G:
            w, b = self._offsets[layer.weight], self._offsets[layer.bias]
            views = ws[key] = (G, G[:, w:w + layer.weight.numel()].view(-1, *layer.weight.shape),
                               G[:, b:b + layer.bias.numel()])
        return views[1], views[2]

    def _shared_grads(self):
        """The flat gradient buffer of the shared parameters, whose views are their
        gradient buffers (laid out as the rows of :meth:`_per_task_backward`)."""
        flat = self._flat.get("shared")
        if flat is None:
            flat = self._flat["shared"] = torch.empty(self.n_shared, dtype=torch.float32,
                                                      device=self.device)
            for p, at in self._offsets.items():
                self._grads[p] = flat[at:at + p.numel()].view_as(p)
        return flat

    def _gradient_method(self, trunk_tape, head_tape, out, coef, D, multiclass, losses,
                         present, ws):
        """The step of a strategy that combines per-task gradients (what
        :func:`sklearn_mtl._gradients.combine_with_gradients` computes with autograd):
        the heads get ``a_t`` times their task's gradient (``a = dLoss/dL``), the
        shared parameters ``sum_t c_t g_t``. Returns (total loss, strategy weights)."""
        T = self.n_tasks
        # Each task's own loss gradient (a = 1): the heads' slices then hold dL_t/dtheta_t.
        own = self.criterion.output_grad(coef, D, multiclass, (out.shape[0], out[0].numel()))
        J = self._backward(head_tape, own.view(out.shape), ws, need_input_grad=True,
                           per_task_input=True)
        if self.mode == "representation":
            G = J.view(T, -1)
        else:
            G = self._per_task_backward(trunk_tape, J, ws)
        if self.state.provides_head_weights:
            # The step runs without gradient recording: the values come detached.
            step = self.state.combine(losses, present, G)
            a = step.head_weights
            if a.requires_grad:
                a = a.detach()
        else:
            leaf = losses.detach().requires_grad_()
            with torch.enable_grad():
                step = self.state.combine(leaf, present, G)
                (a,) = torch.autograd.grad(step.loss, leaf, allow_unused=True)
            a = torch.zeros_like(losses) if a is None else a.detach()
        if a.dtype != losses.dtype:
            a = a.to(losses.dtype)
        # Usually every present task has weight 1 and none is absent: then the heads
        # already hold their gradients (reading a CPU tensor costs no sync).
        if a.device.type != "cpu" or any(v != 1.0 for v in a.tolist()):
            for layer in self.head_linears:
                self._grads[layer.weight].mul_(a.view(1, T, 1))
                self._grads[layer.bias].mul_(a.view(T, 1))
        c = step.shared_coef
        if c.requires_grad:
            c = c.detach()
        if c.dtype != G.dtype:
            c = c.to(G.dtype)
        if self.mode == "representation":
            self._backward(trunk_tape, torch.mv(G.t(), c).view(J.shape[1:]), ws,
                           need_input_grad=False)
        else:
            torch.mv(G.t(), c, out=self._shared_grads())
        loss = step.loss
        return (loss.detach() if loss.requires_grad else loss), step.weights

    def buffers(self):
        """The step's buffers, for :meth:`reuse_buffers` by the next epoch's step."""
        return (self.net.module_, self._workspaces, self._grads, self._flat)

    def reuse_buffers(self, buffers):
        """Take over the buffers of an earlier step of the same network (None: none),
        so that each epoch does not allocate them afresh."""
        if buffers is not None and buffers[0] is self.net.module_:
            self._workspaces, self._grads, self._flat = buffers[1:]

    def _grad(self, param):
        """The gradient buffer of ``param`` (its ``.grad`` after the step)."""
        buf = self._grads.get(param)
        if buf is None:
            buf = self._grads[param] = torch.empty_like(
                param, memory_format=torch.contiguous_format)
        return buf

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

    def _ensemble_step(self, X, y, ws):
        """The step of an ensemble (see the module docstring): (logged per-task losses,
        their label-weight sums, the strategy's weights, total loss, per-member outputs
        (B, k, width)). The trunk runs on the members' rows batch-major, (B*k, F), as
        the module does (so dropout draws the same masks); the losses read them
        member-major, (k*B, width), the layout of :meth:`closed_form_terms`."""
        module = self.net.module_
        T, k = self.n_tasks, self.n_members
        B, n_features = X.shape
        adapter = module.adapter
        stacked = torch.mul(X.unsqueeze(1), adapter,
                            out=self._buffer(ws, "stacked", (B, k, n_features), X))
        trunk_tape, head_tape = [], []
        z = self._forward(self.trunk_plan, stacked.view(B * k, n_features), trunk_tape, ws,
                          "trunk")
        D = z.shape[1]
        # Head m*T + t reads member m's representation: (k*T, B, D), read as (B, k*T, D).
        per_head = self._buffer(ws, "per_head", (k, T, B, D), z)
        per_head.copy_(z.view(B, k, 1, D).permute(1, 2, 0, 3))
        out = self._forward(self.head_plan, per_head.view(k * T, B, D).transpose(0, 1),
                            head_tape, ws, "heads")
        width = out.shape[-1]
        member_major = out.transpose(0, 1).reshape(k, T, B, width).transpose(1, 2)
        y_pred = member_major.reshape(k * B, T * width)
        labels = y[:, :T].unsqueeze(0).expand(k, B, T).reshape(k * B, T)
        weights = y[:, T:2 * T].unsqueeze(0)
        if y.shape[1] == 2 * T + k:  # member row masks
            weights = (weights * y[:, 2 * T:].t().unsqueeze(2)).contiguous()
        weights = weights.expand(k, B, T)
        losses, denominators, coef, Dy, multiclass = self.criterion.closed_form_terms(
            y_pred, labels, weights)
        member_weights = self.net._member_weights_tensor(losses)
        logged, combined, mean_denominators = member_task_losses(losses, denominators,
                                                                 member_weights)
        total, a, step_weights = self._strategy(combined, mean_denominators > 0)
        # combined_t is the member mean of W_mt L_mt: dLoss/dL_mt = a_t W_mt / k.
        per_member = (a / k).expand(k, T) if member_weights is None else (
            a * member_weights / k)
        G = self.criterion.output_grad((coef * per_member.unsqueeze(1)).view(k * B, T), Dy,
                                       multiclass, y_pred.shape)
        g = G.view(k, B, T, width).transpose(1, 2).reshape(k * T, B, width)
        gz = self._backward(head_tape, g.transpose(0, 1), ws, need_input_grad=True)
        # (B, k*T, D), a view of (k*T, B, D): each member's tasks summed, batch-major.
        gz = gz.transpose(0, 1).reshape(k, T, B, D).sum(1).transpose(0, 1)
        gx = self._backward(trunk_tape, gz.reshape(B * k, D), ws, need_input_grad=True)
        torch.sum(gx.view(B, k, n_features).mul_(X.unsqueeze(1)), 0,
                  out=self._grad(adapter))
        return logged, mean_denominators, step_weights, total, \
            y_pred.view(k, B, -1).transpose(0, 1)

    def __call__(self, X, y):
        T = self.n_tasks
        ws = self._workspaces.setdefault(X.shape[0], {})
        if len(self._workspaces) > 2:  # the batch size and the epoch's last, smaller batch
            self._workspaces = {X.shape[0]: ws}
        with torch.no_grad():
            if self.n_members is not None:
                return self._finish(*self._ensemble_step(X, y, ws))
            labels, weights = y[:, :T], y[:, T:2 * T]
            trunk_tape, head_tape = [], []
            z = self._forward(self.trunk_plan, X, trunk_tape, ws, "trunk")
            out = self._forward(self.head_plan, z, head_tape, ws, "heads")
            y_pred = out.reshape(out.shape[0], -1)
            if y_pred.data_ptr() == out.data_ptr():
                y_pred = y_pred.clone()  # the outputs outlive the step, the buffer does not
            losses, denominators, coef, D, multiclass = self.criterion.closed_form_terms(
                y_pred, labels, weights)
            present = denominators > 0
            if self.mode is None:
                total, a, step_weights = self._strategy(losses, present)
                G = self.criterion.output_grad(coef * a, D, multiclass, y_pred.shape)
                gz = self._backward(head_tape, G.view(out.shape), ws, need_input_grad=True)
                self._backward(trunk_tape, gz, ws, need_input_grad=False)
            else:
                total, step_weights = self._gradient_method(
                    trunk_tape, head_tape, out, coef, D, multiclass, losses, present, ws)
            return self._finish(losses, denominators, step_weights, total, y_pred)

    def _finish(self, losses, denominators, step_weights, total, y_pred):
        """Add the L1 term and hand the gradient buffers to ``.grad``."""
        if self.l1_weights:
            l1 = self.net.l1
            total = total + l1 * torch.stack([w.abs().sum() for w in self.l1_weights]).sum()
            for w in self.l1_weights:
                self._grads[w].add_(w.sign(), alpha=l1)
        for p, g in self._grads.items():
            if p.grad is None:
                p.grad = g
            elif p.grad is not g:
                p.grad.add_(g)
        return losses, denominators, step_weights, total, y_pred
