"""examples/does_multitask_help.py runs and saves its figures (a quick run)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "does_multitask_help.py"


def test_the_example_prints_the_tables_and_saves_the_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("does_multitask_help", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(tmp_path / "figures", quick=True)
    names = {path.name for path in result["files"]}
    assert names == {"comparison.png", "affinity_lookahead.png", "affinity_cosine.png",
                     "history.png"}
    assert all(path.parent == tmp_path / "figures" and path.stat().st_size > 5000
               for path in result["files"])
    tasks = ["related_value", "related_flag", "related_scarce", "unrelated"]
    assert list(result["comparison"].index) == tasks
    assert list(result["lookahead"].index) == tasks
    assert sorted(sum(result["groups"], [])) == sorted(tasks) and len(result["groups"]) == 2
    out = capsys.readouterr().out
    assert "verdict" in out and "two groups" in out and "figures:" in out
