"""The engine's step hooks, per-epoch validation scores, history attributes and progress."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from skorch.callbacks import Callback
from sklearn.metrics import accuracy_score, r2_score

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl import callbacks as cb_module
from sklearn_mtl.callbacks import EpochProgressBar, TaskAffinity, progress_bar_class

from .conftest import make_mixed


class StepRecorder(Callback):
    """Notes the steps its hooks are called on."""

    def __init__(self, every=3):
        self.every = every

    def initialize(self):
        self.before_, self.after_, self.losses_ = [], [], []
        return self

    def on_step(self, net, batch, step):
        self.before_.append(step)

    def on_step_end(self, net, batch, step, loss):
        self.after_.append(step)
        self.losses_.append(float(loss.detach()))


class PerBatch(Callback):
    def on_batch_end(self, net, **kwargs):
        pass


def _recorder(est):
    return next(cb for _, cb in est.net_.callbacks_ if isinstance(cb, StepRecorder))


def test_step_hooks_run_every_k_steps_on_the_fast_path(monkeypatch):
    X, Y = make_mixed(n=200)
    # 200 rows, batch 32: 7 steps per epoch, 21 over 3 epochs.
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), batch_size=32, max_epochs=3,
                                       random_state=0, callbacks=[StepRecorder(every=4)],
                                       early_stopping=False)
    # skorch's own per-batch loop must not run: the fast path stays on.
    from skorch import NeuralNet

    def refuse(*args, **kwargs):
        raise AssertionError("skorch's per-batch loop ran")

    monkeypatch.setattr(NeuralNet, "run_single_epoch", refuse)
    est.fit(X, Y)
    rec = _recorder(est)
    assert rec.before_ == [0, 4, 8, 12, 16, 20]
    assert rec.after_ == rec.before_
    # on_step_end gets the step's loss: the batch losses skorch's history holds.
    batch_losses = [b["train_loss"] for row in est.history_ for b in row["batches"]]
    np.testing.assert_allclose(rec.losses_, [batch_losses[s] for s in rec.before_], rtol=1e-6)
    # Continued training goes on counting.
    est.partial_fit(X, Y)
    assert rec.before_ == [0, 4, 8, 12, 16, 20, 24]  # steps 21-27


def test_step_hooks_run_on_skorchs_loop_too():
    X, Y = make_mixed(n=200)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), batch_size=32, max_epochs=2,
                                       random_state=0, early_stopping=False,
                                       callbacks=[StepRecorder(every=5), PerBatch()])
    est.fit(X, Y)
    assert not est.net_._fast_epoch_ok()
    assert _recorder(est).before_ == [0, 5, 10]
    # The step count is kept without hooks as well.
    plain = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), batch_size=32, max_epochs=2,
                                         random_state=0, callbacks=[PerBatch()],
                                         early_stopping=False).fit(X, Y)
    assert plain.net_.__dict__["_train_steps"] == 14


def test_step_hooks_do_not_change_the_fit():
    X, Y = make_mixed(n=200)
    params = dict(hidden_layer_sizes=(8,), batch_size=32, max_epochs=2, random_state=0)
    plain = MultiTaskRegressorClassifier(**params).fit(X, Y)
    hooked = MultiTaskRegressorClassifier(
        **params, callbacks=[StepRecorder(every=2), TaskAffinity(every=3)]).fit(X, Y)
    for (name, a), (_, b) in zip(plain.net_.module_.state_dict().items(),
                                 hooked.net_.module_.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("every", [0, -1, 1.5, None, True])
def test_step_hook_needs_a_valid_every(every):
    X, Y = make_mixed(n=60)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=1,
                                       callbacks=[("rec", StepRecorder(every=every))])
    with pytest.raises(ValueError, match=r"'rec'.*every"):
        est.fit(X, Y)


# ---------------------------------------------------------------------------
# Validation scores per epoch


def test_validation_scores_match_scikit_learn_on_the_validation_rows():
    X, Y = make_mixed(n=400, seed=3, missing=0.2)
    Y["count"] = np.random.default_rng(0).poisson(np.exp(0.5 * X[:, 0]))
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(16,), max_epochs=4,
                                       validation_fraction=0.25, random_state=0,
                                       losses={"count": "poisson"},
                                       tasks={"count": "regression"}).fit(X, Y)
    rows = est.net_.train_split.keywords["valid_ds"].rows.numpy()
    predicted = est.predict(X[rows])
    last = est.history_[-1]
    for name in est.task_names_:
        truth = Y[name].iloc[rows]
        observed = truth.notna().to_numpy()
        y_true, y_pred = truth[observed].to_numpy(), predicted[name][observed].to_numpy()
        if name in ("flag", "level"):
            expected = accuracy_score(y_true.astype(str), y_pred.astype(str))
            assert last[f"valid_score_{name}"] == pytest.approx(expected, abs=1.5 / len(y_true))
        else:
            expected = r2_score(y_true.astype(float), y_pred.astype(float))
            assert last[f"valid_score_{name}"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    scores = est.task_validation_scores_
    assert list(scores.columns) == est.task_names_ and len(scores) == 4


def test_no_validation_scores_without_validation():
    X, Y = make_mixed(n=100)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2,
                                       early_stopping=False).fit(X, Y)
    assert not any(k.startswith("valid_score") for k in est.history_[-1])
    assert est.task_validation_scores_ is None
    assert est.task_validation_curves_ is None
    assert est.validation_loss_curve_ is None


# ---------------------------------------------------------------------------
# History attributes


def test_history_attributes_follow_the_history():
    X, Y = make_mixed(n=150)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(8,), max_epochs=3,
                                       validation_fraction=0.2, random_state=0)
    assert not hasattr(est, "loss_curve_") and not hasattr(est, "n_iter_")
    est.fit(X, Y)
    history = est.history_
    assert est.n_iter_ == 3
    assert est.loss_curve_ == [row["train_loss"] for row in history]
    assert est.validation_loss_curve_ == [row["valid_loss"] for row in history]
    curves = est.task_loss_curves_
    assert list(curves.index) == [1, 2, 3] and curves.index.name == "epoch"
    assert list(curves.columns) == ["value", "flag", "level"]
    assert curves.loc[2, "flag"] == history[1]["train_loss_flag"]
    assert est.task_validation_curves_.loc[3, "level"] == history[2]["valid_loss_level"]
    est.partial_fit(X, Y)
    assert est.n_iter_ == 4 and len(est.task_loss_curves_) == 4
    with pytest.raises(AttributeError, match="TaskAffinity"):
        est.task_affinity_


def test_tuple_task_labels_stay_labels():
    X, Y = make_mixed(n=80)
    Y.columns = pd.MultiIndex.from_tuples([("a", 1), ("b", 2), ("c", 3)])
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2).fit(X, Y)
    assert list(est.task_loss_curves_.columns) == [("a", 1), ("b", 2), ("c", 3)]


# ---------------------------------------------------------------------------
# Progress and the epoch table


def test_verbose_zero_is_silent(capsys):
    X, Y = make_mixed(n=80)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2).fit(X, Y)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    names = [name for name, _ in est.net_.callbacks_]
    assert "print_log" not in names and "progress_bar" not in names


def _many_tasks(n_tasks, n=120):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5))
    Y = pd.DataFrame({f"outcome_number_{t}": X[:, t % 5] + 0.1 * rng.normal(size=n)
                      for t in range(n_tasks)})
    return X, Y


@pytest.mark.parametrize("n_tasks", [8, 12])
def test_epoch_table_stays_narrow_with_many_tasks(capsys, n_tasks):
    X, Y = _many_tasks(n_tasks)
    MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=3, verbose=1,
                                 validation_fraction=0.2, random_state=0).fit(X, Y)
    lines = capsys.readouterr().out.splitlines()
    table = lines[[i for i, line in enumerate(lines) if line.startswith("epoch")][0]:]
    assert "train_loss" in table[0] and "valid_loss" in table[0]
    assert len(table) == 2 + 3  # header, rule, one row per epoch
    assert max(len(line) for line in table) <= 120
    assert "weight" not in table[0]  # static weights never change: no column
    if n_tasks == 8:  # one column per task; names cut to distinct labels
        assert len(table[0].split()) == 3 + n_tasks + 1
    else:
        assert "min/med/max" in table[0]


def test_epoch_table_shows_moving_weights(capsys):
    X, Y = make_mixed(n=120)
    MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2, verbose=1,
                                 weighting="uncertainty").fit(X, Y)
    assert "weights" in capsys.readouterr().out


def test_progress_bar_counts_epochs_and_shows_task_losses(capsys):
    X, Y = make_mixed(n=120)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=4, verbose=2,
                                       validation_fraction=0.2).fit(X, Y)
    err = capsys.readouterr().err
    assert "4/4" in err and "epoch" in err
    assert re.search(r"value [\d.e+-]+/[\d.e+-]+", err)  # per-task train/valid losses
    assert est.net_._fast_epoch_ok()  # nothing per batch
    bar = dict(est.net_.callbacks_)["progress_bar"]
    assert isinstance(bar, EpochProgressBar) and "bar_" not in vars(bar)  # closed
    est.partial_fit(X, Y)
    assert "1/1" in capsys.readouterr().err  # partial_fit runs one epoch


def test_progress_bar_falls_back_to_text_in_jupyter_without_ipywidgets(monkeypatch, capsys):
    import tqdm.notebook
    import tqdm.std

    monkeypatch.setattr(cb_module, "_in_notebook", lambda: True)
    monkeypatch.setattr(tqdm.notebook, "IProgress", None)
    assert progress_bar_class() is tqdm.std.tqdm
    X, Y = make_mixed(n=60)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2,
                                       verbose=2).fit(X, Y)
    assert "2/2" in capsys.readouterr().err
    assert est.n_iter_ == 2


def test_progress_bar_uses_the_widget_in_jupyter_with_ipywidgets(monkeypatch):
    import tqdm.notebook

    monkeypatch.setattr(cb_module, "_in_notebook", lambda: True)
    monkeypatch.setattr(tqdm.notebook, "IProgress", object)
    assert progress_bar_class() is tqdm.notebook.tqdm
    monkeypatch.setattr(cb_module, "_in_notebook", lambda: False)
    assert progress_bar_class() is not tqdm.notebook.tqdm


def test_fitted_estimator_with_the_callbacks_pickles():
    import pickle

    X, Y = make_mixed(n=120)
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2, verbose=2,
                                       validation_fraction=0.2,
                                       callbacks=[TaskAffinity(every=2)]).fit(X, Y)
    assert "_score_state" not in est.net_.__dict__  # nothing of an epoch stays behind
    copy = pickle.loads(pickle.dumps(est))
    pd.testing.assert_frame_equal(copy.task_affinity_, est.task_affinity_)
    pd.testing.assert_frame_equal(copy.task_validation_scores_, est.task_validation_scores_)
    copy.partial_fit(X, Y)  # and trains on, recording
    assert copy.n_iter_ == 3 and copy.task_affinity_.attrs["n_steps"] > \
        est.task_affinity_.attrs["n_steps"]


def test_saved_models_keep_what_the_callbacks_recorded(tmp_path):
    X, Y = make_mixed(n=120)
    Y.columns = ["value", ("flag", 1), "level"]  # a tuple task label too
    est = MultiTaskRegressorClassifier(hidden_layer_sizes=(4,), max_epochs=2,
                                       callbacks=[TaskAffinity(every=2)]).fit(X, Y)
    import joblib

    joblib.dump(est, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    pd.testing.assert_frame_equal(loaded.task_affinity_, est.task_affinity_)
    assert loaded.net_.__dict__["_train_steps"] == est.net_.__dict__["_train_steps"]
    sio = pytest.importorskip("skops.io")
    sio.dump(est, tmp_path / "model.skops")
    path = tmp_path / "model.skops"
    restored = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    pd.testing.assert_frame_equal(restored.task_affinity_, est.task_affinity_)
