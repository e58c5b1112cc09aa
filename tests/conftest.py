import io
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch


def make_mixed(n=300, seed=0, missing=0.0):
    """Small mixed-task data: a regression, a binary (str labels) and a multiclass task,
    all learnable from the first features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    Y = pd.DataFrame({
        "value": 3.0 * X[:, 0] - 2.0 * X[:, 1] + 50.0 + 0.1 * rng.normal(size=n),
        "flag": np.where(X[:, 2] + 0.5 * X[:, 0] > 0, "yes", "no"),
        "level": pd.Series(np.digitize(X[:, 3], [-0.5, 0.5])).map({0: "low", 1: "mid", 2: "high"}),
    })
    if missing:
        for col in Y.columns:
            Y.loc[rng.random(n) < missing, col] = np.nan
    return X, Y


@pytest.fixture
def mixed_data():
    return make_mixed()


@pytest.fixture(autouse=True)
def _torch_threads():
    # Two cores on CI; one thread per test process keeps xdist workers from fighting.
    torch.set_num_threads(1)
    yield


# ---------------------------------------------------------------------------
# Round trips of a fitted estimator, shared by the persistence tests


def pickle_round_trip(model):
    return pickle.loads(pickle.dumps(model))


def joblib_round_trip(model):
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def skops_round_trip(model):
    """skops.io's dumps/loads, trusting the types it reports (a skip without skops)."""
    sio = pytest.importorskip("skops.io")
    data = sio.dumps(model)
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))


class TanhTrunk(torch.nn.Module):
    """A custom ``module=`` trunk for the tests: one tanh layer."""

    def __init__(self, n_features, width):
        super().__init__()
        self.linear = torch.nn.Linear(n_features, width)

    def forward(self, X):
        return torch.tanh(self.linear(X))
