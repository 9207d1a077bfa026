"""Counterfactuals of the models of one experiment folder: Memory Wrap's own (the top memory sample predicted in
another class) or CFProto's (prototype-guided, post-hoc) towards the same class, scored with IM1 / IM2 and
sparsity (the paper's run_counterfactuals.py; explanations/counterfactuals.py has the algorithms and scores).

    python train_autoencoders.py --path_models=models/DIGITS/encoder_memory/shufflenet/1000/     # first
    python counterfactuals.py --path_models=models/DIGITS/encoder_memory/shufflenet/1000/ --algo=memory
    python counterfactuals.py --path_models=<DIR> --algo=proto --num_images=100

Prints IM1, IIM1, IM2, L1, L0 and seconds per counterfactual, mean ± std over the models, and writes
<DIR>/counterfactuals_<algo>.json (tables.py reads it). Lower IM1 and IM2 are better.
"""
from pathlib import Path

import numpy as np
from absl import app, flags
from tqdm import tqdm

import aux
from core.config import MAX_IMAGES, MAX_ITERATIONS
import explanations
from base.files import atomic_write_json, writable_folder
from core.experiment import refuse_managed_output
from core import results
from explanations import autoencoders, counterfactuals, records

flags.DEFINE_string("path_models", None, "folder with the checkpoints (*.pt) of a memory head")
flags.DEFINE_string("algo", None, f"one of {list(counterfactuals.GENERATORS)}: memory (Memory Wrap's) or proto (CFProto)")
flags.DEFINE_integer("num_images", None, "the first N test images (default: every one, as the paper)", lower_bound=1,
                     upper_bound=MAX_IMAGES)
flags.DEFINE_integer("max_iterations", counterfactuals.CFProtoSettings.max_iterations, "CFProto's iterations (the "
                     "paper's port: 1000)", lower_bound=1, upper_bound=MAX_ITERATIONS)
flags.DEFINE_string("path_aes", None, "the autoencoders (default: <path_models>/autoencoders/<run>/; given: "
                    "<path_aes>/<seed>/, the paper's layout)")
flags.DEFINE_bool("paper_code", False, "the paper code's protocol, with its defects (see explanations/counterfactuals.py)")
flags.DEFINE_string("output_json", None, "default: <path_models>/counterfactuals_<algo>.json")
aux.define_evaluation_flags(draws=False, explains=True)
flags.mark_flag_as_required("path_models")
flags.mark_flag_as_required("algo")
FLAGS = flags.FLAGS
INTERRUPTED = "nothing was written (the JSON file is written at the end): run the same command again"


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    if FLAGS.algo not in counterfactuals.GENERATORS:
        raise explanations.ExplanationError(f"--algo={FLAGS.algo}: the counterfactual generators are "
                                            f"{list(counterfactuals.GENERATORS)} (memory: Memory Wrap's, proto: CFProto)")
    checkpoints = aux.load_experiment(FLAGS.path_models, FLAGS)
    output_json = Path(FLAGS.output_json or Path(FLAGS.path_models) / f"counterfactuals_{FLAGS.algo}.json")
    writable_folder(refuse_managed_output(output_json, "--output_json").parent)
    for checkpoint in checkpoints:  # refuse std and prototype heads before any data are read
        explanations.require_memory_model(checkpoint, "counterfactuals.py")
    root = Path(FLAGS.path_aes) if FLAGS.path_aes else Path(FLAGS.path_models) / autoencoders.FOLDER
    settings = counterfactuals.CFProtoSettings(max_iterations=FLAGS.max_iterations)
    rows, dataset_cache = [], {}
    for checkpoint in checkpoints:
        loaded = aux.load_for_evaluation(checkpoint, FLAGS, dataset_cache, test_count=FLAGS.num_images,
                                         batch_size=counterfactuals.PAPER_BATCH_SIZE)
        problem = records.check_models(loaded, FLAGS.strict, explanations.ExplanationError)
        folder = autoencoders.run_folder(root, checkpoint, paper_layout=FLAGS.path_aes is not None)
        nets = autoencoders.load_for_run(checkpoint, folder, loaded.data.num_classes, loaded.data.device)
        with tqdm(total=len(loaded.cache.test_labels), desc=f"run {checkpoint.path.stem}: {FLAGS.algo} "
                  f"counterfactuals", unit="image", disable=None) as bar:
            run = counterfactuals.run_counterfactuals(loaded.model, loaded.cache, loaded.data, FLAGS.algo, nets,
                                                      settings, FLAGS.paper_code, bar)
        rows.append({"checkpoint": str(checkpoint.path), "seed": checkpoint.seed, "counterfactuals": run.counterfactuals,
                     "images": run.images, "skipped": run.skipped, "not_found": run.not_found, **run.scores,
                     "per_image": {"image": run.images_scored, **{name: [round(v, 6) for v in values]
                                                                  for name, values in run.per_counterfactual.items()}},
                     **({"uninformative": problem} if problem else {})})
        print(f"Model:{checkpoint.path.name} | " + " | ".join(f"{name} {value:.4f}" for name, value in run.scores.items())
              + f" | {run.counterfactuals} counterfactuals of {run.images} images ({run.skipped} without a memory "
              f"counterfactual, {run.not_found} not found)", flush=True)
    scored = [r for r in rows if r["counterfactuals"]]
    summary = {name: dict(zip(("mean", "std"), results.mean_std([r[name] for r in scored])))
               for name in counterfactuals.SCORES}
    print(f"\n{FLAGS.algo} counterfactuals, mean ± std over {len(scored)} models (IM1, IM2: lower is better):")
    for name, numbers in summary.items():
        print(f"  {name:8} " + (f"{numbers['mean']:.4f} ± {numbers['std']:.4f}" if scored else "n/a"))
    skipped, not_found = sum(r["skipped"] for r in rows), sum(r["not_found"] for r in rows)
    print(f"Images without a memory counterfactual (skipped, as the paper): {skipped} of "
          f"{sum(r['images'] for r in rows)}" + (f"; CFProto found none for {not_found}" if FLAGS.algo == "proto" else ""))
    atomic_write_json({"algo": FLAGS.algo, "models": rows, "summary": summary, "paper_code": FLAGS.paper_code,
                       "modality": checkpoints[0].modality, "max_iterations": FLAGS.max_iterations,
                       "settings": {"num_images": FLAGS.num_images, "max_iterations": FLAGS.max_iterations,
                                    "paper_code": FLAGS.paper_code, "path_aes": FLAGS.path_aes},
                       "mean_counterfactuals": float(np.mean([r["counterfactuals"] for r in rows]))}, output_json)
    print(f"Written: {output_json}")


if __name__ == "__main__":
    app.run(main)
