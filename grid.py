"""The paper's grids as one command: every run of config/grid_*.yaml, printed, run locally, or run as one task
of a job array; and a dry run that says what is done, running, stale, partial or missing.

    python grid.py --grid=config/grid_table1.yaml --status             # dry run: nothing is started
    python grid.py --grid=config/grid_table1.yaml --print | xargs -d '\\n' -P 4 -I{} sh -c '{}'   # or GNU parallel
    python grid.py --grid=config/grid_table1.yaml --workers=4          # locally, 4 runs at a time
    python grid.py --grid=config/grid_table1.yaml --task=7             # the 7th run (a job array's task id)
    sbatch --array=1-3240%50 scripts/slurm_grid_array.sh config/grid_table1.yaml

Each run is `train.py --run=r --continue_train` in its experiment folder: finished runs are skipped, partial ones
resumed, and a run another process trains is refused (its lock names the process). Then `python tables.py`.
"""
import sys
import time

from absl import app, flags
from tqdm import tqdm

import aux
from core import launch
from core.config import ConfigError
from core.grid import Grid

flags.DEFINE_string("grid", None, "the grid (config/grid_*.yaml)")
flags.DEFINE_bool("status", False, "list the state of every run (done, running, stale, partial, missing) and stop")
flags.DEFINE_bool("print", False, "print one shell command per run that is not done, and stop")
flags.DEFINE_integer("workers", None, "run every run that is not done, this many at a time", lower_bound=1,
                     upper_bound=1024)
flags.DEFINE_integer("task", None, "run the task-th run of the grid (1-based; for job arrays)", lower_bound=1)
flags.mark_flag_as_required("grid")
flags.register_multi_flags_validator(
    ["status", "print", "workers", "task"], lambda v: sum([v["status"], v["print"], v["workers"] is not None,
                                                           v["task"] is not None]) <= 1,
    "give at most one of --status, --print, --workers, --task")
FLAGS = flags.FLAGS
INTERRUPTED = "every run stays resumable from its last finished epoch: go on with the same command"  # what Ctrl-C keeps


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    grid = Grid.load(FLAGS.grid)
    runs = list(grid.runs())
    if FLAGS.task is not None:
        if FLAGS.task > len(runs):
            raise ConfigError(f"--task={FLAGS.task}: the grid has {len(runs)} runs")
        codes = launch.run_commands([runs[FLAGS.task - 1].command()], workers=1, cwd=str(aux.REPO))
        raise SystemExit(codes[0])
    states = [run.state() for run in runs]
    changed = [run for run, state in zip(runs, states) if state == "changed"]
    todo = [run for run, state in zip(runs, states) if state not in ("done", "changed")]
    if FLAGS.print:
        for run in todo:
            print(run.shell())
        report_changed(changed)
        return
    if FLAGS.workers:
        run_workers(grid, runs, todo, changed)
    print_status(grid, runs)


def report_changed(changed):
    if changed:
        print(f"{len(changed)} finished runs were made with other settings than the grid's now (changed): they are not "
              f"run again; restore the grid's settings, or move their folders away to train them anew "
              f"(e.g. {changed[0].cell.folder.path})", file=sys.stderr)


def run_workers(grid, runs, todo, changed):
    """--workers: every run to do, FLAGS.workers at a time; a line per finished run, its log in its folder."""
    busy = [run for run in todo if run.state() == "running"]
    todo = [run for run in todo if run not in busy]
    print(f"{len(runs) - len(todo) - len(busy) - len(changed)} runs done, {len(busy)} running elsewhere, "
          f"{len(changed)} changed, {len(todo)} to run with {FLAGS.workers} workers "
          f"({launch.threads_per_worker(FLAGS.workers)} CPU threads each)", flush=True)
    logs = [run.cell.folder.path / f"{run.run}.log" for run in todo]
    started = time.time()
    bar = tqdm(total=len(todo), desc="grid", unit="run", disable=None, file=sys.stdout)

    def finished(index, code):
        run, minutes = todo[index], (time.time() - started) / 60
        record = run.cell.folder.record(run.run) if code == 0 else None
        name = f"{run.cell.dataset} {run.cell.model} {run.cell.train_examples} {run.cell.modality}" + (
            f" [{run.cell.variant}]" if run.cell.variant else "")
        if record is not None:
            bar.write(f"done: {name} run {run.run} | accuracy {record['accuracy']:.2f} | "
                      f"{record['train_seconds'] / 60:.1f} min of training | {minutes:.1f} min into the grid")
        elif run.state() == "running":
            bar.write(f"running elsewhere: {name} run {run.run} (another process holds its lock)")
        else:
            tail = "\n    ".join(logs[index].read_text(errors="replace").strip().splitlines()[-4:])
            bar.write(f"failed: {name} run {run.run} (exit {code}); its log: {logs[index]}\n    {tail}")
        bar.update(1)
        sys.stdout.flush()  # a line per run as it ends, also into a file or a pipe (where stdout is block-buffered)

    codes = launch.run_commands([run.command() for run in todo], FLAGS.workers, cwd=str(aux.REPO), logs=logs,
                                finished=finished)
    bar.close()
    failed = [run for run, code in zip(todo, codes) if code and run.state() not in ("done", "running")]
    elsewhere = [run for run in todo + busy if run.state() == "running"]
    print(f"{len(todo) - len(failed) - len(elsewhere)} runs finished, {len(elsewhere)} running elsewhere, "
          f"{len(failed)} failed; the state: {grid.summary()}")
    report_changed(changed)
    raise SystemExit(1 if failed else 0)


def print_status(grid, runs):
    """The dry run: one line per cell with the state of its runs, then the totals."""
    modalities = [f"{cell.modality} [{cell.variant}]" if cell.variant else cell.modality for cell in grid.cells]
    width = max(15, *map(len, modalities))
    for cell, modality in zip(grid.cells, modalities):
        states = [run.state() for run in runs if run.cell == cell]
        marks = "".join({"done": "+", "changed": "C", "running": "R", "stale": "S", "partial": "p", "missing": "."}[s]
                        for s in states)
        print(f"{cell.dataset:8} {cell.model:13} {cell.train_examples:>6} {modality:{width}} {marks}  "
              f"{cell.folder.path}")
    print(f"\n{len(runs)} runs: " + ", ".join(f"{count} {state}" for state, count in sorted(grid.summary().items()))
          + "   (+ done, C changed: finished with other settings than the grid's, R running, S stale lock: its process "
            "died, p partial: resumable, . missing)")


if __name__ == "__main__":
    app.run(main)
