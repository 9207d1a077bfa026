"""Explanation accuracy of the models of one experiment folder (the paper's Tables 5-6), for the memory heads
(memory, encoder_memory, protonet, matching).

    python explanation_accuracy.py --path_models=models/DIGITS/encoder_memory/shufflenet/1000/
    python explanation_accuracy.py --path_models=<DIR> --memory_pool=full    # memory as the paper's code drew it

For each model, averaged over 5 memory draws (same data, subset and seed as eval.py):
- explanation accuracy: % of test images whose highest-weight memory sample is predicted in the same
  class as the image (the memory sample's prediction uses another memory draw, as the paper);
- counterfactual accuracy: the model's accuracy on the images whose top memory sample is predicted in
  another class; example accuracy: on the images whose top memory sample is an explanation by example.
Mean and std over the models are printed and written as JSON (tables.py turns it into Tables 5-6).
"""
import dataclasses
from pathlib import Path

from absl import app, flags

import aux
import explanations
from explanations import records
from core import results
from base.files import atomic_write_json, writable_folder
from core.experiment import refuse_managed_output

flags.DEFINE_string("path_models", None, "folder with the checkpoints (*.pt) of a memory head (memory, "
                    "encoder_memory, protonet, matching)")
flags.DEFINE_enum("memory_pool", "run", list(explanations.MEMORY_POOLS), "where memory sets are drawn from: run (the "
                  "run's own memory pool, the principled choice) or full (the paper's code: the whole training set "
                  "but the validation split; this reproduces the paper's Tables 5-6)")
flags.DEFINE_string("output_json", None, "where to write the numbers (default: <path_models>/explanation_accuracy.json, "
                    "explanation_accuracy_full.json with --memory_pool=full: each pool keeps its own)")
aux.define_evaluation_flags(explains=True)
flags.mark_flag_as_required("path_models")
FLAGS = flags.FLAGS


def fmt(value):
    return "n/a" if value is None else f"{value:.2f}"
INTERRUPTED = "nothing was written (the JSON file is written at the end): run the same command again"


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    checkpoints = aux.load_experiment(FLAGS.path_models, FLAGS)
    default_name = "explanation_accuracy.json" if FLAGS.memory_pool == "run" else "explanation_accuracy_full.json"
    output_json = Path(FLAGS.output_json or Path(FLAGS.path_models) / default_name)
    writable_folder(refuse_managed_output(output_json, "--output_json").parent)
    for checkpoint in checkpoints:  # refuse std models before any data are read
        explanations.require_memory_model(checkpoint, "explanation_accuracy.py")
    dataset_cache, rows = {}, []
    for checkpoint in checkpoints:
        pool = explanations.paper_memory_pool if FLAGS.memory_pool == "full" else None
        loaded = aux.load_for_evaluation(checkpoint, FLAGS, dataset_cache, memory_pool=pool)
        problem = records.check_models(loaded, FLAGS.strict, explanations.ExplanationError)
        scores = explanations.explanation_scores(loaded.model, loaded.cache)
        row = {"checkpoint": str(checkpoint.path), "seed": checkpoint.seed,
               "explanation_accuracy": explanations.mean_or_none([s.explanation_accuracy for s in scores]),
               "counterfactual_accuracy": explanations.mean_or_none([s.counterfactual_accuracy for s in scores]),
               "example_accuracy": explanations.mean_or_none([s.example_accuracy for s in scores]),
               "draws": [dataclasses.asdict(s) for s in scores], **({"uninformative": problem} if problem else {})}
        rows.append(row)
        print(f"Model:{checkpoint.path.name} | explanation accuracy {fmt(row['explanation_accuracy'])} | "
              f"counterfactual acc {fmt(row['counterfactual_accuracy'])} | example acc {fmt(row['example_accuracy'])}",
              flush=True)

    summary = {}
    for key, name in (("explanation_accuracy", "explanation"), ("counterfactual_accuracy", "counterfactual"),
                      ("example_accuracy", "example")):
        values = [r[key] for r in rows if r[key] is not None]
        summary[f"{name}_mean"], summary[f"{name}_std"] = results.mean_std(values)
    print(f"\nExplanation accuracy (mean):{fmt(summary['explanation_mean'])}\t(std_dev):{fmt(summary['explanation_std'])}"
          f"\t  counterfactual acc mean:{fmt(summary['counterfactual_mean'])}\t  counterfactual std:"
          f"{fmt(summary['counterfactual_std'])}\t  example acc mean:{fmt(summary['example_mean'])}\t  example std:"
          f"{fmt(summary['example_std'])}")
    for name in ("counterfactual", "example"):
        if summary[f"{name}_mean"] is None:
            print(f"No {name}s: no test image had a top memory sample of that kind, so its accuracy is undefined (n/a).")
    atomic_write_json({"models": rows, **summary, "settings": {"memory_pool": FLAGS.memory_pool,
                                                                "draws": loaded.cache.draws}}, output_json)
    print(f"Written: {output_json}")


if __name__ == "__main__":
    app.run(main)
