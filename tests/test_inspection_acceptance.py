"""End to end at the estimator's default parameters: related tasks, an unrelated task and a
related task with few labels.

Slow (about 5 minutes on two busy cores): every fit is a default fit, 100 epochs of
3,000 rows; compare_single_task runs 25 of them per seed.
"""

import numpy as np
import pandas as pd
import pytest

from sklearn_mtl import MultiTaskRegressor
from sklearn_mtl.inspection import compare_single_task, suggest_task_groups, task_affinity

pytestmark = pytest.mark.slow

RELATED = ["first", "second", "scarce"]


def related_tasks(n=3000, seed=0, noise=0.1, labelled=0.1):
    """Three tasks driven by one signal of features 0-5 (the third with only 10% of its
    labels), one task driven by a signal of features 8-11."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12))

    def signal(columns):
        weights = rng.standard_normal((len(columns), 12))
        values = np.tanh(X[:, columns] @ weights) @ rng.standard_normal(12)
        return (values - values.mean()) / values.std()

    shared, other = signal(list(range(6))), signal(list(range(8, 12)))
    Y = pd.DataFrame({
        "first": shared + noise * rng.standard_normal(n),
        "second": -shared + noise * rng.standard_normal(n),
        "scarce": shared + noise * rng.standard_normal(n),
        "unrelated": other + noise * rng.standard_normal(n),
    })
    Y.loc[rng.random(n) >= labelled, "scarce"] = np.nan
    return X.astype(np.float32), Y


@pytest.mark.parametrize("method", ["lookahead", "gradient_cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_related_pairs_have_more_affinity_than_any_pair_with_the_unrelated_task(method, seed):
    X, Y = related_tasks(seed=seed)
    A = task_affinity(MultiTaskRegressor(), X, Y, method=method, random_state=seed)
    related = [A.loc[i, j] for i in RELATED for j in RELATED if i != j]
    unrelated = [A.loc[i, "unrelated"] for i in RELATED] + [A.loc["unrelated", j]
                                                             for j in RELATED]
    assert min(related) > max(unrelated), A
    assert suggest_task_groups(A, 2) == [RELATED, ["unrelated"]]


@pytest.mark.parametrize("seed", [0, 1])
def test_sharing_helps_the_scarce_task_and_not_the_unrelated_one(seed):
    X, Y = related_tasks(seed=seed)
    table = compare_single_task(MultiTaskRegressor(), X, Y, random_state=seed)
    assert table.loc["scarce", "verdict"] == "helps", table
    assert table.loc["unrelated", "verdict"] != "helps", table
    assert table.loc["scarce", "ci_low"] > 0
