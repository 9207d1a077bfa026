"""Train the paper's models over seeded runs and print the paper's Table 1 line.

    python train.py --modality=encoder_memory                       # config/train.yaml
    python train.py --modality=std --config=config/digits.yaml      # the quickstart
    python train.py --modality=memory --dataset=CIFAR10 --train_examples=1000 --continue_train

Checkpoints: models/<DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES>/<run>.pt and results.json.
"""
from pathlib import Path

from absl import app, flags

import aux
import datasets
import training
from architectures import MODALITIES

flags.DEFINE_enum("modality", None, list(MODALITIES), "std, memory (memory-only baseline) or encoder_memory (Memory Wrap)")
flags.DEFINE_bool("continue_train", False, "resume after the last finished run, and inside an interrupted run from its last epoch")
flags.DEFINE_integer("log_interval", 100, "steps between updates of the progress bar's running loss")
flags.DEFINE_string("config", str(aux.DEFAULT_CONFIG), "YAML config")
flags.DEFINE_string("dataset", None, "override dataset_name: SVHN, CIFAR10, CINIC10 or DIGITS")
flags.DEFINE_string("model", None, "override model")
flags.DEFINE_integer("train_examples", None, "override train_examples")
flags.DEFINE_integer("runs", None, "override runs")
flags.DEFINE_integer("epochs", None, "override num_epochs of the dataset (opt_milestones are scaled to match)")
flags.DEFINE_integer("mem_examples", None, "override mem_examples of the dataset")
flags.DEFINE_integer("val_examples", None, "override val_examples of the dataset")
flags.DEFINE_string("dataset_dir", None, "override dataset_dir")
flags.DEFINE_enum("device", None, ["auto", "cpu", "cuda"], "override device")
flags.DEFINE_enum("memory_source", None, ["subset", "full"], "override memory_source")
flags.DEFINE_enum("precision", None, ["auto", "fp32", "fp16", "bf16"], "override precision")
flags.DEFINE_string("output_dir", "models", "root folder of the checkpoints")
flags.mark_flag_as_required("modality")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    overrides = {name: FLAGS[name].value for name in list(aux.TOP_OVERRIDES) + list(aux.DATASET_OVERRIDES)}
    try:
        config = aux.load_config(FLAGS.config, overrides)
        output_dir = Path(FLAGS.output_dir) / config.dataset_name / FLAGS.modality / config.model / str(config.train_examples)
        training.run_experiment(config, FLAGS.modality, output_dir, FLAGS.continue_train, FLAGS.log_interval)
    except (aux.ConfigError, datasets.DatasetError, aux.CheckpointError, training.TrainingDiverged) as error:
        raise SystemExit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
