"""grid.py, tables.py and data-parallel training with torchrun, on DIGITS."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO
from core.config import ConfigError
from core.grid import Grid
from core.collect import Row, TableError, collect_accuracy, collect_epoch_seconds
from core.tables import Table
from helpers import SMALL_MLP, TINY, run_script


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text((REPO / "tests" / "grid_tiny.yaml").read_text().replace("OUTPUT", str(tmp_path / "models")))
    return path


@pytest.mark.slow
def test_grid_runs_through_xargs_job_arrays_and_local_workers_skipping_finished_runs(grid, tmp_path):
    """One grid filled three ways, as a user would mix them: a printed command through xargs, a Slurm array task,
    then, with runs: raised, a local worker for the new seeds only, its output into a pipe (several workers at
    once: test_local_workers_run_their_commands_at_once)."""
    grid.write_text(grid.read_text().replace("runs: 2", "runs: 1"))
    assert "2 runs: 2 missing" in run_script("grid.py", f"--grid={grid}", "--status").stdout
    printed = run_script("grid.py", f"--grid={grid}", "--print").stdout.splitlines()
    assert len(printed) == 2 and "--modality=std" in printed[0] and "--modality=deepncm" in printed[1]
    subprocess.run(["xargs", "-P", "2", "-I{}", "sh", "-c", "{}"], input=printed[0] + "\n", cwd=tmp_path,
                   capture_output=True, text=True, check=True)  # any folder: the commands are absolute
    status = run_script("grid.py", f"--grid={grid}", "--status").stdout
    assert "2 runs: 1 done, 1 missing" in status and "deepncm         ." in status and "std             +" in status
    run_script("grid.py", f"--grid={grid}", "--task=2")  # the last run, as Slurm's array task 2 would
    assert "2 runs: 2 done" in run_script("grid.py", f"--grid={grid}", "--status").stdout
    assert "the grid has 2 runs" in run_script("grid.py", f"--grid={grid}", "--task=3", check=False).stderr
    # runs: raised on a finished grid trains only the new seeds; the old runs' files stay as they were
    before = {path: path.read_bytes() for path in (tmp_path / "models").rglob("1.*") if path.suffix in (".pt", ".json")}
    grid.write_text(grid.read_text().replace("runs: 1", "runs: 2"))
    assert "4 runs: 2 done, 2 missing" in run_script("grid.py", f"--grid={grid}", "--status").stdout
    missing = run_script("grid.py", f"--grid={grid}", "--print").stdout.splitlines()
    assert len(missing) == 2 and all("--run=2" in line for line in missing)
    # a local worker into a pipe (block-buffered, as into a file): each run's line comes as it ends, not at the end
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen([sys.executable, "grid.py", f"--grid={grid}", "--workers=1"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not (lines and lines[-1].startswith("done:")):
        lines.append(process.stdout.readline())
        assert lines[-1], "grid.py ended before it printed a finished run"
    records = list((tmp_path / "models").rglob("[0-9].json"))
    assert len(records) < 4, f"the first new run's line came only after the second had ended: {records}"
    rest, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    out = "".join(lines) + rest
    assert "2 runs done, 0 running elsewhere, 0 changed, 2 to run with 1 workers" in out
    assert "2 runs finished, 0 running elsewhere, 0 failed" in out
    assert len(re.findall(r"done: DIGITS shufflenet 128 \w+ run 2 \| accuracy [0-9.]+ \| [0-9.]+ min", out)) == 2, out
    assert all(path.read_bytes() == content for path, content in before.items()), "an old run's file changed"
    folder = tmp_path / "models" / "DIGITS" / "deepncm" / "shufflenet" / "128"
    assert (folder / "2.log").is_file(), "a log per run"
    assert [r["run"] for r in json.loads((folder / "results.json").read_text())["runs"]] == [1, 2]
    assert "4 runs: 4 done" in run_script("grid.py", f"--grid={grid}", "--status").stdout


def test_local_workers_run_their_commands_at_once(tmp_path):
    """core.launch.run_commands with 2 workers (grid.py --workers, train.py --parallel_runs): the first two commands
    wait for each other's file, so they succeed only if they run at the same time; the third waits for a free
    worker. Each ends with its own exit code, its output in its own log."""
    from core import launch

    wait = "for i in $(seq 200); do [ -e {0} ] && break; sleep 0.05; done; [ -e {0} ]"
    first, second = tmp_path / "first", tmp_path / "second"
    commands = [["sh", "-c", f"touch {first}; {wait.format(second)} && echo one"],
                ["sh", "-c", f"touch {second}; {wait.format(first)} && echo two; exit 3"],
                ["sh", "-c", "echo three"]]
    logs = [tmp_path / "logs" / f"{index}.log" for index in range(3)]
    ended = []
    codes = launch.run_commands(commands, workers=2, logs=logs, finished=lambda index, code: ended.append(index))
    assert codes == [0, 3, 0] and sorted(ended) == [0, 1, 2]
    assert [log.read_text() for log in logs] == ["one\n", "two\n", "three\n"]


def test_workers_share_the_cpus_this_process_may_use_not_all_the_machine_has(tmp_path, monkeypatch):
    """In a container or under taskset a process may use fewer CPUs than the machine reports: each worker's
    OMP_NUM_THREADS is its share of the usable ones (2 workers of 32 threads each on 2 usable CPUs would be
    oversubscribed many times over)."""
    from core import launch

    monkeypatch.setattr(launch.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [launch.threads_per_worker(workers) for workers in (1, 2, 3, 8)] == [4, 2, 1, 1]
    logs = [tmp_path / f"{index}.log" for index in range(2)]
    assert launch.run_commands([["sh", "-c", "echo $OMP_NUM_THREADS"]] * 2, workers=2, logs=logs) == [0, 0]
    assert [log.read_text() for log in logs] == ["2\n", "2\n"]


def test_grid_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("config: tests/tiny_digits.yaml\nnetworks: [shufflenet]\ndatasets: [MNIST]\nmodalities: [std]\n")
    result = run_script("grid.py", f"--grid={bad}", "--status", check=False)
    assert result.returncode != 0 and "train_examples: missing" in result.stderr and "['MNIST'] are not among" in \
        result.stderr and "Traceback" not in result.stderr


def write_grid(tmp_path, variants: str):
    path = tmp_path / "variants.yaml"
    path.write_text((REPO / "tests" / "grid_tiny.yaml").read_text().replace("OUTPUT", str(tmp_path / "models"))
                    + variants)
    return path


def test_a_grid_variant_is_a_copy_of_the_grid_in_a_folder_of_its_own(tmp_path):
    grid = Grid.load(write_grid(tmp_path, "variants:\n  fp32:\n    modalities: [std]\n"
                                          "    settings: [precision=fp32]\n"))
    own, copies = grid.cells[:2], grid.cells[2:]
    assert [c.modality for c in own] == ["std", "deepncm"] and all(c.settings == () for c in own)
    assert len(copies) == 1 and copies[0].modality == "std" and copies[0].settings == ("precision=fp32",)
    assert copies[0].output_dir == str(tmp_path / "models" / "fp32")
    assert [c.variant for c in grid.cells] == ["", "", "fp32"]
    status = run_script("grid.py", f"--grid={grid.path}", "--status").stdout
    assert "std [fp32]" in status and "deepncm [" not in status, status


@pytest.mark.parametrize("variants, message", [
    ("variants: [fp32]\n", "variants: expected a mapping"),
    ("variants:\n  ../up:\n    settings: [precision=fp32]\n", "variant '../up': a name of letters"),
    ("variants:\n  fp32: precision=fp32\n", "variant fp32: expected a mapping of grid keys"),
    ("variants:\n  fp32:\n    precision: fp32\n", "variant fp32: unknown keys ['precision']"),
    ("variants:\n  fp32:\n    modalities: [bogus]\n", "variant fp32: modalities: ['bogus'] are not among"),
    ("variants:\n  fp32:\n    networks: []\n", "variant fp32: networks: expected a non-empty list"),
])
def test_bad_grid_variants_are_one_line_errors(tmp_path, variants, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Grid.load(write_grid(tmp_path, variants))


def test_tables_show_missing_cells_as_missing(tmp_path):
    rows = [Row("DIGITS", "shufflenet", "std", 500, [90.0, 92.0], 2), Row("DIGITS", "shufflenet", "std", 1000, [95.0], 3),
            Row("DIGITS", "shufflenet", "encoder_memory", 500, [94.0, 96.0], 2)]
    table = Table.build(rows, "t", ["std", "memory", "encoder_memory"])
    markdown = table.markdown()
    assert "| DIGITS | shufflenet | std | 91.00 ± 1.00 [78.29, 103.71] | 95.00 ± 0.00 [n/a] (1/3) |" in markdown
    assert "| DIGITS | shufflenet | encoder_memory | 95.00 ± 1.00 [82.29, 107.71] | — |" in markdown
    assert "DIGITS,shufflenet,encoder_memory,1000,,,0,,," in table.csv()
    assert "-- \\\\" in table.latex() and "$\\pm$" in table.latex()
    for name, row in (("std", rows[0]), ("encoder_memory", rows[2])):
        folder = tmp_path / "models" / "DIGITS" / name / "shufflenet" / str(row.train_examples)
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "dataset_name": "DIGITS", "model": "shufflenet", "modality": name, "train_examples": row.train_examples,
            "config": {"runs": 2}, "runs": [{"run": i + 1, "accuracy": a} for i, a in enumerate(row.values)]}))
    out = run_script("tables.py", f"--root={tmp_path / 'models'}", f"--output={tmp_path / 'out' / 'digits'}").stdout
    assert "| DIGITS | shufflenet | std | 91.00 ± 1.00 [78.29, 103.71] |" in out
    for suffix in ("md", "csv", "tex", "png"):
        assert (tmp_path / "out" / f"digits_accuracy.{suffix}").is_file()
    assert (tmp_path / "out" / "digits_epoch_seconds.md").is_file()
    result = run_script("tables.py", f"--root={tmp_path / 'models'}", "--variant=fp32", check=False)
    assert result.returncode == 1 and "none of the 2 experiments" in result.stderr and "Traceback" not in result.stderr


def write_results(folder, modality, values):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "dataset_name": "DIGITS", "model": "shufflenet", "modality": modality, "train_examples": 500,
        "config": {"runs": len(values), "dataset_name": "DIGITS", "datasets": {"DIGITS": {"num_epochs": 10}}},
        "runs": [{"run": i + 1, "accuracy": a, "train_seconds": a - 50} for i, a in enumerate(values)]}))


def test_tables_keep_grid_variants_apart_and_refuse_two_experiments_in_one_cell(tmp_path):
    root = tmp_path / "models"
    write_results(root / "DIGITS" / "encoder_memory" / "shufflenet" / "500", "encoder_memory", [90.0, 92.0])
    write_results(root / "fp32" / "DIGITS" / "encoder_memory" / "shufflenet" / "500", "encoder_memory", [80.0, 82.0])
    table = Table.build(collect_accuracy(root), "t")
    markdown = table.markdown()
    assert "| DIGITS | shufflenet | encoder_memory | 91.00 ± 1.00 [78.29, 103.71] |" in markdown
    assert "| DIGITS | shufflenet | encoder_memory [fp32] | 81.00 ± 1.00 [68.29, 93.71] |" in markdown
    assert markdown.index("encoder_memory |") < markdown.index("encoder_memory [fp32]"), "variants after the grid"
    seconds = Table.build(collect_epoch_seconds(root / "fp32"), "t").markdown()
    assert "| DIGITS | shufflenet | encoder_memory | 3.10 ± 0.10 [1.83, 4.37] |" in seconds  # train_seconds / num_epochs
    out = run_script("tables.py", f"--root={root}", "--variant=none", f"--output={tmp_path / 'out' / 't'}").stdout
    assert "| encoder_memory | 91.00 ± 1.00 [78.29, 103.71] |" in out and "[fp32]" not in out
    # a renamed copy of an experiment folder (a backup, say) fills the same cell as the original
    write_results(root / "DIGITS" / "encoder_memory" / "shufflenet" / "500_backup", "encoder_memory", [1.0])
    with pytest.raises(TableError, match="two experiments fill one cell"):
        Table.build(collect_accuracy(root), "t")
    result = run_script("tables.py", f"--root={root}", f"--output={tmp_path / 'out' / 't'}", check=False)
    assert result.returncode == 1 and "error: two experiments fill one cell" in result.stderr
    assert "500_backup" in result.stderr and "Traceback" not in result.stderr


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "train.py", "--modality=encoder_memory",
            f"--config={TINY}", SMALL_MLP, *args]


@pytest.mark.slow
def test_torchrun_two_processes_rank_zero_alone_writes_and_an_interrupted_run_resumes(tmp_path):
    """Two launches, not three: the interrupted run is the reference's own folder as it stood mid-run (its state
    file, written by an atomic rename, and its lock, whose ranks are gone by the time it resumes), as a run killed
    at that moment leaves it."""
    folder = tmp_path / "reference" / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    interrupted = tmp_path / "interrupted" / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    reference = subprocess.Popen(torchrun("--epochs=2", f"--output_dir={tmp_path / 'reference'}"), cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while True:
        try:
            state = (folder / "1.state.pt").read_bytes()
            break
        except FileNotFoundError:
            assert reference.poll() is None and time.time() < deadline, "training ended before its state was seen"
            time.sleep(0.02)
    interrupted.mkdir(parents=True)
    (interrupted / "1.state.pt").write_bytes(state)
    if (folder / "1.lock").is_file():
        (interrupted / "1.lock").write_bytes((folder / "1.lock").read_bytes())
    stdout, stderr = reference.communicate(timeout=240)
    assert reference.returncode == 0, stderr
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["1.json", "1.pt", "results.json"]
    expected = json.loads((folder / "1.json").read_text())
    assert expected["ranks"] == 2 and 0 <= expected["accuracy"] <= 100 and stdout.count("Run:1 |") == 1
    # the interrupted data-parallel run resumes from its last epoch, and ends as the uninterrupted one
    resumed = subprocess.run(torchrun("--epochs=2", f"--output_dir={tmp_path / 'interrupted'}", "--continue_train"),
                             cwd=REPO, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert "Run 1: resuming after epoch" in resumed.stdout, resumed.stdout + resumed.stderr[-3000:]
    got = json.loads((interrupted / "1.json").read_text())
    assert (got["accuracy"], got["loss"]) == (expected["accuracy"], expected["loss"])
    assert not (interrupted / "1.lock").exists() and not (interrupted / "1.state.pt").exists()


# The grids behind the README's tables that were computed on a CPU: their commands must repeat those numbers, so
# nothing in them may be left to a measurement of the machine they run on (core/autotune.py).
README_CPU_GRIDS = ("grid_digits", "grid_related_digits", "grid_encoders_digits", "grid_vit_digits",
                    "grid_paired_cifar_subset")


def test_every_grid_of_the_repository_loads():
    names = sorted(path.stem for path in (REPO / "config").glob("grid_*.yaml"))
    assert set(README_CPU_GRIDS) <= set(names)
    for name in names:
        assert Grid.load(REPO / "config" / f"{name}.yaml").cells, name


def test_the_quickstart_pins_its_levers():
    """The README's quickstart table: make demo must repeat it on the same CPU kind, whatever a measurement of the
    machine would choose (its levers are near ties on the README's machine)."""
    from core.config import load_config
    config = load_config(REPO / "config" / "digits.yaml")
    assert (config.precision, config.memory_format) == ("fp32", "channels_last")


@pytest.mark.parametrize("name", README_CPU_GRIDS)
def test_the_grids_of_the_readmes_cpu_tables_pin_every_measured_lever(name):
    from core.report import depthwise_layers
    for cell in Grid.load(REPO / "config" / f"{name}.yaml").cells:
        config, where = cell.run_config, f"{name}: {cell.model} {cell.modality} {cell.variant}"
        assert config.precision != "auto" and config.memory_format != "auto", where
        if config.precision == "bf16" and config.depthwise_fp32 == "auto":
            layers = depthwise_layers(config.to_dict(), cell.modality)
            assert layers == set(), f"{where}: depthwise_fp32: auto measures " + (
                f"{len(layers)} depthwise convolutions" if layers else "a model that could not be built")
