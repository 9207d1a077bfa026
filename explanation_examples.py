"""Explanations by example, Memory Wrap's against a twin system (CHP), kNN and random, for the models of one
experiment folder (the paper's run_exp_by_examples.py; explanations/by_example.py has the methods and metrics).

    python explanation_examples.py --path_models=models/DIGITS/encoder_memory/shufflenet/1000/
    python explanation_examples.py --path_models=<DIR> --metric=input        # one metric (default: both)

Each method picks one example per test image from the batch's memory set; lower scores are better. Prints mean ±
std over the models per method and metric, and writes <DIR>/explanation_examples.json (tables.py reads it), with
the example each method picks for the first test images, named by their sources.
"""
from pathlib import Path

from absl import app, flags

import aux
import explanations
from base.files import atomic_write_json, writable_folder
from core.experiment import refuse_managed_output
from core import results
from explanations import by_example, records

flags.DEFINE_string("path_models", None, "folder with the checkpoints (*.pt) of a memory head (memory, encoder_memory, "
                    "protonet, matching)")
flags.DEFINE_enum("metric", "both", ["input", "prediction", "both"], "input or prediction non-representativeness")
flags.DEFINE_bool("paper_code", False, "the paper code's protocol: an image without an example takes the first sample "
                  "of the order, and batch means are averaged")
flags.DEFINE_string("output_json", None, "where to write the numbers (default: <path_models>/explanation_examples.json)")
aux.define_evaluation_flags(explains=True)
flags.mark_flag_as_required("path_models")
FLAGS = flags.FLAGS
PAPER_BATCH_SIZE = 256  # the paper's run_exp_by_examples.py: a memory draw per 256 test images
INTERRUPTED = "nothing was written (the JSON file is written at the end): run the same command again"


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    checkpoints = aux.load_experiment(FLAGS.path_models, FLAGS)
    output_json = Path(FLAGS.output_json or Path(FLAGS.path_models) / "explanation_examples.json")
    writable_folder(refuse_managed_output(output_json, "--output_json").parent)
    for checkpoint in checkpoints:  # refuse std and prototype heads before any data are read
        explanations.require_memory_model(checkpoint, "explanation_examples.py")
    metrics = list(by_example.METRICS) if FLAGS.metric == "both" else [FLAGS.metric]
    rows, dataset_cache = [], {}
    for checkpoint in checkpoints:
        loaded = aux.load_for_evaluation(checkpoint, FLAGS, dataset_cache, batch_size=PAPER_BATCH_SIZE)
        problem = records.check_models(loaded, FLAGS.strict, explanations.ExplanationError)
        run = by_example.run_scores(loaded.model, loaded.cache, FLAGS.paper_code)
        sources, _ = loaded.data.pool_sources()
        named = [{"test": loaded.data.test_set.source(item["test"]),
                  **{method: sources[position] if position is not None else None
                     for method, position in item.items() if method != "test"}} for item in run.picked]
        rows.append({"checkpoint": str(checkpoint.path), "seed": checkpoint.seed, "images": run.images,
                     "skipped": run.skipped, **{metric: run.scores[metric] for metric in metrics},
                     "examples": named, **({"uninformative": problem} if problem else {})})
        print(f"Model:{checkpoint.path.name} | " + " | ".join(
            f"{metric}: " + " ".join(f"{m} {v:.4f}" for m, v in run.scores[metric].items()) for metric in metrics)
            + f" | skipped {run.skipped} of {run.images + run.skipped}", flush=True)
    methods = list(rows[0][metrics[0]])
    content, kept = records.merge_parts(output_json, {"models": rows, "methods": methods, "paper_code": FLAGS.paper_code,
                                                      "modality": checkpoints[0].modality}, metrics,
                                        {"paper_code": FLAGS.paper_code, "draws": loaded.cache.draws})
    summary = {metric: {method: dict(zip(("mean", "std"), results.mean_std([r[metric][method] for r in rows])))
                        for method in methods} for metric in content["settings"]}
    for metric in metrics:
        print(f"\n{by_example.METRICS[metric]} (lower is better), mean ± std over {len(rows)} models:")
        for method in by_example.PICKERS:
            numbers = summary[metric].get(method)
            print(f"  {method:12} " + (f"{numbers['mean']:.4f} ± {numbers['std']:.4f}" if numbers else
                                       f"not applicable: a {checkpoints[0].modality} head has no last linear layer"))
    skipped = sum(r["skipped"] for r in rows)
    if skipped:
        print(f"{skipped} images had no memory sample predicted in their class: no example, not scored (the paper's "
              f"code gave them the first sample of the order; --paper_code does)")
    atomic_write_json({**content, "summary": summary}, output_json)
    print(f"Written: {output_json}" + "".join(f"; {note}" for note in kept))


if __name__ == "__main__":
    app.run(main)
