"""The displays: constructors, artists, Pipelines, PNG output and the missing-matplotlib error."""

import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.callbacks import TaskAffinity
from sklearn_mtl.inspection import (
    SingleTaskComparisonDisplay,
    TaskAffinityDisplay,
    TrainingHistoryDisplay,
)

from .conftest import make_mixed

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")

SMALL = dict(hidden_layer_sizes=(8,), max_epochs=4, random_state=0, early_stopping=False)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(figure, path):
    figure.savefig(path, dpi=60)
    assert path.stat().st_size > 1000
    return path


def test_training_history_from_estimator(tmp_path):
    X, Y = make_mixed(n=150)
    est = MultiTaskRegressorClassifier(**SMALL, validation_fraction=0.2).fit(X, Y)
    display = TrainingHistoryDisplay.from_estimator(est)
    assert set(display.train_lines_) == set(display.valid_lines_) == {"value", "flag", "level"}
    np.testing.assert_allclose(display.train_lines_["flag"].get_ydata(),
                               est.task_loss_curves_["flag"].to_numpy())
    np.testing.assert_allclose(display.valid_lines_["level"].get_xdata(), [1, 2, 3, 4])
    best = int(np.argmin(est.validation_loss_curve_)) + 1
    assert display.best_epoch == best
    assert display.best_epoch_line_.get_xdata()[0] == best
    assert display.weights_ax_ is None and display.weight_lines_ == {}  # static weights
    # Static weights with missing labels: a batch without a task's labels gives it weight
    # 0, so its epoch mean moves a little; they are still not shown.
    X, Y = make_mixed(n=150, missing=0.7)
    sparse = MultiTaskRegressorClassifier(**SMALL, batch_size=8).fit(X, Y)
    weights = np.array([[row[f"weight_{n}"] for n in sparse.task_names_]
                        for row in sparse.history_])
    assert np.ptp(weights, axis=0).max() > 0
    assert TrainingHistoryDisplay.from_estimator(sparse).weights_ax_ is None
    assert display.ax_.figure is display.figure_


def test_training_history_marks_each_tasks_best_epoch(tmp_path):
    X, Y = make_mixed(n=300)
    est = MultiTaskRegressorClassifier(**{**SMALL, "max_epochs": 25, "patience": 25,
                                          "early_stopping": True}).fit(X, Y)
    display = TrainingHistoryDisplay.from_estimator(est)
    assert set(display.best_epoch_markers_) == set(est.task_names_)
    curves = est.task_validation_curves_
    for name, epoch in est.best_epoch_.items():
        marker = display.best_epoch_markers_[name]
        assert marker.get_xdata()[0] == epoch
        assert marker.get_ydata()[0] == pytest.approx(curves.loc[epoch, name])
        assert curves[name].idxmin() == epoch
    _png(display.figure_, tmp_path / "best_epochs.png")
    _png(display.figure_, tmp_path / "history.png")


def test_training_history_shows_moving_weights_and_works_in_a_pipeline(tmp_path):
    X, Y = make_mixed(n=150)
    pipe = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(
        **SMALL, weighting="uncertainty")).fit(X, Y)
    display = TrainingHistoryDisplay.from_estimator(pipe, log_scale=True)
    assert display.valid_lines_ == {}  # no validation data
    assert display.weights_ax_ is not None and len(display.weight_lines_) == 3
    assert display.ax_.get_yscale() == "log"
    assert len(display.figure_.axes) == 2
    _png(display.figure_, tmp_path / "history_weights.png")
    # On a given Axes: losses only (no room for the weights), or on a pair.
    fig, ax = plt.subplots()
    one = TrainingHistoryDisplay.from_estimator(pipe, ax=ax)
    assert one.ax_ is ax and one.weights_ax_ is None
    fig, axes = plt.subplots(1, 2)
    two = TrainingHistoryDisplay.from_estimator(pipe, ax=axes)
    assert two.ax_ is axes[0] and two.weights_ax_ is axes[1]
    again = TrainingHistoryDisplay.from_history(pipe[-1].history_, pipe[-1].net_.task_names)
    assert set(again.train_lines_) == {"value", "flag", "level"}


def test_affinity_display_from_affinity_and_from_estimator(tmp_path):
    names = ["a", "b", "u"]
    A = pd.DataFrame([[1.0, 0.4, 0.01], [0.3, 1.0, -0.02], [0.0, -0.05, 1.0]],
                     index=names, columns=names)
    display = TaskAffinityDisplay.from_affinity(A)
    assert display.text_.shape == (3, 3)
    assert display.text_[0, 1].get_text() == "0.4" and display.text_[2, 1].get_text() == "-0.05"
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == names
    assert display.colorbar_ is not None
    vmin, vmax = display.im_.get_clim()
    assert vmin == -vmax == -0.4  # centred on 0, scaled by the off-diagonal cells
    _png(display.figure_, tmp_path / "affinity.png")

    X, Y = make_mixed(n=150)
    est = MultiTaskRegressorClassifier(**SMALL)
    computed = TaskAffinityDisplay.from_estimator(make_pipeline(StandardScaler(), est), X, Y,
                                                  method="gradient_cosine", every=2)
    assert computed.affinity.attrs["method"] == "gradient_cosine"
    assert "gradient_cosine" in computed.ax_.get_title()
    fitted = MultiTaskRegressorClassifier(**SMALL, callbacks=[TaskAffinity(every=2)]).fit(X, Y)
    recorded = TaskAffinityDisplay.from_estimator(fitted, colorbar=False)
    pd.testing.assert_frame_equal(recorded.affinity, fitted.task_affinity_)
    assert recorded.colorbar_ is None
    with pytest.raises(ValueError, match="both X and Y"):
        TaskAffinityDisplay.from_estimator(fitted, X)


def _comparison():
    table = pd.DataFrame({
        "multi_task": [0.8, 0.6, 0.7], "single_task": [0.7, 0.7, 0.7],
        "difference": [0.1, -0.1, 0.0], "ci_low": [0.05, -0.15, -0.05],
        "ci_high": [0.15, -0.05, 0.05],
        "verdict": ["helps", "hurts", "no clear difference"]},
        index=pd.Index(["scarce", "unrelated", "other"], name="task"))
    table.attrs.update(fold_scores={
        name: {"multi_task": [m + 0.01, m - 0.01], "single_task": [s, s]}
        for name, m, s in zip(table.index, table["multi_task"], table["single_task"])},
        confidence=0.95)
    return table


def test_comparison_display(tmp_path):
    display = SingleTaskComparisonDisplay.from_comparison(_comparison())
    assert list(display.errorbars_) == ["scarce", "unrelated", "other"]
    colors = {name: mpl.colors.to_hex(bar.lines[0].get_color())
              for name, bar in display.errorbars_.items()}
    assert colors == {"scarce": mpl.colors.to_hex("tab:green"),
                      "unrelated": mpl.colors.to_hex("tab:red"),
                      "other": mpl.colors.to_hex("tab:gray")}
    assert display.fold_points_.get_offsets().shape == (6, 2)
    assert display.zero_line_.get_xdata()[0] == 0
    # The first task is drawn on top.
    heights = {t.get_text(): t.get_position()[1] for t in display.ax_.get_yticklabels()}
    assert heights["scarce"] > heights["unrelated"] > heights["other"]
    _png(display.figure_, tmp_path / "comparison.png")
    with pytest.raises(ValueError, match="lacks the column"):
        SingleTaskComparisonDisplay(pd.DataFrame({"difference": [0.1]}))


def test_comparison_display_from_estimator_in_a_pipeline():
    X, Y = make_mixed(n=150)
    pipe = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(
        hidden_layer_sizes=(4,), head_hidden_sizes=(), max_epochs=2))
    display = SingleTaskComparisonDisplay.from_estimator(pipe, X, Y, cv=2, random_state=0)
    assert set(display.errorbars_) == {"value", "flag", "level"}
    assert list(display.comparison.columns)[-1] == "verdict"


@pytest.mark.parametrize("make", [
    lambda: TrainingHistoryDisplay(pd.DataFrame({"a": [1.0, 0.5]})).plot(),
    lambda: TaskAffinityDisplay(pd.DataFrame(np.eye(2))).plot(),
    lambda: SingleTaskComparisonDisplay(_comparison()).plot(),
])
def test_plotting_without_matplotlib_says_what_to_install(monkeypatch, make):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*install"):
        make()
