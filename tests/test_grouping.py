"""`make test` runs the suite in 2 workers with `--dist loadgroup`: the tests that share a session fixture (conftest's
trained models, the report's tiny root) carry an xdist_group mark so that it is made once, in one worker. pytest 9.2
silently stopped that grouping (pytest-xdist#1386): every shared fixture was made twice and the suite took a third
longer. This runs a suite of two grouped tests the way `make test` does and checks they share a worker."""
import os
import subprocess
import sys

SUITE = '''
import os

import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("i", range(4))
def test_where(i):
    with open("workers.txt", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_grouped_tests_run_in_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(SUITE)
    # the installed pytest and pytest-xdist alone (no other plugin is imported: 3 interpreters start faster)
    environment = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "xdist", "-n", "2", "--dist", "loadgroup", "-p",
               "no:cacheprovider", "test_grouped.py"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    workers = set((tmp_path / "workers.txt").read_text().split())
    assert len(workers) == 1, f"the group ran on {sorted(workers)}: --dist loadgroup does not group with this pytest"
