"""For each test image, one PNG: the input (true label, prediction) and the memory samples with positive
weight, sorted by weight, each with its weight, predicted class, and whether it is an explanation by
example (green) or a counterfactual (red).

    python generate_memory_images.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt --num_images=10

Saved under images/mem_images/<DATASET>/<MODALITY>/<MODEL>/.
"""
import torch
from absl import app, flags
from tqdm import tqdm

import aux
import explanations
from core.evaluation import memory_pass

flags.DEFINE_string("path_model", None, "memory or encoder_memory checkpoint (*.pt)")
flags.DEFINE_integer("num_images", 10, "how many test images (the first ones of the test set)", lower_bound=1)
flags.DEFINE_string("output_dir", "images/mem_images", "root folder of the PNGs")
aux.define_evaluation_flags(draws=False)
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    loaded, folder = aux.load_for_explanation(FLAGS, FLAGS.output_dir, test_count=FLAGS.num_images)  # only those shown
    model, data, cache = loaded.model, loaded.data, loaded.cache
    generator, auxiliary = cache.generators()
    result = memory_pass(model, cache, FLAGS.batch_size_test, generator, auxiliary)
    classes = data.classes
    count = len(cache.test_labels)
    for index in tqdm(range(count), desc="memory images", unit="image", disable=None):
        weights = result.content_weights[index]
        order = [i for i in weights.argsort(descending=True).tolist() if weights[i] > 0]
        positions = result.memory_positions[index, order]
        prediction = int(result.predictions[index])
        memory_predictions = result.memory_predictions[index, order].tolist()
        image, label = data.test_batch(torch.tensor([index]))
        explanations.memory_figure(
            folder / f"{index}.png", image[0], classes[int(label)], classes[prediction],
            data.memory_batch(data.memory_pool[positions]), weights[order].tolist(),
            [classes[p] for p in memory_predictions], [p == prediction for p in memory_predictions], data.spec)
    print(f"{count} memory images written to {folder}")


if __name__ == "__main__":
    app.run(main)
