"""Evaluate the models of one experiment folder (the runs its results.json lists): mean and std of accuracy;
for memory models also the paper's majority-vote baselines (among the memory samples with positive weight: the
majority of their predicted classes, MVO, and of their true labels, MVY). A folder that mixes experiments
(modalities, datasets, networks, training sizes) is refused.

    python eval_dir.py --path=models/DIGITS/encoder_memory/shufflenet/1000/
"""
import time

from absl import app, flags

import aux
from core import evaluation, results
from base.files import atomic_write_json
from core.experiment import refuse_managed_output

flags.DEFINE_string("path", None, "folder with the *.pt checkpoints of one experiment")
flags.DEFINE_string("output_json", None, "also write the numbers to this JSON file")
aux.define_evaluation_flags()
flags.mark_flag_as_required("path")
FLAGS = flags.FLAGS

COLUMNS = (("accuracy", "Accuracy", "Std Dev"), ("mvo_accuracy", "MVO Accuracy", "Std Dev"),
           ("mvy_accuracy", "MVY Accuracy", "Std Dev"))


@aux.exit_on_user_errors
def main(argv):
    del argv
    if FLAGS.output_json:
        refuse_managed_output(FLAGS.output_json, "--output_json")
    rows, dataset_cache = [], {}
    for checkpoint in aux.load_experiment(FLAGS.path, FLAGS):
        start = time.time()
        loaded = aux.load_for_evaluation(checkpoint, FLAGS, dataset_cache)
        result = evaluation.evaluate(loaded.model, loaded.cache, majority=loaded.model.uses_memory)
        rows.append({"checkpoint": str(checkpoint.path), "seed": checkpoint.seed, "modality": checkpoint.modality,
                     "accuracy": result.accuracy, "mvo_accuracy": result.majority_vote_predictions,
                     "mvy_accuracy": result.majority_vote_labels})
        print(line(checkpoint.path.stem, rows, (time.time() - start) / 60), flush=True)
    summary = {}
    for key, _, _ in COLUMNS:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            name = key.replace("_accuracy", "").replace("accuracy", "")
            summary[f"{name}_mean" if name else "mean"], summary[f"{name}_std" if name else "std"] = results.mean_std(values)
    print(f"\nModels:{len(rows)} | " + " | ".join(f"{k}:{v:.2f}" for k, v in summary.items()))
    if FLAGS.output_json:
        atomic_write_json({"models": rows, **summary}, FLAGS.output_json)


def line(name, rows, minutes):
    """The paper's eval_dir line for the latest model, with running mean/std over the models so far."""
    text = f"Run:{name} | Accuracy {rows[-1]['accuracy']:.2f}"
    for key, label, std_label in COLUMNS:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            mean, std = results.mean_std(values)
            text += f" | {'Mean Accuracy' if key == 'accuracy' else label}:{mean:.2f} | {std_label}:{std:.2f}"
    return text + f"\tE:{minutes:.2f}min"


if __name__ == "__main__":
    app.run(main)
