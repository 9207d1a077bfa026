"""base/: atomic strict-JSON writes, lock files that name their holder, writable output folders; the tests' script
server."""
import json
import os
import subprocess
import sys
import time

import pytest

from base.files import FileError, FileLock, atomic_write_json, writable_folder
from helpers import run_script, start_scripts


def test_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "out" / "x.json"
    atomic_write_json({"accuracy": float("nan"), "runs": [1.5, float("inf")], "ok": 2.0}, path)
    assert json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON")) == {
        "accuracy": None, "runs": [1.5, None], "ok": 2.0}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"], "no temporary file is left"


def test_lock_names_its_holder_and_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / "1.lock"
    with FileLock(path, "run 1") as lock:
        assert json.loads(path.read_text())["pid"] == os.getpid() and lock.state() == "held"
        with pytest.raises(FileError, match=rf"run 1 is being trained by another process \(pid {os.getpid()}"):
            FileLock(path, "run 1").acquire()
    assert not path.exists(), "released on exit"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    FileLock(path, "run 1").acquire()
    holder = json.loads(path.read_text())
    path.write_text(json.dumps({**holder, "pid": int(dead.stdout)}))  # a holder that died
    lock = FileLock(path, "run 1")
    assert lock.state() == "stale"
    lock.acquire()
    assert lock.stale_holder["pid"] == int(dead.stdout) and json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_writable_folder(tmp_path):
    assert writable_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileError, match="is a file, not a folder"):
        writable_folder(tmp_path / "file")
    with pytest.raises(FileError, match="cannot create the output folder"):
        writable_folder(tmp_path / "file" / "below")


def test_a_hung_script_fails_its_test_and_the_next_script_still_runs(tmp_path):
    """tests/script_server.py kills a script that runs past its timeout, as subprocess.run would."""
    hung = tmp_path / "hung.py"
    hung.write_text("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        run_script(str(hung), timeout=2)
    assert "started" in raised.value.output
    quick = tmp_path / "quick.py"
    quick.write_text("print('done')\n")
    assert run_script(str(quick), timeout=30).stdout == "done\n"
    assert time.monotonic() - start < 30, "the server waited for the hung script"


def test_scripts_started_together_are_all_waited_for_when_one_runs_too_long(tmp_path):
    """helpers.start_scripts: a script past its timeout is killed and raised, but only after the scripts started
    beside it have ended (none is left running into the next test); waiting for a pid the server did not fork is an
    error of the test, not the end of the server."""
    from helpers import Started, _server

    hung, slow = tmp_path / "hung.py", tmp_path / "slow.py"
    hung.write_text("import time\ntime.sleep(120)\n")
    slow.write_text(f"import pathlib, time\ntime.sleep(4.5)\npathlib.Path({str(tmp_path / 'slow.done')!r}).touch()\n")
    with pytest.raises(subprocess.TimeoutExpired):
        start_scripts((hung,), (slow,), timeout=3)
    assert (tmp_path / "slow.done").exists(), "the script beside the hung one was not waited for"
    server = _server()
    with pytest.raises(RuntimeError, match=r"the script server has no child 1 to wait for"):
        Started(server, ["none"], 5, tmp_path / "out", tmp_path / "err", pid=1).wait()
    quick = tmp_path / "quick.py"
    quick.write_text("print('done')\n")
    assert run_script(str(quick), timeout=30).stdout == "done\n"


def test_scripts_started_together_run_at_once_each_with_its_own_output(tmp_path):
    """helpers.start_scripts: the second script creates the file the first waits for, so they end only together."""
    waiter, maker, failing = tmp_path / "waiter.py", tmp_path / "maker.py", tmp_path / "failing.py"
    flag = tmp_path / "flag"
    waiter.write_text(f"import pathlib, time\nwhile not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.01)\n"
                      f"print('waited')\n")
    maker.write_text(f"import pathlib\npathlib.Path({str(flag)!r}).touch()\nprint('made')\n")
    waited, made = start_scripts((waiter,), (maker,), timeout=20)
    assert (waited.stdout, made.stdout) == ("waited\n", "made\n")
    failing.write_text("import sys\nprint('no')\nsys.exit(3)\n")
    with pytest.raises(AssertionError, match=r"failing.py.*failed \(3\):\nno"):
        start_scripts((maker,), (failing,), timeout=20)
