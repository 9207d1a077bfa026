"""Helpers shared by the tests: running a script as a user would, reading numbers from its output."""
import re
import subprocess
import sys

from conftest import REPO

TINY = REPO / "tests" / "tiny_digits.yaml"


def run_script(*args, timeout=240, check=True):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def accuracy_in(text, label="Accuracy:"):
    return float(re.search(re.escape(label) + r"\s*([0-9.]+)", text).group(1))


def write_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(TINY.read_text() + text)
    return path
