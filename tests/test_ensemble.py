"""Parameter-efficient ensembles (``ensemble_size``): one member is the plain network,
the combination is the members' mean prediction, the member axis of the losses masks
labels, rows and (member, task) pairs exactly, and k > 1 works end to end."""

import copy
import importlib.util
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from torch.testing import assert_close

from sklearn_mtl import MultiTaskClassifier, MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl._ensemble import EnsembleModule, member_task_losses, with_member_masks
from sklearn_mtl._losses import MultiTaskLoss
from sklearn_mtl._modules import MultiTaskModule, TaskHeads, TaskParallelLinear
from sklearn_mtl.architectures import resolve_architecture

from .conftest import TanhTrunk, make_mixed

KINDS = ["regression", "binary", "multiclass"]
N_OUTPUTS = [1, 1, 3]
LOSSES = ["mse", "bce", "cross_entropy"]
TINY = dict(hidden_layer_sizes=(8,), head_hidden_sizes=(4,), max_epochs=3, batch_size=32,
            random_state=0)
ARCHITECTURES = ["hard", "soft", "cross_stitch", "mmoe", "ple"]


def plain_and_ensemble(architecture="hard", k=1, seed=0, n_features=5):
    """A plain MultiTaskModule and an EnsembleModule of k members over copies of its
    representation module (heads: k copies of the plain heads' weights, adapters 1)."""
    torch.manual_seed(seed)
    trunk = resolve_architecture(architecture).build(n_features, 3, (6,), "relu", 0.0)
    heads = TaskHeads(trunk.out_features, N_OUTPUTS, (4,), "relu")
    plain = MultiTaskModule(trunk, heads)
    member_heads = TaskHeads(trunk.out_features, N_OUTPUTS * k, (4,), "relu")
    with torch.no_grad():
        for mine, theirs in zip(member_heads.layers, heads.layers):
            if isinstance(mine, TaskParallelLinear):
                mine.weight.copy_(theirs.weight.repeat(1, k, 1))
                mine.bias.copy_(theirs.bias.repeat(k, 1))
    ensemble = EnsembleModule(copy.deepcopy(trunk), member_heads, k, n_features, KINDS,
                              N_OUTPUTS)
    with torch.no_grad():
        ensemble.adapter.fill_(1.0)
    return plain, ensemble


def batch(n=40, n_features=5, seed=1):
    """X and a packed target matrix (labels, weights with some labels missing)."""
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.normal(size=(n, n_features)).astype(np.float32))
    labels = np.stack([rng.normal(size=n), rng.integers(0, 2, n), rng.integers(0, 3, n)], 1)
    weights = (rng.random((n, 3)) > 0.25) * rng.uniform(0.5, 2.0, (n, 3))
    targets = np.hstack([labels, weights]).astype(np.float32)
    return X, targets


def criterion():
    return MultiTaskLoss(KINDS, LOSSES, N_OUTPUTS, max(N_OUTPUTS))


def grads(module):
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def ensemble_backward(module, X, targets, member_weights=None):
    module.zero_grad()
    losses, dens = criterion()(module(X), torch.from_numpy(targets))
    _, combined, _ = member_task_losses(losses, dens, member_weights)
    combined.sum().backward()
    return grads(module)


def member_head_grads(module, m):
    """The gradients of member m's own head parameters, concatenated."""
    T = module.n_tasks
    parts = []
    for layer in module.heads.layers:
        if isinstance(layer, TaskParallelLinear):
            parts += [layer.weight.grad[:, m * T:(m + 1) * T].flatten(),
                      layer.bias.grad[m * T:(m + 1) * T].flatten()]
    return torch.cat(parts)


# ---------------------------------------------------------------------------
# One member is the plain network


@pytest.mark.parametrize("architecture", ["hard", "mmoe"])
def test_one_member_gives_the_plain_networks_outputs_and_gradients(architecture):
    plain, ensemble = plain_and_ensemble(architecture, k=1)
    X, targets = batch()
    for training in (False, True):
        plain.train(training), ensemble.train(training)
        out = ensemble(X)
        assert out.shape == ((40, 1, 9) if training else (40, 9))
        assert_close(out.reshape(40, 9), plain(X))
    plain.train(), ensemble.train()
    losses, _ = criterion()(plain(X), torch.from_numpy(targets))
    losses.sum().backward()
    expected = grads(plain)
    got = ensemble_backward(ensemble, X, targets)
    assert set(got) == set(expected) | {"adapter"}
    for name in expected:
        assert_close(got[name], expected[name])


def test_ensemble_size_one_fits_todays_network():
    X, Y = make_mixed(120)
    default = MultiTaskRegressorClassifier(**TINY).fit(X, Y)
    one = MultiTaskRegressorClassifier(ensemble_size=1, **TINY).fit(X, Y)
    assert type(one.net_.module_) is MultiTaskModule
    expected = default.net_.module_.state_dict()
    assert one.net_.module_.state_dict().keys() == expected.keys()
    for key, value in one.net_.module_.state_dict().items():
        assert torch.equal(value, expected[key]), key
    pd.testing.assert_frame_equal(one.predict(X), default.predict(X))


# ---------------------------------------------------------------------------
# The combination


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_eval_output_is_the_member_mean_of_values_and_probabilities():
    _, ensemble = plain_and_ensemble(k=4, seed=3)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in ensemble.parameters():  # members that differ
            p.normal_()
    X, _ = batch()
    ensemble.eval()
    with torch.no_grad():
        members = ensemble.member_outputs(X).double().numpy()  # (B, 4, 3 * 3)
        combined = ensemble(X).double().numpy()
    assert members.shape == (40, 4, 9) and combined.shape == (40, 9)
    assert np.ptp(members, axis=1).min() > 0  # the members do differ
    np.testing.assert_allclose(combined[:, 0], members[:, :, 0].mean(1), rtol=1e-5)
    p = _sigmoid(members[:, :, 3]).mean(1)
    np.testing.assert_allclose(combined[:, 3], np.log(p / (1 - p)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_sigmoid(combined[:, 3]), p, rtol=1e-5)
    mean_proba = _softmax(members[:, :, 6:9]).mean(1)
    np.testing.assert_allclose(np.exp(combined[:, 6:9]), mean_proba, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_softmax(combined[:, 6:9]), mean_proba, rtol=1e-5, atol=1e-7)


def test_training_mode_returns_the_members_outputs():
    _, ensemble = plain_and_ensemble(k=3)
    X, _ = batch()
    ensemble.train()
    out = ensemble(X)
    assert out.shape == (40, 3, 9)
    assert_close(out, ensemble.member_outputs(X))


# ---------------------------------------------------------------------------
# The member axis of the losses


def test_member_losses_are_each_members_masked_losses():
    k = 3
    _, ensemble = plain_and_ensemble(k=k)
    X, targets = batch()
    masks = np.random.default_rng(2).integers(0, 2, (40, k))
    # A loss callable without a reduction attribute takes its own path.
    loss = MultiTaskLoss(KINDS, ["huber", torch.nn.functional.binary_cross_entropy_with_logits,
                                 "cross_entropy"], N_OUTPUTS, 3)
    with torch.no_grad():
        out = ensemble.member_outputs(X)
        losses, dens = loss(out, torch.from_numpy(with_member_masks(targets, masks)))
    assert losses.shape == dens.shape == (k, 3)
    for m in range(k):
        own = targets.copy()
        own[:, 3:] *= masks[:, m:m + 1]
        expected, expected_dens = loss(out[:, m], torch.from_numpy(own))
        assert_close(losses[m], expected)
        assert_close(dens[m], expected_dens)


def test_member_task_losses_by_hand():
    losses = torch.tensor([[1.0, 4.0], [3.0, 0.0]])
    dens = torch.tensor([[2.0, 1.0], [6.0, 0.0]])
    logged, combined, den = member_task_losses(losses, dens, torch.tensor([[1.0, 0.5],
                                                                           [0.0, 1.0]]))
    assert_close(logged, torch.tensor([(2 + 18) / 8, 4.0]))
    assert_close(combined, torch.tensor([0.5, 1.0]))
    assert_close(den, torch.tensor([4.0, 0.5]))


def test_masked_labels_change_no_gradient():
    _, ensemble = plain_and_ensemble(k=3)
    with torch.no_grad():
        ensemble.adapter.normal_()
    X, targets = batch()
    expected = ensemble_backward(ensemble, X, targets)
    changed = targets.copy()
    missing = changed[:, 3:] == 0
    assert missing.any(axis=0).all()
    changed[:, :3][missing] = np.array([123.0, 1.0, 2.0], dtype=np.float32)[
        np.nonzero(missing)[1]]
    got = ensemble_backward(ensemble, X, changed)
    for name in expected:
        assert_close(got[name], expected[name], rtol=0, atol=0)
    # The changed labels are real labels once observed: then gradients move.
    changed[:, 3:][missing] = 1.0
    moved = ensemble_backward(ensemble, X, changed)
    assert not torch.equal(moved["adapter"], expected["adapter"])


def test_a_row_masked_for_a_member_changes_none_of_its_gradients():
    k, m, row = 3, 1, 7
    _, ensemble = plain_and_ensemble(k=k)
    with torch.no_grad():
        ensemble.adapter.normal_()
    X, targets = batch()
    masks = np.ones((40, k))
    masks[row, m] = 0
    expected = ensemble_backward(ensemble, X, with_member_masks(targets, masks))
    expected_own, expected_other = member_head_grads(ensemble, m), member_head_grads(ensemble, 0)
    X2, changed = X.clone(), targets.copy()
    X2[row] += 3.0
    changed[row, :3] = [5.0, 1.0 - changed[row, 1], (changed[row, 2] + 1) % 3]
    changed[row, 3:] = 1.0
    got = ensemble_backward(ensemble, X2, with_member_masks(changed, masks))
    assert_close(got["adapter"][m], expected["adapter"][m])
    assert_close(member_head_grads(ensemble, m), expected_own)
    # The row counts for the other members.
    assert not torch.allclose(got["adapter"][0], expected["adapter"][0])
    assert not torch.allclose(member_head_grads(ensemble, 0), expected_other)


def test_member_loss_weight_zero_leaves_that_head_untrained():
    X, Y = make_mixed(100)
    model = MultiTaskRegressorClassifier(ensemble_size=3, **TINY).fit(X, Y)
    net = model.net_
    member_weights = np.ones((3, 3))
    member_weights[1, 2] = 0.0
    net.set_params(member_weights=member_weights)
    X_t = torch.from_numpy(X[:50].astype(np.float32))
    y = torch.from_numpy(_targets(model, Y.iloc[:50]))
    net.module_.train()
    net.module_.zero_grad()
    net.get_loss(net.infer(X_t), y, training=True).backward()
    heads = [layer for layer in net.module_.heads.layers if isinstance(layer, TaskParallelLinear)]
    for layer in heads:
        assert torch.count_nonzero(layer.weight.grad[:, 1 * 3 + 2]) == 0
        assert torch.count_nonzero(layer.bias.grad[1 * 3 + 2]) == 0
        # Every other (member, task) head learns.
        others = [h for h in range(9) if h != 5]
        assert (layer.bias.grad[others].abs().sum(-1) > 0).all()
    assert np.asarray(net.member_weights).shape == (3, 3)
    net.set_params(member_weights=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"member_weights must have shape .*\(3, 3\)"):
        net.get_loss(net.infer(X_t), y, training=True)


def _targets(model, Y):
    """The packed target matrix the model trains on for rows Y."""
    from sklearn_mtl._tasks import encode_targets
    columns = [Y[t.name].to_numpy(dtype=object) for t in model.tasks_]
    return encode_targets(model.tasks_, columns)


# ---------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def fitted():
    X, Y = make_mixed(200, missing=0.1)
    return MultiTaskRegressorClassifier(ensemble_size=4, **{**TINY, "max_epochs": 8}).fit(X, Y), X


def test_members_differ_after_training(fitted):
    model, X = fitted
    module = model.net_.module_
    assert isinstance(module, EnsembleModule) and module.n_members == 4
    adapter = module.adapter.detach()
    assert not torch.equal(adapter[0], adapter[1])
    assert set(adapter.abs().flatten().tolist()) != {1.0}  # trained, not the initial signs
    with torch.no_grad():
        out = module.eval().member_outputs(torch.from_numpy(X[:20].astype(np.float32)))
    module.train()
    assert (out.std(1) > 1e-4).all()


def test_summary_counts_every_members_heads_and_the_adapters(fitted):
    model, _ = fitted
    parts = model.summary().parts
    assert "other" not in parts.index  # every parameter is in a named part
    assert parts.loc["member adapters", "parameters"] == 4 * 6
    assert "(x4 members)" in parts.loc["head level", "description"]
    module_count = sum(p.numel() for p in model.net_.module_.parameters())
    assert parts["parameters"].drop("weighting").sum() == module_count


def test_predict_and_proba(fitted):
    model, X = fitted
    pred = model.predict(X)
    assert list(pred.columns) == ["value", "flag", "level"]
    assert set(pred["flag"]) <= {"yes", "no"}
    for task, proba in model.predict_proba(X).items():
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-10)
        assert (proba >= 0).all()
    assert model.score(X, make_mixed(200, missing=0.1)[1]) > 0
    history = model.net_.history
    assert np.isfinite(history[-1, "train_loss_value"])


def test_round_trips_give_equal_predictions(fitted, tmp_path):
    model, X = fitted
    expected, expected_proba = model.predict(X), model.predict_proba(X)
    loaded = [pickle.loads(pickle.dumps(model))]
    joblib.dump(model, tmp_path / "model.joblib")
    loaded.append(joblib.load(tmp_path / "model.joblib"))
    if importlib.util.find_spec("skops") is not None:
        import skops.io as sio
        sio.dump(model, tmp_path / "model.skops")
        path = tmp_path / "model.skops"
        loaded.append(sio.load(path, trusted=sio.get_untrusted_types(file=path)))
    for other in loaded:
        assert isinstance(other.net_.module_, EnsembleModule)
        pd.testing.assert_frame_equal(other.predict(X), expected)
        for task, proba in other.predict_proba(X).items():
            np.testing.assert_array_equal(proba, expected_proba[task])


def test_onnx_export_gives_the_predictions(fitted):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, X = fitted
    exported = model.to_onnx()
    session = ort.InferenceSession(exported.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {"X": X.astype(np.float32)})))
    expected = model.predict_proba(X)
    np.testing.assert_allclose(outputs["flag_proba"], expected["flag"], atol=1e-5)
    np.testing.assert_allclose(outputs["level_proba"], expected["level"], atol=1e-5)
    np.testing.assert_allclose(outputs["value_value"].ravel(), model.predict(X)["value"],
                               rtol=1e-5, atol=1e-4)



@pytest.mark.parametrize("config", ARCHITECTURES + ["module"])
def test_every_architecture_trains_three_members(config):
    X, Y = make_mixed(90)
    params = {"module": TanhTrunk(6, 5)} if config == "module" else {"architecture": config}
    model = MultiTaskRegressorClassifier(ensemble_size=3, early_stopping=True,
                                         **TINY, **params).fit(X, Y)
    assert isinstance(model.net_.module_, EnsembleModule)
    assert model.net_.module_.adapter.shape == (3, 6)
    assert np.isfinite(model.net_.history[-1, "valid_loss"])
    pred = model.predict(X)
    assert pred.shape == (90, 3) and np.isfinite(pred["value"]).all()


def test_single_kind_estimators():
    X, Y = make_mixed(90)
    reg = MultiTaskRegressor(ensemble_size=2, **TINY).fit(X, np.c_[Y["value"], -Y["value"]])
    assert reg.predict(X).shape == (90, 2)
    clf = MultiTaskClassifier(ensemble_size=2, **TINY).fit(X, Y[["flag", "level"]])
    np.testing.assert_allclose(clf.predict_proba(X)["level"].sum(1), 1.0)


def test_same_random_state_gives_the_same_ensemble():
    X, Y = make_mixed(90)
    a = MultiTaskRegressorClassifier(ensemble_size=3, **TINY).fit(X, Y)
    b = MultiTaskRegressorClassifier(ensemble_size=3, **TINY).fit(X, Y)
    pd.testing.assert_frame_equal(a.predict(X), b.predict(X))


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("bad", [0, 1.5, True, "3"])
def test_invalid_ensemble_size_is_named(bad):
    X, Y = make_mixed(30)
    with pytest.raises(InvalidParameterError, match="The 'ensemble_size' parameter of "
                       "MultiTaskRegressorClassifier must be an int in the range"):
        MultiTaskRegressorClassifier(ensemble_size=bad).fit(X, Y)


@pytest.mark.parametrize("option, message", [
    (dict(head_inputs={"level": ["value"]}), "ensemble_size > 1 cannot be combined with "
                                             "head_inputs"),
    (dict(task_depth={"flag": 1}), "ensemble_size > 1 cannot be combined with task_depth"),
    (dict(weighting="pcgrad"), "ensemble_size=2 cannot be combined with the gradient-based"),
])
def test_unsupported_combinations_are_refused(option, message):
    X, Y = make_mixed(30)
    with pytest.raises(ValueError, match=message):
        MultiTaskRegressorClassifier(ensemble_size=2, **TINY, **option).fit(X, Y)


def test_row_masks_of_the_wrong_width_are_refused():
    _, ensemble = plain_and_ensemble(k=3)
    X, targets = batch()
    with pytest.raises(ValueError, match="it must have 6 .*or 9"):
        criterion()(ensemble(X), torch.from_numpy(with_member_masks(targets, np.ones((40, 2)))))
