"""Loss-weighting strategies: held-out scores and cost per epoch.

Every registered strategy (``sklearn_mtl.weighting.WEIGHTINGS``) is trained
with the same network, data and epochs on

* a synthetic problem built to make tasks compete: T tasks whose roles cycle
  (conflicting, conflicting, helpful). Each conflicting task reads its own
  three private directions of the input (plus a little of two shared
  directions) and the trunk ends in a narrow 8-unit layer, too narrow to hold
  every task's features, so the conflicting tasks pull the shared layers
  apart; a helpful task reads only the shared directions, which every other
  task also uses. Conflicting tasks alternate regression and binary
  classification (an MSE next to a cross-entropy); helpers are regressions.
  Run at T = 2, 5 and 10;
* the Palmer penguins table (species, sex, body mass; default network).

Reported: per-task held-out scores (R² for regression, accuracy for
classification) and the median time per epoch relative to ``static``. The
fits run in rounds, every strategy a few epochs per round in turn
(``warm_start``), so that the machine's load changes hit all strategies alike;
a ratio is the median over rounds of the strategy's median epoch time divided
by static's in the same round. For the gradient methods the same fits are
also timed with the per-task gradients computed by one full backward pass per
task (``naive_task_gradients``, ``GRADIENT_ENGINE = "naive"``), the way
LibMTL-style engines do: the naive baseline, in the same rounds.

    python benchmarks/weighting.py            # about 4 minutes on 2 busy cores
    python benchmarks/weighting.py --quick    # a smoke run
    python benchmarks/weighting.py --write    # also writes the section of RESULTS.md
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

sys.path.insert(0, str(Path(__file__).parent))

from sklearn_mtl import MultiTaskRegressorClassifier, _gradients
from sklearn_mtl.datasets import load_penguins
from sklearn_mtl.weighting import WEIGHTINGS

METHODS = list(WEIGHTINGS)
GRADIENT = [name for name, cls in WEIGHTINGS.items() if cls.needs_grads]
ROLES = ("conflict", "conflict", "helper")
TITLE = "Loss weighting"


# ----------------------------------------------------------------------------
# Data


def make_conflict(n_samples, n_tasks, seed, n_features=32, noise=0.2):
    """X (n, n_features) and Y with roles cycling (conflict, conflict, helper)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    Q, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    shared = np.tanh(1.5 * (X @ Q[:, :2]))
    columns, col, n_conflict = {}, 2, 0
    for t in range(n_tasks):
        role = ROLES[t % len(ROLES)]
        if role == "helper":
            signal = shared @ rng.standard_normal(2)
            kind = "regression"
        else:
            block = Q[:, col:col + 3] if col + 3 <= n_features else Q[:, 2:5]
            col += 3
            private = np.tanh(1.5 * (X @ block)) @ rng.standard_normal(3)
            signal = private + 0.5 * (shared @ rng.standard_normal(2))
            kind = "regression" if n_conflict % 2 == 0 else "binary"
            n_conflict += 1
        signal = (signal - signal.mean()) / signal.std()
        signal = signal + noise * rng.standard_normal(n_samples)
        if kind == "binary":
            columns[f"t{t}_{role}_bin"] = (signal > 0).astype(np.int64)
        else:
            columns[f"t{t}_{role}_reg"] = signal
    return X.astype(np.float32), pd.DataFrame(columns)


def synthetic_split(n_tasks, seed, n_samples):
    X, Y = make_conflict(n_samples, n_tasks, seed)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.25, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), Y_train, Y_test


def penguins_split(seed):
    X, Y = load_penguins()
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.3, random_state=seed)
    num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    pre = ColumnTransformer([
        ("num", num, ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["island"]),
    ]).fit(X_train)
    return pre.transform(X_train), pre.transform(X_test), Y_train, Y_test


# ----------------------------------------------------------------------------
# Interleaved training


def run_rounds(split, params, rounds, epochs, naive_epochs, seed, methods=METHODS):
    """Train every method (and the naive-gradient twin of each gradient method) in
    rounds; return (scores per method, per-round epoch times per variant)."""
    X_train, X_test, Y_train, Y_test = split
    variants = [(name, name, False) for name in methods]
    variants += [(f"naive:{name}", name, True) for name in methods
                 if name in GRADIENT and naive_epochs]
    models = {
        label: MultiTaskRegressorClassifier(
            weighting=name, warm_start=True, random_state=seed,
            max_epochs=naive_epochs if naive else epochs, **params)
        for label, name, naive in variants
    }
    times = {label: [] for label, _, _ in variants}
    for _ in range(rounds):
        for label, _, naive in variants:
            model = models[label]
            done = len(model.history_) if hasattr(model, "net_") else 0
            _gradients.GRADIENT_ENGINE = "naive" if naive else "batched"
            try:
                model.fit(X_train, Y_train)
            finally:
                _gradients.GRADIENT_ENGINE = "batched"
            durations = model.history_[done:, "dur"]
            times[label].append(statistics.median(durations))
    scores = {name: models[name].score_tasks(X_test, Y_test) for name in methods}
    for name, model in models.items():
        history = model.history_
        for key in history[-1]:
            value = history[-1, key]
            if key.startswith(("train_loss", "weight_")) and not np.isfinite(value):
                raise RuntimeError(f"{name}: non-finite {key} in the history")
    return scores, times


def ratios(times, baseline="static"):
    """Median over rounds of each variant's epoch time over the baseline's."""
    return {label: statistics.median(a / b for a, b in zip(ts, times[baseline], strict=True))
            for label, ts in times.items()}


# ----------------------------------------------------------------------------
# Tables


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def score_table(scores_by_seed, timing=None):
    """Per-task scores (mean over seeds) and their mean; optional time ratio column."""
    tasks = list(next(iter(scores_by_seed[0].values())))
    header = ["strategy"] + tasks + ["mean"] + (["epoch time / static"] if timing else [])
    rows = []
    for name in METHODS:
        per_task = [np.mean([s[name][t] for s in scores_by_seed]) for t in tasks]
        row = [name] + [f"{v:.3f}" for v in per_task] + [f"{np.mean(per_task):.3f}"]
        if timing:
            row.append(f"{timing[name]:.2f}x")
        rows.append(row)
    return table(header, rows)


def role_table(scores_by_seed, timing=None):
    """For many tasks: the mean score over the conflicting and over the helpful tasks."""
    tasks = list(next(iter(scores_by_seed[0].values())))
    groups = {role: [t for t in tasks if f"_{role}_" in t] for role in ("conflict", "helper")}
    header = ["strategy", f"conflicting ({len(groups['conflict'])})",
              f"helpful ({len(groups['helper'])})", "all"]
    header += ["epoch time / static"] if timing else []
    rows = []
    for name in METHODS:
        def mean_of(ts, name=name):
            return np.mean([s[name][t] for s in scores_by_seed for t in ts])
        row = [name] + [f"{mean_of(groups[r]):.3f}" for r in ("conflict", "helper")]
        row.append(f"{mean_of(tasks):.3f}")
        if timing:
            row.append(f"{timing[name]:.2f}x")
        rows.append(row)
    return table(header, rows)


def cost_table(timings):
    """Gradient methods: epoch time over static, naive over static, and batched over naive.
    ``timings``: dict column label -> ratios."""
    header = ["strategy"]
    for label in timings:
        header += [f"{label}: / static", "naive / static", "/ naive"]
    rows = [["static"] + ["1.00x", "", ""] * len(timings)]
    for name in GRADIENT:
        row = [name]
        for r in timings.values():
            naive = r.get(f"naive:{name}")
            row += [f"{r[name]:.2f}x", f"{naive:.2f}x" if naive else "",
                    f"{r[name] / naive:.2f}x" if naive else ""]
        rows.append(row)
    return table(header, rows)


# ----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        tasks, n_samples, rounds, epochs, peng_seeds, peng_rounds = (2, 5), 600, 2, 2, 1, 2
    else:
        tasks, n_samples, rounds, epochs, peng_seeds, peng_rounds = (2, 5, 10), 2000, 15, 2, 3, 8
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    synthetic_params = {"hidden_layer_sizes": (64, 8), "batch_size": 64, "lr": 3e-3}
    sections, timings = [], {}
    for T in tasks:
        split = synthetic_split(T, 0, n_samples)
        scores, times = run_rounds(split, synthetic_params, rounds, epochs, naive_epochs=1, seed=0)
        timings[f"T={T}"] = ratio = ratios(times)
        shown = score_table([scores], ratio) if T <= 5 else role_table([scores], ratio)
        title = (f"Synthetic, T = {T} ({len(split[0])} training rows, trunk 64-8, "
                 f"{rounds * epochs} epochs)")
        sections.append((title, shown))
        print(f"T={T} done at {time.perf_counter() - start:.0f} s", flush=True)
    # The cost at T = 5 with the estimator's default network (trunk 64-64), timing only,
    # in twice the rounds: the column the gradient methods are judged by, and its
    # ratios move by tenths between runs of the same code with fewer.
    split = synthetic_split(5, 0, n_samples)
    _, times = run_rounds(split, {"batch_size": 64}, 2 * rounds, 2, naive_epochs=1, seed=0,
                          methods=["static", *GRADIENT])
    timings["T=5, trunk 64-64"] = ratios(times)
    print(f"default network done at {time.perf_counter() - start:.0f} s", flush=True)
    peng_scores, peng_times = [], []
    for seed in range(peng_seeds):
        scores, times = run_rounds(penguins_split(seed), {"batch_size": 64}, peng_rounds,
                                   epochs * 2, naive_epochs=0, seed=seed)
        peng_scores.append(scores)
        peng_times.append(ratios(times))
    peng_ratio = {name: statistics.median(r[name] for r in peng_times) for name in METHODS}
    title = (f"Penguins (species, sex, body mass; default network, "
             f"{peng_rounds * epochs * 2} epochs, mean of {peng_seeds} splits)")
    sections.append((title, score_table(peng_scores, peng_ratio)))
    elapsed = time.perf_counter() - start
    command = "python benchmarks/weighting.py" + (" --quick" if args.quick else "") + " --write"
    intro = (f"Command: `{command}` ({elapsed / 60:.1f} min; torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread, CPU; load average {load_before:.2f} before, "
             f"{os.getloadavg()[0]:.2f} after). Epoch times are medians over interleaved "
             "rounds, as ratios to `static` measured in the same rounds; "
             "`naive` computes the per-task gradients with one full backward pass per task "
             "(`naive_task_gradients`).")
    body = [
        intro,
        "",
        "### Cost of the gradient methods (synthetic problem, batch 64)",
        "",
        ("`/ static`: the strategy's epoch time over static's. `naive / static`: the same "
         "strategy with the per-task gradients from one full backward pass per task. "
         "`/ naive`: the engine's time over the naive one (below 1: faster). `mgda_ub` "
         "combines gradients of the representation, the others gradients of the shared "
         "parameters."),
        "",
        cost_table(timings),
        "",
    ]
    for title, text in sections:
        body += [f"### {title}", "", text, ""]
    body = "\n".join(body)
    print(body)
    if args.write:
        from _results import replace_section

        replace_section(TITLE, body)


if __name__ == "__main__":
    main()
