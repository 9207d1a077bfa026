"""Memory images: which training images explain each prediction.

Memory heads (memory, encoder_memory, protonet, matching): for each test image one PNG, the input (true label,
prediction) and the memory samples with positive weight, sorted by weight (at most --max_samples), each with
its weight, predicted class, and whether it is an explanation by example (green) or a counterfactual (red).
Prototype heads (prototypes, hyperspherical, deepncm): prototypes.png, the training images nearest to each
class prototype, and for each test image one PNG of its distances to the prototypes.

    python generate_memory_images.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt --num_images=10

Saved under images/mem_images/<DATASET>/<MODALITY>/<MODEL>/.
"""
import torch
from absl import app, flags
from tqdm import tqdm

import aux
from core.config import MAX_IMAGES
import explanations
from explanations import records
from core.evaluation import encode

flags.DEFINE_string("path_model", None, "checkpoint (*.pt) of a memory or prototype head")
flags.DEFINE_integer("num_images", 10, "how many test images (the first ones of the test set)", lower_bound=1,
                     upper_bound=MAX_IMAGES)
flags.DEFINE_integer("max_samples", 10, "memory samples shown per image, by weight (Matching Networks' attention "
                     "gives every sample a positive weight)", lower_bound=1)
flags.DEFINE_string("output_dir", "images/mem_images", "root folder of the PNGs")
aux.define_evaluation_flags(draws=False, explains=True)
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors(interrupted="the figures written so far are kept: run the same command again for all of them")
def main(argv):
    del argv
    modalities = explanations.memory_modalities() + explanations.prototype_modalities()
    loaded, folder = aux.load_for_explanation(FLAGS, FLAGS.output_dir, test_count=FLAGS.num_images,  # those shown
                                              modalities=modalities, what="generate_memory_images.py")
    records.check_models(loaded, FLAGS.strict, explanations.ExplanationError)
    if loaded.model.uses_memory:
        memory_images(loaded, folder)
    else:
        prototype_images(loaded, folder)


def memory_images(loaded, folder):
    with tqdm(total=len(loaded.cache.test_labels), desc="memory images", unit="image", disable=None) as bar:
        paths = explanations.memory_images(loaded.model, loaded.cache, loaded.data, folder, FLAGS.max_samples, bar)
    print(f"{len(paths)} memory images written to {folder}")


@torch.no_grad()
def prototype_images(loaded, folder):
    model, data, cache = loaded.model, loaded.data, loaded.cache
    head, classes = model.head, data.classes
    subset_features = encode(model, lambda i: data.memory_batch(data.subset[i]), len(data.subset), cache.batch_size)
    explanations.prototype_figure(folder / "prototypes.png", data.memory_batch(data.subset),
                                  head.distances(subset_features).cpu(), head.prototype_classes, classes, data.spec)
    distances = head.distances(cache.test_features).cpu()
    predictions = model.classify(cache.test_features).argmax(1).tolist()
    for index in tqdm(range(len(cache.test_labels)), desc="distance figures", unit="image", disable=None):
        image, label = data.test_batch(torch.tensor([index]))
        explanations.distances_figure(folder / f"{index}.png", image[0], classes[int(label)],
                                      classes[predictions[index]], distances[index], head.prototype_classes, classes,
                                      data.spec)
    print(f"prototypes.png and {len(cache.test_labels)} distance figures written to {folder}")


if __name__ == "__main__":
    app.run(main)
