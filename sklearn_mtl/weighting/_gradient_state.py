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

        ``gram`` is the (k, k) Gram matrix as a list of k rows of Python floats
        (float64), ``losses`` a list of k floats (None unless ``needs_losses``);
        return a sequence of k floats. The problems are tiny and solved on the
        host in plain floats: right after the step's kernels the interpreter's
        caches are cold, and every numpy or torch call then costs several
        microseconds, more than the arithmetic.
        """
        raise NotImplementedError

    def combine(self, losses, present, grads=None):
        if grads is None:
            raise ValueError(
                f"{type(self).__name__} needs per-task gradients; the engine passed grads=None."
            )
        if (grads.device.type == "cpu" and losses.device.type == "cpu"
                and not torch.is_grad_enabled()):
            return self._combine_on_host(losses, present, grads)
        n = grads.shape[0]
        gram = gram_matrix(grads.detach())
        head_loss, w = weighted_sum(self.static_weights, losses, present)
        loss = torch.where(present, losses.detach(), 0.0) if self.needs_losses else None
        # Static weights travel too: the engine may change them in place between fits.
        parts = [gram.reshape(-1), present.to(gram.dtype),
                 self.static_weights.to(device=gram.device, dtype=gram.dtype)]
        if loss is not None:
            parts.append(loss.to(device=gram.device, dtype=gram.dtype))
        # The one sync per step; float64 from here on.
        host = torch.cat(parts).cpu().numpy().astype(np.float64)
        present_h = host[n * n : n * n + n] > 0.5
        losses_h = host[n * n + 2 * n :] if loss is not None else None
        coef_h = self._host_coefficients(host[: n * n].reshape(n, n).tolist(),
                                         present_h.tolist(),
                                         host[n * n + n : n * n + 2 * n].tolist(),
                                         None if losses_h is None else losses_h.tolist())
        coef = torch.tensor(coef_h, dtype=grads.dtype).to(device=grads.device, non_blocking=True)
        weights = coef if coef.dtype == self.static_weights.dtype else coef.to(
            self.static_weights.dtype)
        return Step(head_loss, weights, coef, w.detach().to(losses.dtype))

    def _combine_on_host(self, losses, present, grads):
        """:meth:`combine` on the CPU without gradient recording, which is how the
        engine calls it (it needs the values and ``head_weights`` only, and delivers
        the gradients itself): the (T,) quantities as plain Python floats, the
        tensors read in place."""
        present_l = present.tolist()
        static = self.static_weights.tolist()
        loss_l = losses.tolist()
        w = [s if p else 0.0 for s, p in zip(static, present_l)]
        head_loss = 0.0
        for wi, li in zip(w, loss_l):
            if wi:
                head_loss += wi * li
        losses_h = ([li if p else 0.0 for li, p in zip(loss_l, present_l)]
                    if self.needs_losses else None)
        coef = self._host_coefficients(gram_matrix(grads).tolist(), present_l, static, losses_h)
        n = len(w)
        if grads.dtype == losses.dtype == self.static_weights.dtype == torch.float32:
            # One tensor for the step's values, the fields its views (through numpy:
            # torch.tensor on a list costs twice as much).
            values = torch.from_numpy(np.array(coef + w + [head_loss], dtype=np.float32))
            coef_t = values[:n]
            return Step(values[2 * n], coef_t, coef_t, values[n:2 * n])
        coef_t = torch.tensor(coef, dtype=grads.dtype)
        return Step(torch.tensor(head_loss, dtype=losses.dtype),
                    coef_t.to(self.static_weights.dtype), coef_t,
                    torch.tensor(w, dtype=losses.dtype))

    def _host_coefficients(self, gram, present, static, losses):
        """The (T,) coefficients as a list from the Gram matrix (a list of rows of
        floats), the present mask, the static weights and the losses (lists; losses
        None unless needed): :meth:`coefficients` on the present tasks, 0 for the
        others."""
        n = len(present)
        idx = [i for i in range(n) if present[i]]
        coef = [0.0] * n
        if not idx:
            return coef
        if len(idx) < n:
            gram = [[gram[i][j] for j in idx] for i in idx]
            if losses is not None:
                losses = [losses[i] for i in idx]
        s = [static[i] for i in idx]
        if self.uses_priors and any(v != 1.0 for v in s):
            scaled = [[x * (a * b) for x, b in zip(row, s)] for row, a in zip(gram, s)]
            values = [a * v for a, v in zip(s, self.coefficients(scaled, losses))]
        else:
            values = self.coefficients(gram, losses)
        for i, v in zip(idx, values):
            coef[i] = float(v)
        return coef
