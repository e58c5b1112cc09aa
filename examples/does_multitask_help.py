"""
Does multi-task learning help here? Which tasks belong together?
================================================================

A synthetic table of 3,000 rows and 12 features with four tasks:

* ``related_value`` (regression), ``related_flag`` (binary) and
  ``related_scarce`` (regression, only 10% of its labels observed) are all
  driven by one shared signal of the first six features;
* ``unrelated`` (regression) is driven by four other features.

The estimator keeps its default parameters throughout. The script prints

1. ``compare_single_task``: 5-fold cross-validated scores of one network for
   all tasks against one network per task, the difference per task with its
   interval and a verdict. Expect "helps" for the scarce task, which borrows
   the shared signal from the others, and no "helps" for the unrelated task;
2. the task affinity (TAG lookahead and gradient cosine) recorded during a
   fit, and the two groups it suggests: the unrelated task on its own;
3. the training history of a fit with a validation split, fitted with
   ``sharing='auto'``: each task's validation loss from the shared network,
   from a network trained on that task alone and from their mean (with the
   standard errors of the differences), and what predicts each task,

and saves the figures as PNG files in the directory given as the first
argument (a new temporary directory when none is given).

Run: ``python examples/does_multitask_help.py [OUTPUT_DIR]`` (about three minutes on two
cores)
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.inspection import (
    SingleTaskComparisonDisplay,
    TaskAffinityDisplay,
    TrainingHistoryDisplay,
    compare_single_task,
    suggest_task_groups,
    task_affinity,
)


def make_tasks(n_samples=3000, scarce_fraction=0.1, noise=0.1, random_state=0):
    """X (n, 12) and Y: three tasks of one shared signal, one of other features."""
    rng = np.random.default_rng(random_state)
    X = rng.standard_normal((n_samples, 12))

    def signal(columns, width=12):
        # A random one-hidden-layer map of some features, standardised.
        hidden = np.tanh(X[:, columns] @ rng.standard_normal((len(columns), width)))
        values = hidden @ rng.standard_normal(width)
        return (values - values.mean()) / values.std()

    shared, other = signal([0, 1, 2, 3, 4, 5]), signal([8, 9, 10, 11])

    def noisy(values):
        return values + noise * rng.standard_normal(n_samples)

    Y = pd.DataFrame({
        "related_value": noisy(shared),
        "related_flag": (noisy(shared) > 0).astype(int),
        "related_scarce": noisy(shared),
        "unrelated": noisy(other),
    })
    Y.loc[rng.random(n_samples) >= scarce_fraction, "related_scarce"] = np.nan
    X = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
    return X, Y


def main(output_dir=None, quick=False):
    start = time.perf_counter()
    output = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="mtl_help_"))
    output.mkdir(parents=True, exist_ok=True)
    X, Y = make_tasks(n_samples=600 if quick else 3000)
    params = {"max_epochs": 5} if quick else {}  # quick: a smoke run for the tests
    model = MultiTaskRegressorClassifier(random_state=0, **params)
    print(f"{len(X)} rows; labels observed per task:")
    print(Y.notna().sum().to_string(), "\n")

    # 1. One network for all tasks against one per task.
    comparison = compare_single_task(model, X, Y, cv=3 if quick else 5, random_state=0)
    print(f"multi-task minus single-task score (R² / accuracy), "
          f"{comparison.attrs['n_splits']}-fold CV, {comparison.attrs['interval']}:")
    print(comparison.round(3).to_string(), "\n")

    # 2. Which tasks help each other, recorded while training.
    lookahead = task_affinity(model, X, Y, method="lookahead", random_state=0)
    cosine = task_affinity(model, X, Y, method="gradient_cosine", random_state=0)
    print("lookahead affinity (rows: source task, columns: target task):")
    print(lookahead.to_string(float_format=lambda v: f"{v:.2e}"), "\n")
    print("gradient cosine:")
    print(cosine.round(3).to_string(), "\n")
    groups = suggest_task_groups(lookahead, 2)
    print("two groups by lookahead affinity:", groups)
    print("two groups by gradient cosine:   ", suggest_task_groups(cosine, 2), "\n")

    # 3. The training history of one fit with a validation split.
    fitted = MultiTaskRegressorClassifier(random_state=0, validation_fraction=0.2,
                                          sharing="auto", **params).fit(X, Y)
    best = int(np.argmin(fitted.validation_loss_curve_)) + 1
    print(f"fit with a validation split: {fitted.n_iter_} epochs, best validation loss at "
          f"epoch {best}; validation scores there:")
    print(fitted.task_validation_scores_.loc[best].round(3).to_string(), "\n")
    print("validation losses: shared network, single-task networks, their mean:")
    print(fitted.sharing_losses_.round(4).to_string())
    print("what predicts each task (sharing='auto'):", fitted.sharing_, "\n")

    files = save_figures(output, comparison, lookahead, cosine, fitted)
    print("figures:", ", ".join(str(f) for f in files))
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return {"comparison": comparison, "lookahead": lookahead, "cosine": cosine,
            "groups": groups, "model": fitted, "files": files}


def save_figures(output, comparison, lookahead, cosine, fitted):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no figures)")
        return []
    files = []
    displays = {
        "comparison.png": SingleTaskComparisonDisplay.from_comparison(comparison),
        "affinity_lookahead.png": TaskAffinityDisplay.from_affinity(lookahead,
                                                                    values_format=".1e"),
        "affinity_cosine.png": TaskAffinityDisplay.from_affinity(cosine),
        "history.png": TrainingHistoryDisplay.from_estimator(fitted),
    }
    for name, display in displays.items():
        path = output / name
        display.figure_.savefig(path, dpi=110)
        plt.close(display.figure_)
        files.append(path)
    return files


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
