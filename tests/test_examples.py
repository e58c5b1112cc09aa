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
