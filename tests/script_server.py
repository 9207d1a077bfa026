"""Runs the repository's scripts for the tests, each in a process of its own forked from this one.

Starting a script costs about 2.5 s of CPU before its first line: `import torch` (1.3 s) and torch._dynamo,
which the first optimizer construction imports (1.2 s). This server imports them once, never runs a torch
operation (so no thread pool exists to be forked), and forks a child per request: the child changes to the
requested folder, takes the requested argv and environment, sends its output to the requested files, and runs
the script as `python script.py ...` (or `python -m module ...`) would (``runpy``, ``__name__ == "__main__"``).
The server answers with the child's exit status, or "timeout" after killing a child that ran past the request's
timeout (so that one hung script fails its test instead of stalling every later one); a request with
``"start": true`` is answered at once with the child's pid, and ``{"wait": pid, "timeout": s}`` later with its
status (several scripts running at once, as separate processes do). tests/helpers.py starts one
server per test process.

    python tests/script_server.py <unix socket path>
"""
import json
import os
import runpy
import signal
import socket
import sys
import time
import traceback

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import absl.app  # noqa: E402,F401
import matplotlib.pyplot  # noqa: E402,F401
import torch  # noqa: E402,F401
import torch._dynamo  # noqa: E402,F401
import captum.attr  # noqa: E402,F401

import aux  # noqa: E402,F401  (the project's library modules: they define no flags)
import explanations  # noqa: E402,F401
from core import training  # noqa: E402,F401
from core import runner  # noqa: E402,F401


def run_child(request, listener, connection) -> None:
    """In the forked child: become the requested script run, then exit with its status."""
    listener.close()
    connection.close()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a terminal's foreground program takes it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    argv = list(request["argv"])
    module = argv[1] if argv[0] == "-m" else None  # `python -m module args`: the module's folder is the cwd's
    sys.argv = [module, *argv[2:]] if module else argv  # runpy.run_module sets argv[0] to the module's file
    sys.path[0] = os.getcwd() if module else os.path.dirname(os.path.abspath(argv[0]))
    # as the interpreter: the request's PYTHONPATH comes right after the script's folder
    for entry in reversed([e for e in request["env"].get("PYTHONPATH", "").split(os.pathsep) if e]):
        sys.path.insert(1, os.path.abspath(entry))
    code = 0
    try:
        if module:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            code = 1
        else:
            code = exit_.code or 0
    except BaseException:  # noqa: BLE001  (as the interpreter: print the traceback, exit 1)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    while True:
        connection, _ = listener.accept()
        with connection:
            request = json.loads(connection.makefile().readline())
            if request == "stop":
                return
            if "wait" in request:  # a child started earlier (``"start": true``): its exit status
                reply = wait_for(request["wait"], request["timeout"])
            else:
                pid = os.fork()
                if pid == 0:
                    run_child(request, listener, connection)
                reply = pid if request.get("start") else wait_for(pid, request["timeout"])
            connection.sendall((json.dumps(reply) + "\n").encode())


def wait_for(pid: int, timeout: float):
    """The child's exit status, "timeout" once it has been killed for running longer than ``timeout`` s, or
    "unknown" for a pid that is not a child of this server (or was waited for already)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "unknown"
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.01)


if __name__ == "__main__":
    serve(sys.argv[1])
