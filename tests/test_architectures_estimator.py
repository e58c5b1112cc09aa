"""Architectures, auxiliary and hierarchical tasks and custom trunks inside the estimator."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl.architectures import ARCHITECTURES, MMoE
from sklearn_mtl.weighting._registry import WEIGHTINGS

from .conftest import make_mixed

TINY = dict(max_epochs=2, batch_size=16, hidden_layer_sizes=(8, 8), head_hidden_sizes=(4,),
            random_state=0)


@pytest.fixture(scope="module")
def tiny_missing():
    X, Y = make_mixed(n=64, missing=0.3)
    Y.loc[:20, "flag"] = np.nan  # the first batch has no label for this task
    return X, Y


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_with_every_weighting(architecture, weighting, tiny_missing):
    X, Y = tiny_missing
    model = MultiTaskRegressorClassifier(architecture=architecture, weighting=weighting,
                                         **{**TINY, "batch_size": 21})
    model.fit(X, Y)
    history = model.net_.history
    for task in Y.columns:
        assert np.isfinite(history[:, f"train_loss_{task}"]).all()
    pred = model.predict(X)
    assert pred["value"].notna().all() and np.isfinite(pred["value"]).all()
    assert np.isfinite(model.score(X, Y))


def test_auxiliary_tasks_are_trained_not_predicted():
    X, Y = make_mixed(n=200)
    model = MultiTaskRegressorClassifier(auxiliary_tasks=["level"], **{**TINY, "max_epochs": 3})
    model.fit(X, Y)
    assert list(model.predict(X).columns) == ["value", "flag"]
    assert set(model.predict_proba(X)) == {"flag"}
    assert set(model.classes_) == {"flag"}
    assert set(model.score_tasks(X, Y.drop(columns="level"))) == {"value", "flag"}
    assert "train_loss_level" in model.net_.history[-1]  # it was trained
    without = MultiTaskRegressorClassifier(**{**TINY, "max_epochs": 3}).fit(X, Y.drop(columns="level"))
    trunk_aux = model.net_.module_.trunk.layers[0].weight
    trunk_plain = without.net_.module_.trunk.layers[0].weight
    assert not torch.allclose(trunk_aux, trunk_plain)  # the auxiliary task shaped the trunk


def test_auxiliary_task_errors():
    X, Y = make_mixed(n=40)
    with pytest.raises(ValueError, match=r"auxiliary_tasks names unknown task\(s\) \['nope'\]"):
        MultiTaskRegressorClassifier(auxiliary_tasks=["nope"], max_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="auxiliary_tasks names every task"):
        MultiTaskRegressorClassifier(auxiliary_tasks=list(Y.columns), max_epochs=1).fit(X, Y)


def test_head_inputs_feed_the_named_heads_outputs():
    X, Y = make_mixed(n=100)
    model = MultiTaskRegressorClassifier(head_inputs={"value": ["flag", "level"]},
                                         **{**TINY, "head_hidden_sizes": (16,)})
    model.fit(X, Y)
    module = model.net_.module_
    heads = module.heads
    seen = {}
    value_head = heads.heads[0]  # task order: value, flag, level
    handle = value_head.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    with torch.no_grad():
        module.eval()
        Xt = torch.from_numpy(X[:5].astype(np.float32))
        rep = module.trunk(Xt)
        flag_out = heads.heads[1](rep)
        level_out = heads.heads[2](rep)
        module(Xt)
    handle.remove()
    x = seen["x"]
    assert x.shape[1] == rep.shape[1] + 1 + 3
    torch.testing.assert_close(x[:, :rep.shape[1]], rep)
    torch.testing.assert_close(x[:, rep.shape[1]:rep.shape[1] + 1], flag_out)
    torch.testing.assert_close(x[:, rep.shape[1] + 1:], level_out)
    # Trained end to end: the value loss reaches the flag head through its output.
    module.train()
    module.zero_grad()
    out = module(torch.from_numpy(X.astype(np.float32)))
    out[:, 0].sum().backward()
    assert heads.heads[1][1].weight.grad.abs().sum() > 0


def test_head_inputs_cycles_and_unknown_names_raise():
    X, Y = make_mixed(n=40)
    with pytest.raises(ValueError, match="cycle: value reads flag reads value"):
        MultiTaskRegressorClassifier(head_inputs={"value": ["flag"], "flag": ["value"]},
                                     max_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match=r"head_inputs\['value'\] names unknown task\(s\) \['x'\]"):
        MultiTaskRegressorClassifier(head_inputs={"value": ["x"]}, max_epochs=1).fit(X, Y)


def test_task_depth_reads_the_chosen_layer():
    X, Y = make_mixed(n=100)
    model = MultiTaskRegressorClassifier(task_depth={"flag": 1}, **{**TINY, "hidden_layer_sizes": (8, 5)})
    model.fit(X, Y)
    module = model.net_.module_
    seen = {}
    flag_head = module.heads.heads[1]
    flag_head.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    module.eval()
    with torch.no_grad():
        Xt = torch.from_numpy(X[:4].astype(np.float32))
        layers = module.trunk(Xt)
        module(Xt)
    assert seen["x"].shape[1] == 8
    torch.testing.assert_close(seen["x"], layers[0])
    with pytest.raises(ValueError, match=r"task_depth\['flag'\]=3"):
        MultiTaskRegressorClassifier(task_depth={"flag": 3}, max_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="gradient-based weighting"):
        MultiTaskRegressorClassifier(task_depth={"flag": 1}, weighting="pcgrad",
                                     max_epochs=1).fit(X, Y)


class SmallCNN(torch.nn.Module):
    """8x8 images (flattened) -> a 32-wide representation."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 32), torch.nn.ReLU())

    def forward(self, X):
        return self.conv(X.view(-1, 1, 8, 8))


def test_custom_cnn_trunk_through_a_pipeline():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data
    Y = pd.DataFrame({"digit": digits.target, "ink": X.sum(1) / 100.0})
    instance = SmallCNN()
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    model = make_pipeline(StandardScaler(), MultiTaskRegressorClassifier(
        module=instance, max_epochs=10, batch_size=64, random_state=0, lr=3e-3))
    model.fit(X[:1200], Y[:1200])
    scores = model[-1].score_tasks(model[0].transform(X[1200:]), Y[1200:])
    assert scores["digit"] > 0.85 and scores["ink"] > 0.8
    assert isinstance(model.predict(X[:3]), pd.DataFrame)
    for k, v in instance.state_dict().items():  # the user's module is not trained in place
        assert torch.equal(v, before[k])


def test_custom_module_errors():
    X, Y = make_mixed(n=40)
    with pytest.raises(ValueError, match="module SmallCNN failed in eval mode on a float32 batch of shape \\(3, 6\\)"):
        MultiTaskRegressorClassifier(module=SmallCNN, max_epochs=1).fit(X, Y)
    with pytest.raises(TypeError, match="The 'module' parameter .* Got 'cnn' instead"):
        MultiTaskRegressorClassifier(module="cnn", max_epochs=1).fit(X, Y)

    class LooksLikeAModule:  # has the methods, is no torch module
        def forward(self, x):
            return x

        def parameters(self):
            return []

    with pytest.raises(TypeError, match="module must be a torch.nn.Module instance or class"):
        MultiTaskRegressorClassifier(module=LooksLikeAModule(), max_epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="either module= .* or architecture="):
        MultiTaskRegressorClassifier(module=SmallCNN(), architecture="mmoe", max_epochs=1).fit(X, Y)


def test_architecture_instance_and_grid_parameter():
    from sklearn.model_selection import GridSearchCV, KFold

    X, Y = make_mixed(n=90)
    base = MultiTaskRegressorClassifier(architecture=MMoE(n_experts=2), **TINY)
    def built_experts(estimator, X, y):
        # A score read off the network each candidate built: the winner is known (3)
        # only if the grid's value reached the module, not just the parameter.
        return float(estimator.net_.module_.trunk.n_experts)

    search = GridSearchCV(base, {"architecture__n_experts": [1, 3]}, cv=KFold(2),
                          scoring=built_experts).fit(X, Y)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], [1.0, 3.0])
    assert search.best_params_ == {"architecture__n_experts": 3}
    assert base.architecture.n_experts == 2
    gates = search.best_estimator_.net_.module_.trunk.gates(
        torch.from_numpy(X[:5].astype(np.float32)))
    torch.testing.assert_close(gates.sum(-1), torch.ones(5, 3))
