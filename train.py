"""Train the paper's models over seeded runs and print the paper's Table 1 line.

    python train.py --modality=encoder_memory                       # config/train.yaml
    python train.py --modality=std --config=config/digits.yaml      # the quickstart
    python train.py --modality=memory --dataset=CIFAR10 --train_examples=1000 --continue_train

Checkpoints: models/<DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES>/<run>.pt and results.json.
"""
from pathlib import Path

from absl import app, flags

import aux
import training
from core import config

flags.DEFINE_enum("modality", None, list(config.modalities()),
                  "std, memory (memory-only baseline), encoder_memory (Memory Wrap), or another registered head")
flags.DEFINE_bool("continue_train", False, "resume after the last finished run, and inside an interrupted run from its last epoch")
flags.DEFINE_integer("log_interval", 100, "steps between updates of the progress bar's running loss", lower_bound=1)
flags.DEFINE_integer("run", None, "train only this run (1-based; seed run - 1), e.g. one task of a job array",
                     lower_bound=1)
flags.DEFINE_integer("runs_from", None, "train only runs runs_from..runs_to (1-based, inclusive)", lower_bound=1)
flags.DEFINE_integer("runs_to", None, "see --runs_from (default: the config's runs)", lower_bound=1)
flags.DEFINE_string("config", str(aux.DEFAULT_CONFIG), "YAML config")
flags.DEFINE_string("output_dir", "models", "root folder of the checkpoints")
aux.define_override_flags()
flags.mark_flag_as_required("modality")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    run_config = config.load_config(FLAGS.config, aux.override_values(FLAGS))
    output_dir = (Path(FLAGS.output_dir) / run_config.dataset_name / FLAGS.modality / run_config.model
                  / str(run_config.train_examples))
    training.run_experiment(run_config, FLAGS.modality, output_dir, FLAGS.continue_train, FLAGS.log_interval,
                            runs=selected_runs(run_config.runs))


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
