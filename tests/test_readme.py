"""Every Python block of the README runs as written, from the repository root (the example head of the Design
section is run by tests/test_models.py, with the registry restored after it)."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

ALL = re.findall(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
BLOCKS = [block for marker, block in ALL if "tests/test_models.py runs this block" not in marker]


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2 and len(ALL) == len(BLOCKS) + 1


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_python_block_runs_as_written(index):
    block = BLOCKS[index]
    result = subprocess.run([sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"README block {index} fails:\n{block}\n{result.stderr[-2000:]}"
