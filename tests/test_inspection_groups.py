"""suggest_task_groups against brute force."""

import itertools

import numpy as np
import pandas as pd
import pytest

from sklearn_mtl.inspection import _affinity, suggest_task_groups


def _brute_force_best(S, k):
    """The best total within-group affinity over every labelling with k non-empty groups."""
    T = S.shape[0]
    best = -np.inf
    for labels in itertools.product(range(k), repeat=T):
        if len(set(labels)) != k:
            continue
        total = sum(S[i, j] for i in range(T) for j in range(i + 1, T)
                    if labels[i] == labels[j])
        best = max(best, total)
    return best


def _total(groups, S, names):
    position = {name: i for i, name in enumerate(names)}
    return sum(S[position[a], position[b]] for g in groups for a, b in
               itertools.combinations(g, 2))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("T", [2, 3, 5, 6])
def test_groups_are_the_brute_force_optimum(seed, T):
    rng = np.random.default_rng(seed)
    names = [f"t{i}" for i in range(T)]
    A = pd.DataFrame(rng.normal(size=(T, T)), index=names, columns=names)  # asymmetric
    S = (A.to_numpy() + A.to_numpy().T) / 2
    for k in range(1, T + 1):
        groups = suggest_task_groups(A, k)
        assert len(groups) == k and all(groups)
        assert sorted(sum(groups, [])) == sorted(names)  # a partition
        assert _total(groups, S, names) == pytest.approx(_brute_force_best(S, k), abs=1e-12)


def test_partitions_enumerate_stirling_numbers():
    # S(n, k): the number of ways to split n tasks into k non-empty groups.
    stirling = {(4, 2): 7, (5, 3): 25, (6, 3): 90, (10, 5): 42525, (7, 7): 1, (7, 1): 1}
    for (n, k), count in stirling.items():
        parts = _affinity._partitions(n, k)
        assert len(parts) == count
        assert len({tuple(p) for p in parts}) == count
        assert all(len(set(p)) == k for p in parts)


def test_obvious_blocks_are_found_exhaustively_and_by_the_heuristic():
    rng = np.random.default_rng(0)
    for T, k in [(9, 3), (14, 3), (16, 4)]:  # 14 and 16 tasks: the heuristic
        blocks = np.arange(T) % k
        A = np.where(blocks[:, None] == blocks[None, :], 1.0, -0.5)
        A = A + 0.1 * rng.normal(size=(T, T))
        names = [f"task{i}" for i in range(T)]
        groups = suggest_task_groups(pd.DataFrame(A, index=names, columns=names), k)
        expected = [[f"task{i}" for i in range(T) if blocks[i] == b] for b in range(k)]
        assert groups == expected


def test_heuristic_is_a_local_optimum_close_to_brute_force():
    rng = np.random.default_rng(1)
    T = 8
    A = rng.normal(size=(T, T))
    S = (A + A.T) / 2
    np.fill_diagonal(S, 0)
    for k in (2, 3):
        labels = _affinity._heuristic(S, k)
        assert len(set(labels)) == k
        total = _affinity._total(labels, S)
        # No single task can move to another group and raise the total.
        for i in range(T):
            for g in range(k):
                if g == labels[i] or (labels == labels[i]).sum() == 1:
                    continue
                moved = labels.copy()
                moved[i] = g
                assert _affinity._total(moved, S) <= total + 1e-12
        assert total >= 0.8 * _brute_force_best(S, k)


def test_symmetrised_pairs_and_the_unrelated_task_alone():
    names = ["a", "b", "c", "u"]
    A = pd.DataFrame([[1.0, 0.3, 0.2, 0.0],
                      [0.1, 1.0, 0.25, 0.01],
                      [0.2, 0.3, 1.0, -0.02],
                      [0.0, 0.02, 0.0, 1.0]], index=names, columns=names)
    assert suggest_task_groups(A, 2) == [["a", "b", "c"], ["u"]]
    assert suggest_task_groups(A, 1) == [names]
    assert suggest_task_groups(A, 4) == [["a"], ["b"], ["c"], ["u"]]
    # Columns in another order, a NaN pair, a plain array.
    shuffled = A[["u", "c", "a", "b"]].copy()
    shuffled.loc["a", "u"] = np.nan
    assert suggest_task_groups(shuffled, 2) == [["a", "b", "c"], ["u"]]
    assert suggest_task_groups(A.to_numpy(), 2) == [[0, 1, 2], [3]]


@pytest.mark.parametrize("n_groups", [0, 5, 1.5, True, "2"])
def test_n_groups_is_checked(n_groups):
    A = np.eye(4)
    with pytest.raises(ValueError, match="n_groups must be an integer from 1 to .*4"):
        suggest_task_groups(A, n_groups)


def test_affinity_must_be_square_over_the_same_tasks():
    with pytest.raises(ValueError, match="square"):
        suggest_task_groups(np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match="same tasks"):
        suggest_task_groups(pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "c"]), 1)
    with pytest.raises(ValueError, match="infinite"):
        suggest_task_groups(np.array([[1.0, np.inf], [0.0, 1.0]]), 1)
