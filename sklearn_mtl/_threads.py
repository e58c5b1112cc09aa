"""Intra-op CPU threads for a fit: one for small steps, measured for large ones.

Tabular networks make small steps: at a few million multiply-adds per step,
each op is microseconds of work and a second thread costs more in
synchronisation than it saves; when another process keeps the other core busy,
every op waits for a thread that is descheduled and a step takes tens of times
longer. Large steps (wide networks, large batches) do gain from threads on an
idle machine. Whether the machine is idle is only known by trying, so for
large steps :class:`ThreadTuner` times a few training steps at one thread and
at the caller's thread count and keeps the faster for the rest of the call;
a busy machine thereby falls back to one thread. Measured figures are in
``benchmarks/RESULTS.md``.
"""

import statistics
import time

import torch

#: Below this many multiply-adds per training step (batch rows x weights), one
#: thread, without measuring.
SMALL_STEP_MACS = 1 << 22
#: Steps timed per candidate thread count, after one warm-up step each.
TIMED_STEPS = 5
#: More threads are kept only when they are at least this much faster.
MARGIN = 0.9


class ThreadTuner:
    """Times training steps at each candidate thread count, then keeps the fastest.

    ``before_step``/``after_step`` bracket each training step until the choice
    is made (``chosen``); the thread count is then set once and the tuner does
    nothing more.
    """

    def __init__(self, candidates):
        self.candidates = tuple(candidates)
        self.times = {c: [] for c in self.candidates}
        # One warm-up step per candidate (a new thread count starts its pool).
        self._schedule = [c for c in self.candidates for _ in range(TIMED_STEPS + 1)]
        self._position = 0
        self._started = None
        self.chosen = None if len(self.candidates) > 1 else self.candidates[0]
        torch.set_num_threads(self.candidates[0])

    def before_step(self):
        if self.chosen is not None:
            return
        threads = self._schedule[self._position]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self._started = time.perf_counter()

    def after_step(self):
        if self.chosen is not None or self._started is None:
            return
        elapsed = time.perf_counter() - self._started
        self._started = None
        threads = self._schedule[self._position]
        warm_up = self._position == 0 or self._schedule[self._position - 1] != threads
        if not warm_up:
            self.times[threads].append(elapsed)
        self._position += 1
        if self._position == len(self._schedule):
            self.chosen = self._choose()
            torch.set_num_threads(self.chosen)

    def _choose(self):
        medians = {c: statistics.median(t) for c, t in self.times.items()}
        best = self.candidates[0]
        for c in self.candidates[1:]:
            if medians[c] < MARGIN * medians[best]:
                best = c
        return best


def step_macs(module, batch_size):
    """Multiply-adds of one forward step: batch rows x the weights of matrices."""
    return int(batch_size) * sum(p.numel() for p in module.parameters() if p.dim() >= 2)
