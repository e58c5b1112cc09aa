"""Per-task gradients for the gradient-based strategies, computed on the device.

Instead of one full backward pass per task, the heads' part is done per task
w.r.t. the shared representation z (cheap: the heads are small), and the
trunk's part in one batched vector-Jacobian product (``is_grads_batched``,
which vmaps the T backward passes through the trunk into one). With
``mode="representation"`` the trunk pass is skipped altogether (the
MGDA-UB approximation).
"""

import torch

from ._utils import weighted_sum


def representation_jacobian(losses, representation):
    """(T, *z.shape): the gradient of each task's loss w.r.t. the representation."""
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
        for g, p in zip(grads, params)
    ]
    return torch.cat(flat, 1)


def task_gradients(losses, representation, shared_params, mode):
    """Return ``(G, J)``: G (T, P) the per-task gradients the strategy reads, J the
    representation Jacobian the engine reuses to route the combined update."""
    J = representation_jacobian(losses, representation)
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
            (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)
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


def combine_with_gradients(state, losses, present, representation, shared_params,
                           all_shared, mode):
    """One training step of a gradient method; returns the loss to back-propagate.

    ``losses`` (T,) with graph, ``present`` (T,) bool, ``representation`` the
    trunk's output of this step (B, D) or (B, T, D), ``shared_params`` the
    parameters the tasks share, ``all_shared`` whether they are every trainable
    parameter of the trunk, ``mode`` the strategy's ``needs_grads``.

    The strategy sees the per-task gradients ``G`` (rows of absent tasks 0)
    and sets ``shared_coef`` c; after ``backward`` of the returned loss

    * the shared parameters hold ``sum_t c_t g_t`` (plus any penalty's gradient),
    * everything else (heads, and the trunk's task-specific parameters, e.g.
      MMoE gates, PLE task experts) holds the gradient of the loss ``combine``
      returned (the static-weighted sum for most methods).

    When every trunk parameter is shared (hard sharing) the update is routed by
    a hook on the representation that replaces its gradient by
    ``sum_t c_t dL_t/dz``: one trunk backward, no extra pass. Otherwise a
    zero-valued correction ``sum_p <p, delta_p> - const`` is added whose
    gradient ``delta`` turns the shared parameters' gradient into the combined
    one: ``delta = sum_t (c_t - a_t) g_t`` with ``a = d(combine)/dL``, read from
    ``G`` (mode "params") or from one VJP through the trunk (mode
    "representation"). With no shared parameter at all the method has nothing
    to combine and the step is the static weighted sum.
    """
    if not shared_params:
        total, w = weighted_sum(state.static_weights, losses, present)
        state.shared_coef = w.detach()
        state.last_weights = w.detach()
        return total
    G, J = task_gradients(losses, representation, shared_params, mode)
    G = torch.where(present.unsqueeze(1), G, torch.zeros((), dtype=G.dtype, device=G.device))
    total = state.combine(losses, present, G)
    coef = torch.where(present, state.shared_coef.detach().to(J.dtype),
                       torch.zeros((), dtype=J.dtype, device=J.device))
    if all_shared:
        routed = torch.tensordot(coef, J, dims=1)
        # The heads get the gradient of `total`; the shared layers get sum_t c_t g_t.
        representation.register_hook(lambda grad: routed)
        return total
    (a,) = torch.autograd.grad(total, losses, retain_graph=True, allow_unused=True)
    if a is None:
        a = torch.zeros_like(coef)
    diff = coef - a.detach().to(coef.dtype)
    if mode == "representation":
        deltas = torch.autograd.grad(
            representation, shared_params, grad_outputs=torch.tensordot(diff, J, dims=1),
            retain_graph=True, allow_unused=True,
        )
        deltas = [torch.zeros_like(p) if d is None else d for d, p in zip(deltas, shared_params)]
    else:
        deltas = _flat_to_params(diff.to(G.dtype) @ G, shared_params)
    correction = sum((p * d.detach()).sum() for p, d in zip(shared_params, deltas))
    return total + (correction - correction.detach())
