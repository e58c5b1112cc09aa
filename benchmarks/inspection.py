"""Cost of the inspection tools.

* Recording task affinity (``callbacks=[TaskAffinity(method, every=10)]``)
  against the same fit without it: the classic network (64-64 trunk, one
  20-unit hidden layer per head, Adam, batch 64) on synthetic data with 4, 8
  and 16 tasks. The variants run round-robin; a ratio is the median over
  rounds of the recorded fit's time divided by the plain fit's time of the
  same round.
* ``compare_single_task`` (cv=5) against (T + 1) x cv plain fits of the
  multi-task estimator on a fold's training rows: the time it would take to
  run every fit of the comparison as a full multi-task fit.

The load average (1 minute) is read before and after every timed call; on a
shared machine rerun when it is above about 0.5 (see DESIGN.md section 8).

    python benchmarks/inspection.py            # about 2 minutes on 2 busy cores
    python benchmarks/inspection.py --quick    # a smoke run
    python benchmarks/inspection.py --write    # also writes the section of RESULTS.md
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import _common as C  # noqa: E402

from sklearn_mtl.callbacks import TaskAffinity  # noqa: E402
from sklearn_mtl.inspection import compare_single_task  # noqa: E402

TITLE = "Inspection"


def load():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def timed(fn):
    before = load()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, before, load()


def recording_cost(n_tasks, n_rows, epochs, rounds):
    X, Y = C.make_data(n_rows, n_tasks=n_tasks, seed=0)
    variants = {"plain": None, "lookahead": "lookahead", "gradient_cosine": "gradient_cosine"}
    times = {name: [] for name in variants}
    loads = []
    C.estimator(64, 1).fit(X, Y)  # warm-up: first-call costs out of the timings
    for _ in range(rounds):
        for name, method in variants.items():
            callbacks = None if method is None else [TaskAffinity(method=method, every=10)]
            est = C.estimator(64, epochs, callbacks=callbacks)
            seconds, before, after = timed(lambda: est.fit(X, Y))
            times[name].append(seconds)
            loads += [before, after]
            assert est.net_._fast_epoch_ok()  # the fast path stayed on
    ratios = {name: statistics.median(t / p for t, p in zip(times[name], times["plain"]))
              for name in variants}
    seconds = {name: statistics.median(v) for name, v in times.items()}
    return seconds, ratios, (min(loads), max(loads))


def comparison_cost(n_tasks, n_rows, epochs, cv):
    X, Y = C.make_data(n_rows, n_tasks=n_tasks, seed=1)
    est = C.estimator(64, epochs)
    n_train = n_rows * (cv - 1) // cv
    fit_seconds, b1, a1 = timed(lambda: C.estimator(64, epochs).fit(X[:n_train],
                                                                     Y.iloc[:n_train]))
    compare_seconds, b2, a2 = timed(lambda: compare_single_task(est, X, Y, cv=cv,
                                                                random_state=0))
    budget = (n_tasks + 1) * cv * fit_seconds
    return fit_seconds, compare_seconds, budget, (min(b1, a1, b2, a2), max(b1, a1, b2, a2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, epochs, rounds = (1000, 2, 1) if args.quick else (4000, 10, 5)
    start_load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3

    lines = ["| tasks | plain fit (s) | lookahead (s) | ratio | gradient cosine (s) | ratio "
             "| load (1 min) during |",
             "|---|---|---|---|---|---|---|"]
    for n_tasks in (4, 8, 16):
        seconds, ratios, loads = recording_cost(n_tasks, rows, epochs, rounds)
        line = (f"| {n_tasks} | {seconds['plain']:.2f} | {seconds['lookahead']:.2f} | "
                f"{ratios['lookahead']:.2f}x | {seconds['gradient_cosine']:.2f} | "
                f"{ratios['gradient_cosine']:.2f}x | {loads[0]:.2f}-{loads[1]:.2f} |")
        print(line, flush=True)
        lines.append(line)

    cv = 2 if args.quick else 5
    compare_lines = ["| tasks | one multi-task fit (s) | compare_single_task (s) "
                     "| (T+1) x cv fits (s) | ratio | load (1 min) during |",
                     "|---|---|---|---|---|---|"]
    for n_tasks in (4,):
        fit_s, compare_s, budget, loads = comparison_cost(n_tasks, rows // 2, epochs, cv)
        line = (f"| {n_tasks} | {fit_s:.2f} | {compare_s:.1f} | {budget:.1f} | "
                f"{compare_s / budget:.2f}x | {loads[0]:.2f}-{loads[1]:.2f} |")
        print(line, flush=True)
        compare_lines.append(line)
    end_load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3

    if args.write:
        from _results import replace_section

        body = "\n".join([
            f"Command: `python benchmarks/inspection.py --write`. CPU, one intra-op thread; "
            f"load average {', '.join(f'{v:.2f}' for v in start_load)} at the start, "
            f"{', '.join(f'{v:.2f}' for v in end_load)} at the end.",
            "",
            f"### Recording task affinity (every=10), {rows} rows, batch 64, {epochs} epochs, "
            f"median of {rounds} rounds",
            "",
            "The classic network (64-64 trunk, 20-unit heads, Adam). A recorded step costs "
            "one forward and one vectorised backward pass (the T per-task gradients of the "
            "shared parameters); the lookahead adds one vectorised forward pass over the T "
            "moved parameter sets (torch.func.vmap; one pass per task when vmap cannot batch "
            "the network), so its cost grows with T: record less often (a larger `every`) "
            "for many tasks. The fast path stays on: the other nine steps in ten pay one "
            "integer test. Between runs at load averages near 1 on this 2-core machine the "
            "ratios moved by about 0.1.",
            "",
            *lines,
            "",
            f"### compare_single_task, cv={cv}, {rows // 2} rows, {epochs} epochs",
            "",
            "Against (T + 1) x cv plain multi-task fits on a fold's training rows; the "
            "single-task fits have one head, so they cost a little less than a multi-task "
            "fit.",
            "",
            *compare_lines,
        ])
        replace_section(TITLE, body)


if __name__ == "__main__":
    main()
