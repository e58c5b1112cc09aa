"""Displays in scikit-learn's style (``RocCurveDisplay``, ``PartialDependenceDisplay``).

Each display holds its data, draws it with ``plot(ax=None)`` and is built by
``from_estimator`` (a fitted estimator, or a Pipeline ending in one) or a
``from_<data>`` constructor. After ``plot``: ``ax_``, ``figure_`` and the
drawn artists as attributes ending in ``_``. matplotlib is needed only to
plot.
"""

import numpy as np
import pandas as pd

from .._history import curve, task_frame
from ._utils import fitted_final_step

__all__ = ["SingleTaskComparisonDisplay", "TaskAffinityDisplay", "TrainingHistoryDisplay"]

VERDICT_COLORS = {"helps": "tab:green", "hurts": "tab:red", "no clear difference": "tab:gray"}


def _pyplot(what):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            f"{what} needs matplotlib, an optional dependency of sklearn-mtl. Install it "
            "(pip install matplotlib, or the package's 'examples' extra) to plot; the data "
            "themselves need no matplotlib.") from None
    return plt


def _axes(plt, ax, n=1, width=6.4, height=4.2):
    if ax is not None:
        return ax.figure, ax
    figure, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False,
                                layout="constrained")
    axes = list(axes[0])
    return figure, (axes[0] if n == 1 else axes)


def _label(name):
    return str(name)


# ---------------------------------------------------------------------------
# Training history


class TrainingHistoryDisplay:
    """Per-task training and validation loss per epoch, the best epoch marked, and the
    effective task weights over the epochs when a weighting strategy moved them.

    Parameters
    ----------
    task_loss_curves : DataFrame (epoch x task)
        Training loss of each task per epoch.
    task_validation_curves : DataFrame (epoch x task) or None
    task_weights : DataFrame (epoch x task) or None
        The mean effective weight of each task per epoch.
    best_epoch : int or None
        Marked with a vertical line: the epoch of the lowest total validation
        loss, else of the lowest training loss.
    best_epochs : dict task -> int or None
        Each task's best epoch (the one that predicts it after early
        stopping), marked with a dot on its validation curve.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes of the losses (set by ``plot``, as every attribute here).
    weights_ax_ : matplotlib Axes or None
        The axes of the weights, when they are shown.
    figure_ : matplotlib Figure
    train_lines_, valid_lines_, weight_lines_ : dict task -> Line2D
    best_epoch_line_ : Line2D or None
    best_epoch_markers_ : dict task -> Line2D
    """

    def __init__(self, task_loss_curves, task_validation_curves=None, task_weights=None,
                 best_epoch=None, best_epochs=None):
        self.task_loss_curves = task_loss_curves
        self.task_validation_curves = task_validation_curves
        self.task_weights = task_weights
        self.best_epoch = best_epoch
        self.best_epochs = best_epochs

    @classmethod
    def from_history(cls, history, task_names, *, ax=None, show_weights="auto",
                     log_scale=False, best_epochs=None):
        """From a skorch history (``estimator.history_`` or a list of epoch dicts) and
        the task names (``estimator.net_.task_names``).

        With ``show_weights='auto'`` the weights are shown when they change over the
        epochs; note that static weights of a task with missing labels change a little
        too (a batch without its labels gives it weight 0): ``from_estimator`` knows the
        strategy and leaves static weights out. ``best_epochs`` (dict task -> epoch,
        e.g. ``estimator.best_epoch_``): None marks each task's lowest validation
        loss."""
        names = list(task_names)
        losses = task_frame(history, names, "train_loss")
        if losses is None:
            raise ValueError("The history holds no per-task training losses "
                             "(train_loss_<task>): was it written by a sklearn_mtl fit?")
        valid = task_frame(history, names, "valid_loss")
        weights = task_frame(history, names, "weight")
        overall = curve(history, "valid_loss") or curve(history, "train_loss")
        best = None
        if overall is not None and np.isfinite(overall).any():
            best = int(losses.index[int(np.nanargmin(overall))])
        if best_epochs is None and valid is not None:
            best_epochs = {name: int(valid[name].idxmin()) for name in valid.columns
                           if valid[name].notna().any()}
        display = cls(losses, valid, weights, best, best_epochs)
        return display.plot(ax=ax, show_weights=show_weights, log_scale=log_scale)

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, show_weights="auto", log_scale=False):
        """From a fitted multi-task estimator (or a Pipeline ending in one)."""
        from ..weighting import Static

        model = fitted_final_step(estimator)
        if show_weights == "auto" and isinstance(model.net_.weighting, Static):
            show_weights = False  # static weights do not move (but for absent labels)
        best_epochs = getattr(model, "best_epoch_", None)  # absent without validation data
        return cls.from_history(model.net_.history, model.net_.task_names, ax=ax,
                                show_weights=show_weights, log_scale=log_scale,
                                best_epochs=best_epochs)

    def _weights_move(self):
        w = self.task_weights
        if w is None or w.empty:
            return False
        values = w.to_numpy(dtype=float)
        spread = np.nanmax(values, axis=0) - np.nanmin(values, axis=0)
        return bool(np.nanmax(spread) > 1e-6 * max(1.0, float(np.nanmax(np.abs(values)))))

    def plot(self, ax=None, *, show_weights="auto", log_scale=False):
        """Draw the curves.

        Parameters
        ----------
        ax : Axes, or a pair of Axes (losses, weights), default=None
            None: a new figure, with a second panel for the weights when they
            are shown.
        show_weights : 'auto' or bool, default='auto'
            'auto': when the weights changed over the epochs (a weighting
            strategy other than static weights) and there is a place for them
            (``ax`` None or a pair).
        log_scale : bool, default=False
            Losses on a log scale.
        """
        plt = _pyplot("TrainingHistoryDisplay.plot")
        pair = isinstance(ax, (list, tuple, np.ndarray))
        weights = self._weights_move() if show_weights == "auto" else bool(show_weights)
        if show_weights == "auto" and ax is not None and not pair:
            weights = False
        if pair:
            loss_ax, weights_ax = ax[0], ax[1]
            figure = loss_ax.figure
        elif ax is None:
            figure, axes = _axes(plt, None, 2 if weights else 1)
            loss_ax, weights_ax = (axes[0], axes[1]) if weights else (axes, None)
        else:
            figure, loss_ax, weights_ax = ax.figure, ax, None
        if weights and weights_ax is None:
            weights_ax = loss_ax.twinx()

        colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
        self.train_lines_, self.valid_lines_, self.weight_lines_ = {}, {}, {}
        valid = self.task_validation_curves
        for j, name in enumerate(self.task_loss_curves.columns):
            color = colors[j % len(colors)]
            series = self.task_loss_curves[name]
            (self.train_lines_[name],) = loss_ax.plot(series.index, series.to_numpy(),
                                                      color=color, label=_label(name))
            if valid is not None and name in valid.columns:
                (self.valid_lines_[name],) = loss_ax.plot(
                    valid.index, valid[name].to_numpy(), color=color, linestyle="--")
        self.best_epoch_markers_ = {}
        for j, (name, epoch) in enumerate((self.best_epochs or {}).items()):
            if valid is None or name not in valid.columns or epoch not in valid.index:
                continue
            column = list(self.task_loss_curves.columns).index(name) \
                if name in self.task_loss_curves.columns else j
            (self.best_epoch_markers_[name],) = loss_ax.plot(
                [epoch], [valid.loc[epoch, name]], marker="o", linestyle="none",
                color=colors[column % len(colors)], markeredgecolor="black")
        self.best_epoch_line_ = None
        if self.best_epoch is not None:
            self.best_epoch_line_ = loss_ax.axvline(self.best_epoch, color="0.3",
                                                    linestyle=":", linewidth=1)
        if log_scale:
            loss_ax.set_yscale("log")
        from matplotlib.ticker import MaxNLocator

        loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("task loss")
        title = "training (solid)" + (" and validation (dashed)" if self.valid_lines_ else "")
        title += " loss per task"
        loss_ax.set_title(title)
        handles = list(self.train_lines_.values())
        if self.best_epoch_markers_:
            marker = next(iter(self.best_epoch_markers_.values()))
            marker.set_label("each task's best epoch")
            handles.append(marker)
        if self.best_epoch_line_ is not None:
            self.best_epoch_line_.set_label(f"best epoch ({self.best_epoch})")
            handles.append(self.best_epoch_line_)
        loss_ax.legend(handles=handles, fontsize="small")

        self.weights_ax_ = None
        if weights and self.task_weights is not None:
            for j, name in enumerate(self.task_weights.columns):
                series = self.task_weights[name]
                (self.weight_lines_[name],) = weights_ax.plot(
                    series.index, series.to_numpy(), color=colors[j % len(colors)],
                    label=_label(name))
            weights_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            weights_ax.set_xlabel("epoch")
            weights_ax.set_ylabel("effective task weight (epoch mean)")
            weights_ax.set_title("task weights")
            self.weights_ax_ = weights_ax
        self.ax_, self.figure_ = loss_ax, figure
        return self


# ---------------------------------------------------------------------------
# Task affinity


class TaskAffinityDisplay:
    """Annotated heatmap of a task affinity table: one cell per (source, target) pair.

    Colours are centred on 0 (blue: a step on the source task helps the
    target, red: it hurts) and scaled by the off-diagonal values; the
    diagonal (a task's affinity to itself) is shown grey, with its value.

    Parameters
    ----------
    affinity : DataFrame (T, T)
        Rows: source task; columns: target task.

    Attributes
    ----------
    im_ : matplotlib AxesImage
        The heatmap (set by ``plot``, as every attribute here).
    text_ : ndarray (T, T) of matplotlib Text
        The annotations.
    colorbar_ : matplotlib Colorbar or None
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    """

    def __init__(self, affinity):
        self.affinity = affinity

    @classmethod
    def from_affinity(cls, affinity, *, ax=None, cmap="RdBu", values_format=None,
                      colorbar=True):
        """From a table such as :func:`~sklearn_mtl.inspection.task_affinity` returns."""
        if not isinstance(affinity, pd.DataFrame):
            values = np.asarray(affinity, dtype=float)
            affinity = pd.DataFrame(values)
        return cls(affinity).plot(ax=ax, cmap=cmap, values_format=values_format,
                                  colorbar=colorbar)

    @classmethod
    def from_estimator(cls, estimator, X=None, Y=None, *, method="lookahead", every=10,
                       random_state=None, ax=None, cmap="RdBu", values_format=None,
                       colorbar=True):
        """With X and Y: record the affinity in a fit of a clone of ``estimator``
        (:func:`~sklearn_mtl.inspection.task_affinity`). Without: the
        ``task_affinity_`` of a fitted estimator (fitted with a ``TaskAffinity``
        callback)."""
        if X is None and Y is None:
            affinity = fitted_final_step(estimator).task_affinity_
        elif X is None or Y is None:
            raise ValueError("Pass both X and Y (to record the affinity in a new fit) or "
                             "neither (to show a fitted estimator's task_affinity_).")
        else:
            from ._affinity import task_affinity

            affinity = task_affinity(estimator, X, Y, method=method, every=every,
                                     random_state=random_state)
        return cls(affinity).plot(ax=ax, cmap=cmap, values_format=values_format,
                                  colorbar=colorbar)

    def plot(self, ax=None, *, cmap="RdBu", values_format=None, colorbar=True):
        """Draw the heatmap.

        Parameters
        ----------
        ax : Axes, default=None
        cmap : str or Colormap, default='RdBu'
            A diverging colormap (its middle is 0).
        values_format : str, default=None
            Format of the annotations ('.2g' when None).
        colorbar : bool, default=True
        """
        plt = _pyplot("TaskAffinityDisplay.plot")
        frame = self.affinity
        values = frame.to_numpy(dtype=float)
        T = values.shape[0]
        figure, ax = _axes(plt, ax, width=max(4.0, 1.1 * T + 2.5),
                           height=max(3.5, 0.9 * T + 1.5))
        off = values[~np.eye(T, dtype=bool)] if T > 1 else values.ravel()
        finite = off[np.isfinite(off)]
        scale = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        shown = np.where(np.eye(T, dtype=bool), np.nan, values)
        colormap = plt.get_cmap(cmap).with_extremes(bad="0.85")
        self.im_ = ax.imshow(np.ma.masked_invalid(shown), cmap=colormap, vmin=-scale,
                             vmax=scale)
        fmt = values_format or ".2g"
        self.text_ = np.empty((T, T), dtype=object)
        for i in range(T):
            for j in range(T):
                value = values[i, j]
                text = "n/a" if not np.isfinite(value) else format(value, fmt)
                dark = np.isfinite(shown[i, j]) and abs(shown[i, j]) > 0.6 * scale
                self.text_[i, j] = ax.text(j, i, text, ha="center", va="center",
                                           color="white" if dark else "black",
                                           fontsize="small")
        labels_x = [_label(c) for c in frame.columns]
        labels_y = [_label(r) for r in frame.index]
        ax.set_xticks(range(T), labels=labels_x, rotation=45, ha="right")
        ax.set_yticks(range(T), labels=labels_y)
        ax.set_xlabel("target task")
        ax.set_ylabel("source task")
        method = frame.attrs.get("method")
        ax.set_title(f"task affinity ({method})" if method else "task affinity")
        self.colorbar_ = figure.colorbar(self.im_, ax=ax) if colorbar else None
        self.ax_, self.figure_ = ax, figure
        return self


# ---------------------------------------------------------------------------
# Multi-task vs single-task


class SingleTaskComparisonDisplay:
    """Per task, the multi-task minus single-task score difference with its interval,
    coloured by verdict (green: helps, red: hurts, grey: no clear difference); the
    per-fold differences as small dots.

    Parameters
    ----------
    comparison : DataFrame
        The table of :func:`~sklearn_mtl.inspection.compare_single_task`.

    Attributes
    ----------
    errorbars_ : dict task -> matplotlib ErrorbarContainer
        One per task (set by ``plot``, as every attribute here).
    fold_points_ : matplotlib PathCollection or None
        The per-fold differences.
    zero_line_ : matplotlib Line2D
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    """

    _COLUMNS = ("difference", "ci_low", "ci_high", "verdict")

    def __init__(self, comparison):
        missing = [c for c in self._COLUMNS if c not in getattr(comparison, "columns", ())]
        if missing:
            raise ValueError(f"comparison must be the table of compare_single_task; it lacks "
                             f"the column(s) {missing!r}.")
        self.comparison = comparison

    @classmethod
    def from_comparison(cls, comparison, *, ax=None, show_folds=True):
        """From the table :func:`~sklearn_mtl.inspection.compare_single_task` returns."""
        return cls(comparison).plot(ax=ax, show_folds=show_folds)

    @classmethod
    def from_estimator(cls, estimator, X, Y, *, cv=5, scoring=None, n_jobs=None,
                       random_state=None, ax=None, show_folds=True):
        """Run :func:`~sklearn_mtl.inspection.compare_single_task` and show it."""
        from ._compare import compare_single_task

        table = compare_single_task(estimator, X, Y, cv=cv, scoring=scoring, n_jobs=n_jobs,
                                    random_state=random_state)
        return cls(table).plot(ax=ax, show_folds=show_folds)

    def plot(self, ax=None, *, show_folds=True):
        """Draw the intervals (ax: Axes or None for a new figure)."""
        plt = _pyplot("SingleTaskComparisonDisplay.plot")
        table = self.comparison
        n = len(table)
        figure, ax = _axes(plt, ax, height=max(2.5, 0.55 * n + 1.4))
        self.errorbars_ = {}
        positions = np.arange(n)[::-1]  # the first task on top
        for y, (name, row) in zip(positions, table.iterrows()):
            color = VERDICT_COLORS.get(row["verdict"], "tab:gray")
            low, high, mid = row["ci_low"], row["ci_high"], row["difference"]
            xerr = None
            if np.isfinite(low) and np.isfinite(high):
                xerr = [[mid - low], [high - mid]]
            self.errorbars_[name] = ax.errorbar([mid], [y], xerr=xerr, fmt="o", color=color,
                                                capsize=4, markersize=6)
        self.fold_points_ = None
        folds = table.attrs.get("fold_scores") if show_folds else None
        if folds:
            xs, ys = [], []
            for y, name in zip(positions, table.index):
                entry = folds.get(name)
                if entry is None:
                    continue
                d = np.asarray(entry["multi_task"], float) - np.asarray(entry["single_task"],
                                                                        float)
                d = d[np.isfinite(d)]
                xs += d.tolist()
                ys += [y] * len(d)
            if xs:
                self.fold_points_ = ax.scatter(xs, ys, s=10, color="0.4", alpha=0.6,
                                               zorder=1, label="per fold")
        self.zero_line_ = ax.axvline(0.0, color="0.2", linewidth=1)
        ax.set_yticks(positions, labels=[_label(name) for name in table.index])
        level = table.attrs.get("confidence", 0.95)
        ax.set_xlabel(f"multi-task minus single-task score ({level:.0%} interval)")
        ax.set_title("does multi-task learning help?")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=color, label=verdict)
                   for verdict, color in VERDICT_COLORS.items()
                   if verdict in set(table["verdict"])]
        if self.fold_points_ is not None:
            handles.append(self.fold_points_)
        ax.legend(handles=handles, fontsize="small", loc="best")
        ax.set_ylim(-0.7, n - 0.3)
        self.ax_, self.figure_ = ax, figure
        return self
