"""Integrated Gradients heatmaps (captum) for the input and its top memory samples, as the paper.

    python generate_heatmaps.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt --batch_size_test=3

For the memory heads (memory, encoder_memory, protonet, matching). Target: the predicted class; baselines:
white images for the input and the memory (--baseline=paper: the paper code's tensor of ones). One PNG per
batch: a row per input with the input and its attribution, the top explanation by example and its
attribution, the top counterfactual and its attribution (weights in the titles; a missing category
leaves its cells empty), blended over the image as the paper's figures (--sign). Saved under
images/saliency/<DATASET>/<MODALITY>/<MODEL>/. captum's convergence delta is printed per input, with a
warning when it exceeds 5% of the output difference.
"""
import torch
from absl import app, flags
from tqdm import tqdm

import aux
from core.config import MAX_IMAGES, MAX_STEPS
import explanations
from explanations import records
from core.evaluation import eval_generators

flags.DEFINE_string("path_model", None, "checkpoint (*.pt) of a memory head (memory, encoder_memory, protonet, matching)")
flags.DEFINE_string("num_batches", "1", "how many figures (batches of the test set, from the first), or 'all'")
flags.register_validator("num_batches", lambda v: v == "all" or (v.isdigit() and 1 <= int(v) <= MAX_IMAGES),
                         f"--num_batches must be a whole number from 1 to {MAX_IMAGES}, or 'all'")
flags.DEFINE_integer("n_steps", 40, "Integrated Gradients steps (the paper's code: 40)", lower_bound=1,
                     upper_bound=MAX_STEPS)
flags.DEFINE_integer("internal_batch_size", 25, "IG steps per forward pass (each step encodes 1 input + up to 2 "
                     "memory images)", lower_bound=1)
flags.DEFINE_enum("baseline", "white", list(explanations.BASELINES), "IG baseline: white (the paper's text) or "
                  "paper (its code: ones in normalised space)")
flags.DEFINE_enum("sign", "positive", list(explanations.SIGNS), "which attributions the heat maps show (the "
                  "paper: positive)")
flags.DEFINE_string("output_dir", "images/saliency", "root folder of the PNGs")
aux.define_evaluation_flags(draws=False, explains=True)
flags.FLAGS.set_default("batch_size_test", 3)  # inputs per figure
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS

@aux.exit_on_user_errors(interrupted="the figures written so far are kept: run the same command again for all of them")
def main(argv):
    del argv
    loaded, folder = aux.load_for_explanation(FLAGS, FLAGS.output_dir, encode_now=False, what="generate_heatmaps.py")
    records.check_models(loaded, FLAGS.strict, explanations.ExplanationError)
    data = loaded.data
    generator, auxiliary = eval_generators(loaded.checkpoint.seed)
    deltas = []
    available = -(-len(data.test_labels) // FLAGS.batch_size_test)
    batches = available if FLAGS.num_batches == "all" else min(int(FLAGS.num_batches), available)
    progress = tqdm(total=min(batches * FLAGS.batch_size_test, len(data.test_labels)), desc="heatmaps", unit="image",
                    disable=None)
    for batch in range(batches):
        indices = torch.arange(batch * FLAGS.batch_size_test,
                               min((batch + 1) * FLAGS.batch_size_test, len(data.test_labels)))
        images, labels = data.test_batch(indices)
        memory, other = data.memory_set(generator), data.memory_set(auxiliary)
        checks = explanations.heatmap_figure(folder / f"batch_{batch}.png", loaded.model, data, images, labels, memory,
                                             other, FLAGS.n_steps, FLAGS.internal_batch_size, FLAGS.baseline,
                                             FLAGS.sign, int(indices[0]), progress)
        for index, (delta, difference) in zip(indices.tolist(), checks):
            deltas.append(delta)
            progress.write(f"image {index}: IG convergence delta {delta:.4f} (output difference {difference:.4f})"
                           + (" -- large: raise --n_steps" if explanations.not_converged(delta, difference) else ""))
    progress.close()
    print(f"{batches} heatmap figures written to {folder}; IG convergence delta: max {max(deltas):.4f}, "
          f"mean {sum(deltas) / len(deltas):.4f}")


if __name__ == "__main__":
    app.run(main)
