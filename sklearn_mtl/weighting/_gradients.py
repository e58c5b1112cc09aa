"""Per-task gradients for the gradient-based strategies, computed on the device.

Instead of one full backward pass per task, the heads' part is done per task
w.r.t. the shared representation z (cheap: the heads are small), and the
trunk's part in one batched vector-Jacobian product (``is_grads_batched``,
which vmaps the T backward passes through the trunk into one). With
``mode="representation"`` the trunk pass is skipped altogether (the
MGDA-UB approximation).
"""

import torch


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
