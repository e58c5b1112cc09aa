"""The oneDNN route of a stacked run's batched products: taken only where it keeps
float32 accuracy and the steps are large, the caller's setting restored, and a search
through it equal to plain fits."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from sklearn_mtl import MultiTaskRegressorClassifier
from sklearn_mtl import _onednn
from sklearn_mtl._onednn import OneDNNProducts, float32_accurate, onednn_keeps_float32
from sklearn_mtl.model_selection import MultiTaskGridSearchCV

from .conftest import make_mixed

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

needs_setting = pytest.mark.skipif(
    _onednn._setting() is None, reason="this torch has no oneDNN matmul precision setting")


def _bfloat16(bias, a, b):
    return torch.baddbmm(bias.bfloat16(), a.bfloat16(), b.bfloat16()).float()


def _half_inputs(bias, a, b):
    return torch.baddbmm(bias, a.half().float(), b.half().float())


def test_probe_accepts_float32_and_rejects_reduced_precision():
    assert float32_accurate([torch.baddbmm, lambda bias, a, b: torch.bmm(a, b) + bias])
    assert not float32_accurate([_bfloat16])
    # One inaccurate product among accurate ones fails the probe.
    assert not float32_accurate([torch.baddbmm, _half_inputs])


@needs_setting
def test_route_only_on_amd_cpus_that_keep_float32(monkeypatch):
    for vendor, keeps, pays in [("AuthenticAMD", True, True), ("AuthenticAMD", False, False),
                                ("GenuineIntel", True, False)]:
        monkeypatch.setattr(_onednn, "_cpu_vendor", lambda: vendor)
        monkeypatch.setattr(_onednn, "onednn_keeps_float32", lambda: keeps)
        _onednn.onednn_pays.cache_clear()
        assert _onednn.onednn_pays() is pays
    _onednn.onednn_pays.cache_clear()


@needs_setting
def test_probe_leaves_the_setting_as_it_found_it():
    matmul = _onednn._setting()
    previous = matmul.fp32_precision
    onednn_keeps_float32.cache_clear()
    onednn_keeps_float32()
    assert matmul.fp32_precision == previous


@needs_setting
def test_route_by_step_size_and_restore(monkeypatch):
    monkeypatch.setattr(_onednn, "onednn_pays", lambda: True)
    matmul = _onednn._setting()
    previous = matmul.fp32_precision
    with pytest.raises(KeyError):
        with OneDNNProducts("cpu") as products:
            products.use(_onednn.ONEDNN_STEP_MACS)
            assert matmul.fp32_precision == "bf16"
            products.use(_onednn.ONEDNN_STEP_MACS - 1)
            assert matmul.fp32_precision == previous
            products.use(10 * _onednn.ONEDNN_STEP_MACS)
            raise KeyError("a failure inside the run")
    assert matmul.fp32_precision == previous


@needs_setting
@pytest.mark.parametrize("device, keeps", [("cpu", False), ("meta", True)])
def test_no_route_where_it_does_not_apply(monkeypatch, device, keeps):
    monkeypatch.setattr(_onednn, "onednn_pays", lambda: keeps)
    matmul = _onednn._setting()
    previous = matmul.fp32_precision
    with OneDNNProducts(device) as products:
        assert not products.enabled
        products.use(10 * _onednn.ONEDNN_STEP_MACS)
        assert matmul.fp32_precision == previous


def _small(**params):
    params = {"hidden_layer_sizes": (16,), "head_hidden_sizes": (8,), "max_epochs": 10,
              "batch_size": 32, "lr": 1e-2, "random_state": 0, **params}
    return MultiTaskRegressorClassifier(**params)


@pytest.mark.skipif(not onednn_keeps_float32(),
                    reason="oneDNN float32 products are not float32-accurate on this CPU")
def test_search_through_onednn_equals_plain_fits(monkeypatch):
    # Any CPU where the products keep float32 checks the route, taken here or not.
    monkeypatch.setattr(_onednn, "onednn_pays", lambda: True)
    X, Y = make_mixed(n=180, seed=1)
    X = X.astype(np.float32)
    cv = KFold(3, shuffle=True, random_state=0)
    grid = {"alpha": [0.0, 1e-2], "random_state": [0, 7]}
    routed = []
    use = OneDNNProducts.use

    def recording_use(self, step_macs):
        use(self, step_macs)
        routed.append(_onednn._setting().fp32_precision == "bf16")

    monkeypatch.setattr(_onednn, "ONEDNN_STEP_MACS", 0)
    monkeypatch.setattr(OneDNNProducts, "use", recording_use)
    search = MultiTaskGridSearchCV(_small(), grid, cv=cv, refit=False).fit(X, Y)
    assert routed and all(routed)
    for c, params in enumerate(search.cv_results_["params"]):
        for s, (train, test) in enumerate(cv.split(X, Y)):
            plain = _small().set_params(**params).fit(X[train], Y.iloc[train])
            assert search.cv_results_[f"split{s}_test_score"][c] == pytest.approx(
                plain.score(X[test], Y.iloc[test]), abs=1e-4)


@pytest.mark.skipif(not onednn_keeps_float32(),
                    reason="oneDNN float32 products are not float32-accurate on this CPU")
def test_large_batch_fit_through_onednn_equals_mkl_and_restores(monkeypatch):
    X, Y = make_mixed(n=400, seed=2)
    X = X.astype(np.float32)
    matmul = _onednn._setting()
    previous = matmul.fp32_precision
    seen = []
    use = OneDNNProducts.use

    def recording_use(self, step_macs):
        use(self, step_macs)
        seen.append(matmul.fp32_precision)

    monkeypatch.setattr(OneDNNProducts, "use", recording_use)
    monkeypatch.setattr(_onednn, "ONEDNN_STEP_MACS", 1 << 16)
    fits = {}
    for pays in (False, True):
        monkeypatch.setattr(_onednn, "onednn_pays", lambda pays=pays: pays)
        seen.clear()
        model = _small(batch_size=400).fit(X, Y)
        assert seen == (["bf16"] if pays else [previous])
        assert matmul.fp32_precision == previous
        fits[pays] = model.predict(X), model.history_[:, "train_loss"]
    (mkl, mkl_losses), (onednn, onednn_losses) = fits[False], fits[True]
    np.testing.assert_allclose(onednn_losses, mkl_losses, rtol=1e-4)
    np.testing.assert_allclose(onednn["value"], mkl["value"], atol=1e-3)
    assert (onednn["level"] == mkl["level"]).mean() > 0.99
    # A small step stays with MKL.
    monkeypatch.setattr(_onednn, "ONEDNN_STEP_MACS", 1 << 30)
    seen.clear()
    _small().fit(X, Y)
    assert seen == [previous]
