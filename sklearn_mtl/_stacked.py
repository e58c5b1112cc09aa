"""Many independent networks trained as one: the member axis of a search.

A search fits the same architecture many times (candidates x folds) with
settings that change no tensor shape: loss weights, weight decay, dropout,
learning rate, seed, patience... :func:`train_members` trains all of them at
once. Every parameter of every member is stacked along a leading member axis
(weights (k, in, out), evaluated with ``torch.baddbmm``), so the members share
no parameter: member m's loss depends on member m's parameters only, and the
gradient of the summed loss with respect to them is member m's own gradient.
A member is therefore the network a plain fit of its candidate on its fold
would train, step for step:

* **initialisation** -- each member's weights are those its own plain fit
  starts from: the caller builds the member's skorch net exactly as ``fit``
  does (same seeds) and :class:`StackedMLP` copies its parameters;
* **data** -- each member draws its own batches (the permutation its plain
  fit's batch iterator would draw, from the same seed) from its own training
  rows (its fold's training rows less its validation rows); a member's batch
  holds only its own rows, padded with rows of weight 0 up to the batch size.
  Targets are per member (a fold's regression targets are standardised with
  that fold's statistics, class weights follow the candidate);
* **optimisation** -- Adam with per-member learning rate, weight decay (L2 on
  weights, not biases, as ``alpha`` is) and step count; a member with no row
  in a step (its epoch has fewer batches) takes no step, as its plain fit
  would not;
* **early stopping** -- per (member, task), with the rules of
  :class:`~sklearn_mtl._early_stopping.TaskEarlyStopping`: each member's own
  validation rows, patience and tolerance, each task's best-epoch weights; a
  member that stops leaves the stack (the remaining members are compacted),
  so it costs nothing afterwards.

What differs from a plain fit is the order of floating-point summation
(batched products), and dropout masks, which are drawn for the stack rather
than per network: with dropout a member is a fit with other dropout draws.

At the end each member's weights (each task's best epoch) are loaded into the
member's own net, which then predicts exactly as a fitted estimator does.
"""

import math
import os

import numpy as np
import torch

from ._direct_step import _ACTIVATIONS, _IN_PLACE
from ._early_stopping import deciding_tasks
from ._modules import (
    MLPTrunk,
    MultiTaskModule,
    TaskHeads,
    TaskParallelLinear,
    make_activation,
)
from ._onednn import OneDNNProducts
from ._threads import SMALL_STEP_MACS, ThreadTuner
from .architectures import HardSharing, resolve_architecture
from .weighting import resolve_weighting
from .weighting.static import Static

#: Fraction of the available memory a stacked chunk may use, and a cap.
_MEMORY_FRACTION = 0.25
_MEMORY_CAP = 2 << 30
#: Rows (members x rows) per validation forward pass.
_VALID_ROWS = 1 << 16
#: Bytes of training rows gathered at once (a block of an epoch's steps).
_BLOCK_BYTES = 1 << 25
#: The optimizer options the stacked Adam implements.
_ADAM_OPTIONS = frozenset({"betas", "eps", "fused", "foreach"})


def unstackable_setting(estimator):
    """The setting of a multi-task estimator that keeps its fits out of a stack (a
    phrase naming it), or None: a stack replicates the hard-sharing MLP trained by
    Adam with static loss weights and nothing else."""
    if estimator.module is not None:
        return "a custom module= trunk"
    try:
        architecture = resolve_architecture(estimator.architecture)
        weighting = resolve_weighting(estimator.weighting)
    except (TypeError, ValueError):
        return "invalid architecture or weighting (the fit reports it)"
    checks = [
        (type(architecture) is HardSharing, f"architecture={estimator.architecture!r}"),
        (type(weighting) is Static, f"weighting={estimator.weighting!r}"),
        (estimator.loss_normalization == "none",
         f"loss_normalization={estimator.loss_normalization!r}"),
        (estimator.feature_embedding is None,
         f"feature_embedding={estimator.feature_embedding!r}"),
        (not estimator.head_inputs, "head_inputs"),
        (not estimator.task_depth, "task_depth"),
        (estimator.ensemble_size == 1, f"ensemble_size={estimator.ensemble_size!r}"),
        (estimator.optimizer in ("adam", torch.optim.Adam),
         f"optimizer={estimator.optimizer!r}"),
        (set(estimator.optimizer_kwargs or {}) <= _ADAM_OPTIONS
         and not (estimator.optimizer_kwargs or {}).get("amsgrad"), "optimizer_kwargs"),
        (estimator.lr_schedule is None, f"lr_schedule={estimator.lr_schedule!r}"),
        (estimator.l1 == 0, "l1"),
        (estimator.precision == "float32", f"precision={estimator.precision!r}"),
        (not estimator.compile, "compile=True"),
        (not estimator.callbacks, "callbacks"),
        # Each fit's retrieval features depend on its own training rows ('auto' trains
        # the plain network first: that one stacks, the check follows per member).
        (getattr(estimator, "retrieval", "off") != "on", "retrieval='on'"),
    ]
    for ok, what in checks:
        if not ok:
            return what
    return None


def stackable_net(net):
    """Whether a built net is the plain trunk + heads a stack replicates."""
    module = net.module_
    return (type(module) is MultiTaskModule and type(module.trunk) is MLPTrunk
            and type(module.heads) is TaskHeads)


class Member:
    """One network of a stacked run: a (candidate, fold) of a search.

    Parameters
    ----------
    estimator : estimator
        The member's estimator with its net built and initialised (not trained),
        as ``fit`` builds it.
    X : ndarray of shape (n, F), float32
        The member's fit rows (its fold's training rows), validated.
    targets : ndarray of shape (n, 2T), float32
        The packed label-and-weight matrix of those rows.
    train_rows, valid_rows : ndarray of int or None
        Rows of X trained on, and the validation rows (None: no validation).
    data_key : hashable
        Members with the same key share X (the same fold).
    """

    def __init__(self, estimator, X, targets, train_rows, valid_rows, data_key):
        self.estimator = estimator
        self.X, self.targets = X, targets
        self.train_rows = np.asarray(train_rows, dtype=np.int64)
        self.valid_rows = None if valid_rows is None else np.asarray(valid_rows, np.int64)
        self.data_key = data_key
        est = estimator
        self.lr = float(est.lr)
        self.alpha = float(est.alpha)
        self.dropout = float(est.dropout)
        self.patience = int(est.patience)
        self.tol = float(est.tol)
        self.max_epochs = int(est.max_epochs)
        self.weights = np.asarray(est.task_params_.weights, dtype=np.float64)
        self.early_stopping = bool(est.early_stopping) and self.valid_rows is not None \
            and len(self.valid_rows) > 0
        kwargs = dict(est.optimizer_kwargs or {})
        self.betas = tuple(float(b) for b in kwargs.get("betas", (0.9, 0.999)))
        self.eps = float(kwargs.get("eps", 1e-8))
        self.shuffle_seed = int(est.net_.iterator_train__seed)
        #: Set by the run: None, or the error that ended this member's training.
        self.error = None
        #: Set by the run: whether max_epochs ended training while a task improved.
        self.still_improving = False
        self.n_epochs = 0


def memory_per_member(n_params, n_tasks, batch_size, widths, n_valid):
    """Bytes one member of a stack needs: parameters with gradients, Adam moments and
    best-epoch copies, and activations of a training step and a validation pass."""
    params = 4 * n_params * (4 + n_tasks + 1)
    activations = 4 * 3 * batch_size * widths + 4 * 2 * min(n_valid, _VALID_ROWS) * widths
    return params + activations


def available_memory(device):
    """Bytes a stack may use on ``device``."""
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
    else:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            free = 8 << 30
    return int(min(_MEMORY_CAP, _MEMORY_FRACTION * free))


class StackedMLP:
    """The stacked parameters of k hard-sharing networks (MLP trunk + task heads) and
    their batched forward pass.

    All parameters live in one (k, P) tensor (so that the optimizer, the
    best-epoch copies and the compaction of the stack are a few calls each);
    the layers are views of it, k leading: trunk layer i ``(k, in, out)`` and
    bias ``(k, 1, out)``; the first head layer ``(k, D, T, out)`` and
    ``(k, T, out)`` (one product against the shared representation); later
    head layers ``(k, T, in, out)`` and ``(k, T, 1, out)``.
    """

    def __init__(self, modules, activation, device):
        template = modules[0]
        self.trunk_names, self.head_names = _layer_names(template)
        self.n_trunk = len(self.trunk_names)
        self.n_heads = len(self.head_names)
        heads = [m for m in template.heads.layers if isinstance(m, TaskParallelLinear)]
        self.n_tasks = heads[0].n_tasks
        self.max_out = template.heads.max_out
        self.activation = make_activation(activation)
        per_member = [self._from_module(m) for m in modules]
        self.shapes = [tuple(t.shape) for t in per_member[0]]
        sizes = [math.prod(shape) for shape in self.shapes]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        flat = torch.stack([torch.cat([t.reshape(-1) for t in parts]) for parts in per_member])
        self.set_flat(flat.to(device))
        # Weight decay applies to weight matrices, not biases (alpha's "*bias" group).
        decay = torch.zeros(self.bounds[-1], dtype=torch.float32)
        for j in range(0, len(sizes), 2):
            decay[self.bounds[j]:self.bounds[j + 1]] = 1.0
        self.decay = decay.to(device)

    @property
    def n_params(self):
        return self.bounds[-1]

    def set_flat(self, flat):
        """Make ``flat`` (k, P) the parameters: the layers (``leaves``, what gradients
        are taken of) are views of its memory, so that updating it in place updates
        them."""
        self.flat = flat
        self.leaves = [v.detach().requires_grad_() for v in self.views(flat)]
        # Buffers of the written-out step, for this number of members (see forward_kept).
        self.workspace = {}

    def flat_grad(self, loss):
        """The gradient of ``loss`` with respect to the parameters, as (k, P)."""
        grads = torch.autograd.grad(loss, self.leaves)
        k = self.flat.shape[0]
        return torch.cat([g.reshape(k, -1) for g in grads], 1)

    def views(self, flat):
        """The layer tensors (views) of a (k, P) parameter tensor."""
        k = flat.shape[0]
        return [flat[:, a:b].view((k,) + shape)
                for a, b, shape in zip(self.bounds[:-1], self.bounds[1:], self.shapes)]

    def _from_module(self, module):
        state = module.state_dict()
        trunk_names, head_names = _layer_names(module)
        out = []
        for w, b in trunk_names:
            out += [state[w].detach().t().float(), state[b].detach().unsqueeze(0).float()]
        for j, (w, b) in enumerate(head_names):
            W, B = state[w].detach().float(), state[b].detach().float()  # (in, T, o), (T, o)
            if j == 0:
                out += [W, B]
            else:
                out += [W.permute(1, 0, 2).contiguous(), B.unsqueeze(1)]
        return [t.contiguous() for t in out]

    def member_state(self, flat, i, module):
        """Member i's weights of a (k, P) parameter tensor as a state dict of its plain
        ``module`` (whose layer numbering depends on its dropout layers)."""
        params = self.views(flat[i:i + 1].detach().to("cpu", copy=True))
        state = dict(module.state_dict())
        trunk_names, head_names = _layer_names(module)
        at = 0
        for w, b in trunk_names:
            state[w] = params[at][0].t().contiguous()
            state[b] = params[at + 1][0, 0].clone()
            at += 2
        for j, (w, b) in enumerate(head_names):
            W, B = params[at][0], params[at + 1][0]
            if j:
                W, B = W.permute(1, 0, 2), B[:, 0]
            state[w] = W.contiguous()
            state[b] = B.contiguous()
            at += 2
        return state

    def forward(self, params, X, keep=None):
        """Packed outputs (k*B, T*max_out) of member inputs X (k, B, F); ``params``: the
        layers (a list) or a (k, P) tensor; ``keep``: the members' dropout keep
        probabilities (k,) in training, None: no dropout."""
        if isinstance(params, torch.Tensor):
            params = self.views(params)
        act = self.activation
        k, B = X.shape[0], X.shape[1]
        T, at = self.n_tasks, 0
        h = X
        for _ in range(self.n_trunk):
            h = act(torch.baddbmm(params[at + 1], h, params[at]))
            if keep is not None:
                h = _dropout(h, keep)
            at += 2
        W, b = params[at], params[at + 1]
        D, o = W.shape[1], W.shape[3]
        out = torch.baddbmm(b.reshape(k, 1, T * o), h, W.reshape(k, D, T * o))
        at += 2
        if self.n_heads == 1:
            return out.reshape(k * B, T * o)
        out = act(out)
        h = out.view(k, B, T, o).transpose(1, 2).reshape(k * T, B, o)
        head_keep = None if keep is None else keep.repeat_interleave(T)
        if head_keep is not None:
            h = _dropout(h, head_keep)
        for j in range(1, self.n_heads):
            W, b = params[at], params[at + 1]
            h = torch.baddbmm(b.reshape(k * T, 1, -1), h, W.reshape(k * T, W.shape[2], -1))
            at += 2
            if j < self.n_heads - 1:
                h = act(h)
                if head_keep is not None:
                    h = _dropout(h, head_keep)
        m = h.shape[-1]
        return h.view(k, T, B, m).transpose(1, 2).reshape(k * B, T * m)


    def forward_eval(self, X):
        """:meth:`forward` of the current parameters without dropout, for validation:
        no graph, activations in place in buffers kept from epoch to epoch (a pass over
        every member's validation rows allocates megabytes, whose fresh pages cost more
        than the products). Falls back to :meth:`forward` where the written-out step
        does not apply."""
        params = self.views(self.flat)
        row_wise = self.n_heads == 2 and params[2 * self.n_trunk + 2].shape[3] == 1
        if not (self.supports_direct() and row_wise):
            return self.forward(self.flat, X)
        k, B = X.shape[0], X.shape[1]
        T, at, h = self.n_tasks, 0, X
        with torch.no_grad():
            for _ in range(self.n_trunk):
                h = self._activate(torch.baddbmm(
                    params[at + 1], h, params[at],
                    out=self._buffer(("eval", at), (k, B, params[at].shape[2]), h)))
                at += 2
            W, b = params[at], params[at + 1]
            D, o = W.shape[1], W.shape[3]
            a = self._activate(torch.baddbmm(
                b.reshape(k, 1, T * o), h, W.reshape(k, D, T * o),
                out=self._buffer(("eval", at), (k, B, T * o), h)))
            W2, b2 = params[at + 2], params[at + 3]
            z = torch.baddbmm(b2.view(k, 1, T), a, self._block_diagonal(W2, ("eval", at)).mT,
                              out=self._buffer(("eval", at + 2), (k, B, T), h))
            return z.view(k * B, T)

    # ------------------------------------------------------------------
    # The training step with its gradients written out (as ``sklearn_mtl._direct_step``
    # does for one network): the same products as forward(), the backward pass as
    # batched products over the member axis, no autograd graph.

    def supports_direct(self):
        """Whether :meth:`forward_kept` / :meth:`backward` know the activation."""
        return type(self.activation) in _IN_PLACE

    def _activate(self, x):
        """The activation, in place (``x`` is a buffer of this step)."""
        return _IN_PLACE[type(self.activation)](x, self.activation)

    def _buffer(self, key, shape, like):
        """A buffer kept from step to step: a step then allocates no large tensor, so
        it pays for no fresh pages from the OS (see sklearn_mtl._direct_step)."""
        buf = self.workspace.get(key)
        if buf is None or buf.shape != shape:
            buf = self.workspace[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def _block_diagonal(self, W, at):
        """The one-output head layers ``W`` (k, T, o, 1) as block-diagonal matrices (k, T,
        T*o): task t's weights in row t, columns t*o to (t+1)*o, zeros elsewhere. The
        row-wise products of the tasks' outputs are then one batched product (a
        broadcast elementwise product over (k, B, T, o) costs several times more)."""
        k, T, o = W.shape[0], W.shape[1], W.shape[2]
        key = ("block", at)
        block = self.workspace.get(key)
        if block is None or block.shape != (k, T, T * o):
            block = self.workspace[key] = W.new_zeros((k, T, T * o))
        torch.diagonal(block.view(k, T, T, o), dim1=1, dim2=2).copy_(W.view(k, T, o).mT)
        return block

    def _activation_grad(self, g, out):
        """``g`` times the activation's derivative at ``out`` (in place: ``g`` is this
        step's)."""
        if type(self.activation) is torch.nn.ReLU:
            return torch.ops.aten.threshold_backward.grad_input(g, out, 0.0, grad_input=g)
        return g.mul_(_ACTIVATIONS[type(self.activation)][1](out, self.activation))

    def forward_kept(self, X, keep=None):
        """:meth:`forward` of a training step without autograd: ``(outputs, tape)``, the
        tape being what :meth:`backward` needs (inputs, activation outputs, dropout
        masks per layer). Dropout draws the same masks as :meth:`forward`."""
        params = self.views(self.flat)
        k, B = X.shape[0], X.shape[1]
        T, at = self.n_tasks, 0
        tape, h = [], X
        with torch.no_grad():
            for _ in range(self.n_trunk):
                a = self._activate(torch.baddbmm(
                    params[at + 1], h, params[at],
                    out=self._buffer(("out", at), (k, B, params[at].shape[2]), h)))
                mask = _dropout_mask(a, keep) if keep is not None else None
                tape.append((at, h, a, mask))
                h = a if mask is None else a * mask
                at += 2
            W, b = params[at], params[at + 1]
            D, o = W.shape[1], W.shape[3]
            out = torch.baddbmm(b.reshape(k, 1, T * o), h, W.reshape(k, D, T * o),
                                out=self._buffer(("out", at), (k, B, T * o), h))
            if self.n_heads == 1:
                tape.append((at, h, None, None))
                return out.reshape(k * B, T * o), tape  # read within the step only
            a = self._activate(out)
            if self.n_heads == 2 and keep is None and params[at + 2].shape[3] == 1:
                # One output per task after one hidden head layer (the default heads):
                # a row-wise dot product in the (k, B, T, o) layout gives the packed
                # outputs directly, with no copy of the tasks to the front.
                W, b = params[at + 2], params[at + 3]
                tape.append((at, h, a, None))
                z = torch.baddbmm(b.view(k, 1, T), a, self._block_diagonal(W, at + 2).mT,
                                  out=self._buffer(("out", at + 2), (k, B, T), h))
                tape.append((at + 2, a.view(k, B, T, o), None, _ROW_WISE))
                return z.view(k * B, T), tape
            hh = self._buffer(("tasks", at), (k, T, B, o), h)
            hh.copy_(a.view(k, B, T, o).transpose(1, 2))
            hh = hh.view(k * T, B, o)
            head_keep = None if keep is None else keep.repeat_interleave(T)
            mask = _dropout_mask(hh, head_keep) if head_keep is not None else None
            tape.append((at, h, a, mask))
            h = hh if mask is None else hh * mask
            at += 2
            for j in range(1, self.n_heads):
                W, b = params[at], params[at + 1]
                if W.shape[3] == 1:
                    # One output per task: batched products with a unit dimension are
                    # slow; a row-wise dot product is not.
                    z = torch.linalg.vecdot(h, W.reshape(k * T, 1, -1), out=self._buffer(
                        ("out", at), (k * T, B), h)).unsqueeze(-1).add_(b.reshape(k * T, 1, 1))
                else:
                    z = torch.baddbmm(b.reshape(k * T, 1, -1), h,
                                      W.reshape(k * T, W.shape[2], -1),
                                      out=self._buffer(("out", at), (k * T, B, W.shape[3]), h))
                a = mask = None
                if j < self.n_heads - 1:
                    a = self._activate(z)
                    mask = _dropout_mask(a, head_keep) if head_keep is not None else None
                tape.append((at, h, a, mask))
                h = z if a is None else (a if mask is None else a * mask)
                at += 2
            m = h.shape[-1]
            return h.view(k, T, B, m).transpose(1, 2).reshape(k * B, T * m), tape

    def backward(self, tape, g_out):
        """The (k, P) gradient from the outputs' gradient ``g_out`` (k*B, T*m) and the
        tape of :meth:`forward_kept`."""
        params = self.views(self.flat)
        grads = [None] * len(params)
        k = self.flat.shape[0]
        T = self.n_tasks
        B = g_out.shape[0] // k
        with torch.no_grad():
            heads = tape[self.n_trunk:]
            if heads[-1][3] is _ROW_WISE:  # see forward_kept
                at, h, _, _ = heads[1]
                g = g_out.view(k, B, T)
                W = params[at]
                o = h.shape[-1]
                grads[at + 1] = g.sum(1).view(params[at + 1].shape)
                # Every task's weight gradient against every task's inputs, in one
                # product; the task's own are the diagonal blocks.
                full = torch.bmm(g.mT, h.view(k, B, T * o),
                                 out=self._buffer(("dh", at), (k, T, T * o), h))
                grads[at] = torch.diagonal(full.view(k, T, T, o), dim1=1, dim2=2).mT
                g = torch.bmm(g, self.workspace[("block", at)],
                              out=self._buffer(("dx", at), (k, B, T * o), h))
                at, h, a, _ = heads[0]
                g = self._activation_grad(g, a)
            elif self.n_heads > 1:
                m = g_out.shape[1] // T
                g = g_out.view(k, B, T, m).transpose(1, 2).reshape(k * T, B, m)
                for at, h, a, mask in reversed(heads[1:]):
                    if a is not None:
                        if mask is not None:
                            g = g * mask
                        g = self._activation_grad(g, a)
                    W = params[at].reshape(k * T, params[at].shape[2], -1)
                    grads[at + 1] = g.sum(1).view(params[at + 1].shape)
                    if W.shape[2] == 1:  # as in forward_kept: products with a unit dimension
                        grads[at] = torch.mul(h, g, out=self._buffer(("dh", at), h.shape, h)
                                              ).sum(1).view(params[at].shape)
                        g = torch.mul(g, W.view(k * T, 1, -1),
                                      out=self._buffer(("dx", at), h.shape, h))
                    else:
                        grads[at] = torch.bmm(h.transpose(1, 2), g).view(params[at].shape)
                        g = torch.bmm(g, W.transpose(1, 2))
                at, h, a, mask = heads[0]
                if mask is not None:
                    g = g * mask
                o = g.shape[2]
                g = self._activation_grad(
                    g.view(k, T, B, o).transpose(1, 2).reshape(k, B, T * o), a)
            else:
                at, h, _, _ = heads[0]
                g = g_out.view(k, B, -1)
            W = params[at]
            W2 = W.reshape(k, W.shape[1], -1)
            grads[at] = torch.bmm(h.transpose(1, 2), g).view(W.shape)
            grads[at + 1] = g.sum(1).view(params[at + 1].shape)
            g = torch.bmm(g, W2.transpose(1, 2))
            for i, (at, h, a, mask) in enumerate(reversed(tape[:self.n_trunk])):
                if mask is not None:
                    g = g * mask
                g = self._activation_grad(g, a)
                grads[at] = torch.bmm(h.transpose(1, 2), g,
                                      out=self._buffer(("dW", at), params[at].shape, g))
                grads[at + 1] = g.sum(1, keepdim=True)
                if i < self.n_trunk - 1:
                    g = torch.bmm(g, params[at].transpose(1, 2),
                                  out=self._buffer(("dx", at), h.shape, g))
            flat = self._buffer("grad", self.flat.shape, self.flat)
            return torch.cat([t.reshape(k, -1) for t in grads], 1, out=flat)


#: Tape marker of the last head layer run as a row-wise dot product (forward_kept).
_ROW_WISE = object()


def _dropout_mask(h, keep):
    """The inverted-dropout factor of :func:`_dropout` (same draws)."""
    shape = (-1,) + (1,) * (h.dim() - 1)
    keep = keep.view(shape)
    return (torch.rand_like(h) < keep) / keep


def _dropout(h, keep):
    """Inverted dropout with a keep probability per leading index."""
    return h * _dropout_mask(h, keep)


def _layer_names(module):
    """(weight, bias) state-dict names of the trunk's linear layers and of the heads'
    layers, in order."""
    trunk = [(f"trunk.layers.{i}.weight", f"trunk.layers.{i}.bias")
             for i, m in enumerate(module.trunk.layers) if isinstance(m, torch.nn.Linear)]
    heads = [(f"heads.layers.{i}.weight", f"heads.layers.{i}.bias")
             for i, m in enumerate(module.heads.layers) if isinstance(m, TaskParallelLinear)]
    return trunk, heads


def chunk_members(members, device, max_members=None):
    """Members in chunks of one batch size that fit the memory bound (and
    ``max_members``); ``batch_size='auto'`` may resolve differently for folds of
    different sizes, and a stack steps all its members on batches of one size."""
    by_batch = {}
    for member in members:
        by_batch.setdefault(int(member.estimator.net_.batch_size), []).append(member)
    return [chunk for group in by_batch.values()
            for chunk in _memory_chunks(group, device, max_members)]


def _memory_chunks(members, device, max_members=None):
    if not members:
        return []
    module = members[0].estimator.net_.module_
    n_params = sum(p.numel() for p in module.parameters())
    T = len(members[0].weights)
    widths = sum(p.shape[0] for n, p in module.named_parameters()
                 if n.startswith("trunk") and n.endswith("bias"))
    widths += sum(p.numel() for n, p in module.named_parameters()
                  if n.startswith("heads") and n.endswith("bias"))
    batch = int(members[0].estimator.net_.batch_size)
    n_valid = max((len(m.valid_rows) for m in members if m.valid_rows is not None), default=0)
    per = memory_per_member(n_params, T, batch, widths + members[0].X.shape[1], n_valid)
    size = max(1, available_memory(device) // per)
    if max_members is not None:
        size = min(size, int(max_members))
    return [members[i:i + size] for i in range(0, len(members), size)]


def train_members(members, device):
    """Train ``members`` (one architecture, tasks and batch size) as one stack; each
    member's net then holds its trained weights. A member whose training fails gets
    ``member.error``; the others are not affected."""
    run = _StackedRun(members, device)
    with _threads(run.step_macs(), run.device) as tuner, OneDNNProducts(run.device) as products:
        run.tuner, run.products = tuner, products
        run.run()


class _threads:
    """Intra-op threads for a stacked run, as a single fit chooses them
    (:mod:`sklearn_mtl._threads`): one for small steps, else measured on the first
    steps; the caller's setting is restored afterwards."""

    def __init__(self, macs, device):
        self.macs, self.cuda = macs, torch.device(device).type == "cuda"

    def __enter__(self):
        self.previous = torch.get_num_threads()
        if self.cuda:
            return None
        if self.previous == 1 or self.macs < SMALL_STEP_MACS:
            torch.set_num_threads(1)
            return None
        return ThreadTuner((1, self.previous))

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.previous:
            torch.set_num_threads(self.previous)


class _StackedRun:
    """The state of one stacked training run (see the module docstring)."""

    #: The thread tuner of this run (set by train_members), or None.
    tuner = None
    #: Where this run's batched products go (set by train_members), or None.
    products = None

    def __init__(self, members, device):
        self.members = list(members)
        self.device = torch.device(device)
        first = members[0].estimator
        self.batch_size = int(first.net_.batch_size)
        nets = [m.estimator.net_ for m in members]
        self.net = StackedMLP([net.module_ for net in nets], first.activation, self.device)
        self.templates = [net.module_ for net in nets]
        self.criterion = nets[0].criterion_
        self.T = self.net.n_tasks
        self.monitored = np.array([not t.auxiliary for t in first.tasks_], dtype=bool)
        self.reduced = [(t, fn) for t, _, fn, elementwise in self.criterion.others
                        if not elementwise]
        # The written-out step where every loss has a closed-form derivative.
        self.direct = (self.criterion.closed_form and not self.reduced
                       and self.net.supports_direct())
        # The data: one X per fold, one target matrix per member, concatenated.
        X_parts, x_offset, keys = [], [], {}
        at = 0
        for m in members:
            if m.data_key not in keys:
                keys[m.data_key] = at
                X_parts.append(m.X)
                at += m.X.shape[0]
            x_offset.append(keys[m.data_key])
        self.X = torch.from_numpy(np.concatenate(X_parts)).to(self.device)
        t_offset = np.cumsum([0] + [m.targets.shape[0] for m in members[:-1]])
        self.targets = torch.from_numpy(
            np.concatenate([m.targets for m in members]).astype(np.float32)).to(self.device)
        k = len(members)
        self.live = np.arange(k)  # stack slot -> member index
        self.x_offset = np.asarray(x_offset, dtype=np.int64)
        self.t_offset = np.asarray(t_offset, dtype=np.int64)
        self.generators = []
        for m in members:
            g = torch.Generator()
            g.manual_seed(m.shuffle_seed)
            self.generators.append(g)
        f32 = dict(dtype=torch.float32, device=self.device)
        self.static = torch.tensor(np.stack([m.weights for m in members]), **f32)
        self.lr = np.array([m.lr for m in members])
        self.alpha = torch.tensor([m.alpha for m in members], **f32).unsqueeze(1)
        self.decaying = bool((self.alpha != 0).any())
        self.keep = torch.tensor([1.0 - m.dropout for m in members], **f32)
        self.betas = np.array([m.betas for m in members], dtype=np.float64)
        self.eps = torch.tensor([m.eps for m in members], **f32).unsqueeze(1)
        self.exp_avg = torch.zeros_like(self.net.flat)
        self.exp_avg_sq = torch.zeros_like(self.net.flat)
        # While every member has taken every step, one step count serves them all
        # (the per-member counts are materialised when they first differ).
        self.steps_equal = True
        self.shared_steps = torch.zeros((), dtype=torch.float32, device=self.device)
        self.step_counts = None
        self._set_adam_rows()
        # Early stopping, per (member, task), as TaskEarlyStopping keeps it per task.
        T = self.T
        self.best_losses = np.full((k, T), np.inf)
        self.progress_losses = np.full((k, T), np.inf)
        self.best_epochs = np.zeros((k, T), dtype=int)
        self.waits = np.zeros((k, T), dtype=int)
        self.best_total = np.full(k, np.inf)
        self.best_epoch = np.zeros(k, dtype=int)  # 0: none yet
        self.epochs = np.zeros(k, dtype=int)
        stopping = np.array([m.early_stopping for m in members])
        self.any_stopping = bool(stopping.any())
        self.best_task = ([self.net.flat.detach().clone() for _ in range(T)]
                          if self.any_stopping else None)
        self.best_all = self.net.flat.detach().clone() if self.any_stopping else None
        self._blocks = {}  # storage of the gathered training rows (see _gather)
        self._valid = None  # the members' validation rows (see _validation_rows)
        self._valid_live = None  # those of the live members, and which they are

    def step_macs(self, live=None):
        n = len(self.members) if live is None else len(live)
        return n * self.batch_size * self.net.n_params

    # ------------------------------------------------------------------

    def run(self):
        while len(self.live):
            if self.products is not None:
                self.products.use(self.step_macs(self.live))
            self._epoch()
            self._end_epoch()

    def _epoch(self):
        B = self.batch_size
        live = self.live
        orders, counts = [], []
        for i in live:
            m = self.members[i]
            perm = torch.randperm(len(m.train_rows), generator=self.generators[i])
            orders.append(torch.from_numpy(m.train_rows)[perm])
            counts.append(len(m.train_rows))
        counts = np.asarray(counts)
        n_steps = int(max(1, math.ceil(counts.max() / B)))
        width = n_steps * B
        local = torch.zeros((len(live), width), dtype=torch.int64)
        valid = torch.zeros((len(live), width), dtype=torch.bool)
        for s, order in enumerate(orders):
            local[s, :len(order)] = order
            valid[s, :len(order)] = True
        x_idx = (local + torch.from_numpy(self.x_offset[live]).unsqueeze(1)).to(self.device)
        t_idx = (local + torch.from_numpy(self.t_offset[live]).unsqueeze(1)).to(self.device)
        valid_d = valid.to(self.device)
        # Rows of each member in each step, for who steps.
        rows_per_step = np.clip(counts[:, None] - B * np.arange(n_steps)[None, :], 0, B)
        train_sum = torch.zeros(len(live), dtype=torch.float32, device=self.device)
        dropout = bool((self.keep < 1).any())
        k, T = len(live), self.T
        # The epoch's rows are gathered a block of steps at a time (rows are narrow,
        # and one gather per step costs more than the copy), step-major so that each
        # step reads a contiguous (k, B, .) slice; padding rows get label weight 0.
        row_bytes = 4 * k * B * (self.X.shape[1] + self.targets.shape[1])
        per_block = max(1, _BLOCK_BYTES // row_bytes)
        for first in range(0, n_steps, per_block):
            steps = range(first, min(n_steps, first + per_block))
            cols = slice(first * B, steps[-1] * B + B)

            def step_major(idx):  # (k, n * B) -> (n, k, B)
                return idx[:, cols].reshape(k, len(steps), B).transpose(0, 1)

            X_block = self._gather("X", self.X, step_major(x_idx).reshape(-1))
            t_block = self._gather("targets", self.targets, step_major(t_idx).reshape(-1))
            X_block = X_block.view(len(steps), k, B, -1)
            t_block = t_block.view(len(steps), k, B, -1)
            t_block[..., T:2 * T] *= step_major(valid_d).unsqueeze(-1)
            for j, s in enumerate(steps):
                active = rows_per_step[:, s] > 0
                tuner = self.tuner if self.tuner is not None and self.tuner.active else None
                if tuner is not None:
                    tuner.before_step()
                loss = self._train_step(X_block[j], t_block[j], active, dropout)
                if tuner is not None:
                    tuner.after_step()
                train_sum += loss
        self.train_means = (train_sum / n_steps).cpu().numpy()  # finiteness only
        self.epochs[live] += 1

    def _gather(self, name, source, rows):
        """``source[rows]`` written into storage kept from epoch to epoch (fresh pages
        for megabytes of rows each epoch cost more than the gather)."""
        shape = (rows.shape[0],) + tuple(source.shape[1:])
        n = math.prod(shape)
        storage = self._blocks.get(name)
        if storage is None or storage.numel() < n:
            storage = self._blocks[name] = torch.empty(n, dtype=source.dtype,
                                                       device=source.device)
        return torch.index_select(source, 0, rows, out=storage[:n].view(shape))

    def _losses(self, out, targets, row_mask):
        """(k, T) weighted mean losses and label-weight sums of packed outputs (rows
        where the optional (k, B) ``row_mask`` is 0 left out)."""
        T = self.T
        k, B = targets.shape[0], targets.shape[1]
        labels = targets[..., :T]
        weights = targets[..., T:2 * T]
        if row_mask is not None:
            weights = weights * row_mask.unsqueeze(-1)
        E = self.criterion.element_losses(out, labels.reshape(k * B, T), None).view(k, B, T)
        E = torch.where(weights > 0, E, torch.zeros((), dtype=E.dtype, device=E.device))
        den = weights.sum(1)
        losses = (weights * E).sum(1) / den.clamp_min(1e-12)
        if self.reduced:
            out_k = out.view(k, B, -1)
            losses = torch.stack([
                self.criterion._reduced_losses(losses[i], self.reduced, out_k[i], labels[i],
                                               weights[i])
                for i in range(k)])
        return losses, den

    def _train_step(self, X, targets, active, dropout):
        """One step of every member on its (k, B, .) rows ``X`` and ``targets`` (label
        weights 0 on padding rows)."""
        if self.direct:
            member, grad = self._direct_step(X, targets, dropout)
            self._adam(grad, active)
            return member
        out = self.net.forward(self.net.leaves, X, self.keep if dropout else None)
        losses, den = self._losses(out, targets, None)
        present = den > 0
        member = torch.where(present, self.static * losses, 0.0).sum(1)
        self._adam(self.net.flat_grad(member.sum()), active)
        return member.detach()

    def _direct_step(self, X, targets, dropout):
        """(member losses (k,), gradient (k, P)) of a step, the gradients written out
        (closed-form loss derivatives, :meth:`StackedMLP.backward`)."""
        T = self.T
        k, B = targets.shape[0], targets.shape[1]
        out, tape = self.net.forward_kept(X, self.keep if dropout else None)
        with torch.no_grad():
            labels = targets[..., :T].reshape(k * B, T)
            weights = targets[..., T:2 * T]
            losses, den, coef, D, multiclass = self.criterion.closed_form_terms(
                out, labels, weights)
            a = torch.where(den > 0, self.static, 0.0)
            member = (a * losses).sum(1)
            G = self.criterion.output_grad((coef * a.unsqueeze(1)).view(k * B, T), D,
                                           multiclass, out.shape)
        return member, self.net.backward(tape, G)

    def _adam(self, grad, active):
        """One Adam step per active member: torch's fused Adam kernel, called on the
        members' rows with each member's own step count, grouped by (lr, betas, eps);
        weight decay (L2 on the weights, per member) is added to the gradient first,
        as torch's Adam adds it. Inactive members keep parameters and moments."""
        with torch.no_grad():
            if self.decaying:
                grad = grad + self.net.flat * self.net.decay * self.alpha
            if len(self.adam_groups) == 1 and active.all() and self.steps_equal:
                # Every member steps with the same settings and step count: one call
                # on the whole (k, P) tensors (the same elementwise update).
                (_, (lr, beta1, beta2, eps)), = self.adam_groups
                self.shared_steps.add_(1)
                torch._fused_adam_(
                    [self.net.flat], [grad], [self.exp_avg], [self.exp_avg_sq], [],
                    [self.shared_steps], amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                    weight_decay=0.0, eps=eps, maximize=False, grad_scale=None,
                    found_inf=None)
                return
            if self.steps_equal:  # from here on, per member
                self.steps_equal = False
                self.step_counts = [self.shared_steps.clone() for _ in range(len(self.live))]
            grads = grad.unbind(0)
            for slots, (lr, beta1, beta2, eps) in self.adam_groups:
                if not active.all():
                    slots = [s for s in slots if active[s]]
                    if not slots:
                        continue
                steps = [self.step_counts[s] for s in slots]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(
                    [self.rows[0][s] for s in slots], [grads[s] for s in slots],
                    [self.rows[1][s] for s in slots], [self.rows[2][s] for s in slots], [],
                    steps, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0,
                    eps=eps, maximize=False, grad_scale=None, found_inf=None)

    def _set_adam_rows(self):
        """Per-member row views of the parameters and moments, and the slots of each
        (lr, betas, eps) group (after each compaction)."""
        self.rows = (self.net.flat.unbind(0), self.exp_avg.unbind(0), self.exp_avg_sq.unbind(0))
        groups = {}
        for s, i in enumerate(self.live):
            key = (float(self.lr[i]), *map(float, self.betas[i]), float(self.members[i].eps))
            groups.setdefault(key, []).append(s)
        self.adam_groups = [(slots, key) for key, slots in groups.items()]

    # ------------------------------------------------------------------

    def _validation_losses(self, slots):
        """(len(slots), T) validation losses (NaN where a task has no label) of the
        members in stack ``slots``, in eval mode."""
        X_valid, t_valid = self._validation_rows()
        members = tuple(self.live[slots].tolist())
        cached = self._valid_live
        if cached is None or cached[0] != members:
            idx = torch.as_tensor(members, dtype=torch.int64, device=self.device)
            cached = self._valid_live = (members, X_valid.index_select(0, idx),
                                         t_valid.index_select(0, idx))
        X_valid, t_valid = cached[1], cached[2]
        every = len(slots) == len(self.live)  # the usual case: no parameter copy
        if every:
            forward = self.net.forward_eval
        else:
            sl = torch.as_tensor(slots, dtype=torch.int64, device=self.device)
            params = self.net.flat.detach().index_select(0, sl)

            def forward(X):
                return self.net.forward(params, X)
        V = X_valid.shape[1]
        step = max(1, _VALID_ROWS // len(slots))
        num = torch.zeros((len(slots), self.T), dtype=torch.float32, device=self.device)
        den = torch.zeros_like(num)
        with torch.no_grad():
            for c in range(0, V, step):
                out = forward(X_valid[:, c:c + step])
                losses, d = self._losses(out, t_valid[:, c:c + step], None)
                num += losses * d
                den += d
        num, den = num.cpu().numpy().astype(np.float64), den.cpu().numpy().astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def _validation_rows(self):
        """Every member's validation rows, gathered once: X (n, V, F) and targets
        (n, V, .), padded to the most rows with label weight 0."""
        if self._valid is None:
            V = max((len(m.valid_rows) for m in self.members if m.valid_rows is not None),
                    default=0)
            X = self.X.new_zeros((len(self.members), V, self.X.shape[1]))
            t = self.targets.new_zeros((len(self.members), V, self.targets.shape[1]))
            for i, m in enumerate(self.members):
                if m.valid_rows is None or not len(m.valid_rows):
                    continue
                rows = torch.from_numpy(m.valid_rows).to(self.device)
                n = rows.shape[0]
                X[i, :n] = self.X.index_select(0, rows + int(self.x_offset[i]))
                t[i, :n] = self.targets.index_select(0, rows + int(self.t_offset[i]))
            self._valid = (X, t)
        return self._valid

    def _end_epoch(self):
        live = self.live
        n = len(live)
        diverged = ~np.isfinite(self.train_means)
        stopped = np.zeros(n, dtype=bool)
        slots = [s for s in range(n) if self.members[live[s]].early_stopping
                 and not diverged[s]]
        if slots:
            losses = self._validation_losses(slots)
            stopped[slots] = self._early_stopping(np.asarray(slots), losses)
        done = np.array([stopped[s] or diverged[s]
                         or self.epochs[live[s]] >= self.members[live[s]].max_epochs
                         for s in range(n)])
        for s in np.flatnonzero(done):
            i = live[s]
            member = self.members[i]
            # As the estimator warns: max_epochs reached while a task still improved.
            member.still_improving = bool(
                member.early_stopping and not stopped[s] and not diverged[s]
                and (self.waits[i][self._deciding(i)] < member.patience).any())
            self._finish(s, diverged[s])
        if done.any():
            self._compact(np.flatnonzero(~done))

    def _early_stopping(self, slots, losses):
        """Update the per-(member, task) records (TaskEarlyStopping.on_epoch_end, per
        member) and the best-epoch weights; return which of ``slots`` stop."""
        idx = self.live[slots]
        static = self.static[torch.as_tensor(slots)].cpu().numpy().astype(np.float64)
        totals = (np.where(np.isfinite(losses), losses, 0.0) * static).sum(1)
        epoch = self.epochs[idx]
        observed = np.isfinite(losses)
        best = self.best_losses[idx]
        improved = observed & (losses < best)
        total_improved = np.isfinite(totals) & (totals < self.best_total[idx])
        self.best_total[idx] = np.where(total_improved, totals, self.best_total[idx])
        self.best_epoch[idx] = np.where(total_improved, epoch, self.best_epoch[idx])
        self.best_losses[idx] = np.where(improved, losses, best)
        self.best_epochs[idx] = np.where(improved, epoch[:, None], self.best_epochs[idx])
        self._snapshot(slots, improved, total_improved)
        previous = self.progress_losses[idx]
        seen = np.isfinite(previous)
        tol = np.array([self.members[i].tol for i in idx])[:, None]
        threshold = np.where(seen, previous - tol * np.abs(np.where(seen, previous, 0)),
                             np.inf)
        progress = observed & (losses < threshold)
        self.progress_losses[idx] = np.where(progress, losses, previous)
        self.waits[idx] = np.where(progress, 0, self.waits[idx] + 1)
        patience = np.array([self.members[i].patience for i in idx])
        stop = np.zeros(len(slots), dtype=bool)
        for r, i in enumerate(idx):
            deciding = self._deciding(i)
            watched = deciding & (self.best_epochs[i] > 0)
            if not watched.any():
                watched = deciding
            stop[r] = bool((self.waits[i][watched] >= patience[r]).all())
        return stop

    def _deciding(self, i):
        """Member i's tasks that decide when it stops, as in a plain fit."""
        return deciding_tasks(self.monitored, self.members[i].weights)

    def _snapshot(self, slots, improved, total_improved):
        """Copy the current weights of improved (member, task) pairs."""
        n = len(self.live)
        with torch.no_grad():
            for t in range(self.T):
                if not improved[:, t].any():
                    continue
                mask = np.zeros(n, dtype=bool)
                mask[slots[improved[:, t]]] = True
                self._copy_where(self.best_task[t], mask)
            if total_improved.any():
                mask = np.zeros(n, dtype=bool)
                mask[slots[total_improved]] = True
                self._copy_where(self.best_all, mask)

    def _copy_where(self, target, mask):
        where = torch.from_numpy(mask).to(self.device).unsqueeze(1)
        target.copy_(torch.where(where, self.net.flat, target))

    def _finish(self, s, diverged):
        """Load member slot s's trained weights into its net."""
        i = self.live[s]
        member = self.members[i]
        est = member.estimator
        net = est.net_
        template = self.templates[i]
        member.n_epochs = int(self.epochs[i])
        has_best = member.early_stopping and self.best_epoch[i] > 0
        if diverged and not has_best:
            member.error = FloatingPointError(
                f"Training diverged at epoch {member.n_epochs}: a training loss is not "
                f"finite (NaN or inf). Try a smaller lr (now {member.lr!r}) or standardised "
                "inputs.")
            return
        if has_best:
            best_epoch = int(self.best_epoch[i])
            epochs = np.where(self.best_epochs[i] > 0, self.best_epochs[i], best_epoch)
            best_state = self.net.member_state(self.best_all, s, template)
            states = {best_epoch: best_state}
            task_states = []
            for t, e in enumerate(epochs.tolist()):
                if e not in states:
                    states[e] = self.net.member_state(self.best_task[t], s, template)
                task_states.append(states[e])
            net.set_task_snapshots(task_states, best_state)
            est._best_epochs = [int(e) for task, e in zip(est.tasks_, epochs)
                                if not task.auxiliary]
        else:
            net.load_weights(self.net.member_state(self.net.flat, s, template))
            net.clear_task_snapshots()
        est.n_epochs_ = member.n_epochs

    def _compact(self, keep):
        """Keep only stack slots ``keep`` (the members still training)."""
        self.live = self.live[keep]
        if not len(keep):
            return
        sel = torch.as_tensor(keep, dtype=torch.int64, device=self.device)
        with torch.no_grad():
            self.net.set_flat(self.net.flat.index_select(0, sel))
            self.exp_avg = self.exp_avg.index_select(0, sel)
            self.exp_avg_sq = self.exp_avg_sq.index_select(0, sel)
            if self.any_stopping:
                self.best_task = [t.index_select(0, sel) for t in self.best_task]
                self.best_all = self.best_all.index_select(0, sel)
        self.static = self.static.index_select(0, sel)
        self.alpha = self.alpha.index_select(0, sel)
        self.keep = self.keep.index_select(0, sel)
        self.eps = self.eps.index_select(0, sel)
        if not self.steps_equal:
            self.step_counts = [self.step_counts[s] for s in keep]
        self._set_adam_rows()
