"""Files written so that a crash or a concurrent process never leaves a half-written one.

- ``atomic_write_bytes`` / ``atomic_write_json`` / ``atomic_torch_save``: write a temporary file next to
  the target, then rename it over the target (readers see the old file or the new one, never a mix).
- ``FileLock``: an exclusive lock file naming its holder (pid, host), for one process per training run;
  a lock whose holder died on this host is stale and taken over.
- ``exclusive``: a short critical section between processes (``fcntl.flock``), e.g. rebuilding
  results.json from per-run records.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .errors import UserError


class FileError(UserError):
    """A file or folder cannot be written, or is held by another process."""


def atomic_write_bytes(path, write: Callable) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    return obj


def atomic_write_json(obj: Any, path) -> None:
    """Strict JSON (NaN and infinities become null), written atomically."""
    text = json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path) -> None:
    import torch

    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def writable_folder(folder, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that files can be written in it, before any work is done."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileError(f"the {what} {folder} is a file, not a folder: choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FileError(f"cannot create the {what} {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FileError(f"the {what} {folder} is not writable: choose another path or fix its permissions")
    return folder


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a killed process not yet reaped, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class FileLock:
    """An exclusive lock file: ``{"pid", "host", "since"}``, created with O_EXCL.

    ``acquire`` refuses (FileError naming the holder) while another live process holds it. A lock
    left by a process that died on this host is stale: it is replaced, and ``stale_holder`` says whose
    it was. A lock held from another host cannot be checked; the message says how to remove it.
    """

    def __init__(self, path, what: str):
        self.path = Path(path)
        self.what = what
        self.stale_holder: Optional[dict] = None
        self._held = False

    def holder(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def state(self) -> str:
        """'free', 'held' (by a live process, or one on another host) or 'stale' (its process died here)."""
        holder = self.holder()
        if holder is None:
            return "free" if not self.path.exists() else "stale"
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
            return "stale"
        return "held"

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                state, holder = self.state(), self.holder() or {}
                if state == "held":
                    where = "" if holder.get("host") == socket.gethostname() else f" on host {holder.get('host')}"
                    raise FileError(f"{self.what} is being trained by another process (pid {holder.get('pid')}{where}; "
                                    f"lock {self.path}). Wait for it, or train other runs (--runs_from/--runs_to); if "
                                    f"that process is gone, delete {self.path}") from None
                self.stale_holder = holder
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            except OSError as error:
                raise FileError(f"cannot create the lock {self.path}: {error.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._held = True
            return self
        raise FileError(f"could not take the lock {self.path}: other processes keep replacing it")

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                holder = self.holder()
                if holder is None or holder.get("pid") == os.getpid():
                    os.unlink(self.path)
            self._held = False

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def exclusive(path) -> Iterator[None]:
    """A critical section between processes: ``fcntl.flock`` on ``path`` (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                break
            except OSError as error:  # EINTR
                if error.errno != errno.EINTR:
                    raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
