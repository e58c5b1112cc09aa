"""Tasks: what each target column is, and the round trip between user targets and tensors.

The user's ``Y`` (DataFrame, dict of 1-D arrays, 2-D or 1-D array) becomes a
list of :class:`Task` objects (fitted per-task encoders) and one float32
matrix of shape (n, 2T): T columns of encoded labels (class index or
standardised value, 0 where missing) followed by T columns of per-row weights
(0 where the label is missing, else sample weight times class weight). One
matrix means one slice per batch, and a zero weight is all the losses need to
know about a missing label.
"""

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import type_of_target

#: Loss names per task kind; the first is the kind's default.
LOSSES_BY_KIND = {
    "regression": ("mse", "mae", "huber", "poisson"),
    "binary": ("bce", "hinge", "cross_entropy"),
    "multiclass": ("cross_entropy", "hinge"),
}
KINDS = tuple(LOSSES_BY_KIND)
#: Kinds a user may declare in ``tasks=``: 'classification' is binary or multiclass
#: from the labels.
DECLARABLE_KINDS = KINDS + ("classification",)
DEFAULT_LOSS = {kind: losses[0] for kind, losses in LOSSES_BY_KIND.items()}
ALL_LOSSES = tuple(dict.fromkeys(name for names in LOSSES_BY_KIND.values() for name in names))
# Integer-valued targets are multiclass under scikit-learn's rules; past this many
# distinct values we take a numeric column for a quantity instead.
_MANY_CLASSES = 20


@dataclass
class Task:
    """One target column: its kind, loss and fitted encoder."""

    name: object  # the user's column label (str, int, tuple, ...)
    kind: str
    loss: object = None
    encoder: object = field(default=None, repr=False)  # LabelEncoder or StandardScaler
    dtype: object = None  # dtype of the user's column, for decoding
    auxiliary: bool = False  # trained, never predicted or scored

    @property
    def is_classifier(self):
        return self.kind != "regression"

    @property
    def classes_(self):
        return self.encoder.classes_ if self.is_classifier else None

    @property
    def n_outputs(self):
        if self.kind == "multiclass":
            return len(self.encoder.classes_)
        return 1


# ---------------------------------------------------------------------------
# Reading the user's Y


@dataclass
class TargetFormat:
    """How Y was given, so that predict can answer in kind."""

    container: str  # "frame", "dict", "array" or "vector"
    names: list
    columns: object = None  # a DataFrame Y's column Index (labels, MultiIndex), kept as given


def _column_values(column):
    """A 1-D numpy array of a column, keeping integers integer where pandas can."""
    if isinstance(column, pd.Series):
        dtype = column.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            return column.astype(object).to_numpy(), dtype.categories.dtype
        if pd.api.types.is_bool_dtype(dtype) and column.isna().any():
            return column.astype(object).to_numpy(), np.dtype(bool)
        if pd.api.types.is_integer_dtype(dtype) and isinstance(dtype, pd.api.extensions.ExtensionDtype):
            return column.astype(object).to_numpy(), np.dtype(np.int64)
        if pd.api.types.is_float_dtype(dtype) and isinstance(dtype, pd.api.extensions.ExtensionDtype):
            return column.to_numpy(dtype=float, na_value=np.nan), np.dtype(float)
        if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            return column.astype(object).to_numpy(), np.dtype(object)
        values = column.to_numpy()
        return values, values.dtype
    values = np.asarray(column)
    return values, values.dtype


def find_task(key, names):
    """The task of ``names`` that ``key`` designates, or None.

    A key is a task's own label (a DataFrame column label: str, int, tuple, ...)
    or, failing that, the ``str`` of exactly one task's label, so that
    ``set_params(loss_weights__0=2)`` reaches the task of column ``0``.
    """
    for name in names:
        if type(name) is type(key) and name == key:
            return name
    for name in names:
        if name == key and not isinstance(name, (bool, np.bool_)):
            return name
    if isinstance(key, str):
        matches = [name for name in names if str(name) == key]
        if len(matches) == 1:
            return matches[0]
    return None


def _duplicates(names):
    seen, repeated = [], []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.append(name)
    return repeated


def _is_dask_key(Y):
    """Whether Y is a dask task key (name, i, ...) rather than targets: what reaches
    ``partial_fit`` when a graph refers to a block that does not exist."""
    return (isinstance(Y, tuple) and len(Y) >= 2 and isinstance(Y[0], str)
            and "-" in Y[0] and all(isinstance(i, int) for i in Y[1:]))


def read_targets(Y, task_names=None):
    """Split Y into named 1-D columns.

    Returns ``(names, columns, dtypes, format)``. ``task_names`` (a list) names
    the columns of an array, or selects columns of a DataFrame / dict. Names
    are the user's own labels (a DataFrame's column labels, a dict's keys).
    """
    columns_index = None
    if isinstance(Y, pd.Series):
        Y = Y.to_frame(name=Y.name if Y.name is not None else "task_0")
        container = "vector"
    elif isinstance(Y, pd.DataFrame):
        container = "frame"
    elif isinstance(Y, dict):
        container = "dict"
    else:
        container = None

    if container in ("frame", "vector"):
        names = list(Y.columns)
        repeated = _duplicates(names)
        if repeated:
            raise ValueError(
                f"Y has duplicate column names {repeated!r}; each task needs its own name "
                "(rename the columns).")
        columns_index = Y.columns
        raw = {i: Y.iloc[:, i] for i in range(len(names))}
    elif container == "dict":
        names = list(Y)
        raw = dict(enumerate(Y.values()))
        for i, (name, col) in enumerate(Y.items()):
            if np.ndim(col) != 1:
                raise ValueError(
                    f"Y[{name!r}] has shape {np.shape(col)}; each task of a dict Y must be 1-D "
                    "(one value per row).")
    else:
        if _is_dask_key(Y):
            raise ValueError(
                f"Y is the dask key {Y!r}, not data: dask-ml's Incremental asks for the "
                "blocks of a 2-D dask y by a key without the column-block index, so the "
                "block never reaches partial_fit. Use sklearn_mtl.distributed.Incremental "
                "(the same wrapper, re-keying y), or fit on one 1-D dask y per task.")
        if sparse.issparse(Y):
            raise TypeError("Y must be dense (a DataFrame, a dict of 1-D arrays or an array); "
                            "got a sparse matrix. Convert it with .toarray().")
        try:
            arr = np.asarray(Y)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(
                "Y must be a pandas DataFrame, a dict of 1-D arrays or a 1-D/2-D array; "
                f"got {type(Y).__name__} that numpy cannot read as an array ({exc})."
            ) from None
        if arr.dtype == object and arr.ndim == 1 and len(arr) and all(
                np.ndim(v) > 0 for v in arr):
            raise ValueError("Y is ragged (rows of different lengths); give one value per row "
                             "and task.")
        if arr.ndim == 1:
            container = "vector"
            arr = arr.reshape(-1, 1)
        elif arr.ndim == 2:
            container = "array"
        else:
            raise ValueError(f"Y must be 1-D or 2-D; got an array of shape {arr.shape}.")
        if task_names is not None and len(task_names) != arr.shape[1]:
            raise ValueError(
                f"tasks names {len(task_names)} task(s) {list(task_names)!r} but Y has "
                f"{arr.shape[1]} column(s); give one name per column.")
        names = list(task_names) if task_names is not None else [
            f"task_{j}" for j in range(arr.shape[1])]
        repeated = _duplicates(names)
        if repeated:
            raise ValueError(f"tasks has duplicate names {repeated!r}; name each column once.")
        raw = {j: arr[:, j] for j in range(arr.shape[1])}
        task_names = None  # already applied

    positions = dict(zip(range(len(names)), names))
    if task_names is not None:
        chosen = []
        for key in task_names:
            name = find_task(key, names)
            if name is None:
                raise ValueError(
                    f"tasks names {key!r}, which is not a column of Y; Y has columns "
                    f"{names!r}.")
            chosen.append(names.index(name))
        repeated = _duplicates(chosen)
        if repeated:
            raise ValueError(f"tasks names a column more than once: {task_names!r}.")
        positions = {i: names[i] for i in chosen}

    if not positions:
        raise ValueError("Y has no columns: give at least one task (one column per task).")
    columns, dtypes = [], []
    for i in positions:
        values, dtype = _column_values(raw[i])
        columns.append(values)
        dtypes.append(dtype)
    names = list(positions.values())
    if columns_index is not None and len(names) != len(columns_index):
        columns_index = pd.Index(names, tupleize_cols=isinstance(columns_index, pd.MultiIndex))
    return names, columns, dtypes, TargetFormat(container, names, columns_index)


def missing_mask(values):
    """True where a label is missing (NaN, None or pd.NA)."""
    return np.asarray(pd.isna(values), dtype=bool)


def infer_kind(name, observed):
    """Regression, binary or multiclass from the observed labels.

    scikit-learn's target-type rules, with one exception: a numeric column of
    more than 20 distinct whole numbers is regression (a warning says so when
    the column is of integer dtype).
    """
    try:
        target_type = type_of_target(observed, input_name=f"Y[{name!r}]")
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Cannot tell what kind of task {name!r} is: {exc}. Pass tasks={{{name!r}: "
            "'regression' | 'binary' | 'multiclass'}."
        ) from None
    if target_type in ("continuous",):
        return "regression"
    if target_type == "binary":
        return "binary"
    if target_type == "multiclass":
        observed = np.asarray(observed)
        if np.issubdtype(observed.dtype, np.number) and len(np.unique(observed)) > _MANY_CLASSES:
            # Many distinct whole numbers are a quantity far more often than class codes
            # (grams, days, counts); scikit-learn's rule alone would make them classes.
            if np.issubdtype(observed.dtype, np.integer):
                warnings.warn(
                    f"Task {name!r} has {len(np.unique(observed))} distinct integer values and "
                    f"is treated as regression. If they are class codes, pass "
                    f"tasks={{{name!r}: 'multiclass'}}.",
                    UserWarning,
                    stacklevel=4,
                )
            return "regression"
        return "multiclass"
    # "Unknown label type" is the phrase scikit-learn's classifiers use for this error.
    raise ValueError(
        f"Unknown label type for task {name!r}: its targets are of type '{target_type}'; each "
        "task must be one column of numbers (regression) or labels (classification)."
    )


def _observed_for_classes(name, values, mask, dtype):
    observed = values[~mask]
    if dtype == np.dtype(np.int64) and observed.dtype == object:
        observed = observed.astype(np.int64)
    elif dtype == np.dtype(bool) and observed.dtype == object:
        observed = observed.astype(bool)
    if observed.dtype == object:
        types = {type(v) for v in observed}
        if len(types) > 1 and not all(issubclass(t, numbers.Number) for t in types):
            raise ValueError(
                f"Task {name!r} mixes label types {sorted(t.__name__ for t in types)}; use one "
                "type for all labels of a task (e.g. all strings)."
            )
        if types and all(issubclass(t, (bool, np.bool_)) for t in types):
            observed = observed.astype(bool)  # True/False in an object column (with None)
        elif types and all(issubclass(t, numbers.Real) and not issubclass(t, (bool, np.bool_))
                           for t in types):
            # Numbers in an object column (e.g. a column that also held None) are
            # numeric labels: read them as such rather than as an unknown type.
            observed = np.asarray(observed.tolist())
    return observed


def observed_targets(task, values):
    """``(observed, targets)``: where ``values`` (a user column) has a label, and the
    labels there, read as ``fit`` reads them (labels of the fitted type for a
    classification task -- never cut to the fitted labels' width -- floats for
    a regression task)."""
    observed = ~missing_mask(values)
    if task.is_classifier:
        return observed, _observed_for_classes(task.name, values, ~observed, task.dtype)
    return observed, np.asarray(values[observed], dtype=float)


def fit_tasks(names, columns, dtypes, kinds, losses, sample_weight=None, classes=None):
    """Build fitted :class:`Task` objects.

    ``kinds``: dict name -> kind (already validated, may be partial);
    ``losses``: dict name -> loss name or callable (validated, may be partial);
    ``sample_weight``: per-row weights (n,) or None; the regression target
    scalers are fitted with them, so that a weight of 0 is the same as a
    dropped row and an integer weight the same as repeated rows;
    ``classes``: dict name -> all class labels of that task (partial_fit's
    ``classes``), which makes the task a classification task.
    """
    classes = classes or {}
    tasks = []
    for name, values, dtype in zip(names, columns, dtypes):
        task = _fit_task(name, values, dtype, kinds.get(name), losses, sample_weight,
                         classes.get(name))
        loss = task.loss
        if isinstance(loss, str) and loss not in LOSSES_BY_KIND[task.kind]:
            raise ValueError(
                f"losses[{name!r}]={loss!r} does not fit task {name!r}, which is {task.kind}; "
                f"use one of {list(LOSSES_BY_KIND[task.kind])}, or declare the task's kind in "
                f"tasks={{{name!r}: ...}}."
            )
        tasks.append(task)
    return tasks


def _fit_task(name, values, dtype, kind, losses, sample_weight=None, classes=None):
    """One fitted Task from its column (kind may be None: inferred)."""
    mask = missing_mask(values)
    if mask.all():
        raise ValueError(
            f"Task {name!r} has no observed label (all values are missing); drop the column "
            "or provide labels."
        )
    kind_code = getattr(dtype, "kind", "O")
    if kind_code in "mM":
        raise ValueError(
            f"Task {name!r} holds dates or durations ({dtype}); convert them to "
            "numbers (e.g. days) for a regression task or to labels for a classification "
            "task.")
    if kind_code in "fc" and np.isinf(np.asarray(values[~mask])).any():
        raise ValueError(f"Task {name!r} has infinite target values; use NaN for a missing "
                         "label.")
    if classes is not None:
        return _fit_task_with_classes(name, values, dtype, kind, losses, mask, classes)
    if kind in (None, "classification"):
        observed = _observed_for_classes(name, values, mask, dtype)
        inferred = infer_kind(name, observed)
        if kind == "classification" and inferred == "regression":
            raise ValueError(
                f"Unknown label type: task {name!r} is declared classification but its labels are "
                "continuous numbers; declare it 'regression' or pass class labels."
            )
        kind = inferred
    if kind == "regression":
        observed = values[~mask]
        try:
            observed = observed.astype(float)
        except (TypeError, ValueError):
            raise ValueError(
                f"Task {name!r} is a regression task but has non-numeric values such as "
                f"{observed[:3].tolist()}; declare it 'binary'/'multiclass' or fix the column."
            ) from None
        if not np.isfinite(observed).all():
            raise ValueError(
                f"Task {name!r} has infinite target values; use NaN for a missing label."
            )
        loss = losses.get(name, DEFAULT_LOSS[kind])
        if loss == "poisson":
            if (observed < 0).any():
                raise ValueError(
                    f"Task {name!r} uses the poisson loss but has negative targets; poisson "
                    "needs counts or rates >= 0."
                )
            # Scale only: a Poisson target must stay non-negative.
            encoder = StandardScaler(with_mean=False)
        else:
            encoder = StandardScaler()
        weights = None if sample_weight is None else np.asarray(sample_weight, float)[~mask]
        if weights is not None and not weights.sum() > 0:
            weights = None  # no weighted label at all: the task never trains; any scale will do
        encoder.fit(observed.reshape(-1, 1), sample_weight=weights)
        return Task(name, kind, loss, encoder, np.dtype(float))
    observed = _observed_for_classes(name, values, mask, dtype)
    encoder = LabelEncoder()
    try:
        encoder.fit(observed)
    except TypeError:
        raise ValueError(
            f"Task {name!r} has labels that cannot be sorted (mixed types?); use one label "
            "type per task."
        ) from None
    n_classes = len(encoder.classes_)
    if n_classes < 2:
        raise ValueError(
            f"Task {name!r} has only one class ({encoder.classes_[0]!r}) among its observed "
            "labels; a classification task needs at least two. Drop the task or check its "
            "labels."
        )
    return _classification_task(name, kind, losses, encoder, observed.dtype)


def _classification_task(name, kind, losses, encoder, dtype):
    n_classes = len(encoder.classes_)
    if kind == "binary" and n_classes > 2:
        raise ValueError(
            f"Task {name!r} is declared binary but has {n_classes} classes; declare it "
            "'multiclass'."
        )
    if kind in (None, "classification", "multiclass"):
        kind = "binary" if n_classes == 2 else "multiclass"
    loss = losses.get(name, DEFAULT_LOSS[kind])
    if loss == "cross_entropy" and kind == "binary":
        loss = "bce"
    return Task(name, kind, loss, encoder, dtype)


def _fit_task_with_classes(name, values, dtype, kind, losses, mask, classes):
    """A classification task whose labels are given up front (partial_fit's ``classes``)."""
    if kind == "regression":
        raise ValueError(
            f"classes are given for task {name!r}, which is a regression task; classes apply "
            "to classification tasks only."
        )
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(np.unique(classes)) < 2:
        raise ValueError(
            f"classes for task {name!r} must be a 1-D array of at least two labels; got "
            f"{classes!r}."
        )
    encoder = LabelEncoder().fit(classes)
    observed = _observed_for_classes(name, values, mask, dtype)
    unseen = ~np.isin(observed, encoder.classes_)
    if unseen.any():
        raise ValueError(
            f"Task {name!r} has labels {np.unique(observed[unseen])[:5].tolist()} that are not "
            f"in classes={encoder.classes_.tolist()}."
        )
    return _classification_task(name, kind, losses, encoder, encoder.classes_.dtype)


def encode_targets(tasks, columns, sample_weight=None, class_weight=None):
    """The (n, 2T) float32 label-and-weight matrix for a list of fitted tasks."""
    n = len(columns[0])
    T = len(tasks)
    out = np.zeros((n, 2 * T), dtype=np.float32)
    base_weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    for t, (task, values) in enumerate(zip(tasks, columns)):
        mask = missing_mask(values)
        observed = values[~mask]
        weight = base_weight.copy()
        weight[mask] = 0.0
        if task.is_classifier:
            observed = _observed_for_classes(task.name, values, mask, task.dtype)
            unseen = ~np.isin(observed, task.encoder.classes_)
            if unseen.any():
                raise ValueError(
                    f"Task {task.name!r} has labels {np.unique(observed[unseen])[:5].tolist()} not "
                    f"seen in fit (classes: {task.encoder.classes_.tolist()})."
                )
            codes = task.encoder.transform(observed)
            out[~mask, t] = codes
            cw = (class_weight or {}).get(task.name)
            if cw is not None:
                weight[~mask] *= cw[codes]
        else:
            try:
                observed = observed.astype(float)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Task {task.name!r} is a regression task but has non-numeric values such "
                    f"as {observed[:3].tolist()}.") from None
            out[~mask, t] = task.encoder.transform(observed.reshape(-1, 1)).ravel()
        out[:, T + t] = weight
    return out


def class_weight_vectors(tasks, columns, class_weight, sample_weight=None):
    """Per-task class-weight arrays (indexed by class code) from the user's parameter.

    ``class_weight``: None; 'balanced' (every classification task); a dict
    task -> 'balanced' | dict label -> weight; and, as scikit-learn's
    classifiers take it, a dict label -> weight when there is one
    classification task, or a list with one entry per task (None for tasks
    without class weights). 'balanced' counts classes weighted by
    ``sample_weight``, as scikit-learn does.
    """
    if class_weight is None:
        return {}
    by_name = {t.name: (t, c) for t, c in zip(tasks, columns)}
    classifiers = [t.name for t in tasks if t.is_classifier]
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict task -> 'balanced'|dict; "
                f"got {class_weight!r}."
            )
        spec = {name: "balanced" for name in classifiers}
    elif isinstance(class_weight, dict):
        names = [t.name for t in tasks]
        if len(classifiers) == 1 and not any(find_task(k, names) is not None
                                             for k in class_weight):
            # scikit-learn's single-output form {label: weight}: keys are labels, not tasks.
            spec = {classifiers[0]: class_weight}
        else:
            spec = {}
            for key, value in class_weight.items():
                name = find_task(key, names)
                if name is None:
                    raise ValueError(
                        f"class_weight names task {key!r} that is not in Y; tasks are "
                        f"{names!r}.")
                spec[name] = value
    elif isinstance(class_weight, (list, tuple)):
        # scikit-learn's multi-output form: one entry per output (task), in order.
        if len(class_weight) != len(tasks):
            raise ValueError(
                f"class_weight has {len(class_weight)} entries but there are {len(tasks)} tasks "
                f"{list(by_name)}; give one entry per task (None for none) or a dict task -> "
                "'balanced'|dict."
            )
        spec = {t.name: cw for t, cw in zip(tasks, class_weight) if cw is not None}
    else:
        raise TypeError(
            "class_weight must be None, 'balanced' or a dict task -> 'balanced'|dict label -> "
            f"weight; got {type(class_weight).__name__}."
        )
    vectors = {}
    for name, cw in spec.items():
        if name not in by_name:
            raise ValueError(
                f"class_weight names task {name!r} that is not in Y; tasks are {list(by_name)}."
            )
        task, values = by_name[name]
        if not task.is_classifier:
            raise ValueError(
                f"class_weight names task {name!r}, which is a regression task; class weights "
                "apply to classification tasks only."
            )
        mask = missing_mask(values)
        observed = _observed_for_classes(name, values, mask, task.dtype)
        if isinstance(cw, dict):
            unknown = [k for k in cw if k not in set(task.encoder.classes_.tolist())]
            if unknown:
                raise ValueError(
                    f"class_weight[{name!r}] names classes {unknown} that task {name!r} does not "
                    f"have (classes: {task.encoder.classes_.tolist()})."
                )
        elif cw != "balanced":
            raise ValueError(
                f"class_weight[{name!r}] must be 'balanced' or a dict label -> weight; got {cw!r}."
            )
        weights = None if sample_weight is None else np.asarray(sample_weight, float)[~mask]
        if cw == "balanced" and weights is not None and not weights.sum() > 0:
            weights = None
        vector = compute_class_weight(cw, classes=task.encoder.classes_, y=observed,
                                      sample_weight=weights)
        # A class whose rows all weigh 0 gets an infinite balanced weight; its rows
        # contribute nothing either way, and 0 keeps inf * 0 = NaN out of the loss.
        vectors[name] = np.where(np.isfinite(vector), vector, 0.0)
    return vectors


def decode_predictions(task, output):
    """Labels (or values on the original scale) from a task's raw network output (n, k)."""
    output = np.asarray(output, dtype=np.float64)
    if task.kind == "regression":
        if task.loss == "poisson":
            output = np.exp(output)
        if not len(output):  # scikit-learn's scalers refuse 0 rows
            return np.empty(0)
        return task.encoder.inverse_transform(output.reshape(-1, 1)).ravel()
    if task.kind == "binary":
        # The decision boundary is a zero logit (bce) or zero margin (hinge).
        codes = (output[:, 0] > 0).astype(int)
        return task.encoder.classes_[codes]
    return task.encoder.classes_[output.argmax(axis=1)]


def probabilities(task, output):
    """Class probabilities (n, n_classes) from a classification task's raw output."""
    from scipy.special import expit, softmax

    output = np.asarray(output, dtype=np.float64)
    if task.kind == "binary":
        p = expit(output[:, 0])
        return np.column_stack([1.0 - p, p])
    return softmax(output, axis=1)
