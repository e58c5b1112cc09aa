"""Feature embeddings (``feature_embedding``): the encodings against hand computation,
bins fitted on the training rows only, and every estimator feature with an embedding."""

import copy
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_mtl import MultiTaskRegressor, MultiTaskRegressorClassifier
from sklearn_mtl._build import build_module
from sklearn_mtl._embeddings import (
    EmbeddedTrunk,
    PeriodicEmbedding,
    PiecewiseLinearEncoding,
    quantile_bin_edges,
)
from sklearn_mtl._gradients import trunk_shared_parameters
from sklearn_mtl._losses import MultiTaskLoss
from sklearn_mtl._modules import MLPTrunk, MultiTaskModule, TaskHeads
from sklearn_mtl._task_params import TaskParams
from sklearn_mtl.architectures import MMoE, SoftSharing

from .conftest import joblib_round_trip, make_mixed, pickle_round_trip, skops_round_trip

EMBEDDINGS = ["piecewise_linear", "periodic"]
ARCHITECTURES = ["hard", "soft", "cross_stitch", "mmoe", "ple"]
TINY = dict(hidden_layer_sizes=(12,), head_hidden_sizes=(6,), max_epochs=3, batch_size=32,
            random_state=0, n_bins=5, embedding_dim=3)

# A tiny table with known quantile edges (n_bins=4: quantiles at 0, 1/4, ..., 1 of five
# rows are the rows themselves, sorted):
#   feature 0: 0..4        -> edges 0 1 2 3 4, four bins
#   feature 1: 0 0 1 2 2   -> edges 0 1 2 (2 2 padding), two bins
#   feature 2: constant 5  -> edge 5 (padding), no bin
#   feature 3: 0 0 0 1 1   -> edges 0 1 (padding), one bin, open on both sides
TABLE = np.array([[0, 0, 5, 0],
                  [1, 0, 5, 0],
                  [2, 1, 5, 0],
                  [3, 2, 5, 1],
                  [4, 2, 5, 1]], dtype=np.float32)
TABLE_EDGES = np.array([[0, 1, 2, 3, 4],
                        [0, 1, 2, 2, 2],
                        [5, 5, 5, 5, 5],
                        [0, 1, 1, 1, 1]], dtype=np.float32)
TABLE_COUNTS = np.array([4, 2, 0, 1])


def params_for(names, depths=None, head_inputs=None):
    return TaskParams(names=list(names), kinds={}, losses={}, weights=np.ones(len(names)),
                      auxiliary=frozenset(), head_inputs=head_inputs or {},
                      depths=depths or {}, classes={})


def edges_of(model):
    return model.net_.module_.trunk.embedding.edges.detach().cpu().numpy().copy()


def regression_data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    Y = np.column_stack([np.sign(X[:, 0]) + 0.1 * rng.normal(size=n),
                         X[:, 1] ** 2 + 0.1 * rng.normal(size=n)])
    return X, Y


# ---------------------------------------------------------------------------
# The bins


def test_bin_edges_of_the_tiny_table():
    edges, counts = quantile_bin_edges(TABLE, 4)
    np.testing.assert_array_equal(edges, TABLE_EDGES)
    np.testing.assert_array_equal(counts, TABLE_COUNTS)
    assert edges.dtype == np.float32 and edges.shape == (4, 5)


def test_bin_edges_are_the_quantiles_and_their_shape_depends_only_on_the_sizes():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(37, 3)).astype(np.float32)
    edges, counts = quantile_bin_edges(X, 6)
    expected = np.quantile(X.astype(np.float64), np.linspace(0, 1, 7), axis=0).T
    np.testing.assert_allclose(edges, expected.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_array_equal(counts, [6, 6, 6])
    for rows in (np.zeros((3, 3), np.float32), X[:2], X[:0]):
        other_edges, other_counts = quantile_bin_edges(rows, 6)
        assert other_edges.shape == (3, 7) and other_counts.shape == (3,)
        assert np.isfinite(other_edges).all()


def test_piecewise_linear_encoding_by_hand():
    edges, counts = quantile_bin_edges(TABLE, 4)
    ple = PiecewiseLinearEncoding(edges, counts, embedding_dim=2)
    X = torch.tensor([[-1.0, -1.0, 0.0, -1.0],
                      [2.5, 1.5, 5.0, 0.0],
                      [6.0, 5.0, 9.0, 3.0]])
    expected = torch.tensor([
        # below the range: the first bin extrapolates, the others are 0
        [[-1, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 0], [-1, 0, 0, 0]],
        # inside: bins below are 1, the bin x falls in is linear, bins above 0
        [[1, 1, .5, 0], [1, .5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        # above the range: the last valid bin extrapolates; padded bins stay 0
        [[1, 1, 1, 3], [1, 4, 0, 0], [0, 0, 0, 0], [3, 0, 0, 0]],
    ])
    encoded = ple.encode(X)
    torch.testing.assert_close(encoded, expected, rtol=0, atol=1e-7)
    # The linear map and ReLU, per feature: feature f's block of the output.
    out = ple(X)
    assert out.shape == (3, 4 * 2)
    weight, bias = ple.linear.weight.detach(), ple.linear.bias.detach()
    for f in range(4):
        block = torch.relu(encoded[:, f] @ weight[f] + bias[f])
        torch.testing.assert_close(out[:, 2 * f:2 * f + 2], block)


def test_encoding_is_finite_and_bins_are_buffers():
    edges, counts = quantile_bin_edges(np.full((10, 2), 3.0, np.float32), 8)
    ple = PiecewiseLinearEncoding(edges, counts, 4)
    assert torch.isfinite(ple(torch.randn(5, 2) * 100)).all()
    assert set(dict(ple.named_buffers())) == {"edges", "counts"}
    assert {"edges", "counts"} <= set(ple.state_dict())
    assert "edges" not in dict(ple.named_parameters())
    # float64 inference casts the edges with the weights
    assert ple.to(torch.float64).edges.dtype == torch.float64


# ---------------------------------------------------------------------------
# Bins come from the training rows only


def test_build_module_fits_the_bins_on_the_given_rows_only():
    X, _ = regression_data(n=50)
    wild = np.vstack([X, 1e3 * np.ones((20, 4), np.float32)])  # rows training does not use
    estimator = MultiTaskRegressor(feature_embedding="piecewise_linear", n_bins=4,
                                   hidden_layer_sizes=(5,))
    rows = np.arange(50)
    module = build_module(estimator, params_for(["a", "b"]), [1, 1], wild, fit_rows=rows)
    edges = module.trunk.embedding.edges.numpy()
    np.testing.assert_array_equal(edges, quantile_bin_edges(X, 4)[0])
    np.testing.assert_allclose(edges, np.quantile(X, np.linspace(0, 1, 5), axis=0).T,
                               rtol=1e-6)
    every_row = build_module(estimator, params_for(["a", "b"]), [1, 1], wild)
    assert every_row.trunk.embedding.edges.max() == 1e3  # None: all rows


def test_estimator_bins_are_the_training_quantiles_and_predicting_keeps_them():
    X, Y = regression_data()
    model = MultiTaskRegressor(feature_embedding="piecewise_linear", **TINY,
                               early_stopping=True).fit(X, Y)
    edges = edges_of(model)
    # The bins are the quantiles of the training rows: the validation rows held out
    # for early stopping are not among them.
    valid = model.net_.train_split.keywords["valid_ds"].rows.numpy()
    train = np.setdiff1d(np.arange(len(X)), valid)
    assert len(valid) > 0
    np.testing.assert_array_equal(edges, quantile_bin_edges(X[train], 5)[0])
    assert not np.array_equal(edges, quantile_bin_edges(X, 5)[0])
    # Own validation data: all of X trains, and X_val (far away) changes no bin.
    far = np.full((30, X.shape[1]), 50.0, np.float32)
    own = MultiTaskRegressor(feature_embedding="piecewise_linear", **TINY).fit(
        X, Y, X_val=far, y_val=Y[:30])
    np.testing.assert_array_equal(edges_of(own), quantile_bin_edges(X, 5)[0])
    extra = np.vstack([X, np.full((7, 4), 50.0, np.float32)])
    predicted = model.predict(extra)
    np.testing.assert_array_equal(edges_of(model), edges)
    np.testing.assert_allclose(predicted[:len(X)], model.predict(X), rtol=1e-12)
    # A fresh fit on other rows fits other bins (so the checks above can fail).
    other = clone(model).fit(X * 3 + 1, Y)
    assert not np.array_equal(edges_of(other), edges)


def test_continued_training_keeps_the_bins_of_the_first_fit():
    X, Y = regression_data()
    model = MultiTaskRegressor(feature_embedding="piecewise_linear", warm_start=True,
                               **TINY).fit(X, Y)
    edges = edges_of(model)
    weights = model.net_.module_.trunk.embedding.linear.weight.detach().clone()
    model.fit(X * 3 + 1, Y)
    np.testing.assert_array_equal(edges_of(model), edges)
    model.partial_fit(X - 5, Y)
    np.testing.assert_array_equal(edges_of(model), edges)
    assert not torch.equal(weights, model.net_.module_.trunk.embedding.linear.weight)

    stream = MultiTaskRegressor(feature_embedding="piecewise_linear", **TINY)
    stream.partial_fit(X[:80], Y[:80])
    first = edges_of(stream)
    np.testing.assert_array_equal(first, quantile_bin_edges(X[:80], 5)[0])
    stream.partial_fit(X[80:], Y[80:])
    np.testing.assert_array_equal(edges_of(stream), first)


# ---------------------------------------------------------------------------
# Periodic


def test_periodic_embedding_is_the_cos_sin_formula_with_trainable_frequencies():
    torch.manual_seed(0)
    emb = PeriodicEmbedding(3, embedding_dim=5, n_frequencies=4, sigma=0.5)
    X = torch.randn(7, 3)
    c = emb.frequencies.detach().numpy()
    x = X.numpy()[:, :, None]
    expected = np.concatenate([np.cos(2 * np.pi * c * x), np.sin(2 * np.pi * c * x)], -1)
    np.testing.assert_allclose(emb.encode(X).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    out = emb(X)
    assert out.shape == (7, 3 * 5)
    assert emb.frequencies.requires_grad
    out.pow(2).sum().backward()
    assert emb.frequencies.grad is not None and (emb.frequencies.grad != 0).all()


def test_periodic_frequencies_start_from_the_given_sigma():
    torch.manual_seed(0)
    freq = PeriodicEmbedding(100, 2, n_frequencies=16, sigma=0.3).frequencies.detach()
    assert freq.shape == (100, 16)
    assert abs(float(freq.std()) - 0.3) < 0.03 and abs(float(freq.mean())) < 0.03


def test_periodic_frequencies_move_in_training():
    X, Y = regression_data()
    model = MultiTaskRegressor(feature_embedding="periodic", **TINY)
    model.set_params(max_epochs=1).fit(X, Y)
    before = model.net_.module_.trunk.embedding.frequencies.detach().clone()
    model.partial_fit(X, Y)
    assert not torch.equal(before, model.net_.module_.trunk.embedding.frequencies)


# ---------------------------------------------------------------------------
# The trunk wrapper and the engine


def test_embedded_trunk_declares_the_embedding_shared():
    for architecture in ("hard", SoftSharing(), MMoE(n_experts=2)):
        model = MultiTaskRegressor(feature_embedding="periodic", architecture=architecture,
                                   **TINY).fit(*regression_data(n=40))
        trunk = model.net_.module_.trunk
        assert isinstance(trunk, EmbeddedTrunk) and trunk.embedding.out_features == 4 * 3
        embedding = {id(p) for p in trunk.embedding.parameters()}
        shared, all_shared = trunk_shared_parameters(trunk)
        shared = {id(p) for p in shared}
        inner = getattr(trunk.trunk, "shared_parameters", None)
        inner = {id(p) for p in (inner() if inner else trunk.trunk.parameters())}
        assert shared == embedding | inner
        assert all_shared == (architecture == "hard")
        assert trunk.per_task == (architecture != "hard")
        assert trunk.out_features == 12


def test_soft_sharing_penalty_is_forwarded():
    model = MultiTaskRegressor(feature_embedding="piecewise_linear",
                               architecture=SoftSharing(penalty=1.0), **TINY)
    model.fit(*regression_data(n=40))
    module = model.net_.module_
    torch.testing.assert_close(module.penalty(), module.trunk.trunk.penalty())
    assert module.penalty().item() > 0
    plain = MultiTaskRegressor(feature_embedding="periodic", **TINY).fit(*regression_data(n=40))
    assert plain.net_.module_.penalty() is None


def test_a_masked_label_changes_no_gradient_with_an_embedding():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X = torch.randn(12, 5, generator=g)
    edges, counts = quantile_bin_edges(X.numpy(), 4)
    for embedding in (PiecewiseLinearEncoding(edges, counts, 3), PeriodicEmbedding(5, 3)):
        trunk = EmbeddedTrunk(embedding, MLPTrunk(embedding.out_features, (8,)))
        heads = TaskHeads(trunk.out_features, [1, 3], (4,))
        module = MultiTaskModule(trunk, heads)
        criterion = MultiTaskLoss(["regression", "multiclass"], ["mse", "cross_entropy"],
                                  [1, 3], heads.max_out)
        labels = torch.stack([torch.randn(12, generator=g),
                              torch.randint(0, 3, (12,), generator=g).float()], 1)
        weights = torch.ones(12, 2)
        weights[::3, 0] = 0.0
        weights[1::4, 1] = 0.0
        changed = labels.clone()
        changed[:, 0][weights[:, 0] == 0] = 1e6
        changed[:, 1][weights[:, 1] == 0] = 2.0 - changed[:, 1][weights[:, 1] == 0]
        grads = []
        for lab in (labels, changed):
            module.zero_grad()
            losses, _ = criterion(module(X), torch.cat([lab, weights], 1))
            losses.sum().backward()
            grads.append([p.grad.clone() for p in module.parameters()])
        assert any(g0.abs().sum() > 0 for g0 in grads[0][:len(list(embedding.parameters()))])
        for g0, g1 in zip(*grads):
            torch.testing.assert_close(g0, g1, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# Every architecture, head structure and weighting


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_every_architecture_fits_and_predicts_with_an_embedding(architecture, embedding):
    X, Y = make_mixed(n=150, missing=0.1)
    model = MultiTaskRegressorClassifier(feature_embedding=embedding, architecture=architecture,
                                         **TINY).fit(X, Y)
    assert isinstance(model.net_.module_.trunk, EmbeddedTrunk)
    predicted = model.predict(X)
    assert np.isfinite(predicted["value"]).all()
    for proba in model.predict_proba(X).values():
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.isfinite(model.history_[-1, "train_loss"])


@pytest.mark.parametrize("options", [
    dict(task_depth={"flag": 1}),
    dict(head_inputs={"value": ["level"]}),
    dict(weighting="pcgrad", architecture="mmoe"),
    dict(weighting="mgda_ub", architecture="ple"),
    dict(weighting="gradnorm", architecture="soft"),
    dict(hidden_layer_sizes=()),
], ids=["task_depth", "head_inputs", "pcgrad-mmoe", "mgda_ub-ple", "gradnorm-soft",
        "no-hidden"])
def test_head_structures_and_gradient_weightings_with_an_embedding(options):
    X, Y = make_mixed(n=150)
    model = MultiTaskRegressorClassifier(feature_embedding="piecewise_linear",
                                         **{**TINY, **options}).fit(X, Y)
    assert np.isfinite(model.predict(X)["value"]).all()
    assert np.isfinite(model.history_[:, "train_loss"]).all()


def test_same_random_state_same_model():
    X, Y = make_mixed(n=120)
    for embedding in EMBEDDINGS:
        a = MultiTaskRegressorClassifier(feature_embedding=embedding, **TINY).fit(X, Y)
        b = MultiTaskRegressorClassifier(feature_embedding=embedding, **TINY).fit(X, Y)
        for (name, p), (_, q) in zip(a.net_.module_.state_dict().items(),
                                     b.net_.module_.state_dict().items()):
            assert torch.equal(p, q), name


def test_a_user_module_refuses_a_feature_embedding():
    X, Y = make_mixed(n=60)
    model = MultiTaskRegressorClassifier(module=torch.nn.Linear(6, 4),
                                         feature_embedding="periodic", max_epochs=1)
    with pytest.raises(ValueError, match="feature_embedding='periodic' cannot be combined "
                                         "with module="):
        model.fit(X, Y)


@pytest.mark.parametrize("name, value", [
    ("n_bins", 1), ("n_bins", 2.5), ("n_bins", True), ("embedding_dim", 0),
    ("feature_embedding", "x"), ("feature_embedding", True),
])
def test_invalid_values_are_refused_by_name(name, value):
    X, Y = make_mixed(n=40)
    model = MultiTaskRegressorClassifier(**{name: value})
    with pytest.raises(InvalidParameterError,
                       match=rf"The '{name}' parameter of MultiTaskRegressorClassifier must be"):
        model.fit(X, Y)


# ---------------------------------------------------------------------------
# Fitted-model features: summary, persistence, ONNX, search


def test_summary_shows_the_embedding_as_a_part():
    X, Y = make_mixed(n=60)
    for embedding, count in (("piecewise_linear", 6 * (5 * 3 + 3)),
                             ("periodic", 6 * 16 + 6 * (32 * 3 + 3))):
        model = MultiTaskRegressorClassifier(feature_embedding=embedding, **TINY).fit(X, Y)
        parts = model.summary().parts
        assert list(parts.index[:2]) == ["embedding", "trunk"]
        assert parts.loc["embedding", "parameters"] == count
        assert parts.loc["trunk", "parameters"] == 18 * 12 + 12  # reads 6 * 3 values
        assert "6 features -> 18" in parts.loc["embedding", "description"]
        assert model.summary().total_parameters == sum(
            p.numel() for p in model.net_.module_.parameters())
        assert "embedding" in str(model.summary())


_pickle, _joblib, _skops = pickle_round_trip, joblib_round_trip, skops_round_trip


@pytest.mark.parametrize("trip", [_pickle, _joblib, _skops, copy.deepcopy],
                         ids=["pickle", "joblib", "skops", "deepcopy"])
@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_round_trip_predicts_exactly_and_keeps_the_bins(embedding, trip):
    X, Y = make_mixed(n=120)
    model = MultiTaskRegressorClassifier(feature_embedding=embedding, architecture="mmoe",
                                         **TINY).fit(X, Y)
    loaded = trip(model)
    wide = np.vstack([X, 10 * X[:5]])  # beyond the bins, too
    pd.testing.assert_frame_equal(loaded.predict(wide), model.predict(wide))
    for task, proba in model.predict_proba(wide).items():
        np.testing.assert_array_equal(loaded.predict_proba(wide)[task], proba)
    for (name, a), (_, b) in zip(model.net_.module_.state_dict().items(),
                                 loaded.net_.module_.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_loaded_model_trains_on_as_the_original():
    X, Y = make_mixed(n=120)
    model = MultiTaskRegressorClassifier(feature_embedding="piecewise_linear", **TINY).fit(X, Y)
    loaded = _pickle(model)
    edges = edges_of(model)
    model.partial_fit(X + 1, Y)
    loaded.partial_fit(X + 1, Y)
    np.testing.assert_array_equal(edges_of(loaded), edges)
    pd.testing.assert_frame_equal(loaded.predict(X), model.predict(X))


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in
                            ("onnx", "onnxruntime", "onnxscript")),
                    reason="needs onnx, onnxruntime and onnxscript")
@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_onnx_export_gives_the_predictions(embedding):
    import onnxruntime as ort

    X, Y = make_mixed(n=120)
    model = MultiTaskRegressorClassifier(feature_embedding=embedding, architecture="ple",
                                         **TINY).fit(X, Y)
    onnx_model = model.to_onnx()
    session = ort.InferenceSession(onnx_model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rows = np.vstack([X, 10 * X[:5], -10 * X[:5]]).astype(np.float32)  # open bins too
    value, proba = session.run(["value_value", "level_proba"], {"X": rows})
    np.testing.assert_allclose(value, model.predict(rows)["value"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(proba, model.predict_proba(rows)["level"], atol=1e-5)


def test_clone_and_grid_search_over_the_embedding():
    X, Y = regression_data(n=90)
    base = MultiTaskRegressor(**TINY)
    assert clone(base.set_params(feature_embedding="periodic")).feature_embedding == "periodic"
    search = GridSearchCV(MultiTaskRegressor(**TINY),
                          {"feature_embedding": [None, "piecewise_linear", "periodic"],
                           "embedding_dim": [2]},
                          cv=KFold(2, shuffle=True, random_state=0)).fit(X, Y)
    assert len(search.cv_results_["params"]) == 3
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    assert isinstance(best.net_.module_.trunk, EmbeddedTrunk) == (
        best.feature_embedding is not None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("embedding", EMBEDDINGS)
def test_cuda_moves_the_bins_and_matches_the_cpu_model(embedding):
    X, Y = make_mixed(n=150)
    params = dict(TINY, feature_embedding=embedding)
    gpu = MultiTaskRegressorClassifier(device="cuda", **params).fit(X, Y)
    cpu = MultiTaskRegressorClassifier(device="cpu", **params).fit(X, Y)
    for name, tensor in gpu.net_.module_.trunk.embedding.state_dict().items():
        assert tensor.is_cuda, name
    if embedding == "piecewise_linear":
        np.testing.assert_array_equal(edges_of(gpu), edges_of(cpu))
    np.testing.assert_allclose(gpu.predict(X)["value"], cpu.predict(X)["value"],
                               rtol=1e-3, atol=1e-3)
    loaded = _pickle(gpu)
    pd.testing.assert_frame_equal(loaded.predict(X), gpu.predict(X))
