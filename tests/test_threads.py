"""Intra-op threads: one for small steps, the faster of the candidates for large ones,
the caller's setting restored, and the same model whatever the choice."""

import numpy as np
import pytest
import torch

import sklearn_mtl._threads as threads_module
from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl._threads import TIMED_STEPS, ThreadTuner

from .conftest import make_mixed


class _Clock:
    """perf_counter stand-in: each step takes ``cost[threads]`` seconds."""

    def __init__(self, cost):
        self.cost, self.now = cost, 0.0

    def __call__(self):
        return self.now

    def step(self):
        self.now += self.cost[torch.get_num_threads()]


def _run(tuner, clock, steps):
    for _ in range(steps):
        tuner.before_step()
        clock.step()
        tuner.after_step()


@pytest.mark.parametrize("cost, expected", [
    ({1: 1.0, 2: 0.5}, 2),  # threads pay: an idle machine, a large step
    ({1: 1.0, 2: 30.0}, 1),  # a busy machine: the second thread stalls every op
    ({1: 1.0, 2: 0.95}, 1),  # within the margin: one thread is the safer choice
])
def test_the_faster_thread_count_is_kept(monkeypatch, cost, expected):
    clock = _Clock(cost)
    monkeypatch.setattr(threads_module.time, "perf_counter", clock)
    tuner = ThreadTuner((1, 2))
    _run(tuner, clock, 2 * (TIMED_STEPS + 1) - 1)
    assert tuner.chosen is None  # still measuring
    _run(tuner, clock, 1)
    assert tuner.chosen == expected and torch.get_num_threads() == expected
    assert all(len(t) == TIMED_STEPS for t in tuner.times.values())  # warm-ups left out
    _run(tuner, clock, 5)
    assert torch.get_num_threads() == expected


def _fit(batch_size=64, **params):
    X, Y = make_mixed(n=600, seed=0)
    return MultiTaskRegressorClassifier(
        hidden_layer_sizes=(256, 256), head_hidden_sizes=(32,), batch_size=batch_size,
        max_epochs=8, random_state=0, early_stopping=False, **params).fit(X, Y), X


def test_a_small_step_trains_on_one_thread_and_restores_the_setting():
    torch.set_num_threads(2)
    est, _ = _fit(batch_size=8)  # 8 rows x ~76k weights: under the cut-off
    assert est.net_.threads_ == 1
    assert torch.get_num_threads() == 2


def test_a_large_step_measures_and_restores_the_setting(monkeypatch):
    torch.set_num_threads(2)
    seen = []
    original = ThreadTuner._choose

    def choose(self):
        seen.append({c: len(t) for c, t in self.times.items()})
        return original(self)

    monkeypatch.setattr(ThreadTuner, "_choose", choose)
    est, _ = _fit(batch_size=300)  # 300 x ~76k weights: over the cut-off
    assert seen == [{1: TIMED_STEPS, 2: TIMED_STEPS}]
    assert est.net_.threads_ in (1, 2)
    assert torch.get_num_threads() == 2


def test_the_thread_count_does_not_change_the_model(monkeypatch):
    models = []
    for n in (1, 2):
        monkeypatch.setattr(ThreadTuner, "_choose", lambda self, n=n: n)
        torch.set_num_threads(2)
        est, X = _fit(batch_size=300)
        assert est.net_.threads_ == n
        models.append((est, X))
    (a, X), (b, _) = models
    for (name, p), q in zip(a.net_.module_.named_parameters(), b.net_.module_.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy(), err_msg=name)


def test_more_threads_are_dropped_when_the_machine_gets_busy(monkeypatch):
    clock = _Clock({1: 1.0, 2: 0.5})
    monkeypatch.setattr(threads_module.time, "perf_counter", clock)
    tuner = ThreadTuner((1, 2))
    _run(tuner, clock, 2 * (TIMED_STEPS + 1))
    assert tuner.chosen == 2 and tuner.active
    _run(tuner, clock, 10)
    assert tuner.chosen == 2  # still faster: kept
    clock.cost[2] = 3.0  # one slow step now and then is not a busy machine
    _run(tuner, clock, 1)
    clock.cost[2] = 0.5
    _run(tuner, clock, threads_module.WATCHED)
    assert tuner.chosen == 2
    clock.cost[2] = 20.0  # another process now holds the second core
    _run(tuner, clock, threads_module.WATCHED)
    assert tuner.chosen == 1 and torch.get_num_threads() == 1 and not tuner.active
    clock.cost[2] = 0.5
    _run(tuner, clock, 10)
    assert torch.get_num_threads() == 1  # for the rest of the call
