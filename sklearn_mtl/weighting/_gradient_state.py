"""Shared machinery of the gradient-combining strategies.

Every gradient method here only needs inner products between task
gradients, so the state reduces the (T, P) gradients to their Gram matrix
``M = G G^T`` on the device, copies that (T, T) matrix to the host in one
transfer, solves the method's tiny problem in float64 there, and sends the
(T,) coefficients back. P can be millions; T is a handful. That one small
host round trip per step is the only sync (on the CPU the arrays are read in
place). The host problems are solved with plain Python floats or numpy,
warm-started from the previous step where the method allows it: at these
sizes each torch or numpy call costs more than its arithmetic, and the
per-step solver time is a visible part of a tabular training step.
"""

import numpy as np
import torch

from ._base import Step, WeightingState
from ._utils import weighted_sum


def gram_matrix(G):
    """``G @ G.T`` for per-task gradients ``G`` (T, P).

    Half-precision gradients are upcast first: squared norms overflow
    float16 easily.
    """
    if G.dtype in (torch.float16, torch.bfloat16):
        G = G.float()
    return G @ G.T


class GradientWeightingState(WeightingState):
    """State of a method whose shared update is ``sum_t c_t g_t``.

    Subclasses implement :meth:`coefficients` on the present tasks only.
    ``combine`` returns a :class:`Step` whose ``loss`` is the heads' loss
    ``sum_t w_t L_t`` (static weights ``w``, present tasks), ``shared_coef``
    is ``c`` (absent tasks 0) and ``weights`` is ``c`` as well: for these
    methods the effective weight of a task is its coefficient in the shared
    update. ``head_weights`` is ``w`` (the gradient of ``loss`` w.r.t. the
    losses).
    """

    #: When true, static weights are priors: each g_t is scaled by w_t before
    #: the method and the coefficients are mapped back (c_t = w_t * c~_t).
    uses_priors = False
    #: When true, the host problem also receives the present tasks' losses.
    needs_losses = False
    #: The Step's head_weights are the gradient of its loss w.r.t. the losses.
    provides_head_weights = True

    def coefficients(self, gram, losses):
        """Coefficients (k,) for the k present tasks.

        ``gram`` (k, k) and ``losses`` (k,) (None unless ``needs_losses``) are
        float64 numpy arrays; return a float64 numpy array. The problems are
        tiny, so they are solved with numpy/scipy on the host: per-call
        overhead, not arithmetic, sets their cost, and torch's per-op overhead
        on such small tensors is several times numpy's.
        """
        raise NotImplementedError

    def combine(self, losses, present, grads=None):
        if grads is None:
            raise ValueError(
                f"{type(self).__name__} needs per-task gradients; the engine passed grads=None."
            )
        n = grads.shape[0]
        gram = gram_matrix(grads.detach())
        on_host = gram.device.type == "cpu" and losses.device.type == "cpu"
        if on_host and not torch.is_grad_enabled():
            # The engine needs only the value and head_weights (it delivers the
            # gradients itself): a few numpy operations instead of torch ones.
            present_h = present.numpy()
            w_h = np.where(present_h, self.static_weights.numpy(), 0.0).astype(np.float32)
            loss_np = np.where(present_h, losses.detach().numpy(), 0.0)
            head_loss = torch.tensor(float(w_h @ loss_np), dtype=losses.dtype)
            w = torch.from_numpy(w_h)
        else:
            head_loss, w = weighted_sum(self.static_weights, losses, present)
        loss = torch.where(present, losses.detach(), 0.0) if self.needs_losses else None
        if on_host:
            # Nothing to synchronise: read the tensors in place.
            gram_h = gram.numpy().astype(np.float64)
            present_h = present.numpy()
            static_h = self.static_weights.numpy().astype(np.float64)
            losses_h = loss.numpy().astype(np.float64) if loss is not None else None
        else:
            # Static weights travel too: the engine may change them in place between fits.
            parts = [gram.reshape(-1), present.to(gram.dtype),
                     self.static_weights.to(device=gram.device, dtype=gram.dtype)]
            if loss is not None:
                parts.append(loss.to(device=gram.device, dtype=gram.dtype))
            # The one sync per step; float64 from here on.
            host = torch.cat(parts).cpu().numpy().astype(np.float64)
            gram_h = host[: n * n].reshape(n, n)
            present_h = host[n * n : n * n + n] > 0.5
            static_h = host[n * n + n : n * n + 2 * n]
            losses_h = host[n * n + 2 * n :] if loss is not None else None
        idx = np.flatnonzero(present_h)
        coef_h = np.zeros(n)
        if idx.size:
            sub = gram_h[np.ix_(idx, idx)] if idx.size < n else gram_h
            sub_losses = losses_h[idx] if losses_h is not None else None
            if self.uses_priors:
                s = static_h[idx]
                coef_h[idx] = s * self.coefficients(sub * np.outer(s, s), sub_losses)
            else:
                coef_h[idx] = self.coefficients(sub, sub_losses)
        coef = torch.from_numpy(coef_h.astype(np.float32 if grads.dtype == torch.float32
                                              else np.float64))
        if coef.device != grads.device or coef.dtype != grads.dtype:
            coef = coef.to(device=grads.device, dtype=grads.dtype, non_blocking=True)
        static_dtype = self.static_weights.dtype
        weights = coef if coef.dtype == static_dtype else coef.to(static_dtype)
        return Step(head_loss, weights, coef, w.detach().to(losses.dtype))
