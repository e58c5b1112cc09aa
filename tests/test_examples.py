"""The examples run and reach their stated quality (the quickstart is the main job)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_reaches_its_held_out_targets(capsys):
    pytest.importorskip("palmerpenguins")
    scores = _load("quickstart").main()
    assert scores["species"] >= 0.95
    assert scores["sex"] >= 0.85
    assert scores["body_mass_g"] >= 0.75
    out = capsys.readouterr().out
    assert "held-out score" in out and "best loss weights" in out
    assert "per-task report" in out and "balanced_accuracy" in out
    # The first predictions are shown under the held-out rows' own index (141, 6, ...).
    from sklearn.model_selection import train_test_split

    from sklearn_mtl.datasets import load_penguins

    X, Y = load_penguins()
    X_test = train_test_split(X, Y, test_size=0.25, random_state=0)[1]
    shown = out.split("first predictions")[1].splitlines()[2:7]
    assert [line.split()[0] for line in shown] == [str(i) for i in X_test.index[:5]]
