"""Re-evaluate saved models (ours or the paper's) on their test set.

    python eval.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt
    python eval.py --path_model=<PATH_MODEL> --dataset=<NAME_DATASET> --modality=<MODALITY>
    python eval.py --path=<PATH> --dir_dataset=datasets/        # the paper's form: a model, or a folder of them

Memory models: mean accuracy over 5 memory draws, memory from the same reduced training subset the
run trained on (same seed). Dataset, modality, model... come from the checkpoint; flags fill in what a
paper checkpoint lacks, and a flag that contradicts the checkpoint is an error.
"""
import time
from pathlib import Path

from absl import app, flags

import aux
from core import evaluation, results

flags.DEFINE_string("path_model", None, "checkpoint file (*.pt)")
flags.DEFINE_string("path", None, "the paper's flag: a checkpoint file, or a folder whose checkpoints are evaluated "
                    "one by one")
aux.define_evaluation_flags()
flags.mark_flags_as_mutual_exclusive(["path_model", "path"], required=True)
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    path = Path(FLAGS.path_model or FLAGS.path)
    if FLAGS.path is not None and path.is_dir():
        accuracies, dataset_cache = [], {}
        for checkpoint in aux.load_experiment(path, FLAGS):  # the paper's eval.py line per model
            start = time.time()
            result = evaluate(checkpoint, dataset_cache)
            accuracies.append(result.accuracy)
            mean, std = results.mean_std(accuracies)
            print(f"Run:{checkpoint.seed + 1} | Accuracy {result.accuracy:.2f} | Mean Accuracy:{mean:.2f} | "
                  f"Std Dev:{std:.2f} |  \tE:{(time.time() - start) / 60:.2f}min", flush=True)
        return
    checkpoint = aux.load_checkpoint(path, FLAGS)
    result = evaluate(checkpoint)
    print(f"Model:{checkpoint.model_name} | Modality:{checkpoint.modality} | Dataset:{checkpoint.dataset_name} | "
          f"SizeTrain:{checkpoint.train_examples} | Seed:{checkpoint.seed}")
    draws = "" if len(result.accuracies) == 1 else f" (mean of {len(result.accuracies)} memory draws)"
    print(f"Accuracy:{result.accuracy:.2f}{draws} | Loss:{result.loss:.4f}")


def evaluate(checkpoint, dataset_cache=None) -> evaluation.Evaluation:
    loaded = aux.load_for_evaluation(checkpoint, FLAGS, dataset_cache)
    return evaluation.evaluate(loaded.model, loaded.cache)


if __name__ == "__main__":
    app.run(main)
