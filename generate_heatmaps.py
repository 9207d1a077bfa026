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
import explanations
from core.evaluation import eval_generators

flags.DEFINE_string("path_model", None, "checkpoint (*.pt) of a memory head (memory, encoder_memory, protonet, matching)")
flags.DEFINE_string("num_batches", "1", "how many figures (batches of the test set, from the first), or 'all'")
flags.register_validator("num_batches", lambda v: v == "all" or (v.isdigit() and int(v) >= 1),
                         "--num_batches must be a positive integer or 'all'")
flags.DEFINE_integer("n_steps", 40, "Integrated Gradients steps (the paper's code: 40)", lower_bound=1)
flags.DEFINE_integer("internal_batch_size", 25, "IG steps per forward pass (each step encodes 1 input + up to 2 "
                     "memory images)", lower_bound=1)
flags.DEFINE_enum("baseline", "white", list(explanations.BASELINES), "IG baseline: white (the paper's text) or "
                  "paper (its code: ones in normalised space)")
flags.DEFINE_enum("sign", "positive", list(explanations.SIGNS), "which attributions the heat maps show (the "
                  "paper: positive)")
flags.DEFINE_string("output_dir", "images/saliency", "root folder of the PNGs")
aux.define_evaluation_flags(draws=False)
flags.FLAGS.set_default("batch_size_test", 3)  # inputs per figure
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS

COLUMNS = ("input", "attribution", "top example", "attribution", "top counterfactual", "attribution")


@aux.exit_on_user_errors
def main(argv):
    del argv
    loaded, folder = aux.load_for_explanation(FLAGS, FLAGS.output_dir, encode_now=False, what="generate_heatmaps.py")
    checkpoint, model, data = loaded.checkpoint, loaded.model, loaded.data
    plt = explanations._pyplot()
    generator, auxiliary = eval_generators(checkpoint.seed)
    classes, deltas = data.classes, []
    available = -(-len(data.test_labels) // FLAGS.batch_size_test)
    batches = available if FLAGS.num_batches == "all" else min(int(FLAGS.num_batches), available)
    progress = tqdm(total=min(batches * FLAGS.batch_size_test, len(data.test_labels)), desc="heatmaps", unit="image",
                    disable=None)
    for batch in range(batches):
        indices = torch.arange(batch * FLAGS.batch_size_test,
                               min((batch + 1) * FLAGS.batch_size_test, len(data.test_labels)))
        images, labels = data.test_batch(indices)
        memory, other = data.memory_set(generator), data.memory_set(auxiliary)
        memory_images, memory_labels = memory.images, memory.labels
        with torch.no_grad():  # every image is encoded once here; IG encodes only what it attributes to
            memory_features = model.encode(memory_images)
            logits, weights = model.classify(model.encode(images), memory_features, memory_labels, return_weights=True)
            memory_predictions = model.classify(memory_features, model.encode(other.images), other.labels).argmax(1)
        predictions = logits.argmax(1)
        figure, axes = plt.subplots(len(indices), len(COLUMNS), figsize=(2 * len(COLUMNS), 2.3 * len(indices)),
                                    dpi=explanations.FIGURE_DPI, squeeze=False)
        for row in range(len(indices)):
            prediction = int(predictions[row])
            tops = {}  # "example" / "counterfactual" -> index of the highest-weight memory sample of that kind
            for name, same_class in (("example", True), ("counterfactual", False)):
                candidates = (weights[row] > 0) & ((memory_predictions == prediction) == same_class)
                if candidates.any():
                    tops[name] = int(torch.where(candidates, weights[row], torch.full_like(weights[row], -1)).argmax())
            selected = list(tops.values())
            input_attribution, memory_attribution, delta, difference = explanations.integrated_gradients(
                model, images[row], memory_images, memory_features, selected, prediction, data.spec, FLAGS.n_steps,
                FLAGS.internal_batch_size, FLAGS.baseline, memory_labels)
            deltas.append(delta)
            print(f"image {int(indices[row])}: IG convergence delta {delta:.4f} (output difference {difference:.4f})"
                  + (" -- large: raise --n_steps" if explanations.not_converged(delta, difference) else ""))
            explanations.show_image(axes[row, 0], images[row], data.spec,
                                    f"label {classes[int(labels[row])]}, predicted {classes[prediction]}")
            explanations.show_attribution(figure, axes[row, 1], input_attribution, images[row], data.spec,
                                          f"IG, delta {delta:.3f}", FLAGS.sign)
            for column, name in ((2, "example"), (4, "counterfactual")):
                axes[row, column].axis("off")
                axes[row, column + 1].axis("off")
                if name in tops:
                    top = tops[name]
                    explanations.show_image(axes[row, column], memory_images[top], data.spec,
                                            f"top {name}\nw={weights[row, top]:.3f}, predicted "
                                            f"{classes[int(memory_predictions[top])]}",
                                            color="green" if name == "example" else "red")
                    explanations.show_attribution(figure, axes[row, column + 1], memory_attribution[selected.index(top)],
                                                  memory_images[top], data.spec, "IG", FLAGS.sign)
            progress.update(1)
        figure.tight_layout()
        explanations.save_figure(figure, folder / f"batch_{batch}.png")
        plt.close(figure)
    progress.close()
    print(f"{batches} heatmap figures written to {folder}; IG convergence delta: max {max(deltas):.4f}, "
          f"mean {sum(deltas) / len(deltas):.4f}")


if __name__ == "__main__":
    app.run(main)
