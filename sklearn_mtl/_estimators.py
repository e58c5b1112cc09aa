"""The scikit-learn face: the multi-task estimators.

The estimator keeps its parameters verbatim, validates them once at the start
of ``fit``/``partial_fit`` (``_parameter_constraints``, see
:mod:`._validation`), and delegates: task parameters to :mod:`._task_params`,
targets to :mod:`._tasks`, the network and the skorch net to :mod:`._build`,
training and inference to the engine (:mod:`._net`), answers in Y's form to
:mod:`._outputs`, masked scoring to :mod:`._scoring`.
"""

import copy
import dataclasses
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import ClassifierTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from . import _docs, _scorer_guard, _scoring, _summary
from ._persistence import SavingMixin
from ._build import build_net, initialize, trial_losses
from ._history import TrainingHistoryMixin
from ._early_stopping import check_split, validation_split
from ._net import TrainingDivergedError, fit_seeds, seeded_torch, split_tables
from ._outputs import format_predictions, per_task, probability_frames
from ._params import validate_constraints
from ._retrieval import (
    MIN_VALIDATION_LABELS,
    choose_retrieval,
    fit_retrieval,
    retrieval_features,
)
from ._sharing import fit_sharing
from ._task_params import (
    check_same_classes,
    classes_by_task,
    resolve_task_params,
    static_weights,
)
from ._tasks import (
    class_weight_vectors,
    decode_predictions,
    encode_targets,
    fit_tasks,
    probabilities,
    read_targets,
)
from ._validation import PARAMETER_CONSTRAINTS, as_sizes, resolve_device, validate_X

# Dict-valued parameters that also accept a nested ``param__task`` key in set_params.
_DICT_PARAMS = ("loss_weights", "losses")

__all__ = ["MultiTaskClassifier", "MultiTaskRegressor", "MultiTaskRegressorClassifier"]


def _sample_weight(sample_weight, X):
    """scikit-learn's sample-weight checks, with a message that names sample_weight."""
    try:
        return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if "sample_weight" in message:
            raise
        raise ValueError(f"sample_weight must be non-negative numbers, one per row of X: "
                         f"{message}") from None


def _validation_data(X_val, y_val, Y_val, sample_weight_val):
    """(X_val, y_val, sample_weight_val), or None without validation data."""
    if Y_val is not None:
        if y_val is not None:
            raise TypeError("Pass the validation targets once, as y_val (Y_val is another "
                            "name of it), not both.")
        y_val = Y_val
    if (X_val is None) != (y_val is None):
        raise ValueError("Pass X_val and y_val together: validation needs both the features "
                         "and the task targets.")
    if X_val is None:
        if sample_weight_val is not None:
            raise ValueError("sample_weight_val was given without X_val and y_val.")
        return None
    return X_val, y_val, sample_weight_val


def _has_classification_task(estimator):
    if estimator._allowed_kinds == ("regression",):
        return False
    if not hasattr(estimator, "tasks_"):
        return True  # unfitted: calling predict_proba raises NotFittedError
    return any(t.is_classifier for t in estimator._predicted_tasks())


def _multitask_tags(estimator, tags):
    """The tags of a multi-task estimator, on top of its mixins' tags."""
    tags.target_tags.required = True
    tags.target_tags.multi_output = True
    tags.target_tags.single_output = True
    tags.input_tags.allow_nan = False  # impute X; missing labels in y are fine
    tags.input_tags.sparse = True  # densified
    if tags.classifier_tags is None and estimator._allowed_kinds is None:
        # The mixed estimator is no classifier (cross-validation must not stratify
        # a multi-column y) but has classification heads and predict_proba: its
        # classifier tags describe those heads.
        tags.classifier_tags = ClassifierTags()
    if tags.classifier_tags is not None:
        tags.classifier_tags.multi_label = True  # a 2-D 0/1 y: one binary task per column
    # On CPU a fixed random_state gives the same model bit for bit; CUDA kernels
    # (atomics in the backward pass) do not promise that.
    device = str(estimator.device)
    tags.non_deterministic = device.startswith("cuda") or (
        device == "auto" and torch.cuda.is_available())
    return tags


@dataclasses.dataclass
class _PreparedFit:
    """What :meth:`_MultiTaskBase._prepare_fit` settles for one fit call."""

    X: np.ndarray
    targets: np.ndarray
    rows: tuple
    tasks: list
    params: object
    target_format: object
    device: object
    seeds: list
    scorer_check: object
    retrieval: object = None


class _MultiTaskBase(TrainingHistoryMixin, SavingMixin, BaseEstimator):
    """Shared implementation of the multi-task estimators (see the public classes)."""

    #: Kinds a subclass accepts (None: any).
    _allowed_kinds = None
    _parameter_constraints = dict(PARAMETER_CONSTRAINTS)

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
        feature_embedding=None,
        n_bins=16,
        embedding_dim=8,
        hidden_layer_sizes=(64, 64),
        head_hidden_sizes=(20,),
        activation="relu",
        dropout=0.0,
        ensemble_size=1,
        sharing="shared",
        retrieval="auto",
        n_neighbors=16,
        alpha=0.0,
        l1=0.0,
        optimizer="adam",
        optimizer_kwargs=None,
        lr=5e-4,
        lr_schedule=None,
        batch_size="auto",
        max_epochs=200,
        early_stopping=True,
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
        self.feature_embedding = feature_embedding
        self.n_bins = n_bins
        self.embedding_dim = embedding_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.head_hidden_sizes = head_hidden_sizes
        self.activation = activation
        self.dropout = dropout
        self.ensemble_size = ensemble_size
        self.sharing = sharing
        self.retrieval = retrieval
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.l1 = l1
        self.optimizer = optimizer
        self.optimizer_kwargs = optimizer_kwargs
        self.lr = lr
        self.lr_schedule = lr_schedule
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
            merged = dict(current) if isinstance(current, dict) else {}
            if current is not None and not isinstance(current, dict):
                raise ValueError(f"set_params({head}__<task>=...) needs {head} to be a dict "
                                 f"task -> value (or None); it is {current!r}.")
            merged.update(entries)
            params[head] = merged
        return super().set_params(**params)

    def _validate_params(self):
        validate_constraints(self._parameter_constraints, self.get_params(deep=False),
                             type(self).__name__)

    # ------------------------------------------------------------------
    # Fitting

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None,
            sample_weight_val=None, Y_val=None):
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
        X_val, y_val : array-like, default=None
            Your own validation data, in the forms of X and y (the same tasks): its
            per-task losses are recorded each epoch and, with ``early_stopping``,
            decide each task's best epoch and when to stop. All of X is then used for
            training (``validation_fraction`` is not applied).
        sample_weight_val : array-like of shape (n_val_samples,), default=None
            Per-row weights of the validation losses.
        Y_val : array-like, default=None
            Another name of ``y_val``, for those who name a multi-task target Y
            (pass one of the two).

        Returns
        -------
        self
        """
        self._validate_params()
        validation = _validation_data(X_val, y_val, Y_val, sample_weight_val)
        # warm_start: max_epochs more epochs from the fitted weights, as MLPRegressor does.
        continuing = self.warm_start and hasattr(self, "net_")
        self._fit(X, y, sample_weight, epochs=self.max_epochs, continuing=continuing,
                  validation=validation)
        self._warn_if_still_improving()
        return self

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch of training on X, y: the first call initialises the network, later
        calls (and calls after ``fit``) continue from the current weights, whatever
        ``warm_start`` says.

        The tasks, their kinds and classes are fixed by the first call.
        ``classes`` gives the labels of classification tasks up front, for when
        the first batch does not hold every class: an array of labels for a
        single task, else a dict task -> labels (or a list in task order).
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, epochs=1, continuing=hasattr(self, "net_"),
                         classes=classes, incremental=True)

    def _fit(self, X, y, sample_weight, epochs, continuing, classes=None, validation=None,
             incremental=False):
        X_given = X
        p = self._prepare_fit(X, y, sample_weight, continuing, classes, validation,
                              incremental)
        with seeded_torch(self.random_state, p.seeds[0], p.device):
            if continuing:
                self._update_net(p.params, p.seeds[2])
            else:
                self._new_net(p.tasks, p.params, p.target_format, p.X, p.targets, p.device,
                              p.seeds, fit_rows=p.rows[0])
            self._train(p.X, p.targets, p.rows, epochs, p.device, continuing)
        self._retrieval = p.retrieval
        self._choose_sharing(p, fresh=not (continuing or incremental))
        self._choose_retrieval(p, fresh=not (continuing or incremental))
        p.scorer_check.trial(self, X_given, y)
        return self

    def _choose_retrieval(self, prepared, fresh):
        """``retrieval='auto'`` (see :func:`._retrieval.choose_retrieval`): decided by a
        fresh fit; continued training trains and predicts with the plain network."""
        for name in ("_retrieval_net", "_retrieval_tasks", "_retrieval_losses"):
            self.__dict__.pop(name, None)
        if self.retrieval != "auto" or not fresh:
            return
        choice = choose_retrieval(self, prepared)
        if choice is None:
            return
        self._retrieval_losses = choice["losses"]
        if "net" not in choice:
            return
        self._retrieval = choice["state"]
        self._retrieval_net = choice["net"]
        self._retrieval_tasks = choice["tasks"]
        best, theirs = self.__dict__.get("_best_epochs"), choice["best_epochs"]
        if best is not None and theirs is not None:
            predicted = [t for t, task in enumerate(self.tasks_) if not task.auxiliary]
            self._best_epochs = [theirs[i] if choice["tasks"][t] else b
                                 for i, (t, b) in enumerate(zip(predicted, best))]

    def _choose_sharing(self, prepared, fresh):
        """Per-task sharing (see :mod:`._sharing`): chosen by a fresh fit; continued
        training trains and predicts with the shared network alone."""
        self.__dict__.pop("_sharing_losses", None)
        if not fresh:
            return
        losses, epochs = fit_sharing(self, prepared)
        self._sharing_losses = losses
        best = self.__dict__.get("_best_epochs")
        if best is not None and epochs is not None:
            self._best_epochs = [b if e is None else int(e) for b, e in zip(best, epochs)]

    def _prepare_fit(self, X, y, sample_weight, continuing=False, classes=None,
                     validation=None, incremental=False, scoring_step=None):
        """Everything a fit call settles before it builds or trains the network: the
        validated X and packed targets with the (training, validation) rows, the tasks
        and their parameters, the device and the seeds. ``scoring_step``: the
        (scorer, full y) a search will score this fit with, when it is not found on
        the call stack (see :mod:`._scorer_guard`)."""
        X, names, columns, dtypes, target_format, sample_weight = self._read_data(
            X, y, sample_weight, continuing)
        tasks, params = self._resolve_tasks(names, columns, dtypes, sample_weight, classes,
                                            continuing)
        # In a search or cross-validation: refuse a scorer that cannot score these tasks.
        scorer_check = _scorer_guard.FitCheck(self, tasks, len(names), target_format.container, y,
                                              step=scoring_step)
        class_weights = class_weight_vectors(tasks, columns, self.class_weight, sample_weight)
        targets = encode_targets(tasks, columns, sample_weight, class_weights)
        device = resolve_device(self.device)
        seeds = fit_seeds(self.random_state, len(self.net_.history) if continuing else None)
        X, targets, rows = self._split(X, targets, tasks, class_weights, validation, seeds[1],
                                       incremental)
        X, retrieval = self._with_retrieval(X, targets, tasks, rows, incremental)
        return _PreparedFit(X, targets, rows, tasks, params, target_format, device, seeds,
                            scorer_check, retrieval)

    def _with_retrieval(self, X, targets, tasks, rows, incremental):
        """With ``retrieval='on'``: X with the retrieval features appended (see
        :mod:`._retrieval`), and their state; else X and None."""
        if self.retrieval != "on":
            return X, None
        if incremental:
            raise ValueError(
                "retrieval='on' cannot be used with partial_fit: the neighbours are the "
                "training rows of one fit, and partial_fit sees one batch at a time. Use "
                "fit, or retrieval='off' (with 'auto', partial_fit trains the plain "
                "network).")
        state = fit_retrieval(X, targets, tasks, rows[0], self.n_neighbors)
        features = retrieval_features(state, X, leave_out_self=True)
        return np.hstack([X, features]), state

    def _split(self, X, targets, tasks, class_weights, validation, seed, incremental):
        """X and the targets with the validation rows appended (own validation data) or
        not, and the (training, validation) row indices; validation None without any."""
        names = [t.name for t in tasks]
        if validation is not None:
            X_val, columns = self._read_validation(validation, names)
            sample_weight = validation[2]
            if sample_weight is not None:
                sample_weight = _sample_weight(sample_weight, X_val)
            val_targets = encode_targets(tasks, columns, sample_weight, class_weights)
            n = X.shape[0]
            return (np.concatenate([X, X_val]), np.concatenate([targets, val_targets]),
                    (np.arange(n), np.arange(n, n + X_val.shape[0])))
        fraction = self.validation_fraction
        if fraction is None:
            fraction = 0.1 if self.early_stopping else 0.0
        if incremental or fraction == 0:
            # partial_fit trains on every row it is given, as scikit-learn's MLP does.
            return X, targets, (np.arange(X.shape[0]), None)
        weights = targets[:, len(tasks):]
        train, valid = validation_split(weights, fraction, seed)
        if not len(valid):
            return X, targets, (train, None)  # too few rows to hold any out
        check_split(names, weights, train, valid, f"validation_fraction={fraction}")
        return X, targets, (train, valid)

    def _read_validation(self, validation, names):
        X_val, y_val, _ = validation
        X_val = validate_X(self, X_val, reset=False)
        task_names = list(self.tasks) if isinstance(self.tasks, (list, tuple)) else None
        try:
            val_names, columns, _, _ = read_targets(y_val, task_names)
        except ValueError as exc:
            raise ValueError(f"y_val: {exc}") from None
        if val_names != names:
            raise ValueError(f"y_val has tasks {val_names!r} but y has {names!r}; the "
                             "validation data need the same tasks.")
        for name, column in zip(names, columns):
            if len(column) != X_val.shape[0]:
                raise ValueError(f"X_val has {X_val.shape[0]} rows but y_val[{name!r}] has "
                                 f"{len(column)}; they need one row per sample.")
        return X_val, columns

    def _warn_if_still_improving(self):
        stopper = dict(self.net_.callbacks_).get("early_stopping")
        if stopper is None or not getattr(stopper, "epochs_", 0) or stopper.stopped_epoch_:
            return
        deciding = getattr(stopper, "deciding_", stopper.monitored)
        names = [t.name for t, wait, watched in zip(self.tasks_, stopper.waits_, deciding)
                 if watched and wait < stopper.patience]
        warnings.warn(
            f"max_epochs={self.max_epochs} reached while the validation loss of task(s) "
            f"{names!r} was still improving; raise max_epochs (each task is predicted from "
            "its best epoch so far).", ConvergenceWarning, stacklevel=3)

    def _read_data(self, X, y, sample_weight, continuing):
        """Validated X (float32), Y's columns and form, and validated sample weights."""
        if y is None:
            # The wording scikit-learn's own estimators use.
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None.")
        X = validate_X(self, X, reset=not continuing)
        task_names = list(self.tasks) if isinstance(self.tasks, (list, tuple)) else None
        names, columns, dtypes, target_format = read_targets(y, task_names)
        for name, column in zip(names, columns):
            if len(column) != X.shape[0]:
                raise ValueError(
                    f"X has {X.shape[0]} rows but Y[{name!r}] has {len(column)}; X and Y need "
                    "one row per sample.")
        if sample_weight is not None:
            sample_weight = _sample_weight(sample_weight, X)
        return X, names, columns, dtypes, target_format, sample_weight

    def _resolve_tasks(self, names, columns, dtypes, sample_weight, classes, continuing):
        """The fitted tasks and the resolved task parameters of this call."""
        n_layers = len(as_sizes("hidden_layer_sizes", self.hidden_layer_sizes))
        as_sizes("head_hidden_sizes", self.head_hidden_sizes)
        if continuing:
            trained = [t.name for t in self.tasks_]
            if names != trained:
                raise ValueError(f"Y has tasks {names!r} but the model was fitted on "
                                 f"{trained!r}; continued training needs the same tasks.")
            for name, labels in classes_by_task(classes, names).items():
                check_same_classes(self.tasks_, name, labels)
            weights = static_weights(self.loss_weights, names)
            return self.tasks_, dataclasses.replace(self.task_params_, weights=weights)
        params = resolve_task_params(self, names, n_layers, classes)
        tasks = fit_tasks(names, columns, dtypes, params.kinds, params.losses, sample_weight,
                          params.classes)
        for task in tasks:
            task.auxiliary = task.name in params.auxiliary
            if self._allowed_kinds is not None and task.kind not in self._allowed_kinds:
                raise ValueError(
                    f"Task {task.name!r} is {task.kind}, but {type(self).__name__} takes only "
                    f"{'/'.join(self._allowed_kinds)} tasks; use MultiTaskRegressorClassifier "
                    "for mixed tasks.")
        return tasks, params

    def _new_net(self, tasks, params, target_format, X, targets, device, seeds, fit_rows):
        net = build_net(self, tasks, params, X, device, seeds, fit_rows=fit_rows)
        initialize(net, self)
        trial_losses(net, tasks, X, targets)
        self.tasks_ = tasks
        self.task_names_ = [t.name for t in tasks if not t.auxiliary]
        self.task_params_ = params
        self.target_format_ = target_format
        self.net_ = net

    def _update_net(self, params, shuffle_seed):
        """Continued training: the current loss weights and lr apply."""
        net = self.net_
        # A plain attribute: skorch's set_params refuses iterator params on a live net,
        # and reads them from the instance when it builds the next iterator.
        net.iterator_train__seed = shuffle_seed
        net.set_static_weights(params.weights)
        if net.lr != self.lr:
            net.set_params(lr=self.lr)  # skorch updates the live optimizer in place

    def _train(self, X, targets, rows, epochs, device, continuing):
        net = self.net_
        train = net.use_tables(*split_tables(X, targets, rows, device))
        before = copy.deepcopy(net.module_.state_dict()) if continuing else None
        epochs_before = len(net.history)
        net.clear_task_snapshots()
        self.__dict__.pop("_best_epochs", None)
        try:
            net.partial_fit(train, None, epochs=epochs)
        except TrainingDivergedError as exc:
            self._recover(exc, before)
        except Exception:
            # A failure inside training (a user callback or module): a fresh fit leaves
            # no half-trained model, a continued one the weights it started from.
            self._rewind(before)
            raise
        self.n_epochs_ = len(net.history)
        stopper = dict(net.callbacks_).get("early_stopping")
        if rows[1] is not None and getattr(stopper, "epochs_", 0):
            # A list in task order: task labels may be tuples, which a saved state keeps
            # as list entries but not as dict keys.
            self._best_epochs = [epochs_before + int(e)
                                 for t, e in zip(self.tasks_, stopper.best_epochs_)
                                 if not t.auxiliary]

    def _recover(self, exc, before):
        """After a diverged fit: the best finite checkpoint (early stopping) with a
        warning, else the weights before this call (continued training) or no model,
        and the error."""
        best_epoch = self.net_.restore_best()
        if best_epoch is not None:
            warnings.warn(f"{exc} The weights of epoch {best_epoch} (the best validation "
                          "loss) were restored.", UserWarning, stacklevel=4)
            return
        self._rewind(before)
        raise exc

    def _rewind(self, before):
        """Back to the weights ``before`` a continued call, or unfitted after a fresh fit."""
        self.__dict__.pop("_best_epochs", None)
        if before is not None:
            self.net_.load_weights(before)
            self.net_.clear_task_snapshots()
            return
        for name in ("net_", "tasks_", "task_names_", "task_params_", "target_format_",
                     "n_epochs_", "_retrieval", "_retrieval_net", "_retrieval_tasks",
                     "_retrieval_losses"):
            self.__dict__.pop(name, None)

    # ------------------------------------------------------------------
    # Prediction

    def _predicted_tasks(self):
        return [t for t in self.tasks_ if not t.auxiliary]

    def _task_outputs(self, X):
        """(task, raw output (n, k)) of each predicted task, and X's index."""
        check_is_fitted(self)
        _scorer_guard.check_scorer_call(self)
        index = X.index if isinstance(X, pd.DataFrame) else None
        X = validate_X(self, X, reset=False, min_samples=0)
        out = self.net_.raw_outputs(self._net_input(X))
        stride = self.net_.module_.heads.max_out
        partner = self.__dict__.get("_retrieval_net")
        if partner is not None:
            wide = partner.raw_outputs(np.hstack([X, retrieval_features(self._retrieval, X)]))
            for t, chosen in enumerate(self._retrieval_tasks):
                if chosen:
                    out[:, t * stride:(t + 1) * stride] = wide[:, t * stride:(t + 1) * stride]
        pairs = [(task, out[:, t * stride: t * stride + task.n_outputs])
                 for t, task in enumerate(self.tasks_) if not task.auxiliary]
        broken = [task.name for task, raw in pairs if not np.isfinite(raw).all()]
        if broken:
            raise ValueError(
                f"The network's outputs for task(s) {broken!r} are not finite for some rows of "
                "X: its weights have overflowed or X is far outside the training data's "
                "range. Refit with a smaller lr or standardised inputs.")
        return pairs, index

    def _net_input(self, X):
        """What ``net_`` reads for validated rows X: X, and its retrieval features when
        it was trained with them (``retrieval='on'``)."""
        state = self.__dict__.get("_retrieval")
        if state is None or self.__dict__.get("_retrieval_net") is not None:
            return X
        return np.hstack([X, retrieval_features(state, X)])

    def predict(self, X):
        """Per-task predictions in the original labels and scale.

        The form follows the ``y`` given to ``fit``: 1-D y -> array (n_samples,);
        2-D array -> array (n_samples, n_tasks); DataFrame -> DataFrame (Y's column
        labels, X's index when X is a DataFrame); dict -> dict task -> array.
        """
        pairs, index = self._task_outputs(X)
        predictions = {task.name: decode_predictions(task, raw) for task, raw in pairs}
        return format_predictions(self.target_format_, self.task_names_, predictions, index)

    @available_if(_has_classification_task)
    def predict_proba(self, X, *, as_frame=False):
        """Class probabilities of the classification tasks.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Numeric features, as for ``predict``.
        as_frame : bool, default=False
            If True, each task's probabilities are a DataFrame whose columns are
            that task's ``classes_`` and whose index is X's (a DataFrame X) or
            0..n-1: one DataFrame for a 1-D y, else a dict task -> DataFrame for
            the classification tasks (whatever Y's container).

        Returns
        -------
        proba : ndarray, list or dict
            Columns follow ``classes_``. The form follows the ``y`` given to
            ``fit``, as ``classes_`` does: one task (1-D y) -> array (n_samples,
            n_classes), as any scikit-learn classifier; 2-D array y -> a list
            with one such array per column (scikit-learn's multi-output form;
            None for a regression task); DataFrame or dict y -> dict task ->
            array, for the classification tasks. With ``as_frame=True``,
            DataFrames as described above.
        """
        pairs, index = self._task_outputs(X)
        values = {task.name: probabilities(task, raw) for task, raw in pairs
                  if task.is_classifier}
        if as_frame:
            classes = {t.name: t.classes_ for t in self._predicted_tasks() if t.is_classifier}
            return probability_frames(self.target_format_, values, classes, index)
        return per_task(self.target_format_, self.task_names_, values)

    @property
    def classes_(self):
        """Class labels of the classification tasks, in the form of ``predict_proba``:
        an array (one task), a list per column (2-D array y), or a dict task -> array
        (DataFrame or dict y). Absent when no task is a classification task."""
        check_is_fitted(self)
        _scorer_guard.check_scorer_call(self)
        values = {t.name: t.classes_ for t in self._predicted_tasks() if t.is_classifier}
        if not values:
            raise AttributeError(f"{type(self).__name__} has no classes_: none of its tasks is "
                                 "a classification task.")
        return per_task(self.target_format_, self.task_names_, values)

    def __sklearn_is_fitted__(self):
        # Fitted means a trained network: a fit that failed after validating X has
        # set n_features_in_ but left the estimator unfitted.
        return hasattr(self, "net_")


    @property
    def best_epoch_(self):
        """Dict task -> the epoch whose weights predict the task (early stopping)."""
        check_is_fitted(self)
        epochs = self.__dict__.get("_best_epochs")
        if epochs is None:
            raise AttributeError(f"This {type(self).__name__} was fitted without validation "
                                 "data, so it has no best_epoch_: every task is predicted "
                                 "from the last epoch.")
        return dict(zip(self.task_names_, epochs))

    @property
    def sharing_(self):
        """Dict task -> what predicts it: 'shared' (the multi-task network), 'single'
        (a network trained on the task alone) or 'blend' (the mean of the two); see
        the ``sharing`` parameter."""
        check_is_fitted(self)
        sources = self.net_.__dict__.get("task_sources") or ["shared"] * len(self.tasks_)
        return {t.name: s for t, s in zip(self.tasks_, sources) if not t.auxiliary}

    @property
    def sharing_losses_(self):
        """DataFrame (task x source): each task's validation loss when predicted by the
        shared network, by its single-task network and by their mean (the three
        ``sharing_`` chooses from), and the standard errors of the latter two's paired
        differences from the first ('single_se', 'blend_se'); NaN where a task has no
        validation label."""
        return self._recorded_losses(
            "_sharing_losses",
            f"This {type(self).__name__} has no sharing_losses_: it was fitted with "
            "sharing='shared' (or one task, or continued training), so no single-task "
            "network was trained. Fit with sharing='auto' or 'blend' to get them.")

    def _recorded_losses(self, key, missing):
        """The per-task losses a fit recorded under ``key``, as a DataFrame (predicted task
        x column); AttributeError ``missing`` where it recorded none."""
        check_is_fitted(self)
        losses = self.__dict__.get(key)
        if losses is None:
            raise AttributeError(missing)
        keep = [t for t, task in enumerate(self.tasks_) if not task.auxiliary]
        return pd.DataFrame({name: [values[t] for t in keep] for name, values in losses.items()},
                            index=pd.Index(self.task_names_, name="task", tupleize_cols=False))

    @property
    def retrieval_(self):
        """Dict task -> whether the task is predicted with retrieval features (the
        labels of its nearest training rows; see the ``retrieval`` parameter). With
        ``retrieval='auto'`` such a task is predicted by the second network (a shared
        one), whatever ``sharing_`` says of the plain network."""
        check_is_fitted(self)
        chosen = self.__dict__.get("_retrieval_tasks")
        if chosen is None:
            chosen = [self.__dict__.get("_retrieval") is not None] * len(self.tasks_)
        return {t.name: bool(c) for t, c in zip(self.tasks_, chosen) if not t.auxiliary}

    @property
    def retrieval_losses_(self):
        """With ``retrieval='auto'``: a DataFrame, one row per task, of the validation
        losses ``retrieval_`` was decided on (squared error on the standardised scale
        or log loss): 'plain' (the network without retrieval features), 'neighbours'
        (the neighbours' labels alone), and where the second network was trained
        'retrieval' and 'retrieval_se' (the standard error of its paired difference
        from 'plain'). That network is trained only where the neighbours alone
        predict some task better than the plain network by a standard error
        ('neighbours_se'); only tasks with at least 500 validation labels are
        decided on, after a fit that early stopping ended or that ran ten
        ``patience`` windows."""
        return self._recorded_losses(
            "_retrieval_losses",
            f"This {type(self).__name__} has no retrieval_losses_: they are measured by a "
            f"fresh fit with retrieval='auto' where a task has at least {MIN_VALIDATION_LABELS} "
            "validation labels, after early stopping ended the fit or ten patience windows "
            f"(retrieval={getattr(self, 'retrieval', 'off')!r}).")

    @property
    def history_(self):
        """The skorch history of the fit: per-epoch losses, per task included."""
        check_is_fitted(self)
        return self.net_.history

    def summary(self):
        """The fitted network, in the spirit of Keras's ``model.summary()``.

        Returns
        -------
        summary : ModelSummary
            ``print(summary)`` shows the network's parts (trunk, each task's
            head, the weighting state) with their parameter counts, then each
            task's kind, outputs, loss and loss weight; ``.parts`` and
            ``.tasks`` are those tables as DataFrames (HTML in a notebook).
        """
        check_is_fitted(self)
        return _summary.describe(self)

    # ------------------------------------------------------------------
    # Scoring

    def score_tasks(self, X, y, sample_weight=None):
        """Per-task scores on the observed labels: R² (regression), accuracy (classification).

        Returns a dict task -> score. Rows with a missing label for a task are
        left out of that task's score; a task with no observed label is NaN.
        For other metrics see :mod:`sklearn_mtl.metrics`.
        """
        pairs, _ = self._task_outputs(X)  # validates X first, as scikit-learn's score does
        predictions = {task.name: decode_predictions(task, raw) for task, raw in pairs}
        if sample_weight is not None:
            sample_weight = _sample_weight(sample_weight, pairs[0][1])
        return _scoring.score_tasks(self, predictions, y, sample_weight)

    def score(self, X, y, sample_weight=None):
        """Mean over tasks of R² (regression) and accuracy (classification) on the
        observed labels (tasks without any observed label are left out)."""
        scores = [s for s in self.score_tasks(X, y, sample_weight).values() if not np.isnan(s)]
        return float(np.mean(scores)) if scores else float("nan")

    def __sklearn_tags__(self):
        return _multitask_tags(self, super().__sklearn_tags__())


class MultiTaskRegressorClassifier(_MultiTaskBase):
    __doc__ = _docs.MIXED + _docs.PARAMETERS + _docs.ATTRIBUTES + _docs.MIXED_NOTES


class MultiTaskRegressor(RegressorMixin, _MultiTaskBase):
    __doc__ = _docs.REGRESSOR + _docs.PARAMETERS + _docs.ATTRIBUTES

    _allowed_kinds = ("regression",)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch of training on X, y: the first call initialises the network, later
        calls continue from the current weights, whatever ``warm_start`` says."""
        self._validate_params()
        return self._fit(X, y, sample_weight, epochs=1, continuing=hasattr(self, "net_"),
                         incremental=True)

    def score(self, X, y, sample_weight=None):
        """Uniform average over tasks of R² on the observed labels."""
        return _MultiTaskBase.score(self, X, y, sample_weight)


class MultiTaskClassifier(ClassifierMixin, _MultiTaskBase):
    __doc__ = _docs.CLASSIFIER + _docs.PARAMETERS + _docs.ATTRIBUTES

    _allowed_kinds = ("binary", "multiclass")

    def score(self, X, y, sample_weight=None):
        """Mean over tasks of the accuracy on the observed labels."""
        return _MultiTaskBase.score(self, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # ClassifierMixin sets fresh classifier tags
        tags.classifier_tags.multi_label = True  # a 2-D 0/1 y: one binary task per column
        return tags
