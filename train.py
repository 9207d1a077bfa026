"""Train the paper's models over seeded runs and print the paper's Table 1 line.

    python train.py --modality=encoder_memory                       # config/train.yaml
    python train.py --modality=std --config=config/digits.yaml      # the quickstart
    python train.py --modality=memory --dataset=CIFAR10 --train_examples=1000 --continue_train
    python train.py --modality=encoder_memory --runs_from=1 --runs_to=5       # a shard of the runs
    torchrun --nproc_per_node=4 train.py --modality=encoder_memory            # data-parallel: one run, 4 processes

Checkpoints: models/<DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES>/<run>.pt and results.json.
"""
import os
import sys
from pathlib import Path

from absl import app, flags

import aux
from core import config, launch, runner
from core.distributed import Distributed
from core.experiment import ExperimentFolder

flags.DEFINE_enum("modality", None, list(config.modalities()),
                  "std, memory (memory-only baseline), encoder_memory (Memory Wrap), or another registered head")
flags.DEFINE_bool("continue_train", False, "resume after the last finished run, and inside an interrupted run from its last epoch")
flags.DEFINE_integer("log_interval", 100, "steps between updates of the progress bar's running loss", lower_bound=1)
flags.DEFINE_integer("run", None, "train only this run (1-based; seed run - 1), e.g. one task of a job array",
                     lower_bound=1)
flags.DEFINE_integer("runs_from", None, "train only runs runs_from..runs_to (1-based, inclusive)", lower_bound=1)
flags.DEFINE_integer("runs_to", None, "see --runs_from (default: the config's runs)", lower_bound=1)
flags.DEFINE_integer("parallel_runs", 1, "train the selected runs in this many processes at once (each its own "
                     "seeds; on a CPU they split the cores, on a GPU they share it); results equal a sequential job's",
                     lower_bound=1, upper_bound=1024)
flags.DEFINE_string("config", str(aux.DEFAULT_CONFIG), "YAML config")
flags.DEFINE_string("output_dir", "models", "root folder of the checkpoints")
flags.DEFINE_multi_string("set", [], "set any config key, key=value (repeatable): heads.matching_steps=3, "
                          "optimizer.learning_rate=0.05, CIFAR10.num_epochs=15, self_attention=last_stage")
aux.define_override_flags()
flags.mark_flag_as_required("modality")
FLAGS = flags.FLAGS
INTERRUPTED = ("the finished runs are kept, and the interrupted run's state after its last finished epoch: go on "
               "with the same command and --continue_train")  # what Ctrl-C keeps


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    run_config = config.load_config(FLAGS.config, aux.override_values(FLAGS), FLAGS.set)
    output_dir = (Path(FLAGS.output_dir) / run_config.dataset_name / FLAGS.modality / run_config.model
                  / str(run_config.train_examples))
    runs = selected_runs(run_config.runs)
    distributed = Distributed.from_environment(run_config.device)  # torchrun --nproc_per_node=N train.py ...
    if distributed is not None:
        if FLAGS.parallel_runs > 1:
            raise config.ConfigError("--parallel_runs does not combine with torchrun: one or the other")
        if not distributed.is_main:
            sys.stdout = open(os.devnull, "w")  # rank 0 reports
    try:
        if FLAGS.parallel_runs > 1 and len(runs) > 1:
            run_in_parallel(run_config, output_dir, runs)
        else:
            runner.run_experiment(run_config, FLAGS.modality, output_dir, FLAGS.continue_train, FLAGS.log_interval,
                                  runs=runs, distributed=distributed)
    finally:
        if distributed is not None:
            distributed.finish()


def run_in_parallel(run_config, output_dir, runs) -> None:
    """This command again in FLAGS.parallel_runs processes, each on a contiguous share of the runs."""
    if not run_config.save:
        raise config.ConfigError("--parallel_runs needs save: True (the runs are merged through their records)")
    own = ("parallel_runs", "run", "runs_from", "runs_to")
    argv = [FLAGS[name].serialize() for name in FLAGS if FLAGS[name].present and name not in own]
    chunks = launch.split_runs(runs, FLAGS.parallel_runs)
    print(f"Training runs {runs[0]}..{runs[-1]} in {len(chunks)} processes ({launch.threads_per_worker(len(chunks))} "
          f"CPU threads each): " + ", ".join(f"{c[0]}..{c[-1]}" for c in chunks), flush=True)
    commands = [launch.python_command(sys.argv[0], *argv, f"--runs_from={c[0]}", f"--runs_to={c[-1]}") for c in chunks]
    failed = [f"{c[0]}..{c[-1]}" for c, code in zip(chunks, launch.run_commands(commands, len(chunks))) if code]
    runner.report_summary(ExperimentFolder(output_dir), run_config, FLAGS.modality)
    if failed:
        raise config.ConfigError(f"the processes training runs {failed} failed (their errors are above); "
                                 f"resume them with --continue_train")


def selected_runs(total: int):
    """--run, or --runs_from/--runs_to, or every run."""
    if FLAGS.run is not None:
        if FLAGS.runs_from is not None or FLAGS.runs_to is not None:
            raise config.ConfigError("give either --run or --runs_from/--runs_to, not both")
        return [FLAGS.run]
    first, last = FLAGS.runs_from or 1, FLAGS.runs_to or total
    if first > last:
        raise config.ConfigError(f"--runs_from={first} is after --runs_to={last}")
    return list(range(first, last + 1))


if __name__ == "__main__":
    app.run(main)
