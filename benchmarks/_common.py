"""Shared pieces of the benchmarks: data, the hand-written reference loop, timing.

The reference is the loop a user writes by hand for the classic two-head
network: a shared 64-64 trunk, one 20-unit hidden layer per head, default
``torch.optim.Adam``, the data as float32 tensors once, one ``randperm`` per
epoch and a fancy-indexed batch per step. Everything here runs on the
estimator's public API or on plain torch.
"""

import functools
import gc
import statistics
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

TRUNK = (64, 64)
HEAD = 20
LR = 1e-3


def make_data(n, n_features=20, n_tasks=2, seed=0):
    """X (n, n_features) float32 and a DataFrame Y whose even-numbered tasks are
    standardised regression targets and odd-numbered ones binary labels {0, 1}."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features), dtype=np.float32)
    # float32 throughout: a float64 W would upcast X to a float64 temporary in X @ W.
    W = (rng.standard_normal((n_features, n_tasks)) / np.sqrt(n_features)).astype(np.float32)
    Z = np.tanh(X @ W)
    columns = {}
    for t in range(n_tasks):
        noise = rng.standard_normal(n, dtype=np.float32)
        if t % 2 == 0:
            y = Z[:, t] + 0.1 * noise
            columns[f"reg{t}"] = ((y - y.mean()) / y.std()).astype(np.float32)
        else:
            columns[f"clf{t}"] = (Z[:, t] + 0.3 * noise > 0).astype(np.int64)
    return X, pd.DataFrame(columns)


class HandNet(nn.Module):
    """What a user writes: a trunk and one small MLP per task."""

    def __init__(self, n_features, n_tasks=2):
        super().__init__()
        layers, width = [], n_features
        for size in TRUNK:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(width, HEAD), nn.ReLU(), nn.Linear(HEAD, 1))
            for _ in range(n_tasks))

    def forward(self, x):
        h = self.trunk(x)
        return [head(h) for head in self.heads]


def hand_loop(X, Y, batch_size, epochs, seed=0, device="cpu"):
    """The plain loop; returns the trained HandNet."""
    torch.manual_seed(seed)
    Xt = torch.from_numpy(X).to(device)
    targets = [torch.from_numpy(Y[c].to_numpy(np.float32, copy=True)).unsqueeze(1).to(device)
               for c in Y.columns]
    kinds = ["reg" if c.startswith("reg") else "clf" for c in Y.columns]
    model = HandNet(X.shape[1], len(kinds)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    n = Xt.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            outputs = model(Xt[idx])
            loss = 0.0
            for out, y, kind in zip(outputs, targets, kinds):
                yb = y[idx]
                loss = loss + (F.mse_loss(out, yb) if kind == "reg"
                               else F.binary_cross_entropy_with_logits(out, yb))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def hand_loop_host_batches(X, Y, batch_size, epochs, seed=0, device="cuda"):
    """The plain loop with the data on the host, each batch copied to the device."""
    torch.manual_seed(seed)
    Xt = torch.from_numpy(X)
    targets = [torch.from_numpy(Y[c].to_numpy(np.float32, copy=True)).unsqueeze(1) for c in Y.columns]
    kinds = ["reg" if c.startswith("reg") else "clf" for c in Y.columns]
    model = HandNet(X.shape[1], len(kinds)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    n = Xt.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            outputs = model(Xt[idx].to(device))
            loss = 0.0
            for out, y, kind in zip(outputs, targets, kinds):
                yb = y[idx].to(device)
                loss = loss + (F.mse_loss(out, yb) if kind == "reg"
                               else F.binary_cross_entropy_with_logits(out, yb))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def hand_predict(model, X, device="cpu"):
    with torch.no_grad():
        outputs = model(torch.from_numpy(X).to(device))
    return [o[:, 0].float().cpu().numpy() for o in outputs]


def estimator(batch_size, epochs, seed=0, **params):
    from sklearn_mtl import MultiTaskRegressorClassifier

    return MultiTaskRegressorClassifier(
        hidden_layer_sizes=TRUNK, head_hidden_sizes=(HEAD,), lr=LR, batch_size=batch_size,
        max_epochs=epochs, random_state=seed, **params)


def estimator_outputs(model, X, Y):
    """Per task: predicted value (regression) or probability of class 1 (binary)."""
    pred = model.predict(X)
    proba = model.predict_proba(X)
    out = []
    for c in Y.columns:
        if c.startswith("reg"):
            out.append(np.asarray(pred[c], dtype=np.float64))
        else:
            classes = list(model.classes_[c])
            out.append(proba[c][:, classes.index(1)])
    return out


def final_loss(outputs, Y, logits=True):
    """Sum over tasks of MSE (regression) and log loss (binary) on the training data:
    the quantity every variant minimises."""
    total = 0.0
    for out, c in zip(outputs, Y.columns):
        y = Y[c].to_numpy(np.float64)
        out = np.asarray(out, dtype=np.float64)
        if c.startswith("reg"):
            total += float(np.mean((out - y) ** 2))
        else:
            p = 1.0 / (1.0 + np.exp(-out)) if logits else out
            p = np.clip(p, 1e-7, 1 - 1e-7)
            total += float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return total


def timed(fn):
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleave(variants, repeats):
    """Run each variant ``repeats`` times, round-robin (so that load changes on the
    machine hit all variants alike). ``variants``: dict name -> callable returning a
    result. Returns (dict name -> list of seconds, dict name -> last result)."""
    times = {name: [] for name in variants}
    results = {}
    for _ in range(repeats):
        for name, fn in variants.items():
            seconds, results[name] = timed(fn)
            times[name].append(seconds)
    return times, results


def interleave_seeded(variants, repeats, after=None):
    """As :func:`interleave`, but repeat r calls ``fn(seed=r)``, so that the repeats also
    show the seed-to-seed spread of the result; ``after(name, result)`` (untimed) maps
    each result to what is kept. Returns (times, dict name -> list of kept values)."""
    times = {name: [] for name in variants}
    kept = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            seconds, result = timed(functools.partial(fn, seed=r))
            times[name].append(seconds)
            kept[name].append(after(name, result) if after else result)
    return times, kept


def median(values):
    return statistics.median(values)


def ratio_stats(times, name, baseline):
    """Median over repeats of the per-repeat ratio name/baseline (each repeat's pair ran
    back to back), and the median times."""
    ratios = [a / b for a, b in zip(times[name], times[baseline])]
    return statistics.median(ratios)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
