"""Per-task sharing: each task predicted by the shared network, by a network trained on
that task alone, or by the mean of the two.

Sharing helps a task when the other tasks carry information about it, and costs it
when they pull the shared layers elsewhere (negative transfer); which one happens is a
property of the table, not known before the fit. With ``sharing='blend'`` or
``'auto'``, ``fit`` also trains one single-task network per predicted task: the same
architecture and parameters, loss weight 1 on that task and 0 on the others (static
weighting), trained on the task's labelled training rows and early-stopped on its
labelled validation rows (the shared network's validation rows, so the validation
losses compare like with like). These networks are trained together as the members
of one stack where the settings allow (:mod:`._stacked`), else one after the other.

Then, per task:

* ``'blend'``: the prediction is the mean of the two networks' predictions (for
  regression the mean value; for classification the mean probabilities, see
  :class:`~._ensemble.MemberMean`);
* ``'auto'``: the shared network, unless the single-task network or the mean has a
  validation loss lower by more than one standard error of the paired difference over
  the task's validation rows (then the lower of those two): with a handful of
  validation labels a difference is noise, and sharing stays.

:func:`fit_sharing` records the choice in the net (its task states and partners,
which prediction, persistence and export read) and returns the validation losses of
the three sources.
"""

import dataclasses

import numpy as np
import torch
from sklearn.base import clone

from ._early_stopping import state_copy
from ._ensemble import MemberMean
from ._net import TrainingDivergedError, seeded_torch
from ._stacked import Member, chunk_members, stackable_net, train_members, unstackable_setting

#: The sources a task can be predicted from.
SOURCES = ("shared", "single", "blend")


def fit_sharing(estimator, prepared):
    """After the shared network's fit: train the single-task networks, choose each
    task's source and install it in ``estimator.net_``.

    Returns ``(losses, best_epochs)``: the validation losses, a dict source -> list
    (one float per task, NaN where not measured) with the standard errors of the
    differences (:func:`_validation_losses`), or None when nothing was trained
    (``sharing='shared'``, a single predicted task); and per predicted task the best
    epoch of the single-task network where it predicts the task alone (else None).
    """
    net = estimator.net_
    tasks = prepared.tasks
    predicted = [t for t, task in enumerate(tasks) if not task.auxiliary]
    # getattr: a model saved before ``sharing`` existed shares every task.
    sharing = getattr(estimator, "sharing", "shared")
    if sharing == "shared" or len(predicted) < 2:
        return None, None
    singles = _single_task_fits(estimator, prepared, predicted)
    _train(singles, prepared)
    T = len(tasks)
    stride = net.module_.heads.max_out
    shared_states = net.__dict__.get("task_states") or [state_copy(net.module_)] * T
    single_states = [None] * T
    for t, single in singles.items():
        if getattr(single, "error", None) is None:
            states = single.net_.__dict__.get("task_states")
            single_states[t] = states[t] if states else state_copy(single.net_.module_)
    losses = _validation_losses(net, singles, single_states, prepared, stride)
    sources = ["shared"] * T
    for t in predicted:
        if single_states[t] is None:
            continue
        if sharing == "blend":
            sources[t] = "blend"
            continue
        sources[t] = _lowest_by_margin(losses, t)
    states = [single_states[t] if sources[t] == "single" else shared_states[t]
              for t in range(T)]
    partners = [single_states[t] if sources[t] == "blend" else None for t in range(T)]
    net.set_task_sources(states, partners, sources)
    # best_epoch_ lists the predicted tasks: a task predicted alone by its single-task
    # network reports that network's best epoch.
    best_epochs = [None] * len(predicted)
    for i, t in enumerate(predicted):
        epochs = singles[t].__dict__.get("_best_epochs") if sources[t] == "single" else None
        best_epochs[i] = None if epochs is None else epochs[i]
    return losses, best_epochs


def _single_task_fits(estimator, prepared, predicted):
    """Task index -> an estimator with its net built (not trained) for that task alone,
    with ``.train_rows`` and ``.valid_rows``; tasks without training labels are left
    out."""
    T = len(prepared.tasks)
    labelled = prepared.targets[:, T:2 * T] > 0
    train, valid = prepared.rows
    fits = {}
    for t in predicted:
        train_t = train[labelled[train, t]]
        if not len(train_t):
            continue
        weights = np.zeros(T)
        weights[t] = 1.0
        params = dataclasses.replace(prepared.params, weights=weights)
        # Static weighting: a learned one would train the other tasks' heads too.
        # prepared.X holds the retrieval features already: no second lookup.
        single = clone(estimator).set_params(sharing="shared", weighting="static",
                                             callbacks=None, verbose=0, retrieval="off")
        seeds = [int(s) + 1 + t for s in prepared.seeds]
        with seeded_torch(single.random_state, seeds[0], prepared.device):
            single._new_net(prepared.tasks, params, prepared.target_format, prepared.X,
                            prepared.targets, prepared.device, seeds, fit_rows=train_t)
        single.train_rows = train_t
        single.valid_rows = None if valid is None else valid[labelled[valid, t]]
        fits[t] = single
    return fits


def _train(singles, prepared):
    """Train the single-task networks: as one stack where they qualify, else one by one.
    A network whose training diverges gets ``.error`` and predicts nothing."""
    fits = list(singles.values())
    if not fits:
        return
    device = prepared.device
    if all(unstackable_setting(s) is None and stackable_net(s.net_) for s in fits):
        members = [Member(s, prepared.X, prepared.targets, s.train_rows, s.valid_rows,
                          data_key=0) for s in fits]
        for chunk in chunk_members(members, device):
            train_members(chunk, device)
        for member in members:
            member.estimator.error = member.error
    else:
        for single in fits:
            single.error = None
            valid = single.valid_rows if single.valid_rows is not None and len(
                single.valid_rows) else None
            try:
                single._train(prepared.X, prepared.targets, (single.train_rows, valid),
                              single.max_epochs, device, continuing=False)
            except TrainingDivergedError as exc:
                single.error = exc


def _lowest_by_margin(losses, t):
    """'auto''s source of task t: the shared network unless the single-task network or
    the blend has a validation loss lower by more than one standard error of the
    paired difference (then the lowest of those); the shared network where a loss is
    not measured. A task's validation labels may be a handful: a difference within
    their noise is no evidence against sharing."""
    shared = losses["shared"][t]
    best, best_loss = "shared", shared
    for source in SOURCES[1:]:
        loss, se = losses[source][t], losses[f"{source}_se"][t]
        if not (np.isfinite(shared) and np.isfinite(loss) and np.isfinite(se)):
            return "shared"
        if loss + se < shared and loss < best_loss:
            best, best_loss = source, loss
    return best


def _validation_losses(net, singles, single_states, prepared, stride):
    """Dict source -> per-task validation losses of the shared network, the single-task
    networks and their mean (NaN where a task has no validation label or no single-task
    network), and '<source>_se' -> the standard errors of the single-task network's
    and the blend's paired differences from the shared network's (over the task's
    validation rows, weighted as the losses are; inf for a loss that is not a mean
    over rows)."""
    T = len(prepared.tasks)
    valid = prepared.rows[1]
    nan = [float("nan")] * T
    names = list(SOURCES) + [f"{source}_se" for source in SOURCES[1:]]
    if valid is None or not len(valid):
        return {name: list(nan) for name in names}
    X = prepared.X[valid]
    shared = net.raw_outputs(X)
    single = shared.copy()
    for t, fit in singles.items():
        if single_states[t] is not None:
            columns = slice(t * stride, (t + 1) * stride)
            single[:, columns] = fit.net_.raw_outputs(X)[:, columns]
    c = net.criterion_
    outputs = torch.from_numpy(np.stack([shared, single], 1))
    blend = MemberMean(c.kinds, c.n_outputs, c.stride).double()(outputs).numpy()
    device = torch.device(net.device)
    y_true = torch.from_numpy(prepared.targets[valid]).to(device)
    labels, weights = y_true[:, :T], y_true[:, T:2 * T]
    losses, elements = {}, {}
    with torch.no_grad():
        for source, out in zip(SOURCES, (shared, single, blend)):
            out = torch.from_numpy(out.astype(np.float32)).to(device)
            values, denominators = c(out, y_true)
            values = values.double().cpu().numpy()
            values[denominators.cpu().numpy() <= 0] = np.nan
            losses[source] = [float(v) for v in values]
            elements[source] = c.element_losses(out, labels, weights).double().cpu().numpy()
    w = weights.double().cpu().numpy()
    w = np.where(w > 0, w, 0.0)
    total = w.sum(0)
    reduced = {t for t, _, _, elementwise in c.others if not elementwise}
    for source in SOURCES[1:]:
        d = np.where(w > 0, elements[source] - elements["shared"], 0.0)
        mean = (w * d).sum(0) / np.maximum(total, 1e-300)
        se = np.sqrt((w ** 2 * (d - mean) ** 2).sum(0)) / np.maximum(total, 1e-300)
        se[total <= 0] = np.nan
        se[list(reduced)] = np.inf
        losses[f"{source}_se"] = [float(v) for v in se]
    for t in range(T):
        if single_states[t] is None:
            for name in names[1:]:
                losses[name][t] = float("nan")
    return losses
