"""Intra-op CPU threads for a fit: one for small steps, measured for large ones.

Tabular networks make small steps: at a few million multiply-adds per step,
each op is microseconds of work and a second thread costs more in
synchronisation than it saves; when another process keeps the other core busy,
every op waits for a thread that is descheduled and a step takes tens of times
longer. Large steps (wide networks, large batches) do gain from threads on an
idle machine. Whether the machine is idle is only known by trying, so for
large steps :class:`ThreadTuner` times a few training steps at one thread and
at the caller's thread count and keeps the faster; a busy machine thereby
falls back to one thread. Having chosen more threads, it keeps timing the
steps, and goes back to one thread for good when they become clearly slower
than one thread was (another process took the cores). The thread count does not
change the arithmetic of these networks (tested). Measured figures are in
``benchmarks/RESULTS.md``.
"""

import collections
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
#: Having chosen more threads: back to one when the median of the last WATCHED
#: steps is this many times one thread's (a busy machine makes it 10-50 times;
#: a slow step now and then, e.g. after a validation pass, is not that).
WATCHED, SLOWDOWN = 11, 1.25


class ThreadTuner:
    """Times training steps at each candidate thread count, then keeps the fastest.

    ``before_step``/``after_step`` bracket each training step while ``active``:
    until the choice is made (``chosen``), and afterwards while more than one
    thread is used (the watch for a machine that became busy).
    """

    def __init__(self, candidates):
        self.candidates = tuple(candidates)
        self.times = {c: [] for c in self.candidates}
        # One warm-up step per candidate (a new thread count starts its pool).
        self._schedule = [c for c in self.candidates for _ in range(TIMED_STEPS + 1)]
        self._position = 0
        self._started = None
        self.chosen = None if len(self.candidates) > 1 else self.candidates[0]
        self._recent = collections.deque(maxlen=WATCHED)
        torch.set_num_threads(self.candidates[0])

    @property
    def active(self):
        """Whether the steps still need to be bracketed."""
        return self.chosen is None or self.chosen > 1

    def before_step(self):
        if self.chosen is None:
            threads = self._schedule[self._position]
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        elif self.chosen == 1:
            return
        self._started = time.perf_counter()

    def after_step(self):
        if self._started is None:
            return
        elapsed = time.perf_counter() - self._started
        self._started = None
        if self.chosen is not None:
            self._watch(elapsed)
            return
        threads = self._schedule[self._position]
        warm_up = self._position == 0 or self._schedule[self._position - 1] != threads
        if not warm_up:
            self.times[threads].append(elapsed)
        self._position += 1
        if self._position == len(self._schedule):
            self.chosen = self._choose()
            torch.set_num_threads(self.chosen)

    def _watch(self, elapsed):
        """With more than one thread: back to one when the recent steps are slower
        than one thread was."""
        self._recent.append(elapsed)
        one = statistics.median(self.times[self.candidates[0]])
        if (len(self._recent) == self._recent.maxlen
                and statistics.median(self._recent) > SLOWDOWN * one):
            self.chosen = 1
            torch.set_num_threads(1)

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
