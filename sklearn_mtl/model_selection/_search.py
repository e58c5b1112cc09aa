"""Grid and randomized searches that train many candidates x folds as one network.

:class:`MultiTaskGridSearchCV` and :class:`MultiTaskRandomizedSearchCV` are
scikit-learn's :class:`~sklearn.model_selection.GridSearchCV` and
:class:`~sklearn.model_selection.RandomizedSearchCV` (same constructor,
attributes, ``cv_results_``, refit and multi-metric scoring, which come from
scikit-learn itself) with another evaluation: the fits of one search that
differ only in settings that change no tensor shape are trained together as
the members of one stacked network (see :mod:`sklearn_mtl._stacked`), then each member
is scored by scikit-learn's own scoring code on its held-out fold.

How fits are grouped
--------------------
Each (candidate, fold) is prepared as ``fit`` prepares it (validated data,
tasks, packed targets, validation split, an initialised net from the fit's
seeds). Fits whose settings differ only in :data:`STACKED_PARAMS` (and
whose tasks, classes and widths agree) form one group; each group is
trained as one stack, in chunks bounded by memory (``max_members``). Fits
that cannot be stacked -- a custom ``module=``, another architecture, a
gradient-based weighting, a feature embedding, callbacks, another optimizer
than Adam, an estimator that is no multi-task estimator of this package (a
Pipeline), fit parameters other than ``sample_weight`` -- are fitted one by one
with scikit-learn's ``_fit_and_score``, as ``GridSearchCV`` does, and reported
in the same format.

A Pipeline is searched sequentially: its preprocessing is fitted per fold,
which would give each fold its own transformed X before any stacking.
"""

import numbers
import time
import warnings
from traceback import format_exc

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (
    GridSearchCV,
    ParameterGrid,
    ParameterSampler,
    RandomizedSearchCV,
)
from sklearn.model_selection._search import _insert_error_scores
from sklearn.model_selection._split import check_cv
from sklearn.model_selection._validation import (
    _fit_and_score,
    _score,
    _warn_or_raise_about_fit_failures,
)
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.utils._param_validation import Interval
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.validation import _check_method_params, indexable

from .._estimators import _MultiTaskBase
from .._net import seeded_torch
from .._stacked import (
    Member,
    chunk_members,
    stackable_net,
    train_members,
    unstackable_setting,
)

__all__ = ["MultiTaskGridSearchCV", "MultiTaskRandomizedSearchCV", "STACKED_PARAMS"]

#: Estimator parameters in which the members of one stack may differ (and
#: ``loss_weights__<task>``). Any other difference puts fits in different stacks.
STACKED_PARAMS = frozenset({
    "loss_weights", "alpha", "dropout", "lr", "random_state", "patience", "tol",
    "max_epochs", "early_stopping", "validation_fraction", "class_weight", "verbose", "sharing",
})

def not_stackable(estimator):
    """Why ``estimator``'s fits cannot be members of a stack (a sentence), or None."""
    if not isinstance(estimator, _MultiTaskBase):
        return (f"{type(estimator).__name__} is not a multi-task estimator of this package "
                "(a Pipeline's preprocessing is fitted per fold)")
    return unstackable_setting(estimator)


def _same(a, b):
    if a is b:
        return True
    try:
        equal = a == b
        if isinstance(equal, np.ndarray):
            return bool(equal.all()) and np.shape(a) == np.shape(b)
        return bool(equal)
    except Exception:
        return False


def _group_key(member):
    """What members of one stack must share: every parameter outside STACKED_PARAMS,
    the tasks (kinds, outputs, losses) and the number of features."""
    est = member.estimator
    params = {k: v for k, v in est.get_params(deep=False).items() if k not in STACKED_PARAMS}
    tasks = tuple((t.name, t.kind, t.n_outputs, t.auxiliary,
                   t.loss if isinstance(t.loss, str) else id(t.loss)) for t in est.tasks_)
    return params, tasks, member.X.shape[1], str(member.estimator.net_.device)


def _group(members):
    """Lists of member indices that can be stacked together."""
    groups = []
    for i, member in enumerate(members):
        key = _group_key(member)
        for group_key, indices in groups:
            if (key[1:] == group_key[1:] and key[0].keys() == group_key[0].keys()
                    and all(_same(key[0][k], group_key[0][k]) for k in key[0])):
                indices.append(i)
                break
        else:
            groups.append((key, [i]))
    return [indices for _, indices in groups]


def _error_scores(scorer, error_score, return_train_score):
    if isinstance(scorer, _MultimetricScorer):
        test = {name: error_score for name in scorer._scorers}
    else:
        test = error_score
    return test, (test.copy() if isinstance(test, dict) else test)


class _StackedSearchMixin:
    """The evaluation of the multi-task searches (see the module docstring)."""

    _extra_constraints = {"max_members": [Interval(numbers.Integral, 1, None, closed="left"),
                                          None]}

    def _candidates(self):
        """The candidate parameter settings, as the scikit-learn search draws them."""
        raise NotImplementedError

    def _fallback_reason(self, params):
        extra = sorted(set(params) - {"sample_weight", "groups"})
        if extra:
            return f"fit parameters {extra}"
        if not isinstance(self.estimator, _MultiTaskBase):
            return not_stackable(self.estimator)
        return None

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, stacking the fits that allow it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors.
        y : array-like, DataFrame or dict of shape (n_samples, n_tasks)
            The task targets, as the estimator's ``fit`` takes them.
        **params : dict of str -> object
            ``sample_weight`` (split along with X and y, forwarded to the
            scorers that accept it) and ``groups`` (for the splitter). Other
            fit parameters make every fit a sequential one.

        Returns
        -------
        self : object
            Instance of fitted estimator.
        """
        self.fallback_reason_ = self._fallback_reason(params)
        if self.fallback_reason_ is not None:
            return super().fit(X, y, **params)
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._checked_cv_orig = cv
        self.n_splits_ = cv.get_n_splits(X, y, **routed.splitter.split)
        splits = list(cv.split(X, y, **routed.splitter.split))
        if len(splits) != self.n_splits_:
            raise ValueError(f"cv.split and cv.get_n_splits return inconsistent results. "
                             f"Expected {self.n_splits_} splits, got {len(splits)}")
        candidates = self._candidates()
        if self.verbose > 0:
            print(f"Fitting {self.n_splits_} folds for each of {len(candidates)} candidates,"
                  f" totalling {len(candidates) * self.n_splits_} fits")
        out = self._evaluate(candidates, splits, X, y, scorers, routed)
        if not out:
            raise ValueError("No fits were performed. Was the CV iterator empty? "
                             "Were there no candidates?")
        _warn_or_raise_about_fit_failures(out, self.error_score)
        if callable(self.scoring):
            _insert_error_scores(out, self.error_score)
        results = self._format_results(candidates, self.n_splits_, out)
        self.multimetric_ = isinstance(out[0]["test_scores"], dict)
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(out[0]["test_scores"])
            refit_metric = self.refit
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            self.best_estimator_ = clone(self.estimator).set_params(
                **clone(self.best_params_, safe=False))
            start = time.time()
            self.best_estimator_.fit(X, y, **routed.estimator.fit)
            self.refit_time_ = time.time() - start
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers
        self.cv_results_ = results
        return self

    # ------------------------------------------------------------------

    def _evaluate(self, candidates, splits, X, y, scorers, routed):
        """One _fit_and_score-style result per (candidate, split), candidate-major."""
        fit_params = routed.estimator.fit
        score_params = routed.scorer.score
        pairs = [(c, s) for c in range(len(candidates)) for s in range(len(splits))]
        out = [None] * len(pairs)
        members, sequential = {}, []
        self.n_stacked_fits_ = 0
        for slot, (c, s) in enumerate(pairs):
            estimator = clone(self.estimator).set_params(**clone(candidates[c], safe=False))
            if not_stackable(estimator) is not None:
                sequential.append(slot)
                continue
            start = time.time()
            try:
                member = self._prepare(estimator, X, y, splits[s][0], fit_params, s, scorers)
            except Exception:
                if self.error_score == "raise":
                    raise
                out[slot] = self._failed(scorers, time.time() - start, len(splits[s][1]))
                continue
            if member is None:
                sequential.append(slot)
                continue
            member.prepare_time = time.time() - start
            member.n_test = len(splits[s][1])
            members[slot] = member
        slots = list(members)
        for group in _group([members[slot] for slot in slots]):
            group_slots = [slots[g] for g in group]
            self._train_group(group_slots, members, out, scorers)
        for slot, member in members.items():
            if out[slot] is None:
                c, s = pairs[slot]
                out[slot] = self._score_member(member, X, y, splits[s], scorers,
                                               score_params)
        self.n_stacked_fits_ = len(members)
        if sequential:
            out_seq = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(
                delayed(_fit_and_score)(
                    clone(self.estimator), X, y, train=splits[pairs[slot][1]][0],
                    test=splits[pairs[slot][1]][1], parameters=candidates[pairs[slot][0]],
                    split_progress=(pairs[slot][1], len(splits)),
                    candidate_progress=(pairs[slot][0], len(candidates)),
                    scorer=scorers, fit_params=fit_params, score_params=score_params,
                    return_train_score=self.return_train_score, return_n_test_samples=True,
                    return_times=True, return_parameters=False,
                    error_score=self.error_score, verbose=self.verbose)
                for slot in sequential)
            for slot, result in zip(sequential, out_seq):
                out[slot] = result
        return out

    def _prepare(self, estimator, X, y, train, fit_params, split, scorers):
        """A Member for one (candidate, split): the fit prepared as ``fit`` prepares it,
        with its initialised net; None when its network is not the stackable kind."""
        estimator._validate_params()
        X_train, y_train = _safe_split(estimator, X, y, train)
        fit_params = _check_method_params(X, params=fit_params, indices=train)
        prepared = estimator._prepare_fit(X_train, y_train, fit_params.get("sample_weight"),
                                          scoring_step=(scorers, y))
        with seeded_torch(estimator.random_state, prepared.seeds[0], prepared.device):
            estimator._new_net(prepared.tasks, prepared.params, prepared.target_format,
                               prepared.X, prepared.targets, prepared.device, prepared.seeds,
                               fit_rows=prepared.rows[0])
        if not stackable_net(estimator.net_):
            return None
        member = Member(estimator, prepared.X, prepared.targets, prepared.rows[0],
                        prepared.rows[1], data_key=split)
        member.scorer_check = prepared.scorer_check
        member.prepared = prepared
        member.train_data = (X_train, y_train)
        return member

    def _train_group(self, slots, members, out, scorers):
        group = [members[slot] for slot in slots]
        device = group[0].estimator.net_.device
        for chunk in chunk_members(group, device, self.max_members):
            start = time.time()
            try:
                train_members(chunk, device)
            except Exception as exc:
                if self.error_score == "raise":
                    raise
                trace = format_exc()
                for member in chunk:
                    member.error, member.trace = exc, trace
            per_member = (time.time() - start) / len(chunk)
            for member in chunk:
                member.fit_time = member.prepare_time + per_member
                self._share(member)
        improving = [m for m in group if m.error is None and m.still_improving]
        if improving:
            epochs = sorted({m.max_epochs for m in improving})
            warnings.warn(
                f"{len(improving)} of the {len(group)} stacked fits reached max_epochs="
                f"{epochs[0] if len(epochs) == 1 else epochs} while the validation loss of "
                "some task was still improving; raise max_epochs (each task is predicted "
                "from its best epoch so far).", ConvergenceWarning, stacklevel=4)
        for slot, member in zip(slots, group):
            if member.error is not None:
                if self.error_score == "raise":
                    raise member.error
                trace = getattr(member, "trace", None) or "".join(
                    [f"{type(member.error).__name__}: {member.error}\n"])
                out[slot] = self._failed(scorers, member.fit_time, member.n_test, trace)

    def _share(self, member):
        """The member's per-task sharing (``sharing`` 'blend' or 'auto') and its
        ``retrieval='auto'`` check, as its own fit would decide them: on its fold."""
        start = time.time()
        try:
            if member.error is None:
                member.estimator._choose_sharing(member.prepared, fresh=True)
                member.estimator._choose_retrieval(member.prepared, fresh=True)
        except Exception as exc:
            if self.error_score == "raise":
                raise
            member.error, member.trace = exc, format_exc()
        member.prepared = None
        member.fit_time += time.time() - start

    def _failed(self, scorers, fit_time, n_test, trace=None):
        test, train = _error_scores(scorers, self.error_score, self.return_train_score)
        result = {"fit_error": trace if trace is not None else format_exc(),
                  "test_scores": test, "n_test_samples": n_test, "fit_time": fit_time,
                  "score_time": 0.0}
        if self.return_train_score:
            result["train_scores"] = train
        return result

    def _score_member(self, member, X, y, split, scorers, score_params):
        train, test = split
        estimator = member.estimator
        X_train, y_train = member.train_data
        try:
            member.scorer_check.trial(estimator, X_train, y_train)
        except ValueError:
            if self.error_score == "raise":
                raise
            return self._failed(scorers, member.fit_time, len(test))
        X_test, y_test = _safe_split(estimator, X, y, test, train)
        start = time.time()
        test_scores = _score(estimator, X_test, y_test, scorers,
                             _check_method_params(X, params=score_params, indices=test),
                             self.error_score)
        result = {"fit_error": None, "test_scores": test_scores,
                  "n_test_samples": len(test), "fit_time": member.fit_time,
                  "score_time": time.time() - start}
        if self.return_train_score:
            result["train_scores"] = _score(
                estimator, X_train, y_train, scorers,
                _check_method_params(X, params=score_params, indices=train),
                self.error_score)
        member.train_data = None
        return result


_STACKING_DOC = """
    Fits that differ only in settings that change no tensor shape (see
    ``sklearn_mtl.model_selection.STACKED_PARAMS``: ``loss_weights`` and
    ``loss_weights__<task>``, ``alpha``, ``dropout``, ``lr``, ``random_state``,
    ``patience``, ``tol``, ``max_epochs``, ...) are trained together as the
    members of one stacked network: every member has all of its own
    parameters, Adam state, training rows (its fold's training rows) and early
    stopping, so a member is the network a plain fit of its candidate on its
    fold trains (same initialisation and batch order; up to floating-point
    summation order, and other dropout draws). On AMD CPUs the batched
    products of large stacks run in oneDNN rather than MKL (about twice as
    fast there), once a check at first use has found them float32-accurate
    on the CPU. Fits differing in other
    settings form separate stacks; fits that cannot be stacked (a custom
    ``module=``, a Pipeline, another architecture or weighting, ...) are fitted
    one by one, as scikit-learn's search does. ``n_jobs`` applies to those.

    max_members : int, default=None
        The most members trained in one stack (None: as many as a memory
        bound allows, a quarter of the available memory and at most 2 GiB).

    Attributes
    ----------
    The attributes of scikit-learn's search, and:

    n_stacked_fits_ : int
        How many (candidate, fold) fits were trained as stack members.
    fallback_reason_ : str or None
        Why the whole search ran sequentially (None: it did not).
"""


class MultiTaskGridSearchCV(_StackedSearchMixin, GridSearchCV):
    __doc__ = ("Exhaustive search over a parameter grid for the multi-task estimators, "
               "with stacked training.\n\n    The parameters, attributes and "
               "``cv_results_`` are those of\n    :class:`sklearn.model_selection."
               "GridSearchCV`.\n" + _STACKING_DOC)

    _parameter_constraints = {**GridSearchCV._parameter_constraints,
                              **_StackedSearchMixin._extra_constraints}

    def __init__(self, estimator, param_grid, *, scoring=None, n_jobs=None, refit=True,
                 cv=None, verbose=0, pre_dispatch="2*n_jobs", error_score=np.nan,
                 return_train_score=False, max_members=None):
        super().__init__(estimator, param_grid, scoring=scoring, n_jobs=n_jobs, refit=refit,
                         cv=cv, verbose=verbose, pre_dispatch=pre_dispatch,
                         error_score=error_score, return_train_score=return_train_score)
        self.max_members = max_members

    def _candidates(self):
        return list(ParameterGrid(self.param_grid))


class MultiTaskRandomizedSearchCV(_StackedSearchMixin, RandomizedSearchCV):
    __doc__ = ("Randomized search over parameter settings for the multi-task estimators, "
               "with stacked training.\n\n    The parameters, attributes and "
               "``cv_results_`` are those of\n    :class:`sklearn.model_selection."
               "RandomizedSearchCV`.\n" + _STACKING_DOC)

    _parameter_constraints = {**RandomizedSearchCV._parameter_constraints,
                              **_StackedSearchMixin._extra_constraints}

    def __init__(self, estimator, param_distributions, *, n_iter=10, scoring=None,
                 n_jobs=None, refit=True, cv=None, verbose=0, pre_dispatch="2*n_jobs",
                 random_state=None, error_score=np.nan, return_train_score=False,
                 max_members=None):
        super().__init__(estimator, param_distributions, n_iter=n_iter, scoring=scoring,
                         n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
                         pre_dispatch=pre_dispatch, random_state=random_state,
                         error_score=error_score, return_train_score=return_train_score)
        self.max_members = max_members

    def _candidates(self):
        return list(ParameterSampler(self.param_distributions, self.n_iter,
                                     random_state=self.random_state))
