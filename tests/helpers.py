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
    imported torch once (2.5 s less per script); ``fresh_process`` starts a new interpreter instead (for what
    depends on the process itself)."""
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
        self.started = 0
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
        return self.start(argv, timeout, cwd, env, wait=True).wait()

    def start(self, argv, timeout, cwd=REPO, env=None, wait=False) -> "Started":
        """Fork the script: at once (its pid known), or run to its end with ``wait``."""
        self.started += 1
        stdout, stderr = self.folder / f"stdout.{self.started}", self.folder / f"stderr.{self.started}"
        request = {"argv": argv, "cwd": str(cwd), "env": {**os.environ, **(env or {})}, "stdout": str(stdout),
                   "stderr": str(stderr), "timeout": timeout, "start": not wait}
        reply = json.loads(self._send(request, timeout + 60))
        return Started(self, argv, timeout, stdout, stderr, status=reply) if wait else \
            Started(self, argv, timeout, stdout, stderr, pid=reply)

    def stop(self):
        if self.process.poll() is None:
            try:
                self._send("stop", 10)
            except OSError:
                self.process.kill()
            self.process.wait()


_SERVER = None


class Started:
    """A script the server has forked: ``pid``, and ``wait()``, its CompletedProcess once it has ended."""

    def __init__(self, server, argv, timeout, stdout, stderr, pid=None, status=None):
        self.server, self.argv, self.timeout, self.stdout, self.stderr = server, argv, timeout, stdout, stderr
        self.pid, self.status, self.output = pid, status, None

    def running(self) -> bool:
        """Whether it still runs (Linux: an ended child is a zombie until the server waits for it)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat[stat.rindex(")") + 2] != "Z"

    def wait(self) -> subprocess.CompletedProcess:
        if self.status is None:
            self.status = json.loads(self.server._send({"wait": self.pid, "timeout": self.timeout}, self.timeout + 60))
        if self.status == "unknown":
            raise RuntimeError(f"the script server has no child {self.pid} to wait for")
        if self.output is None:  # read once: wait() may be asked again
            self.output = self.stdout.read_text(), self.stderr.read_text()
            self.stdout.unlink()
            self.stderr.unlink()
        out, err = self.output
        if self.status == "timeout":  # the server has killed the script, as subprocess.run(timeout=...) would
            raise subprocess.TimeoutExpired(self.argv, self.timeout, out, err)
        return subprocess.CompletedProcess(self.argv, self.status, out, err)


def start_script(*args, timeout=240) -> Started:
    """``python <args>`` started, not waited for (forked from the script server, as run_script's)."""
    return _server().start([str(a) for a in args], timeout)


def start_scripts(*commands, timeout=240):
    """Several ``python <args>`` at once, each a process of its own (forked from the script server, as run_script's):
    their CompletedProcess, in order, once all have ended; a failed one is an AssertionError, as run_script's."""
    started = [start_script(*args, timeout=timeout) for args in commands]
    results = []
    for script in started:  # every one is waited for (the server kills one that runs too long), then judged
        try:
            results.append(script.wait())
        except subprocess.TimeoutExpired as error:
            results.append(error)
    for args, result in zip(commands, results):
        if isinstance(result, subprocess.TimeoutExpired):
            raise result
        if result.returncode != 0:
            raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return results


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
