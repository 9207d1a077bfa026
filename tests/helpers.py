"""Helpers shared by the tests: running a script as a user would, reading numbers from its output."""
import atexit
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import REPO

TINY = REPO / "tests" / "tiny_digits.yaml"
_TINY_VALUES = __import__("yaml").safe_load(TINY.read_text())
TINY_DRAWS = _TINY_VALUES["eval_draws"]  # memory draws at test time
TINY_SIZE = _TINY_VALUES["image_size"]  # the size its models read
# The memory heads' MLP in the tests' shared runs: 64 hidden units instead of the paper's 2D / 4D (shufflenet: 4096,
# a third of a TINY run's time); the paper's sizes are built in tests/test_models.py and trained by the quickstart's
# determinism test. A setting for memory heads only (the others refuse it): add it where the modality reads it.
SMALL_MLP = "--set=heads.mlp_hidden=64"


def run_script(*args, timeout=240, check=True, fresh_process=False, cwd=REPO, env=None):
    """``python <args>`` in the repository (or ``cwd``, with ``env`` added to the environment), as a user types it:
    a process of its own with its exit status, stdout and stderr. Forked from tests/script_server.py, which has
    imported torch once (2.5 s less per script); ``fresh_process`` starts a new interpreter instead (for what depends on the process itself)."""
    if fresh_process:
        result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
    else:
        result = _server().run([str(a) for a in args], timeout, cwd, env)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


class _ScriptServer:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="script-server-"))
        self.socket_path = str(self.folder / "socket")
        self.process = subprocess.Popen([sys.executable, str(REPO / "tests" / "script_server.py"), self.socket_path],
                                        cwd=REPO)
        deadline = time.time() + 60
        while not os.path.exists(self.socket_path):
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("tests/script_server.py did not start")
            time.sleep(0.02)
        atexit.register(self.stop)

    def _send(self, request, timeout):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(self.socket_path)
            connection.sendall((json.dumps(request) + "\n").encode())
            return connection.makefile().readline()

    def run(self, argv, timeout, cwd=REPO, env=None) -> subprocess.CompletedProcess:
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        request = {"argv": argv, "cwd": str(cwd), "env": {**os.environ, **(env or {})}, "stdout": str(stdout),
                   "stderr": str(stderr), "timeout": timeout}
        reply = json.loads(self._send(request, timeout + 60))
        if reply == "timeout":  # the server has killed the script, as subprocess.run(timeout=...) would
            raise subprocess.TimeoutExpired(argv, timeout, stdout.read_text(), stderr.read_text())
        return subprocess.CompletedProcess(argv, reply, stdout.read_text(), stderr.read_text())

    def stop(self):
        if self.process.poll() is None:
            try:
                self._send("stop", 10)
            except OSError:
                self.process.kill()
            self.process.wait()


_SERVER = None


def _server() -> _ScriptServer:
    global _SERVER
    if _SERVER is None or _SERVER.process.poll() is not None:
        _SERVER = _ScriptServer()
    return _SERVER


def accuracy_in(text, label="Accuracy:"):
    return float(re.search(re.escape(label) + r"\s*([0-9.]+)", text).group(1))


def write_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(TINY.read_text() + text)
    return path


def memory_reading_head(features: int, classes: int, reads: int):
    """A memory-only head whose scores are memory-vector channels, weights set by hand: its MLP passes the first
    ``features`` channels through and class c scores channel c for the first ``reads`` classes (the others score 0),
    so that a test knows which memory samples carry each class."""
    import torch
    from architectures import build_head

    head = build_head("memory", features, classes)
    with torch.no_grad():
        for layer in (head.classifier.fc1, head.classifier.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
        head.classifier.fc1.weight[:features, :features] = torch.eye(features)
        head.classifier.fc2.weight[:reads, :reads] = torch.eye(reads)
    return head
