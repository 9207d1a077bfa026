"""Run commands in parallel worker processes: train.py --parallel_runs and grid.py's local workers.

Each worker is an ordinary process (a ``train.py`` command), so what several workers write into one experiment
folder is merged through its per-run records, exactly as the runs of one sequential job. On a CPU the cores
it may use are split between the workers (``OMP_NUM_THREADS``); on a GPU the workers share the device.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence


def split_runs(runs: Sequence[int], workers: int) -> List[List[int]]:
    """``runs`` in at most ``workers`` contiguous chunks of nearly equal size."""
    workers = max(1, min(workers, len(runs)))
    size, extra = divmod(len(runs), workers)
    chunks, start = [], 0
    for worker in range(workers):
        end = start + size + (worker < extra)
        chunks.append(list(runs[start:end]))
        start = end
    return chunks


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the usable CPUs (at least 1): workers never ask for more threads than there are."""
    return max(1, usable_cpus() // workers)


def run_commands(commands: Sequence[Sequence[str]], workers: int, cwd: Optional[str] = None,
                 threads: Optional[int] = None, quiet: bool = False, logs: Optional[Sequence[Path]] = None,
                 finished: Optional[Callable[[int, int], None]] = None) -> List[int]:
    """Run ``commands`` with at most ``workers`` at a time; each gets ``threads`` CPU threads (default: the
    usable CPUs divided between the workers). Output goes to this process's, or nowhere (``quiet``), or to the file
    ``logs[i]`` of each command. ``finished(index, exit code)`` is called as each ends. Returns the exit codes, in
    the order of ``commands``. A SIGTERM or SIGINT to this process is passed on to the running commands (their
    runs stay resumable), which are waited for before it ends."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or threads_per_worker(workers))}
    pending = list(enumerate(commands))
    running, codes = {}, [None] * len(commands)

    def stop(signum, frame):
        for process in running.values():
            process.send_signal(signum)
        for process in running.values():
            process.wait()
        if signum == signal.SIGINT:  # Ctrl-C: the script's guard says in one line what was kept
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while pending or running:
            while pending and len(running) < workers:
                index, command = pending.pop(0)
                if logs is not None:
                    Path(logs[index]).parent.mkdir(parents=True, exist_ok=True)
                    output = open(logs[index], "w")
                else:
                    output = subprocess.DEVNULL if quiet else None
                running[index] = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=output,
                                                  stderr=subprocess.STDOUT if logs is not None else output)
                if logs is not None:
                    output.close()  # the child holds its own copy
            for index, process in list(running.items()):
                if process.poll() is not None:
                    codes[index] = process.returncode
                    del running[index]
                    if finished is not None:
                        finished(index, process.returncode)
            time.sleep(0.05)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return codes


def python_command(script: str, *args: str) -> List[str]:
    return [sys.executable, script, *args]
