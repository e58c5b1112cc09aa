"""Embeddings of numerical features, in front of the shared layers.

Gorishniy, Rubachev & Babenko, "On Embeddings for Numerical Features in
Tabular Deep Learning" (NeurIPS 2022), map each scalar feature to a vector
before the MLP; two of their embeddings are here:

* :class:`PiecewiseLinearEncoding` (``feature_embedding='piecewise_linear'``):
  each feature's range is cut into bins at quantiles of the training rows;
  the encoding has one component per bin, 0 below the bin, 1 above it and
  linear inside (the first bin is open below, the last open above), followed
  by a per-feature linear map and ReLU. A step or threshold in one feature is
  then one weight away, which an MLP on the raw value has to build from
  several ReLUs.
* :class:`PeriodicEmbedding` (``feature_embedding='periodic'``): per feature,
  ``[cos(2 pi c x), sin(2 pi c x)]`` for k trainable frequencies c initialised
  from N(0, sigma^2), then a per-feature linear map and ReLU (the paper's
  "PLR"). sigma sets the scale of the functions the embedding can express
  and assumes standardised features.

Each embedding returns (batch, n_features * embedding_dim), feature-major.
:class:`EmbeddedTrunk` puts an embedding in front of any trunk or
architecture module and forwards what the engine reads from a trunk.

The bin edges are buffers whose shape depends only on (n_features, n_bins),
never on the data: a saved model is rebuilt with edges fitted on zeros and
its saved buffers are then loaded into it (see :mod:`._persistence`).
"""

import math

import numpy as np
import torch
from torch import nn

from ._modules import make_activation

#: Values of the estimator's ``feature_embedding`` parameter (besides None).
FEATURE_EMBEDDINGS = ("piecewise_linear", "periodic")
#: Frequencies per feature of the periodic embedding (the paper tunes 16 to 96).
PERIODIC_FREQUENCIES = 16
#: Standard deviation of the periodic embedding's initial frequencies, for
#: standardised features (the paper tunes it in [0.01, 100]; see the notes of
#: :class:`PeriodicEmbedding`).
PERIODIC_SIGMA = 0.1


def quantile_bin_edges(X, n_bins):
    """Per feature, bin edges at the quantiles of the rows of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The rows the bins are fitted on (the training rows), finite values.
    n_bins : int
        Bins per feature at most (>= 1).

    Returns
    -------
    edges : ndarray of shape (n_features, n_bins + 1), float32
        Feature f's edges are ``edges[f, :counts[f] + 1]``, strictly
        increasing: the quantiles at ``0, 1/n_bins, ..., 1`` with repeated
        values dropped, so a feature with few distinct values gets fewer
        (wider) bins. The entries beyond are padding: copies of the last
        valid edge. A constant feature has the one edge, its value.
    counts : ndarray of shape (n_features,), int64
        Valid bins of each feature, from 0 (a constant feature) to ``n_bins``.
    """
    X = np.asarray(X, dtype=np.float64)
    n_features = X.shape[1]
    edges = np.zeros((n_features, n_bins + 1), dtype=np.float32)
    counts = np.zeros(n_features, dtype=np.int64)
    if X.shape[0] == 0:
        return edges, counts
    levels = np.linspace(0.0, 1.0, n_bins + 1)
    quantiles = np.quantile(X, levels, axis=0).T  # (n_features, n_bins + 1)
    for f in range(n_features):
        # Deduplicated in float32, the precision they are stored in: two float64
        # quantiles that round to one float32 would make a bin of width 0.
        unique = np.unique(quantiles[f].astype(np.float32))
        edges[f, :len(unique)] = unique
        edges[f, len(unique):] = unique[-1]
        counts[f] = len(unique) - 1
    return edges, counts


class FeatureLinear(nn.Module):
    """One linear map per feature: (B, F, n_in) -> (B, F, n_out).

    Weight (F, n_in, n_out), bias (F, n_out), each feature's map initialised
    like ``nn.Linear(n_in, n_out)``; evaluated as one batched product.
    """

    def __init__(self, n_features, in_features, out_features):
        super().__init__()
        self.n_features, self.in_features, self.out_features = (
            n_features, in_features, out_features)
        self.weight = nn.Parameter(torch.empty(n_features, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_features, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        # (F, B, n_in) @ (F, n_in, n_out): one baddbmm over the feature axis.
        out = torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight)
        return out.transpose(0, 1)

    def extra_repr(self):
        return (f"n_features={self.n_features}, in_features={self.in_features}, "
                f"out_features={self.out_features}")


class PiecewiseLinearEncoding(nn.Module):
    """Piecewise linear encoding (PLE) of each feature, a per-feature linear map and
    an activation: (B, F) -> (B, F * embedding_dim).

    Parameters
    ----------
    edges : array-like of shape (n_features, n_bins + 1)
        Bin edges, as :func:`quantile_bin_edges` returns them.
    counts : array-like of shape (n_features,)
        Valid bins per feature.
    embedding_dim : int
        Width of each feature's embedding.
    activation : str, default='relu'
        Activation after the linear map (see :func:`~._modules.make_activation`).

    Notes
    -----
    For feature value x and valid bin t with edges [a, b], component t is
    ``(x - a) / (b - a)`` clipped to [0, 1], except that the first bin is not
    clipped below and the last valid bin not clipped above, so values outside
    the training range extrapolate linearly. Padded bins are 0, and so is
    every component of a constant feature (it taught the training nothing).
    ``edges`` and ``counts`` are buffers: saved with the model, moved with it.
    """

    def __init__(self, edges, counts, embedding_dim, activation="relu"):
        super().__init__()
        edges = torch.as_tensor(np.asarray(edges, dtype=np.float32))
        counts = torch.as_tensor(np.asarray(counts, dtype=np.int64))
        n_features, n_edges = edges.shape
        self.n_features, self.n_bins = n_features, n_edges - 1
        self.embedding_dim = embedding_dim
        self.register_buffer("edges", edges)
        self.register_buffer("counts", counts)
        self.linear = FeatureLinear(n_features, self.n_bins, embedding_dim)
        self.activation = make_activation(activation)

    @property
    def out_features(self):
        return self.n_features * self.embedding_dim

    def encode(self, X):
        """The encoding alone: (B, F) -> (B, F, n_bins)."""
        # Derived from the buffers at each call (not cached): loading a saved
        # model replaces the buffers after construction.
        index = torch.arange(self.n_bins, device=self.counts.device)
        counts = self.counts.unsqueeze(1)
        valid = index < counts
        first = index == 0
        last = index == counts - 1
        left = self.edges[:, :-1]
        width = self.edges[:, 1:] - left
        width = torch.where(valid, width, torch.ones_like(width))  # padding: no 0 division
        ratio = (X.unsqueeze(-1) - left) / width
        ratio = torch.where(first, ratio, ratio.clamp(min=0.0))
        ratio = torch.where(last, ratio, ratio.clamp(max=1.0))
        return torch.where(valid, ratio, torch.zeros_like(ratio))

    def forward(self, X):
        out = self.activation(self.linear(self.encode(X)))
        return out.reshape(X.shape[0], -1)

    def extra_repr(self):
        return f"n_features={self.n_features}, n_bins={self.n_bins}"


class PeriodicEmbedding(nn.Module):
    """Periodic embedding of each feature, a per-feature linear map and an
    activation (the paper's PLR): (B, F) -> (B, F * embedding_dim).

    Parameters
    ----------
    n_features : int
    embedding_dim : int
        Width of each feature's embedding.
    n_frequencies : int, default=16
        Frequencies per feature (k); the periodic part has 2k components.
    sigma : float, default=0.1
        Standard deviation of the initial frequencies, drawn from N(0, sigma^2).
    activation : str, default='relu'
        Activation after the linear map.

    Notes
    -----
    Feature value x gives ``[cos(2 pi c_1 x), ..., cos(2 pi c_k x), sin(2 pi
    c_1 x), ..., sin(2 pi c_k x)]`` with the feature's trainable frequencies
    ``frequencies[f]``. The paper finds sigma the most important
    hyperparameter of this embedding: large values fit high-frequency
    patterns (and overfit), small ones smooth functions. The default 0.1 is
    for standardised features (a unit change in x turns the phase by about
    0.6 radian at a typical frequency): on generated step functions (4,000
    rows) sigma from 0.01 to 3 gave test R² within 0.01 of each other, 1 and
    3 the best; on scikit-learn's diabetes table (442 rows) 0.1 was the best
    of them, and 1 or more overfit badly (R² 0.38 against 0.16 at 1).
    """

    def __init__(self, n_features, embedding_dim, n_frequencies=PERIODIC_FREQUENCIES,
                 sigma=PERIODIC_SIGMA, activation="relu"):
        super().__init__()
        self.n_features, self.embedding_dim = n_features, embedding_dim
        self.n_frequencies, self.sigma = n_frequencies, sigma
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * sigma)
        self.linear = FeatureLinear(n_features, 2 * n_frequencies, embedding_dim)
        self.activation = make_activation(activation)

    @property
    def out_features(self):
        return self.n_features * self.embedding_dim

    def encode(self, X):
        """The periodic part alone: (B, F) -> (B, F, 2k), cosines then sines."""
        phase = (2 * math.pi) * self.frequencies * X.unsqueeze(-1)
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)

    def forward(self, X):
        out = self.activation(self.linear(self.encode(X)))
        return out.reshape(X.shape[0], -1)

    def extra_repr(self):
        return (f"n_features={self.n_features}, n_frequencies={self.n_frequencies}, "
                f"sigma={self.sigma}")


class EmbeddedTrunk(nn.Module):
    """A feature embedding followed by a trunk (or architecture module).

    Presents itself to the engine as the trunk does: ``out_features``,
    ``per_task``, ``penalty()`` (the trunk's, None without one) and
    ``shared_parameters()``: the embedding's parameters, which every task's
    loss reaches, plus the trunk's shared ones (``trunk.shared_parameters()``
    when it defines it, else all its parameters). The output is the trunk's
    (a list of layer outputs for ``task_depth`` included).
    """

    def __init__(self, embedding, trunk):
        super().__init__()
        self.embedding = embedding
        self.trunk = trunk
        self.out_features = trunk.out_features
        self.per_task = bool(getattr(trunk, "per_task", False))

    def forward(self, X):
        return self.trunk(self.embedding(X))

    def shared_parameters(self):
        own = getattr(self.trunk, "shared_parameters", None)
        trunk = list(own()) if callable(own) else list(self.trunk.parameters())
        return list(self.embedding.parameters()) + trunk

    def penalty(self):
        penalty = getattr(self.trunk, "penalty", None)
        return penalty() if penalty is not None else None


def build_embedding(kind, X, n_bins, embedding_dim, fit_rows=None, activation="relu"):
    """The embedding module ``feature_embedding=kind`` names, for features X.

    Parameters
    ----------
    kind : {'piecewise_linear', 'periodic'}
    X : ndarray of shape (n_samples, n_features), float32
    n_bins : int
        Bins per feature of the piecewise linear encoding.
    embedding_dim : int
    fit_rows : array-like of int, default=None
        The rows of X that training uses: the bins are fitted on them only
        (None: all rows).
    activation : str, default='relu'
    """
    n_features = X.shape[1]
    if kind == "piecewise_linear":
        rows = X if fit_rows is None else X[np.asarray(fit_rows, dtype=np.intp)]
        edges, counts = quantile_bin_edges(rows, n_bins)
        return PiecewiseLinearEncoding(edges, counts, embedding_dim, activation)
    if kind == "periodic":
        return PeriodicEmbedding(n_features, embedding_dim, activation=activation)
    raise ValueError(f"feature_embedding must be None or one of {FEATURE_EMBEDDINGS}; "
                     f"got {kind!r}.")
