"""Per-task gradients for the gradient-based strategies and the routed shared update.

This is the engine's side of the gradient methods: a strategy only turns the
per-task gradients into coefficients (its :class:`~sklearn_mtl.weighting.Step`);
computing those gradients on the device and delivering the combined update to
the parameters happens here.

Instead of one full backward pass per task, the heads' part is done per task
w.r.t. the shared representation z (cheap: the heads are small), and the
trunk's part in one batched vector-Jacobian product (``is_grads_batched``,
which vmaps the T backward passes through the trunk into one). With
``mode="representation"`` the trunk pass is skipped altogether (the
MGDA-UB approximation).

The heads' part needs no per-task pass either when the heads are the
engine's :class:`~sklearn_mtl._modules.TaskHeads`: task t's loss depends only
on slice t of the heads' first layer output (and, for a per-task
representation (B, T, D), only on slice t of z), so one ordinary backward of
``sum_t L_t`` to that tensor yields every task's gradient at once; for a
shared z the first layer's per-task weights then map it back to z (one
einsum). A forward hook (:class:`KeepOutput`, installed by
:func:`attach_head_probe`) keeps that first-layer output of the training
forward pass.

:func:`combine_with_gradients` is the engine's step for gradient methods;
:func:`naive_task_gradients` (one full backward per task) is the reference
it is tested against and the baseline the benchmarks compare with.
"""

import weakref

import torch

from ._modules import TaskHeads, TaskParallelLinear
from .weighting import Step
from .weighting._utils import weighted_sum

#: How combine_with_gradients computes the per-task gradients: "batched" (the
#: engine above) or "naive" (one full backward pass per task; for benchmarks and
#: tests, it gives the same update).
GRADIENT_ENGINE = "batched"


class KeepOutput:
    """Forward hook that keeps the last output computed with gradient enabled.

    The kept tensor is dropped when pickled or copied (it belongs to one
    training step's graph).
    """

    def __init__(self):
        self.output = None

    def __call__(self, module, args, output):
        if torch.is_grad_enabled():
            self.output = output

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.output = None


def _first_head_layer(heads):
    """The first TaskParallelLinear of engine TaskHeads, else None."""
    if not isinstance(heads, TaskHeads) or not len(heads.layers):
        return None
    first = heads.layers[0]
    return first if isinstance(first, TaskParallelLinear) else None


def _probe(layer):
    for hook in layer._forward_hooks.values():
        if isinstance(hook, KeepOutput):
            return hook
    return None


def attach_head_probe(module):
    """Install (once) the :class:`KeepOutput` hook on the first layer of
    ``module.heads``; returns whether the heads support the fast path."""
    layer = _first_head_layer(getattr(module, "heads", None))
    if layer is None:
        return False
    if _probe(layer) is None:
        layer.register_forward_hook(KeepOutput())
    return True


def _per_task_jacobian(losses, representation, heads):
    """The representation Jacobian from one ordinary backward, or None when the
    heads do not allow it (see the module docstring)."""
    layer = _first_head_layer(heads)
    if layer is None or layer.n_tasks != losses.shape[0]:
        return None
    T = losses.shape[0]
    if representation.dim() == 3:
        if representation.shape[1] != T:
            return None
        (g,) = torch.autograd.grad(losses.sum(), representation, retain_graph=True,
                                   allow_unused=True)
        if g is None:
            g = torch.zeros_like(representation)
        # Task t's gradient lives in slice t only: embed it in (T, B, T, D).
        J = g.new_zeros((T,) + tuple(representation.shape))
        ar = torch.arange(T, device=g.device)
        J[ar, :, ar, :] = g.transpose(0, 1)
        return J
    if representation.dim() != 2:
        return None
    probe = _probe(layer)
    h1 = None if probe is None else probe.output
    if (h1 is None or not h1.requires_grad or h1.dim() != 3
            or h1.shape[0] != representation.shape[0] or h1.shape[1] != T):
        return None
    (delta,) = torch.autograd.grad(losses.sum(), h1, retain_graph=True, allow_unused=True)
    if delta is None:
        return representation.new_zeros((T,) + tuple(representation.shape))
    # h1[:, t] = z @ W[:, t] + b[t]  =>  dL_t/dz = delta[:, t] @ W[:, t]^T.
    W = layer.weight
    J = torch.einsum("bth,dth->tbd", delta.to(W.dtype), W)
    return J.to(representation.dtype)


def representation_jacobian(losses, representation, heads=None):
    """(T, *z.shape): the gradient of each task's loss w.r.t. the representation.

    With the engine's TaskHeads (``heads``) one ordinary backward suffices;
    otherwise the T backward passes are vmapped into one (``is_grads_batched``).
    """
    if heads is not None:
        J = _per_task_jacobian(losses, representation, heads)
        if J is not None:
            return J
    T = losses.shape[0]
    eye = torch.eye(T, dtype=losses.dtype, device=losses.device)
    try:
        (J,) = torch.autograd.grad(
            losses, representation, grad_outputs=eye, retain_graph=True,
            is_grads_batched=True, allow_unused=True,
        )
    except RuntimeError:
        # Some operations have no batching rule; fall back to one pass per task.
        J = torch.stack([
            _grad_or_zeros(losses[t], representation) for t in range(T)
        ])
    if J is None:
        J = torch.zeros((T,) + tuple(representation.shape), device=losses.device)
    return J


def _grad_or_zeros(loss, tensor):
    (g,) = torch.autograd.grad(loss, tensor, retain_graph=True, allow_unused=True)
    return torch.zeros_like(tensor) if g is None else g


def shared_parameter_gradients(representation, params, J):
    """(T, P): per-task gradients of the shared parameters from the representation
    Jacobian ``J`` via one batched vector-Jacobian product through the trunk."""
    T = J.shape[0]
    try:
        grads = torch.autograd.grad(
            representation, params, grad_outputs=J, retain_graph=True,
            is_grads_batched=True, allow_unused=True,
        )
    except RuntimeError:
        per_task = [
            torch.autograd.grad(representation, params, grad_outputs=J[t], retain_graph=True,
                                allow_unused=True)
            for t in range(T)
        ]
        grads = [torch.stack([pt[k] if pt[k] is not None else torch.zeros_like(p)
                              for pt in per_task]) for k, p in enumerate(params)]
    flat = [
        (g if g is not None else torch.zeros((T,) + tuple(p.shape), device=J.device)).reshape(T, -1)
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(flat, 1)


def task_gradients(losses, representation, shared_params, mode, heads=None):
    """Return ``(G, J)``: G (T, P) the per-task gradients the strategy reads, J the
    representation Jacobian the engine reuses to route the combined update."""
    J = representation_jacobian(losses, representation, heads)
    if mode == "representation":
        return J.reshape(J.shape[0], -1), J
    return shared_parameter_gradients(representation, shared_params, J), J


def naive_task_gradients(losses, params):
    """(T, P) with one full backward pass per task: the reference the engine is
    tested against, and the baseline the benchmarks compare with."""
    rows = []
    for t in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]))
    return torch.stack(rows)


def _flat_to_params(flat, params):
    """Split a flat (P,) vector into tensors shaped like ``params``."""
    out, start = [], 0
    for p in params:
        n = p.numel()
        out.append(flat[start:start + n].view_as(p))
        start += n
    return out


def _combine_rows(coef, J):
    """``sum_t coef_t J[t]`` as one matrix product, shaped like ``J[0]``."""
    T = J.shape[0]
    return (coef.to(J.dtype).view(1, T) @ J.reshape(T, -1)).view(J.shape[1:])


class _InjectGradients(torch.autograd.Function):
    """A zero scalar whose backward delivers precomputed gradients to its inputs.

    ``_InjectGradients.apply(grads, *tensors)`` returns 0; back-propagating
    ``g`` through it gives ``tensors[i]`` the gradient ``g * grads[i]`` (so a
    loss scaler, if any, still applies). One graph node instead of a product
    and a sum per tensor.
    """

    @staticmethod
    def forward(ctx, grads, *tensors):
        ctx.grads = grads
        return tensors[0].new_zeros(())

    @staticmethod
    def backward(ctx, grad_output):
        grads, ctx.grads = ctx.grads, None
        if grad_output.device.type == "cpu" and float(grad_output) == 1.0:
            return (None, *grads)  # the usual case: no scaling (reading it costs no sync)
        return (None, *(g * grad_output for g in grads))


_SEPARABLE = weakref.WeakKeyDictionary()  # heads module -> its TaskParallelLinear list or None
_TRUNK_PARAMS = weakref.WeakKeyDictionary()  # trunk -> (all parameters, declared shared or None)


def trunk_shared_parameters(trunk):
    """``(shared, all_shared)`` for a trunk: the trainable parameters the tasks share
    (``trunk.shared_parameters()`` when the trunk defines it, else all its
    parameters) and whether they are all its trainable parameters.

    The parameter lists are cached per trunk module (its structure is fixed once
    built); ``requires_grad`` is read on every call, so freezing takes effect.
    """
    try:
        params, declared = _TRUNK_PARAMS[trunk]
    except KeyError:
        own = getattr(trunk, "shared_parameters", None)
        params = list(trunk.parameters())
        declared = list(own()) if callable(own) else None
        _TRUNK_PARAMS[trunk] = params, declared
    trainable = [p for p in params if p.requires_grad]
    if declared is None:
        return trainable, True
    shared = [p for p in declared if p.requires_grad]
    return shared, len(shared) == len(trainable)


def _separable_heads(heads, n_tasks):
    """The TaskParallelLinear layers of engine TaskHeads whose other layers have no
    parameters (each task's loss then depends only on its slice of every layer),
    else None. Cached per heads module (its structure is fixed)."""
    if heads is None:
        return None
    try:
        linears = _SEPARABLE[heads]
    except KeyError:
        linears = _SEPARABLE[heads] = _find_separable(heads)
    if linears is None or linears[0].n_tasks != n_tasks:
        return None
    return linears


def _find_separable(heads):
    if not isinstance(heads, TaskHeads):
        return None
    linears = []
    for layer in heads.layers:
        if isinstance(layer, TaskParallelLinear):
            linears.append(layer)
        elif any(True for _ in layer.parameters()):
            return None
    if not linears or linears[0] is not heads.layers[0]:
        return None
    if len({layer.n_tasks for layer in linears}) != 1:
        return None
    return linears


def _fast_step(state, losses, present, representation, shared_params, all_shared, mode,
               heads):
    """:func:`combine_with_gradients` for the engine's TaskHeads; None if not applicable.

    One backward of ``sum_t L_t`` through the heads (not through the trunk)
    gives, because each task owns a slice of every head layer, each task's
    gradient at the separating tensor (the heads' first-layer output for a
    shared z, z itself for a per-task z) *and* the heads' parameter gradients
    task by task. Then:

    * J (T, *z.shape) from the separating gradient (one batched product);
    * G = J (mode "representation") or one vmapped VJP through the trunk;
    * the strategy's step: c, and ``a = d(step.loss)/dL`` (the heads' weights);
    * the returned step's loss has the value of the strategy's and a backward that
      delivers ``a_t``-scaled slices to the heads' parameters and
      ``sum_t c_t g_t`` to the shared ones: directly from ``c @ G`` when G holds
      the parameters' gradients and the whole trunk is shared (no trunk
      backward at all), else through the trunk from z with ``sum_t c_t J_t``
      (plus a correction for the shared subset when some trunk parameters are
      task-specific).

    Compared with the hook route this skips the second backward through the
    heads and the loss (and, for "params" mode, the trunk).
    """
    T = losses.shape[0]
    linears = _separable_heads(heads, T)
    if linears is None:
        return None
    if representation.dim() == 3 and representation.shape[1] == T:
        sep = representation
    elif representation.dim() == 2:
        probe = _probe(linears[0])
        sep = None if probe is None else probe.output
        if (sep is None or not sep.requires_grad or sep.dim() != 3
                or sep.shape[0] != representation.shape[0] or sep.shape[1] != T):
            return None
    else:
        return None
    head_params = [p for layer in linears for p in (layer.weight, layer.bias)]
    grads = torch.autograd.grad(losses.sum(), [sep] + head_params, retain_graph=True,
                                allow_unused=True)
    delta = grads[0] if grads[0] is not None else torch.zeros_like(sep)
    head_grads = [torch.zeros_like(p) if g is None else g
                  for g, p in zip(grads[1:], head_params, strict=True)]
    # Nothing from here on is differentiated: every operand is detached (gradients
    # from autograd.grad, detached weights), so no graph is recorded.
    if sep is representation:
        # Task t's gradient lives in slice t only: embed it in (T, B, T, D).
        J = delta.new_zeros((T,) + tuple(representation.shape))
        ar = torch.arange(T, device=delta.device)
        J[ar, :, ar, :] = delta.transpose(0, 1)
    else:
        # sep[:, t] = z @ W[:, t] + b[t]  =>  dL_t/dz = delta[:, t] @ W[:, t]^T.
        W = linears[0].weight.detach()
        J = torch.bmm(delta.transpose(0, 1).to(W.dtype), W.permute(1, 2, 0))
        if J.dtype != representation.dtype:
            J = J.to(representation.dtype)
    if mode == "representation":
        G = J.reshape(T, -1)
    else:
        G = shared_parameter_gradients(representation, shared_params, J)
    # Rows of absent tasks are already zero: their losses are constants (masked).
    # The step's loss graph is not used when the state reports head_weights.
    provides = state.provides_head_weights
    with torch.set_grad_enabled(not provides):
        step = state.combine(losses, present, G)
    coef = step.shared_coef.detach()
    if coef.dtype != G.dtype:
        coef = coef.to(G.dtype)
    a = step.head_weights if provides else None
    if a is None:
        (a,) = torch.autograd.grad(step.loss, losses, retain_graph=True, allow_unused=True)
        a = torch.zeros_like(losses) if a is None else a.detach()
    term = _inject(a, coef, G, J, T, head_params, head_grads, representation, shared_params,
                   all_shared, mode)
    return Step(step.loss.detach() + term, step.weights, step.shared_coef, step.head_weights)


def _inject(a, coef, G, J, T, head_params, head_grads, representation, shared_params,
            all_shared, mode):
    """The gradient-delivering term of :func:`_fast_step` (see there); all operands
    are detached."""
    # The heads: task t's slice of every layer gets a_t times its task's gradient.
    a_h = a if a.dtype == head_grads[0].dtype else a.to(head_grads[0].dtype)
    a3, a2 = a_h.view(1, T, 1), a_h.view(T, 1)
    inject = list(torch._foreach_mul(head_grads, [a3 if p.dim() == 3 else a2
                                                  for p in head_params]))
    targets = list(head_params)
    if all_shared and mode != "representation":
        inject.extend(_flat_to_params(coef @ G, shared_params))
        targets.extend(shared_params)
    elif all_shared:
        inject.append(_combine_rows(coef, J).to(representation.dtype))
        targets.append(representation)
    else:
        # Every trunk parameter gets the heads' weighting a through z; the shared
        # ones are then corrected to sum_t c_t g_t.
        inject.append(_combine_rows(a, J).to(representation.dtype))
        targets.append(representation)
        deltas = _shared_corrections(coef - a.to(coef.dtype), G, J, representation,
                                     shared_params, mode)
        inject.extend(d.to(p.dtype) for d, p in zip(deltas, shared_params, strict=True))
        targets.extend(shared_params)
    return _InjectGradients.apply(inject, *targets)


def _shared_corrections(diff, G, J, representation, shared_params, mode):
    """Per-parameter ``sum_t diff_t g_t``: what turns the shared parameters' gradient
    from the heads' weighting into the strategy's combination."""
    if mode != "representation":
        return _flat_to_params(diff @ G, shared_params)
    deltas = torch.autograd.grad(
        representation, shared_params,
        grad_outputs=_combine_rows(diff, J).to(representation.dtype),
        retain_graph=True, allow_unused=True,
    )
    return [torch.zeros_like(p) if d is None else d
            for d, p in zip(deltas, shared_params, strict=True)]


def combine_with_gradients(state, losses, present, representation, shared_params,
                           all_shared, mode, heads=None):
    """One training step of a gradient method; returns its :class:`Step`, whose
    ``loss`` is the one to back-propagate.

    ``losses`` (T,) with graph, ``present`` (T,) bool, ``representation`` the
    trunk's output of this step (B, D) or (B, T, D), ``shared_params`` the
    parameters the tasks share, ``all_shared`` whether they are every trainable
    parameter of the trunk, ``mode`` the strategy's ``needs_grads``, ``heads``
    the task heads.

    The strategy sees the per-task gradients ``G`` (rows of absent tasks 0)
    and returns the coefficients c (``shared_coef`` of its step); after
    ``backward`` of the returned step's loss

    * the shared parameters hold ``sum_t c_t g_t`` (plus any penalty's gradient),
    * everything else (heads, and the trunk's task-specific parameters, e.g.
      MMoE gates, PLE task gates) holds the gradient of the loss of the step
      ``combine`` returned (the static-weighted sum for most methods), which
      must depend on the network only through ``losses``.

    With the engine's TaskHeads the step is :func:`_fast_step`. Otherwise
    (other heads) the representation Jacobian is vmapped, and when every
    trunk parameter is shared the update is routed by a hook on the
    representation that replaces its gradient by ``sum_t c_t dL_t/dz``;
    else a zero-valued term whose backward adds
    ``delta = sum_t (c_t - a_t) g_t`` (``a = d(step.loss)/dL``) to the shared
    parameters turns their gradient into the combined one. With no shared
    parameter at all the method has nothing to combine and the step is the
    static weighted sum.
    """
    if not shared_params:
        total, w = weighted_sum(state.static_weights, losses, present)
        w = w.detach()
        return Step(total, w, w)
    if GRADIENT_ENGINE == "naive":
        G = naive_task_gradients(
            losses, [representation] if mode == "representation" else shared_params)
        J = G.reshape((G.shape[0],) + tuple(representation.shape)) \
            if mode == "representation" else None
        all_shared = False  # route through the parameters, as a per-task-backward engine would
    else:
        out = _fast_step(state, losses, present, representation, shared_params, all_shared,
                         mode, heads)
        if out is not None:
            return out
        G, J = task_gradients(losses, representation, shared_params, mode, heads)
    G = torch.where(present.unsqueeze(1), G, torch.zeros((), dtype=G.dtype, device=G.device))
    step = state.combine(losses, present, G)
    coef = torch.where(present, step.shared_coef.detach().to(G.dtype),
                       torch.zeros((), dtype=G.dtype, device=G.device))
    if all_shared:
        routed = _combine_rows(coef, J).to(representation.dtype)
        # The heads get the gradient of the step's loss; the shared layers sum_t c_t g_t.
        representation.register_hook(lambda grad: routed)
        return step
    (a,) = torch.autograd.grad(step.loss, losses, retain_graph=True, allow_unused=True)
    if a is None:
        a = torch.zeros_like(coef)
    deltas = _shared_corrections(coef - a.detach().to(coef.dtype), G, J, representation,
                                 shared_params, mode)
    inject = [d.to(p.dtype) for d, p in zip(deltas, shared_params, strict=True)]
    return step._replace(loss=step.loss + _InjectGradients.apply(inject, *shared_params))
