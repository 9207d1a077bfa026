"""Re-evaluate one saved model (ours or the paper's) on its test set.

    python eval.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt
    python eval.py --path_model=<PATH_MODEL> --dataset=<NAME_DATASET> --modality=<MODALITY>   # the paper's form

Memory models: mean accuracy over 5 memory draws, memory from the same reduced training subset the
run trained on (same seed). Dataset, modality, model... come from the checkpoint; flags fill in what a
paper checkpoint lacks, and a flag that contradicts the checkpoint is an error.
"""
from absl import app, flags

import aux
from core import config, evaluation

flags.DEFINE_string("path_model", None, "checkpoint file (*.pt)")
flags.DEFINE_string("dataset", None, "dataset name (read from the checkpoint when recorded there)")
flags.DEFINE_enum("modality", None, list(config.modalities()), "modality (read from the checkpoint when recorded there)")
flags.DEFINE_string("model", None, "network name (read from the checkpoint when recorded there)")
flags.DEFINE_integer("train_examples", None, "training subset size (read from the checkpoint when recorded there)")
flags.DEFINE_integer("seed", None, "run seed (default: the checkpoint's; for a paper checkpoint <r>.pt, r-1)")
aux.define_evaluation_flags()
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    loaded = aux.load_for_evaluation(
        FLAGS.path_model, FLAGS.config, FLAGS.dataset_dir, FLAGS.device, FLAGS.batch_size_test, draws=FLAGS.draws,
        model_name=FLAGS.model, modality=FLAGS.modality, dataset_name=FLAGS.dataset,
        train_examples=FLAGS.train_examples, seed=FLAGS.seed)
    checkpoint = loaded.checkpoint
    result = evaluation.evaluate(loaded.model, loaded.cache, FLAGS.batch_size_test)
    print(f"Model:{checkpoint.model_name} | Modality:{checkpoint.modality} | Dataset:{checkpoint.dataset_name} | "
          f"SizeTrain:{checkpoint.train_examples} | Seed:{checkpoint.seed}")
    draws = "" if len(result.accuracies) == 1 else f" (mean of {len(result.accuracies)} memory draws)"
    print(f"Accuracy:{result.accuracy:.2f}{draws} | Loss:{result.loss:.4f}")


if __name__ == "__main__":
    app.run(main)
