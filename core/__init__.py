"""The library under the scripts, one module per concern (docs/design.md draws them):

    config/          the configuration: choices, schema (+ parse), reading files and flags, comparison, reference
    runner.py        an experiment's runs: checks, data, folder, levers, then each run trained, evaluated, saved
    execution.py     how a run computes: the levers set, measured (autotune.py, layer_precision.py) or cached
    runtime.py       seeds and RNG state, devices, precision and memory format, the allocator
    checkpoints.py   the checkpoint schema (RunMetadata), Checkpoint, the resumable training state
    export.py        a checkpoint with its memory pool, as one file to hand over
    experiment.py    an experiment's folder: records, locks, results.json, what a rerun moves aside
    evaluation.py    features encoded once (FeatureCache), memory passes, accuracy, majority votes
    history.py       a run's per-epoch history: its record, TensorBoard, a console line
    results.py       mean and std, chance, the paper's run and summary lines
    collect.py, tables.py, paired.py   rows of experiment folders, the tables, paired differences with intervals
    report.py        the HTML report (templates/report.html.j2)
    grid.py, launch.py, distributed.py   grids of runs, worker processes, torchrun
    class_metric.py  class metrics for metric-guided prototypes

Nothing is re-exported here: import the module you need (``from core import config``). training.py (one run's
loop) stands beside this package.
"""
