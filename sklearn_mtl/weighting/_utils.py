"""Small tensor helpers shared by the weighting strategies.

Everything here keeps tensors on the device of its inputs and never syncs
with the host, so the loss-only strategies stay sync-free on CUDA.
"""

import numpy as np
import torch

from .._tasks import KINDS


def masked_losses(losses, present):
    """``losses`` with absent entries replaced by exact zeros.

    ``torch.where`` rather than a product: ``0 * nan`` is ``nan``, and a
    product would also send a ``nan`` gradient back to an absent task.
    """
    return torch.where(present, losses, 0.0)


def weighted_sum(weights, losses, present):
    """``(sum_t w_t L_t over present tasks, w with absent entries zeroed)``."""
    loss = torch.where(present, losses, 0.0)
    w = torch.where(present, weights.to(device=loss.device, dtype=loss.dtype), 0.0)
    return (w * loss).sum(), w


def masked_softmax(z, present):
    """Softmax of ``z`` over the present entries; absent entries get exactly 0.

    With no present entry at all the result is all zeros (not ``nan``).
    """
    zm = z.masked_fill(~present, float("-inf"))
    m = zm.amax()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(zm - m)
    s = e.sum()
    return e / torch.where(s > 0, s, torch.ones_like(s))


def masked_mean(x, present):
    """Mean of ``x`` over the present entries (0 when none is present)."""
    n = present.sum().clamp_min(1).to(x.dtype)
    return torch.where(present, x, torch.zeros_like(x)).sum() / n


def on_host(solve, gram, *args):
    """``solve`` (numpy float64 Gram matrix, *args -> coefficients) applied to a Gram
    tensor: the one host crossing of the exact gradient methods (their small solvers
    are numpy code); the result is a tensor like ``gram``."""
    coef = solve(gram.detach().to("cpu", torch.float64).numpy(), *args)
    return torch.as_tensor(coef, dtype=gram.dtype, device=gram.device)


def epoch_array(values, like):
    """A per-epoch numpy array (or None) as a float tensor on ``like``'s device."""
    if values is None:
        return None
    return torch.as_tensor(
        np.asarray(values, dtype=np.float64), dtype=torch.float32, device=like.device
    )


def check_task_kinds(task_kinds, n_tasks):
    """Validate the optional ``task_kinds`` argument of ``build``."""
    if task_kinds is None:
        return ["regression"] * n_tasks
    kinds = list(task_kinds)
    if len(kinds) != n_tasks:
        raise ValueError(f"task_kinds has {len(kinds)} entries for {n_tasks} tasks.")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"Unknown task kinds {bad}; expected one of {list(KINDS)}.")
    return kinds


def make_generator(random_state):
    """A seeded CPU ``torch.Generator``, or None to use torch's global RNG.

    ``None`` deliberately uses the global generator: the engine seeds torch
    from the estimator's ``random_state``, so a fit stays reproducible. An
    int seeds a private generator; a numpy ``RandomState``/``Generator``
    supplies the seed (the value was validated with the strategy's
    hyperparameters). Draws happen on the CPU so that the same seed gives
    the same draws on every device.
    """
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**31 - 1))
    else:
        seed = int(random_state)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


#: The constraints of a ``random_state`` hyperparameter (scikit-learn's, plus a
#: numpy ``Generator``).
RANDOM_STATE = ["random_state", np.random.Generator]


def adam_masked_step(
    param, grad, mask, exp_avg, exp_avg_sq, steps, lr, betas=(0.9, 0.999), eps=1e-8
):
    """One Adam step on the entries of ``param`` where ``mask`` is true.

    Entries outside the mask (absent tasks) keep their value and moments; the
    step count is per entry so bias correction stays right for tasks that
    skip steps. All in place, no host sync.
    """
    b1, b2 = betas
    m = mask.to(param.dtype)
    steps.add_(m)
    exp_avg.copy_(torch.where(mask, b1 * exp_avg + (1 - b1) * grad, exp_avg))
    exp_avg_sq.copy_(torch.where(mask, b2 * exp_avg_sq + (1 - b2) * grad * grad, exp_avg_sq))
    t = steps.clamp_min(1)
    m_hat = exp_avg / (1 - b1**t)
    v_hat = exp_avg_sq / (1 - b2**t)
    param.sub_(m * lr * m_hat / (v_hat.sqrt() + eps))
