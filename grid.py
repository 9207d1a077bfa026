"""The paper's grids as one command: every run of config/grid_*.yaml, printed, run locally, or run as one task
of a job array; and a dry run that says what is done, running, stale, partial or missing.

    python grid.py --grid=config/grid_table1.yaml --status             # dry run: nothing is started
    python grid.py --grid=config/grid_table1.yaml --print | xargs -P 4 -I{} sh -c '{}'   # or GNU parallel
    python grid.py --grid=config/grid_table1.yaml --workers=4          # locally, 4 runs at a time
    python grid.py --grid=config/grid_table1.yaml --task=7             # the 7th run (a job array's task id)
    sbatch --array=1-3240%50 scripts/slurm_grid_array.sh config/grid_table1.yaml

Each run is `train.py --run=r --continue_train` in its experiment folder: finished runs are skipped, partial ones
resumed, and a run another process trains is refused (its lock names the process). Then `python tables.py`.
"""
from absl import app, flags

import aux
from core import launch
from core.config import ConfigError
from core.grid import Grid

flags.DEFINE_string("grid", None, "the grid (config/grid_*.yaml)")
flags.DEFINE_bool("status", False, "list the state of every run (done, running, stale, partial, missing) and stop")
flags.DEFINE_bool("print", False, "print one shell command per run that is not done, and stop")
flags.DEFINE_integer("workers", None, "run every run that is not done, this many at a time", lower_bound=1)
flags.DEFINE_integer("task", None, "run the task-th run of the grid (1-based; for job arrays)", lower_bound=1)
flags.mark_flag_as_required("grid")
flags.register_multi_flags_validator(
    ["status", "print", "workers", "task"], lambda v: sum([v["status"], v["print"], v["workers"] is not None,
                                                           v["task"] is not None]) <= 1,
    "give at most one of --status, --print, --workers, --task")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    grid = Grid.load(FLAGS.grid)
    runs = list(grid.runs())
    if FLAGS.task is not None:
        if FLAGS.task > len(runs):
            raise ConfigError(f"--task={FLAGS.task}: the grid has {len(runs)} runs")
        codes = launch.run_commands([runs[FLAGS.task - 1].command()], workers=1, cwd=str(aux.REPO))
        raise SystemExit(codes[0])
    todo = [run for run in runs if run.state() != "done"]
    if FLAGS.print:
        for run in todo:
            print(run.shell())
        return
    if FLAGS.workers:
        busy = [run for run in todo if run.state() == "running"]
        todo = [run for run in todo if run.state() != "running"]
        print(f"{len(runs) - len(todo) - len(busy)} runs done, {len(busy)} running elsewhere, {len(todo)} to run with "
              f"{FLAGS.workers} workers ({launch.threads_per_worker(FLAGS.workers)} CPU threads each)", flush=True)
        codes = launch.run_commands([run.command() for run in todo], FLAGS.workers, cwd=str(aux.REPO), quiet=True)
        failed = [run for run, code in zip(todo, codes) if code]
        for run in failed:
            print(f"failed: {run.shell()}")
        print(f"{len(todo) - len(failed)} runs finished, {len(failed)} failed; the state: {grid.summary()}")
        raise SystemExit(1 if failed else 0)
    print_status(grid, runs)


def print_status(grid, runs):
    """The dry run: one line per cell with the state of its runs, then the totals."""
    modalities = [f"{cell.modality} [{cell.variant}]" if cell.variant else cell.modality for cell in grid.cells]
    width = max(15, *map(len, modalities))
    for cell, modality in zip(grid.cells, modalities):
        states = [run.state() for run in runs if run.cell == cell]
        marks = "".join({"done": "+", "running": "R", "stale": "S", "partial": "p", "missing": "."}[s] for s in states)
        print(f"{cell.dataset:8} {cell.model:13} {cell.train_examples:>6} {modality:{width}} {marks}  "
              f"{cell.folder.path}")
    print(f"\n{len(runs)} runs: " + ", ".join(f"{count} {state}" for state, count in sorted(grid.summary().items()))
          + "   (+ done, R running, S stale lock: its process died, p partial: resumable, . missing)")


if __name__ == "__main__":
    app.run(main)
