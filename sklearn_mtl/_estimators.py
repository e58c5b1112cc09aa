"""The scikit-learn face: multi-task estimators built on one implementation."""

import copy
import numbers
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping, ProgressBar
from skorch.helper import predefined_split

from ._losses import MultiTaskLoss
from ._modules import ACTIVATION_NAMES, MLPTrunk, MultiTaskModule, TaskHeads
from ._net import BatchIterator, MultiTaskNet, TensorTable
from ._tasks import (
    ALL_LOSSES,
    KINDS,
    LOSSES_BY_KIND,
    class_weight_vectors,
    decode_predictions,
    encode_targets,
    fit_tasks,
    missing_mask,
    probabilities,
    read_targets,
)
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
        verbose=0,
        callbacks=None,
    ):
        self.tasks = tasks
        self.losses = losses
        self.loss_weights = loss_weights
        self.weighting = weighting
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
            X = validate_data(self, X, reset=reset, dtype=np.float32, ensure_min_features=1)
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
        return X

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

    def fit(self, X, Y, sample_weight=None):
        """Train the network on X and the task targets Y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Numeric features (encode and impute them first, e.g. in a Pipeline).
        Y : DataFrame, dict of 1-D arrays, or array of shape (n_samples, n_tasks) or (n_samples,)
            One column per task. Missing labels (NaN, None, pd.NA) are masked for that task only.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights applied to every task's loss.

        Returns
        -------
        self
        """
        continuing = self.warm_start and hasattr(self, "net_")
        return self._fit(X, Y, sample_weight, epochs=None, continuing=continuing)

    def partial_fit(self, X, Y, sample_weight=None):
        """One more epoch of training on X, Y (initialising the network on the first call).

        The tasks, their kinds and classes are fixed by the first call.
        """
        return self._fit(X, Y, sample_weight, epochs=1, continuing=hasattr(self, "net_"))

    def _fit(self, X, Y, sample_weight, epochs, continuing):
        self._check_scalar_params()
        X = self._validate_X(X, reset=not continuing)
        task_names = list(self.tasks) if isinstance(self.tasks, (list, tuple)) else None
        names, columns, dtypes, target_format = read_targets(Y, task_names)
        n = X.shape[0]
        for name, column in zip(names, columns):
            if len(column) != n:
                raise ValueError(
                    f"X has {n} rows but Y['{name}'] has {len(column)}; X and Y need one row per "
                    "sample."
                )
        if continuing:
            if names != self.task_names_:
                raise ValueError(
                    f"Y has tasks {names} but the model was fitted on {self.task_names_}; "
                    "continued training needs the same tasks."
                )
            tasks = self.tasks_
        else:
            kinds, losses, _ = self._check_params(names)
            tasks = fit_tasks(names, columns, dtypes, kinds, losses)
            if self._allowed_kinds is not None:
                for task in tasks:
                    if task.kind not in self._allowed_kinds:
                        raise ValueError(
                            f"Task '{task.name}' is {task.kind}, but {type(self).__name__} takes "
                            f"only {'/'.join(self._allowed_kinds)} tasks; use "
                            "MultiTaskRegressorClassifier for mixed tasks."
                        )
        static_weights = self._static_weights(names)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
        class_weights = class_weight_vectors(tasks, columns, self.class_weight)
        targets = encode_targets(tasks, columns, sample_weight, class_weights)

        device = _resolve_device(self.device)
        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=3)
        seeded = self.random_state is not None
        cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
        # Seed inside a forked RNG: reproducible initialisation and dropout, and the
        # user's global torch RNG is left as it was.
        with torch.random.fork_rng(devices=cuda_devices, enabled=seeded):
            if seeded:
                torch.manual_seed(int(seeds[0]))
            if not continuing:
                self.tasks_ = tasks
                self.task_names_ = names
                self.target_format_ = target_format
                self.net_ = self._build_net(tasks, static_weights, X.shape[1], device, seeds)
                self.net_.initialize()
            else:
                self.net_.set_params(static_weights=static_weights)
                self.net_.weighting_.static_weights.copy_(
                    torch.as_tensor(static_weights, dtype=torch.float32))
            train, valid = self._split(X, targets, seeds[1], device)
            self.net_.set_params(train_split=predefined_split(valid) if valid is not None else None)
            self.net_.partial_fit(train, None, epochs=epochs)
        self.n_epochs_ = len(self.net_.history)
        return self

    def _split(self, X, targets, seed, device):
        """Train and validation tables, as tensors on the training device when they fit."""
        fraction = self.validation_fraction
        if fraction is None:
            fraction = 0.1 if self.early_stopping else 0.0
        X_t = torch.from_numpy(X)
        y_t = torch.from_numpy(targets)
        place = self._data_device(X_t, y_t, device)
        if fraction > 0:
            n_valid = int(np.ceil(fraction * X.shape[0]))
            if n_valid < 1 or n_valid >= X.shape[0]:
                raise ValueError(
                    f"validation_fraction={fraction} leaves no rows for training or validation "
                    f"with {X.shape[0]} samples."
                )
            idx_train, idx_valid = train_test_split(
                np.arange(X.shape[0]), test_size=n_valid, random_state=int(seed))
            idx_train, idx_valid = torch.from_numpy(idx_train), torch.from_numpy(idx_valid)
            return (TensorTable(X_t[idx_train].to(place), y_t[idx_train].to(place)),
                    TensorTable(X_t[idx_valid].to(place), y_t[idx_valid].to(place)))
        return TensorTable(X_t.to(place), y_t.to(place)), None

    @staticmethod
    def _data_device(X_t, y_t, device):
        """Keep the training data on the GPU for the whole fit when it fits comfortably;
        otherwise on the host, copied batch by batch."""
        if not device.startswith("cuda"):
            return "cpu"
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        needed = X_t.numel() * 4 + y_t.numel() * 4
        return device if needed < 0.5 * free else "cpu"

    def _build_net(self, tasks, static_weights, n_features, device, seeds):
        n_outputs = [t.n_outputs for t in tasks]
        head_sizes = self.head_hidden_sizes
        head_sizes = (head_sizes,) if isinstance(head_sizes, numbers.Integral) else tuple(head_sizes)
        trunk_sizes = self.hidden_layer_sizes
        trunk_sizes = (trunk_sizes,) if isinstance(trunk_sizes, numbers.Integral) else tuple(trunk_sizes)
        trunk = MLPTrunk(n_features, trunk_sizes, self.activation, self.dropout)
        heads = TaskHeads(trunk.out_features, n_outputs, head_sizes, self.activation, self.dropout)
        module = MultiTaskModule(trunk, heads)
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
            weighting=weighting,
            static_weights=static_weights,
            task_names=[t.name for t in tasks],
            task_kinds=[t.kind for t in tasks],
            # L2 on weights only (not biases), as weight decay, like scikit-learn's alpha.
            optimizer__weight_decay=self.alpha,
            optimizer__param_groups=[("*bias", {"weight_decay": 0.0})],
            **{f"optimizer__{k}": v for k, v in opt_kwargs.items()},
        )

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
            yield task, out[:, t * stride: t * stride + task.n_outputs]

    def predict(self, X):
        """Per-task predictions, in the kind of container Y was fitted with, in the
        original labels and scale."""
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

    def predict_proba(self, X):
        """Class probabilities: a dict task -> array (n_samples, n_classes) for each
        classification task, columns in the order of ``classes_[task]``."""
        out, _ = self._raw_outputs(X)
        return {task.name: probabilities(task, raw) for task, raw in self._task_outputs(out)
                if task.is_classifier}

    @property
    def classes_(self):
        """dict task -> array of class labels, for the classification tasks."""
        check_is_fitted(self, "net_")
        return {t.name: t.classes_ for t in self.tasks_ if t.is_classifier}

    @property
    def history_(self):
        """The skorch history of the fit: per-epoch losses, per task included."""
        check_is_fitted(self, "net_")
        return self.net_.history

    # ------------------------------------------------------------------
    # Scoring

    def score_tasks(self, X, Y, sample_weight=None):
        """Per-task scores on the observed labels: R² (regression), accuracy (classification).

        Returns a dict task -> score. Rows with a missing label for a task are
        left out of that task's score; a task with no observed label is NaN.
        """
        check_is_fitted(self, "net_")
        names, columns, dtypes, _ = read_targets(Y, self.task_names_ if not isinstance(
            Y, (pd.DataFrame, dict)) and np.ndim(Y) == 2 else None)
        by_name = dict(zip(names, columns))
        missing = [name for name in self.task_names_ if name not in by_name]
        if missing:
            raise ValueError(f"Y lacks the task column(s) {missing} the model was fitted on.")
        predicted = self.predict(X)
        if self.target_format_.container == "vector":
            predicted = {self.task_names_[0]: predicted}
        elif self.target_format_.container == "array":
            predicted = dict(zip(self.task_names_, np.asarray(predicted).T))
        elif self.target_format_.container == "frame":
            predicted = {name: predicted[name].to_numpy() for name in self.task_names_}
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        scores = {}
        for task in self.tasks_:
            truth = by_name[task.name]
            observed = ~missing_mask(truth)
            if not observed.any():
                scores[task.name] = float("nan")
                continue
            w = None if weights is None else weights[observed]
            y_true, y_pred = truth[observed], predicted[task.name][observed]
            if task.is_classifier:
                y_true = np.asarray(y_true).astype(task.encoder.classes_.dtype)
                scores[task.name] = float(accuracy_score(y_true, y_pred, sample_weight=w))
            else:
                scores[task.name] = float(r2_score(y_true.astype(float), y_pred, sample_weight=w))
        return scores

    def score(self, X, Y, sample_weight=None):
        """Mean over tasks of R² (regression) and accuracy (classification) on observed labels."""
        scores = [s for s in self.score_tasks(X, Y, sample_weight).values() if not np.isnan(s)]
        return float(np.mean(scores)) if scores else float("nan")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.allow_nan = False
        return tags


def _silent(*args, **kwargs):
    return None


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
        How the task losses are combined; 'static' is the weighted sum.
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
        Per-class weights of classification tasks' losses.
    warm_start : bool, default=False
        Continue training the fitted network on the next ``fit``.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling, dropout and the validation split.
        The same value gives the same model on CPU. The global torch RNG is
        left as it was.
    device : str, default='cpu'
        'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available).
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
    classes_ : dict task -> ndarray
    n_features_in_, feature_names_in_ : as in scikit-learn.
    """


class MultiTaskRegressor(RegressorMixin, _MultiTaskBase):
    """Multi-task network whose tasks are all regression (see MultiTaskRegressorClassifier)."""

    _allowed_kinds = ("regression",)

    def score(self, X, Y, sample_weight=None):
        """Uniform average over tasks of R² on the observed labels."""
        return _MultiTaskBase.score(self, X, Y, sample_weight)


class MultiTaskClassifier(ClassifierMixin, _MultiTaskBase):
    """Multi-task network whose tasks are all classification (see MultiTaskRegressorClassifier)."""

    _allowed_kinds = ("binary", "multiclass")

    def score(self, X, Y, sample_weight=None):
        """Mean over tasks of the accuracy on the observed labels."""
        return _MultiTaskBase.score(self, X, Y, sample_weight)
