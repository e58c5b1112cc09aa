"""Every ```python block of README.md runs on its own, as a user who copies one
snippet into a fresh interpreter runs it: no block relies on another's imports or
variables, and each finishes well within a minute on two cores."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Each block is meant to take well under a minute; the limit leaves room for a busy machine.
TIMEOUT_S = 150


def python_blocks():
    """(first line number, code) of each ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_readme_keeps_its_two_commands_first():
    text = README.read_text(encoding="utf-8")
    fences = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    assert [lang for lang, _ in fences[:2]] == ["bash", "bash"]
    assert "examples/quickstart.py" in fences[0][1]
    assert "pytest" in fences[1][1]
    assert len(BLOCKS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs_alone(line, code, tmp_path):
    script = tmp_path / f"readme_line{line}.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    # This checkout's package, whatever is installed; a fresh interpreter in an empty folder.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, (
        f"README block at line {line} failed ({elapsed:.0f} s):\n{result.stderr[-3000:]}")
    print(f"README block at line {line}: {elapsed:.1f} s")
