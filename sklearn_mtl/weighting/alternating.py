"""Alternating (round-robin) training: one task per step."""

import torch

from ._base import Step, Weighting, WeightingState


def round_robin_choice(present, pointer):
    """Index of the first present task at or after ``pointer``, cyclically.

    Pure tensor arithmetic (no host sync); returns ``pointer`` unchanged in
    value when no task is present (the caller masks that case).
    """
    n = present.shape[0]
    ar = torch.arange(n, device=present.device)
    distance = (ar - pointer) % n
    # Absent tasks are pushed past every present one.
    key = torch.where(present, distance, torch.full_like(distance, n))
    return torch.argmin(key)


class AlternatingState(WeightingState):
    def __init__(self, static_weights):
        super().__init__(static_weights)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def combine(self, losses, present, grads=None):
        chosen = round_robin_choice(present, self.pointer)
        ar = torch.arange(self.n_tasks, device=losses.device)
        onehot = (ar == chosen) & present
        w = torch.where(onehot, self.static_weights.to(losses.dtype), torch.zeros_like(losses))
        loss = torch.where(onehot, losses, torch.zeros_like(losses))
        # Advance only when a task was trained, so an empty batch skips no one.
        self.pointer = torch.where(present.any(), (chosen + 1) % self.n_tasks, self.pointer)
        return Step((w * loss).sum(), w.detach())


class Alternating(Weighting):
    """Round robin over the tasks: each step trains a single task.

    Step ``k`` gives the next present task in cyclic order (after the one
    trained at step ``k-1``) its static weight and every other task weight 0,
    as in alternating multi-task training (e.g. Dong et al. 2015, "Multi-Task
    Learning for Multiple Language Translation"; Søgaard & Goldberg 2016).
    Absent tasks are skipped, so with missing labels a task may be skipped in
    a round. Static weights scale the chosen task's loss.
    """

    _parameter_constraints: dict = {}

    def build(self, static_weights, task_kinds=None):
        return AlternatingState(static_weights)
