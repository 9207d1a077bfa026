"""bench/bench_training.py's parallel section: the train.py commands it times and the table it prints from their
wall times (the runs themselves are replaced by a clock that a run of N workers advances by 120/N seconds)."""
import torch

from bench import bench_training
from helpers import run_script


def test_parallel_section_times_one_train_command_per_count_and_prints_its_rates(monkeypatch, capsys):
    clock, commands = [0.0], []

    def fake_run(command, cwd, check, stdout, stderr):
        commands.append(command)
        workers = int(next(a for a in command if a.startswith("--parallel_runs=")).split("=")[1])
        clock[0] += 120.0 / workers

    monkeypatch.setattr(bench_training.subprocess, "run", fake_run)
    monkeypatch.setattr(bench_training.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    bench_training.measure_parallel(torch.device("cpu"), [1, 2], epochs=3)

    assert len(commands) == 2
    for command, workers in zip(commands, [1, 2]):
        assert command[1] == "train.py" and "--modality=encoder_memory" in command
        assert "--runs=4" in command and "--epochs=3" in command and f"--parallel_runs={workers}" in command
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |") or
            line.startswith("| 2 |")]
    # 4 runs of 3 epochs: 120 s with one process (120 runs/hour, 0.10 run-epochs/s), 60 s with two (2.00x)
    assert rows == ["| 1 | 2 | 120.0 | 120 | 0.10 | 1.00x |", "| 2 | 1 | 60.0 | 240 | 0.20 | 2.00x |"]


def test_parallel_section_runs_as_many_runs_as_its_largest_count(monkeypatch):
    commands = []
    monkeypatch.setattr(bench_training.subprocess, "run", lambda command, **kwargs: commands.append(command))
    bench_training.measure_parallel(torch.device("cpu"), [1, 16], epochs=1)
    assert all("--runs=16" in command for command in commands)


def test_the_flags_the_parallel_section_passes_exist_in_train_py():
    helped = run_script("train.py", "--helpfull", check=False)  # absl's help exits with status 1
    for flag in ("--parallel_runs", "--runs", "--epochs", "--output_dir", "--modality", "--config"):
        assert flag in helped.stdout, flag
