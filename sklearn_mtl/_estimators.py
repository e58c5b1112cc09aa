"""The scikit-learn face: multi-task estimators built on one implementation."""

import copy
import numbers

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import ClassifierTags, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping, ProgressBar
from skorch.helper import predefined_split

from ._losses import MultiTaskLoss
from ._modules import ACTIVATION_NAMES, MultiTaskModule, TaskHeads
from ._net import PRECISIONS, BatchIterator, MultiTaskNet, TensorTable
from ._tasks import (
    ALL_LOSSES,
    KINDS,
    class_weight_vectors,
    decode_predictions,
    encode_targets,
    fit_tasks,
    missing_mask,
    probabilities,
    read_targets,
)
from ._task_graph import GraphHeads, LayerOutputsTrunk, dependency_order
from .architectures import HardSharing, resolve_architecture
from .weighting._registry import resolve_weighting

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
# Optimisers with a fused CPU/CUDA kernel: one kernel for all parameters instead
# of several small ones per tensor (measured 0.7x the per-epoch time at batch 256).
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)
_PREDICT_BATCH_SIZE = 8192
# Dict-valued parameters that also accept a nested ``param__task`` key in set_params.
_DICT_PARAMS = ("loss_weights", "losses")


def _resolve_device(device):
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda' or 'auto'; got {device!r}.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device torch knows; use 'cpu', 'cuda' or 'auto'.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available on this machine; use device='cpu' "
            "or device='auto' (CUDA when present, else CPU)."
        )
    return device


def _non_numeric_columns(X):
    if isinstance(X, pd.DataFrame):
        return [str(c) for c, dt in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
    return []


class _MultiTaskBase(BaseEstimator):
    """Shared implementation of the multi-task estimators (see the public classes)."""

    #: Kinds a subclass accepts (None: any).
    _allowed_kinds = None

    def __init__(
        self,
        *,
        tasks=None,
        losses=None,
        loss_weights=None,
        weighting="static",
        loss_normalization="none",
        architecture="hard",
        module=None,
        auxiliary_tasks=None,
        head_inputs=None,
        task_depth=None,
        hidden_layer_sizes=(64, 64),
        head_hidden_sizes=(20,),
        activation="relu",
        dropout=0.0,
        alpha=0.0,
        optimizer="adam",
        optimizer_kwargs=None,
        lr=1e-3,
        batch_size=64,
        max_epochs=100,
        early_stopping=False,
        validation_fraction=None,
        patience=10,
        tol=1e-4,
        class_weight=None,
        warm_start=False,
        random_state=None,
        device="cpu",
        precision="float32",
        compile=False,
        verbose=0,
        callbacks=None,
    ):
        self.tasks = tasks
        self.losses = losses
        self.loss_weights = loss_weights
        self.weighting = weighting
        self.loss_normalization = loss_normalization
        self.architecture = architecture
        self.module = module
        self.auxiliary_tasks = auxiliary_tasks
        self.head_inputs = head_inputs
        self.task_depth = task_depth
        self.hidden_layer_sizes = hidden_layer_sizes
        self.head_hidden_sizes = head_hidden_sizes
        self.activation = activation
        self.dropout = dropout
        self.alpha = alpha
        self.optimizer = optimizer
        self.optimizer_kwargs = optimizer_kwargs
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device
        self.precision = precision
        self.compile = compile
        self.verbose = verbose
        self.callbacks = callbacks

    # ------------------------------------------------------------------
    # Parameters

    def set_params(self, **params):
        """Set parameters; ``loss_weights__<task>=w`` and ``losses__<task>=name`` set one
        entry of those dicts (a new dict: the one passed to ``__init__`` is not mutated)."""
        nested = {}
        for key in list(params):
            head, sep, task = key.partition("__")
            if sep and head in _DICT_PARAMS:
                nested.setdefault(head, {})[task] = params.pop(key)
        for head, entries in nested.items():
            current = params.pop(head, getattr(self, head))
            merged = dict(current) if current is not None else {}
            merged.update(entries)
            params[head] = merged
        return super().set_params(**params)

    # ------------------------------------------------------------------
    # Validation

    def _validate_X(self, X, reset):
        columns = _non_numeric_columns(X)
        if columns:
            raise ValueError(
                f"X has non-numeric columns {columns}; encode them first, e.g. with "
                "OneHotEncoder or OrdinalEncoder in a ColumnTransformer."
            )
        try:
            X = validate_data(self, X, reset=reset, dtype=np.float32, ensure_min_features=1,
                              accept_sparse=("csr", "csc", "coo"))
        except ValueError as exc:
            message = str(exc)
            if "could not convert" in message or "dtype='numeric'" in message:
                raise ValueError(
                    f"X must be numeric: {message}. Encode categorical columns first, e.g. with "
                    "OneHotEncoder or OrdinalEncoder in a ColumnTransformer."
                ) from None
            if "NaN" in message or "infinity" in message:
                raise ValueError(
                    f"{message.splitlines()[0]} Impute missing feature values first, e.g. with "
                    "sklearn.impute.SimpleImputer in a Pipeline (missing labels in Y are fine: "
                    "they are masked per task)."
                ) from None
            raise
        if sparse.issparse(X):
            # The network takes dense rows; sparse input (e.g. one-hot columns) is
            # densified, as MLPRegressor's matrix products effectively do.
            X = X.toarray()
        X = np.ascontiguousarray(X)
        # torch.from_numpy wants a writable array (read-only memmaps come from joblib).
        return X if X.flags.writeable else X.copy()

    def _check_params(self, names):
        """Validate the parameters that depend on the task names; return per-task dicts."""
        known = set(names)

        def check_names(param, keys):
            unknown = [str(k) for k in keys if str(k) not in known]
            if unknown:
                raise ValueError(
                    f"{param} names unknown task(s) {unknown}; the tasks are {list(names)}."
                )

        kinds = {}
        if isinstance(self.tasks, dict):
            check_names("tasks", self.tasks)
            for name, kind in self.tasks.items():
                if kind not in KINDS + ("classification",):
                    raise ValueError(
                        f"tasks['{name}']={kind!r} is not a task kind; use one of "
                        f"{list(KINDS) + ['classification']}."
                    )
                kinds[str(name)] = kind
        if self._allowed_kinds is not None:
            for name in names:
                kinds.setdefault(name, self._allowed_kinds[0] if len(self._allowed_kinds) == 1
                                 else "classification")
        losses = {}
        if self.losses is not None:
            if not isinstance(self.losses, dict):
                raise TypeError(
                    f"losses must be a dict task -> loss name or callable; got "
                    f"{type(self.losses).__name__}."
                )
            check_names("losses", self.losses)
            for name, loss in self.losses.items():
                if isinstance(loss, str):
                    if loss not in ALL_LOSSES:
                        raise ValueError(
                            f"losses['{name}']={loss!r} is not a known loss; use one of "
                            f"{list(ALL_LOSSES)} or a torch loss callable."
                        )
                elif not callable(loss):
                    raise TypeError(
                        f"losses['{name}'] must be a loss name or a callable; got "
                        f"{type(loss).__name__}."
                    )
                losses[str(name)] = loss
        weights = self._static_weights(names)
        return kinds, losses, weights

    def _static_weights(self, names):
        lw = self.loss_weights
        if lw is None:
            return np.ones(len(names))
        if isinstance(lw, dict):
            unknown = [str(k) for k in lw if str(k) not in set(names)]
            if unknown:
                raise ValueError(
                    f"loss_weights names unknown task(s) {unknown}; the tasks are {list(names)}."
                )
            items = {str(k): v for k, v in lw.items()}
        elif isinstance(lw, (list, tuple, np.ndarray)):
            if len(lw) != len(names):
                raise ValueError(
                    f"loss_weights has {len(lw)} entries but there are {len(names)} tasks "
                    f"{list(names)}; give one weight per task or a dict task -> weight."
                )
            items = dict(zip(names, lw))
        else:
            raise TypeError(
                f"loss_weights must be a dict task -> weight (or one weight per task); got "
                f"{type(lw).__name__}."
            )
        weights = np.ones(len(names))
        for j, name in enumerate(names):
            if name not in items:
                continue
            value = items[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"loss_weights['{name}'] must be a non-negative number; got {value!r} "
                    f"({type(value).__name__})."
                )
            if not np.isfinite(value) or value < 0:
                raise ValueError(
                    f"loss_weights['{name}'] must be a finite number >= 0; got {value!r}."
                )
            weights[j] = float(value)
        if not weights.any():
            raise ValueError("All loss_weights are 0: no task would be trained; give one a "
                             "positive weight.")
        return weights

    def _check_scalar_params(self):
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")

        positive_int("max_epochs")
        positive_int("batch_size")
        positive_int("patience")
        for name in ("hidden_layer_sizes", "head_hidden_sizes"):
            sizes = getattr(self, name)
            sizes = (sizes,) if isinstance(sizes, numbers.Integral) else sizes
            if not all(isinstance(s, numbers.Integral) and s > 0 for s in sizes):
                raise ValueError(f"{name} must be a tuple of positive integers; got {sizes!r}.")
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(
                f"activation={self.activation!r} is not supported; use one of {list(ACTIVATION_NAMES)}."
            )
        if not (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}.")
        if not (isinstance(self.alpha, numbers.Real) and self.alpha >= 0):
            raise ValueError(f"alpha must be a number >= 0; got {self.alpha!r}.")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ValueError(f"lr must be a number > 0; got {self.lr!r}.")
        vf = self.validation_fraction
        if vf is not None and not (isinstance(vf, numbers.Real) and 0 <= vf < 1):
            raise ValueError(f"validation_fraction must be None or in [0, 1); got {vf!r}.")
        from .weighting._normalization import check_normalization

        check_normalization(self.loss_normalization)

    def _optimizer(self):
        opt = self.optimizer
        if isinstance(opt, str):
            if opt not in _OPTIMIZERS:
                raise ValueError(
                    f"optimizer={opt!r} is not known; use one of {list(_OPTIMIZERS)} or a "
                    "torch.optim.Optimizer class."
                )
            return _OPTIMIZERS[opt]
        if isinstance(opt, type) and issubclass(opt, torch.optim.Optimizer):
            return opt
        raise TypeError(
            f"optimizer must be a name ({list(_OPTIMIZERS)}) or a torch.optim.Optimizer class; "
            f"got {opt!r}."
        )

    # ------------------------------------------------------------------
    # Fitting

    def fit(self, X, y, sample_weight=None):
        """Train the network on X and the task targets y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Numeric features (encode and impute them first, e.g. in a Pipeline).
            Sparse input is densified.
        y : DataFrame, dict of 1-D arrays, or array of shape (n_samples, n_tasks) or (n_samples,)
            One column per task. Missing labels (NaN, None, pd.NA) are masked for that task
            only. The container chosen here sets the form of ``predict``, ``predict_proba``
            and ``classes_`` (see the class docstring).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights applied to every task's loss (a weight of 0 is the same as
            dropping the row; with one full batch per step, a weight of k the same as k
            copies of it).

        Returns
        -------
        self
        """
        continuing = self.warm_start and hasattr(self, "net_")
        # warm_start: max_epochs more epochs from the fitted weights, as MLPRegressor does.
        return self._fit(X, y, sample_weight, epochs=self.max_epochs, continuing=continuing)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch of training on X, y: the first call initialises the network, later
        calls (and calls after ``fit``) continue from the current weights, whatever
        ``warm_start`` says.

        The tasks, their kinds and classes are fixed by the first call.
        ``classes`` gives the labels of classification tasks up front, for when
        the first batch does not hold every class: an array of labels for a
        single task, else a dict task -> labels (or a list in task order).
        """
        return self._fit(X, y, sample_weight, epochs=1, continuing=hasattr(self, "net_"),
                         classes=classes)

    def _classes_by_task(self, classes, names):
        """partial_fit's ``classes`` as a dict task -> labels."""
        if classes is None:
            return {}
        if isinstance(classes, dict):
            return {str(k): v for k, v in classes.items()}
        if len(names) == 1:
            values = np.asarray(classes)
            # [labels] (scikit-learn's multi-output form with one output) or labels.
            return {names[0]: values[0] if values.ndim == 2 and len(values) == 1 else values}
        if isinstance(classes, (list, tuple)) and len(classes) == len(names):
            return {name: c for name, c in zip(names, classes) if c is not None}
        raise ValueError(
            f"classes must be a dict task -> labels or a list with one entry per task "
            f"{names}; got {classes!r}."
        )

    def _fit(self, X, y, sample_weight, epochs, continuing, classes=None):
        if y is None:
            # The wording scikit-learn's own estimators use.
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        self._check_scalar_params()
        self._check_performance_params()
        X = self._validate_X(X, reset=not continuing)
        task_names = list(self.tasks) if isinstance(self.tasks, (list, tuple)) else None
        names, columns, dtypes, target_format = read_targets(y, task_names)
        n = X.shape[0]
        for name, column in zip(names, columns):
            if len(column) != n:
                raise ValueError(
                    f"X has {n} rows but Y['{name}'] has {len(column)}; X and Y need one row per "
                    "sample."
                )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
        classes = self._classes_by_task(classes, names)
        if continuing:
            trained = [t.name for t in self.tasks_]
            if names != trained:
                raise ValueError(
                    f"Y has tasks {names} but the model was fitted on {trained}; "
                    "continued training needs the same tasks."
                )
            tasks = self.tasks_
            by_name = {t.name: t for t in tasks}
            for name, labels in classes.items():
                known = by_name[name].classes_ if name in by_name else None
                if known is None or not np.array_equal(np.unique(np.asarray(labels)), known):
                    raise ValueError(
                        f"classes={np.asarray(labels).tolist()!r} for task '{name}' is not the "
                        f"same as on the first call to partial_fit "
                        f"({None if known is None else known.tolist()!r})."
                    )
        else:
            unknown = [k for k in classes if k not in names]
            if unknown:
                raise ValueError(
                    f"classes names unknown task(s) {unknown}; the tasks are {names}."
                )
            kinds, losses, _ = self._check_params(names)
            tasks = fit_tasks(names, columns, dtypes, kinds, losses, sample_weight, classes)
            if self._allowed_kinds is not None:
                for task in tasks:
                    if task.kind not in self._allowed_kinds:
                        raise ValueError(
                            f"Task '{task.name}' is {task.kind}, but {type(self).__name__} takes "
                            f"only {'/'.join(self._allowed_kinds)} tasks; use "
                            "MultiTaskRegressorClassifier for mixed tasks."
                        )
        static_weights = self._static_weights(names)
        class_weights = class_weight_vectors(tasks, columns, self.class_weight, sample_weight)
        targets = encode_targets(tasks, columns, sample_weight, class_weights)

        device = _resolve_device(self.device)
        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=3)
        if continuing:
            # Fresh shuffling and dropout seeds for each continued call (the same ones for
            # the same random_state and epoch count): otherwise every partial_fit call
            # would replay the first epoch's batch order.
            done = len(self.net_.history)
            seeds = np.random.default_rng([int(v) for v in seeds] + [done]).integers(
                np.iinfo(np.int32).max, size=3)
            # A plain attribute: skorch's set_params refuses iterator params on a live net,
            # and reads them from the instance when it builds the next iterator.
            self.net_.iterator_train__seed = int(seeds[2])
        seeded = self.random_state is not None
        cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
        # Seed inside a forked RNG: reproducible initialisation and dropout, and the
        # user's global torch RNG is left as it was.
        with torch.random.fork_rng(devices=cuda_devices, enabled=seeded):
            if seeded:
                torch.manual_seed(int(seeds[0]))
            if not continuing:
                self.tasks_ = self._mark_auxiliary(tasks)
                self.task_names_ = [t.name for t in tasks if not t.auxiliary]
                self.target_format_ = target_format
                self.net_ = self._build_net(tasks, static_weights, X, device, seeds)
                self.net_.initialize()
            else:
                self.net_.set_params(static_weights=static_weights)
                self.net_.weighting_.static_weights.copy_(
                    torch.as_tensor(static_weights, dtype=torch.float32))
                if self.net_.lr != self.lr:
                    # A changed lr applies to continued training (skorch updates the
                    # live optimizer in place).
                    self.net_.set_params(lr=self.lr)
            train, valid = self._split(X, targets, seeds[1], device)
            self.net_.set_params(train_split=predefined_split(valid) if valid is not None else None)
            self.net_.partial_fit(train, None, epochs=epochs)
        self.n_epochs_ = len(self.net_.history)
        return self

    def _check_performance_params(self):
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {list(PRECISIONS)}; got {self.precision!r}. 'bf16' "
                "runs the forward pass under bfloat16 autocast (fast on recent GPUs; slower "
                "than float32 on CPUs without bfloat16 instructions)."
            )
        if type(self.compile) not in (bool, np.bool_):  # 0/1 or 'yes' are not accepted
            raise ValueError(
                f"compile must be True or False; got {self.compile!r}. True runs "
                "torch.compile on the network (a compilation cost at the start of fit)."
            )

    def _split(self, X, targets, seed, device):
        """Train and validation tables, as tensors on the training device when they fit."""
        fraction = self.validation_fraction
        if fraction is None:
            fraction = 0.1 if self.early_stopping else 0.0
        # X is float32 already (validated): from_numpy shares its memory, and on the
        # CPU .to() is a no-op, so the fit holds no second copy of X.
        X_t = torch.from_numpy(X)
        y_t = torch.from_numpy(targets)
        place = self._data_device(X_t, y_t, device)
        X_t, y_t = X_t.to(place), y_t.to(place)
        if fraction > 0:
            n_valid = int(np.ceil(fraction * X.shape[0]))
            if n_valid < 1 or n_valid >= X.shape[0]:
                raise ValueError(
                    f"validation_fraction={fraction} leaves no rows for training or validation "
                    f"with {X.shape[0]} samples."
                )
            idx_train, idx_valid = train_test_split(
                np.arange(X.shape[0]), test_size=n_valid, random_state=int(seed))
            # Row indices into the one table rather than two copies of the rows.
            return (TensorTable(X_t, y_t, rows=torch.from_numpy(idx_train)),
                    TensorTable(X_t, y_t, rows=torch.from_numpy(idx_valid)))
        return TensorTable(X_t, y_t), None

    @staticmethod
    def _data_device(X_t, y_t, device):
        """Keep the training data on the GPU for the whole fit when it fits comfortably;
        otherwise on the host, copied batch by batch."""
        if not device.startswith("cuda"):
            return "cpu"
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        needed = X_t.numel() * 4 + y_t.numel() * 4
        return device if needed < 0.5 * free else "cpu"

    def _mark_auxiliary(self, tasks):
        aux = self.auxiliary_tasks
        if aux is None:
            return tasks
        if isinstance(aux, str):
            aux = [aux]
        names = [t.name for t in tasks]
        unknown = [str(a) for a in aux if str(a) not in names]
        if unknown:
            raise ValueError(
                f"auxiliary_tasks names unknown task(s) {unknown}; the tasks are {names}."
            )
        if len(set(map(str, aux))) == len(tasks):
            raise ValueError("Every task is auxiliary: leave at least one task to predict.")
        for task in tasks:
            task.auxiliary = task.name in set(map(str, aux))
        return tasks

    def _task_depths(self, names, trunk_sizes):
        """Trunk layer index (0-based) each task's head reads, or None when not set."""
        if not self.task_depth:
            return None
        if not isinstance(self.task_depth, dict):
            raise TypeError(f"task_depth must be a dict task -> depth; got {self.task_depth!r}.")
        unknown = [str(k) for k in self.task_depth if str(k) not in names]
        if unknown:
            raise ValueError(f"task_depth names unknown task(s) {unknown}; the tasks are {names}.")
        depths = []
        for name in names:
            depth = self.task_depth.get(name, len(trunk_sizes))
            if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or not (
                    1 <= depth <= len(trunk_sizes)):
                raise ValueError(
                    f"task_depth['{name}']={depth!r}: a depth is a shared layer number from 1 to "
                    f"{len(trunk_sizes)} (hidden_layer_sizes={trunk_sizes})."
                )
            depths.append(int(depth) - 1)
        return depths

    def _user_trunk(self, X):
        module = self.module
        if isinstance(module, torch.nn.Module):
            trunk = copy.deepcopy(module)  # the user's instance is never trained in place
        elif isinstance(module, type) and issubclass(module, torch.nn.Module):
            trunk = module()
        else:
            raise TypeError(
                f"module must be a torch.nn.Module instance or class mapping X to a "
                f"representation; got {module!r}."
            )
        sample = torch.from_numpy(X[:2])
        was_training = trunk.training
        try:
            with torch.no_grad():
                trunk.eval()
                out = trunk(sample)
        except Exception as exc:  # the user's module rejected our input: say what it got
            raise ValueError(
                f"module {type(trunk).__name__} failed on a float32 batch of shape "
                f"{tuple(sample.shape)}: {exc}. It must map (batch, n_features) to "
                "(batch, D)."
            ) from None
        finally:
            trunk.train(was_training)
        per_task = bool(getattr(trunk, "per_task", False))
        if not isinstance(out, torch.Tensor) or out.dim() != (3 if per_task else 2):
            raise ValueError(
                f"module {type(trunk).__name__} returned "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}; it "
                "must return one tensor (batch, D) (flatten feature maps first)."
            )
        trunk.out_features = int(out.shape[-1])
        trunk.per_task = per_task
        return trunk

    def _build_module(self, tasks, X):
        names = [t.name for t in tasks]
        n_outputs = [t.n_outputs for t in tasks]
        head_sizes = _as_sizes(self.head_hidden_sizes)
        trunk_sizes = _as_sizes(self.hidden_layer_sizes)
        depths = self._task_depths(names, trunk_sizes)
        architecture = resolve_architecture(self.architecture)
        if self.module is not None:
            if not isinstance(architecture, HardSharing):
                raise ValueError(
                    "Pass either module= (your own trunk) or architecture=, not both: the "
                    "architecture builds the trunk that module= replaces."
                )
            if depths is not None:
                raise ValueError("task_depth needs the built-in MLP trunk; it cannot reach "
                                 "inside a custom module.")
            trunk = self._user_trunk(X)
        elif depths is not None:
            if not isinstance(architecture, HardSharing):
                raise ValueError(
                    f"task_depth works with architecture='hard' only (got "
                    f"{type(architecture).__name__}): other architectures have no single "
                    "stack of shared layers."
                )
            trunk = LayerOutputsTrunk(X.shape[1], trunk_sizes, self.activation, self.dropout)
        else:
            trunk = architecture.build(X.shape[1], len(tasks), trunk_sizes, self.activation,
                                       self.dropout)
        if self.head_inputs or depths is not None:
            if self.head_inputs is not None and not isinstance(self.head_inputs, dict):
                raise TypeError(
                    f"head_inputs must be a dict task -> list of tasks; got {self.head_inputs!r}."
                )
            order, sources = dependency_order(names, self.head_inputs)
            widths = ([trunk_sizes[d] for d in depths] if depths is not None
                      else [trunk.out_features] * len(tasks))
            heads = GraphHeads(widths, n_outputs, head_sizes, self.activation, self.dropout,
                               order, sources, depths)
        else:
            heads = TaskHeads(trunk.out_features, n_outputs, head_sizes, self.activation,
                              self.dropout)
        return MultiTaskModule(trunk, heads)

    def _build_net(self, tasks, static_weights, X, device, seeds):
        n_outputs = [t.n_outputs for t in tasks]
        module = self._build_module(tasks, X)
        heads = module.heads
        if self.task_depth and resolve_weighting(self.weighting).needs_grads is not None:
            raise ValueError(
                "task_depth cannot be combined with a gradient-based weighting: tasks read "
                "different layers, so there is no one shared representation to combine their "
                "gradients on. Use a loss-based weighting (e.g. 'static', 'uncertainty')."
            )
        criterion = MultiTaskLoss(
            [t.kind for t in tasks], [t.loss for t in tasks], n_outputs, heads.max_out)
        optimizer = self._optimizer()
        opt_kwargs = dict(self.optimizer_kwargs or {})
        if issubclass(optimizer, _FUSABLE) and "foreach" not in opt_kwargs:
            opt_kwargs.setdefault("fused", True)
        callbacks = [copy.deepcopy(cb) for cb in (self.callbacks or [])]
        if self.early_stopping:
            callbacks.append(("early_stopping", EarlyStopping(
                monitor="valid_loss", patience=self.patience, threshold=self.tol,
                threshold_mode="rel", load_best=True, sink=print if self.verbose else _silent)))
        if self.verbose and self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        weighting = resolve_weighting(self.weighting)
        weighting = copy.deepcopy(weighting)
        return MultiTaskNet(
            module=module,
            criterion=criterion,
            optimizer=optimizer,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            iterator_train=BatchIterator,
            iterator_train__shuffle=True,
            iterator_train__seed=int(seeds[2]),
            iterator_train__device=device,
            iterator_valid=BatchIterator,
            iterator_valid__batch_size=max(_PREDICT_BATCH_SIZE, self.batch_size),
            iterator_valid__device=device,
            callbacks=callbacks,
            device=device,
            verbose=int(bool(self.verbose)),
            # Silent fits skip skorch's epoch table: it is formatted even when not
            # printed (~1.5 ms per epoch, a few % of an epoch at large batches).
            **({} if self.verbose else {"callbacks__print_log": None}),
            weighting=weighting,
            static_weights=static_weights,
            task_names=[t.name for t in tasks],
            task_kinds=[t.kind for t in tasks],
            loss_normalization=self.loss_normalization,
            precision=self.precision,
            compile=bool(self.compile),
            # L2 on weights only (not biases), as weight decay, like scikit-learn's alpha.
            optimizer__weight_decay=self.alpha,
            **self._bias_group(opt_kwargs),
            **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
        )

    def _bias_group(self, opt_kwargs):
        """The bias parameter group (no weight decay) only when there is decay to
        exempt them from: one group is one fused optimizer call per step, not two."""
        if self.alpha == 0 and "weight_decay" not in opt_kwargs:
            return {}
        return {"optimizer__param_groups": [("*bias", {"weight_decay": 0.0})]}

    # ------------------------------------------------------------------
    # Prediction

    def _raw_outputs(self, X):
        check_is_fitted(self, "net_")
        index = X.index if isinstance(X, pd.DataFrame) else None
        X = self._validate_X(X, reset=False)
        out = self.net_.forward(TensorTable(torch.from_numpy(X)), device="cpu")
        return out.numpy(), index

    def _task_outputs(self, out):
        stride = self.net_.module_.heads.max_out
        for t, task in enumerate(self.tasks_):
            if not task.auxiliary:
                yield task, out[:, t * stride: t * stride + task.n_outputs]

    def _predicted_tasks(self):
        return [t for t in self.tasks_ if not t.auxiliary]

    def predict(self, X):
        """Per-task predictions in the original labels and scale.

        The form follows the ``y`` given to ``fit``: 1-D y -> array (n_samples,);
        2-D array -> array (n_samples, n_tasks); DataFrame -> DataFrame (with X's
        index when X is a DataFrame); dict -> dict task -> array.
        """
        out, index = self._raw_outputs(X)
        predictions = {task.name: decode_predictions(task, raw)
                       for task, raw in self._task_outputs(out)}
        return self._format(predictions, index)

    def _format(self, predictions, index):
        container = self.target_format_.container
        names = self.task_names_
        if container == "frame":
            return pd.DataFrame(predictions, index=index, columns=names)
        if container == "dict":
            return predictions
        if container == "vector":
            return predictions[names[0]]
        return np.column_stack([predictions[name] for name in names])

    def _per_task(self, values):
        """Per-task values (dict task -> value, classification tasks only) in the form
        of ``classes_`` and ``predict_proba``: scikit-learn's for unnamed targets (one
        task: the value itself; a 2-D array: a list in column order, None for a
        regression task), a dict task -> value for named ones (DataFrame, dict)."""
        container = self.target_format_.container
        if container == "vector":
            return values[self.task_names_[0]]
        if container == "array":
            return [values.get(name) for name in self.task_names_]
        return values

    def _has_classification_task(self):
        if self._allowed_kinds == ("regression",):
            return False
        if not hasattr(self, "tasks_"):
            return True  # unfitted: calling predict_proba raises NotFittedError
        return any(t.is_classifier for t in self._predicted_tasks())

    @available_if(_has_classification_task)
    def predict_proba(self, X):
        """Class probabilities of the classification tasks.

        Columns follow ``classes_``. The form follows the ``y`` given to ``fit``,
        as ``classes_`` does: one task (1-D y) -> array (n_samples, n_classes), as
        any scikit-learn classifier; 2-D array y -> a list with one such array per
        column (scikit-learn's multi-output form; None for a regression task);
        DataFrame or dict y -> dict task -> array, for the classification tasks.
        """
        out, _ = self._raw_outputs(X)
        return self._per_task({task.name: probabilities(task, raw)
                               for task, raw in self._task_outputs(out) if task.is_classifier})

    @property
    def classes_(self):
        """Class labels of the classification tasks, in the form of ``predict_proba``:
        an array (one task), a list per column (2-D array y), or a dict task -> array
        (DataFrame or dict y). Absent when no task is a classification task."""
        check_is_fitted(self, "net_")
        values = {t.name: t.classes_ for t in self._predicted_tasks() if t.is_classifier}
        if not values:
            raise AttributeError(
                f"{type(self).__name__} has no classes_: none of its tasks is a classification "
                "task.")
        return self._per_task(values)

    def __sklearn_is_fitted__(self):
        # Fitted means a trained network: a fit that failed after validating X has
        # set n_features_in_ but left the estimator unfitted.
        return hasattr(self, "net_")

    @property
    def history_(self):
        """The skorch history of the fit: per-epoch losses, per task included."""
        check_is_fitted(self, "net_")
        return self.net_.history

    # ------------------------------------------------------------------
    # Scoring

    def _scoring_columns(self, y):
        """dict task -> 1-D column of the user's y, for the predicted tasks."""
        names = self.task_names_
        if np.ndim(y) == 1 and not isinstance(y, (pd.DataFrame, dict)) and len(names) == 1:
            # A single task: a 1-D y is that task whatever its (Series) name.
            _, columns, _, _ = read_targets(y)
            return {names[0]: columns[0]}
        if not isinstance(y, (pd.DataFrame, dict)) and np.ndim(y) == 2:
            width = np.shape(y)[1]
            every = [t.name for t in self.tasks_]
            y_names = every if width == len(every) and width != len(names) else names
            found, columns, _, _ = read_targets(y, y_names)
        else:
            found, columns, _, _ = read_targets(y)
        by_name = dict(zip(found, columns))
        missing = [name for name in names if name not in by_name]
        if missing:
            raise ValueError(f"y lacks the task column(s) {missing} the model was fitted on.")
        return by_name

    def score_tasks(self, X, y, sample_weight=None):
        """Per-task scores on the observed labels: R² (regression), accuracy (classification).

        Returns a dict task -> score. Rows with a missing label for a task are
        left out of that task's score; a task with no observed label is NaN.
        For other metrics see :mod:`sklearn_mtl.metrics`.
        """
        out, _ = self._raw_outputs(X)  # validates X first, as scikit-learn's score does
        predicted = {task.name: decode_predictions(task, raw)
                     for task, raw in self._task_outputs(out)}
        by_name = self._scoring_columns(y)
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, out, dtype=np.float64)
        scores = {}
        for task in self._predicted_tasks():
            truth = by_name[task.name]
            if len(truth) != out.shape[0]:
                raise ValueError(
                    f"X has {out.shape[0]} rows but y['{task.name}'] has {len(truth)}.")
            observed = ~missing_mask(truth)
            w = None if weights is None else weights[observed]
            if not observed.any() or (w is not None and not w.sum() > 0):
                scores[task.name] = float("nan")
                continue
            y_true, y_pred = truth[observed], predicted[task.name][observed]
            if task.is_classifier:
                y_true = np.asarray(y_true).astype(task.encoder.classes_.dtype)
                scores[task.name] = float(accuracy_score(y_true, y_pred, sample_weight=w))
            else:
                scores[task.name] = float(r2_score(y_true.astype(float), y_pred, sample_weight=w))
        return scores

    def score(self, X, y, sample_weight=None):
        """Mean over tasks of R² (regression) and accuracy (classification) on the
        observed labels (tasks without any observed label are left out)."""
        scores = [s for s in self.score_tasks(X, y, sample_weight).values() if not np.isnan(s)]
        return float(np.mean(scores)) if scores else float("nan")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.allow_nan = False  # impute X; missing labels in y are fine
        tags.input_tags.sparse = True  # densified
        if tags.classifier_tags is None and self._allowed_kinds is None:
            # The mixed estimator is no classifier (cross-validation must not stratify
            # a multi-column y) but has classification heads and predict_proba: its
            # classifier tags describe those heads.
            tags.classifier_tags = ClassifierTags()
        if tags.classifier_tags is not None:
            tags.classifier_tags.multi_label = True  # a 2-D 0/1 y: one binary task per column
        # On CPU a fixed random_state gives the same model bit for bit; CUDA kernels
        # (atomics in the backward pass) do not promise that.
        device = self.device if isinstance(self.device, str) else ""
        tags.non_deterministic = device.startswith("cuda") or (
            device == "auto" and torch.cuda.is_available())
        return tags


def _silent(*args, **kwargs):
    return None


def _as_sizes(sizes):
    return (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)


class MultiTaskRegressorClassifier(_MultiTaskBase):
    """One shared network, one head per task: regression and classification tasks mixed.

    A shared MLP trunk (``hidden_layer_sizes``) feeds one small head per task
    (``head_hidden_sizes``, then the task's output layer). The training loss
    is ``sum_t w_t * L_t`` with ``w_t`` from ``loss_weights`` (default 1),
    where ``L_t`` is task t's mean loss over the rows where it has a label.
    Training runs on skorch and PyTorch; the fitted skorch net is ``net_``.

    Parameters
    ----------
    tasks : None, list of str, or dict task -> kind, default=None
        None: every column of Y is a task, its kind inferred by scikit-learn's
        target-type rules (continuous -> 'regression'; two labels -> 'binary';
        more -> 'multiclass'). A list names the columns of an array Y (or
        selects columns of a DataFrame / dict). A dict overrides the kind of
        the named tasks ('regression', 'binary', 'multiclass' or
        'classification').
    losses : None or dict task -> loss, default=None
        Per-task loss. Names: 'mse', 'mae', 'huber', 'poisson' (regression),
        'bce', 'hinge' (binary), 'cross_entropy', 'hinge' (multiclass). A torch
        loss module with a ``reduction`` attribute gets per-row weights and
        masking; any other callable ``loss(y_pred, y_true)`` is called on the
        observed rows and must return the mean. Defaults: 'mse', 'bce',
        'cross_entropy'.
    loss_weights : None or dict task -> float, default=None
        Non-negative weight of each task's loss; tasks not named get 1.0. Kept
        as passed; ``set_params(loss_weights__<task>=w)`` sets one entry.
    weighting : str or Weighting, default='static'
        How the task losses are combined: 'static' (the weighted sum),
        'uncertainty', 'dwa', 'rlw', 'famo', 'validation_trend',
        'alternating', or a gradient method ('gradnorm', 'mgda', 'mgda_ub',
        'pcgrad', 'cagrad', 'imtl', 'upgrad'); or an instance from
        :mod:`sklearn_mtl.weighting` with its own hyperparameters (searchable
        as ``weighting__<param>``).
    loss_normalization : {'none', 'initial', 'running_mean'}, default='none'
        Divide each task's training loss by its first observed loss or by a
        running mean of it (momentum 0.9) before weighting, so that losses on
        different scales start equal. Validation losses are reported raw.
    architecture : str or Architecture, default='hard'
        How the tasks share layers below their heads: 'hard' (one trunk),
        'soft', 'cross_stitch', 'mmoe', 'ple', or an instance from
        :mod:`sklearn_mtl.architectures`.
    module : torch.nn.Module instance or class, default=None
        Your own trunk mapping X (batch, n_features) to a representation
        (batch, D), e.g. a CNN; replaces the architecture. An instance is
        copied, never trained in place.
    auxiliary_tasks : list of str, default=None
        Columns of Y that are trained (they shape the shared layers) but not
        predicted, scored or needed at predict time.
    head_inputs : dict task -> list of tasks, default=None
        Heads that also read other heads' raw outputs (logits or standardised
        values), trained end to end; cycles are rejected.
    task_depth : dict task -> int, default=None
        Supervise a task at shared layer k (1-based) instead of the last one
        (hard sharing only; not with gradient-based weighting).
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the shared layers.
    head_hidden_sizes : tuple of int, default=(20,)
        Widths of each task head's hidden layers (before its output layer).
    activation : str, default='relu'
        Activation of the hidden layers.
    dropout : float, default=0.0
        Dropout after each hidden layer.
    alpha : float, default=0.0
        L2 penalty (weight decay) on the weights, not the biases.
    optimizer : str or torch.optim.Optimizer class, default='adam'
        'adam', 'adamw', 'sgd', 'rmsprop' or an optimizer class.
    optimizer_kwargs : dict, default=None
        Extra arguments of the optimizer (e.g. ``{'momentum': 0.9}``).
    lr : float, default=1e-3
        Learning rate.
    batch_size : int, default=64
        Rows per training step.
    max_epochs : int, default=100
        Passes over the training data.
    early_stopping : bool, default=False
        Stop when the validation loss has not improved by ``tol`` (relative)
        for ``patience`` epochs, and restore the best weights.
    validation_fraction : float or None, default=None
        Fraction of the rows held out for validation losses. None: 0.1 with
        early stopping, else no validation.
    patience : int, default=10
        Epochs without improvement before early stopping.
    tol : float, default=1e-4
        Relative improvement that counts for early stopping.
    class_weight : None, 'balanced' or dict task -> ('balanced' or dict label -> weight)
        Per-class weights of classification tasks' losses ('balanced' counts
        classes weighted by ``sample_weight``). scikit-learn's forms work too:
        a dict label -> weight when there is one classification task, a list
        with one entry per task (None for none).
    warm_start : bool, default=False
        ``fit`` trains the fitted network ``max_epochs`` more epochs (with the
        current ``lr`` and ``loss_weights``) instead of starting over.
        ``partial_fit`` always continues, one epoch per call.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling, dropout and the validation split.
        The same value gives the same model on CPU. The global torch RNG is
        left as it was.
    device : str, default='cpu'
        'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available). On CUDA the
        training data stay on the GPU for the whole fit when they fit.
    precision : {'float32', 'bf16'}, default='float32'
        'bf16' runs the forward pass under bfloat16 autocast (for GPUs with
        bfloat16 support); losses stay float32.
    compile : bool, default=False
        Train through ``torch.compile``. Off by default: it did not pay off
        on CPU in our benchmarks.
    verbose : int, default=0
        0: silent; 1: skorch's per-epoch table; 2: also a progress bar.
    callbacks : list of skorch callbacks, default=None
        Extra callbacks (copied, never mutated).

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained network; ``net_.history`` holds per-epoch losses, with
        ``train_loss_<task>`` and ``valid_loss_<task>`` per task.
    tasks_ : list of Task
        Each task's kind, loss and fitted encoder.
    task_names_ : list of str
    classes_ : ndarray, list or dict
        Class labels of the classification tasks, in the form of y: an array
        for a 1-D y (one task), a list with one entry per column for a 2-D
        array y (None for a regression task, scikit-learn's multi-output
        form), a dict task -> array for a DataFrame or dict y.
        ``predict_proba`` answers in the same form; ``predict`` answers in
        y's own container (DataFrame in, DataFrame out).
    n_features_in_, feature_names_in_ : as in scikit-learn.

    Notes
    -----
    This estimator is neither a classifier nor a regressor to scikit-learn
    (``is_classifier`` is False): cross-validation uses plain K-fold, since
    stratifying on several columns is not defined. ``score`` is the mean over
    tasks of R² (regression) and accuracy (classification); for other metrics
    and per-task scores in searches see :mod:`sklearn_mtl.metrics`.
    """


class MultiTaskRegressor(RegressorMixin, _MultiTaskBase):
    """Multi-task network whose tasks are all regression.

    Takes what ``MLPRegressor`` takes (a 1-D y, or a numeric 2-D Y with one
    task per column) and named tasks (DataFrame, dict); missing labels are
    masked per task. Parameters and attributes as in
    :class:`MultiTaskRegressorClassifier`. ``score`` is the uniform average
    of the per-task R² (scikit-learn's ``r2_score`` default), each over its
    observed labels. There is no ``predict_proba`` or ``classes_``.
    """

    _allowed_kinds = ("regression",)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch of training on X, y: the first call initialises the network, later
        calls continue from the current weights, whatever ``warm_start`` says."""
        return self._fit(X, y, sample_weight, epochs=1, continuing=hasattr(self, "net_"))

    def score(self, X, y, sample_weight=None):
        """Uniform average over tasks of R² on the observed labels."""
        return _MultiTaskBase.score(self, X, y, sample_weight)


class MultiTaskClassifier(ClassifierMixin, _MultiTaskBase):
    """Multi-task network whose tasks are all classification.

    With a 1-D y it is an ordinary scikit-learn classifier: ``classes_`` is an
    array, ``predict_proba`` an (n_samples, n_classes) array. With a 2-D
    array Y (one task per column) it follows scikit-learn's multi-output
    convention (as ``RandomForestClassifier``): ``classes_`` and
    ``predict_proba`` are lists with one entry per column. With named tasks
    (DataFrame or dict y) both are dicts task -> array. ``class_weight`` also
    takes scikit-learn's forms: a dict label -> weight for a single task, or a
    list of them, one per column. ``score`` is the mean over tasks of the
    accuracy, each over its observed labels. Parameters as in
    :class:`MultiTaskRegressorClassifier`.

    As a classifier it gets stratified folds from ``cv=<int>`` when y is one
    column. When y has missing labels, pass the splitter yourself (e.g.
    ``cv=KFold(5, shuffle=True)``): scikit-learn inspects y's labels to
    choose the folds and fails on NaN among them.
    """

    _allowed_kinds = ("binary", "multiclass")

    def score(self, X, y, sample_weight=None):
        """Mean over tasks of the accuracy on the observed labels."""
        return _MultiTaskBase.score(self, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # ClassifierMixin sets fresh classifier tags
        tags.classifier_tags.multi_label = True  # a 2-D 0/1 y: one binary task per column
        return tags
