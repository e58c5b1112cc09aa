"""Sharing architectures against single-task networks.

Each architecture (hard sharing, soft sharing, cross-stitch, MMoE, PLE) is
fitted on ``make_multitask`` data at high and low task relatedness, and on the
penguins table, next to one single-task network per task (the same estimator
fitted on one column: same layers, same epochs). Reported: per-task
held-out scores (R² for regression, accuracy for classification), their mean,
and the fit time relative to hard sharing, each the mean over seeds.

Run: python benchmarks/architectures.py [--seeds 3] [--write]
(--write replaces the "## Architectures" section of benchmarks/RESULTS.md)
"""

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.datasets import load_penguins, make_multitask

try:  # run as a script or as a module
    from _results import replace_section
except ImportError:  # pragma: no cover
    from benchmarks._results import replace_section

ARCHITECTURES = ["hard", "soft", "cross_stitch", "mmoe", "ple"]
PARAMS = dict(hidden_layer_sizes=(64, 64), head_hidden_sizes=(20,), max_epochs=40,
              batch_size=64, lr=3e-3)
SYNTHETIC_TASKS = ("regression", "regression", "binary", "binary", "multiclass")


def synthetic(relatedness, seed):
    X, Y = make_multitask(n_samples=3000, n_features=16, tasks=SYNTHETIC_TASKS,
                          relatedness=relatedness, noise=0.2, random_state=seed)
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=1000,
                                                        random_state=seed)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), Y_train, Y_test


def penguins(seed):
    X, Y = load_penguins()
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.3, random_state=seed)
    pre = ColumnTransformer([
        ("num", make_num(), ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["island"]),
    ]).fit(X_train)
    return pre.transform(X_train), pre.transform(X_test), Y_train, Y_test


def make_num():
    from sklearn.pipeline import make_pipeline

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler())


def fit_and_score(model, X_train, X_test, Y_train, Y_test):
    start = time.perf_counter()
    model.fit(X_train, Y_train)
    seconds = time.perf_counter() - start
    return model.score_tasks(X_test, Y_test), seconds


def run_problem(make_data, seeds):
    rows = {}
    for seed in seeds:
        X_train, X_test, Y_train, Y_test = make_data(seed)
        for arch in ARCHITECTURES:
            model = MultiTaskRegressorClassifier(architecture=arch, random_state=seed, **PARAMS)
            scores, seconds = fit_and_score(model, X_train, X_test, Y_train, Y_test)
            rows.setdefault(arch, []).append((scores, seconds))
        single_scores, single_seconds = {}, 0.0
        for task in Y_train.columns:
            model = MultiTaskRegressorClassifier(random_state=seed, **PARAMS)
            scores, seconds = fit_and_score(model, X_train, X_test, Y_train[[task]],
                                            Y_test[[task]])
            single_scores.update(scores)
            single_seconds += seconds
        rows.setdefault("single-task", []).append((single_scores, single_seconds))
    table = {}
    hard_time = np.mean([s for _, s in rows["hard"]])
    for name, runs in rows.items():
        tasks = list(runs[0][0])
        means = {task: np.mean([r[0][task] for r in runs]) for task in tasks}
        entry = {task: round(v, 3) for task, v in means.items()}
        entry["mean"] = round(float(np.mean(list(means.values()))), 3)
        entry["fit time vs hard"] = round(float(np.mean([s for _, s in runs]) / hard_time), 2)
        table[name] = entry
    return pd.DataFrame(table).T


def findings(high, low, penguin):
    """The questions the benchmark answers, answered from its own numbers."""
    def verdict(table, a, b):
        diff = table.loc[a, "mean"] - table.loc[b, "mean"]
        word = "beats" if diff > 0.005 else "trails" if diff < -0.005 else "ties with"
        return f"{a} ({table.loc[a, 'mean']:.3f}) {word} {b} ({table.loc[b, 'mean']:.3f})"

    lines = [
        "Findings (mean held-out score over tasks; a gap under 0.005 counts as a tie):",
        f"- Low relatedness, experts vs hard sharing: {verdict(low, 'mmoe', 'hard')}; "
        f"{verdict(low, 'ple', 'hard')}.",
        f"- High relatedness, multi-task vs single-task networks: "
        f"{verdict(high, 'hard', 'single-task')}; best architecture "
        f"{high['mean'].drop('single-task').idxmax()} ({high['mean'].drop('single-task').max():.3f}).",
        f"- Low relatedness, hard sharing vs single-task: {verdict(low, 'hard', 'single-task')}.",
        f"- Penguins: {verdict(penguin, 'hard', 'single-task')}.",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    problems = {
        "make_multitask, relatedness 0.9 (high)": lambda s: synthetic(0.9, s),
        "make_multitask, relatedness 0.1 (low)": lambda s: synthetic(0.1, s),
        "penguins (species, sex, body mass)": penguins,
    }
    sections, tables = [], {}
    for title, make_data in problems.items():
        table = tables[title] = run_problem(make_data, seeds)
        print(f"\n{title}\n{table.to_string()}")
        sections.append(f"### {title}\n\n{table.to_markdown()}\n")
    summary = findings(*tables.values())
    print("\n" + summary)
    sections.insert(0, summary + "\n")
    if args.write:
        header = (
            f"Command: `python benchmarks/architectures.py --seeds {args.seeds} --write`\n\n"
            "Held-out score per task (R² regression, accuracy classification), mean over "
            f"{args.seeds} seeds; 'single-task' is one network per task with the same layers; "
            "fit time relative to hard sharing in the same run. Settings: "
            f"{PARAMS}.\n\n"
        )
        replace_section("Architectures", header + "\n".join(sections))


if __name__ == "__main__":
    main()
