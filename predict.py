"""Classify and explain new images with a trained model: the predicted class and its probability, and for memory
heads the memory samples with positive weight (the top example of the predicted class, the top counterfactual of
another), averaged over memory draws as eval.py draws them (seeded).

    python predict.py --path_model=model.pt photo.png more_photos/              # an exported model (export.py)
    python predict.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt digit.png --json
    python predict.py --path_model=model.pt photo.png --output=explained/       # + one PNG per image

Each image is preprocessed as the run's training images were (RGB, resized to its image_size, its normalisation).
--json: one JSON line per image on stdout. --output: one PNG per image with the input, its Integrated Gradients
heatmap (the memory of the first draw held fixed) and its memory samples. A training checkpoint reads its memory
pool from its dataset (--dataset_dir); an exported model carries it.
"""
import json
from pathlib import Path

from absl import app, flags

import aux
from base.files import writable_folder
from explanations import new_images

flags.DEFINE_string("path_model", None, "a checkpoint (*.pt) or an exported model (export.py)")
flags.DEFINE_bool("json", False, "one JSON line per image on stdout")
flags.DEFINE_string("output", None, "folder for one PNG per image: the input, its heatmap, its memory samples")
flags.DEFINE_integer("max_samples", 8, "memory samples shown per figure", lower_bound=1, upper_bound=1000)
flags.DEFINE_integer("n_steps", 40, "Integrated Gradients steps of the heatmap", lower_bound=1, upper_bound=10_000)
aux.define_evaluation_flags()
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS
INTERRUPTED = ("the lines printed and the figures written so far are kept: run the same command again for all of "
               "them")  # what Ctrl-C keeps


@aux.exit_on_user_errors(positional=True, interrupted=INTERRUPTED)
def main(argv):
    paths = new_images.image_paths(argv[1:])
    checkpoint = aux.load_checkpoint(FLAGS.path_model, FLAGS)
    saved = checkpoint.saved_config
    images = new_images.read_images(paths, saved.stored_image_size if saved else 32, ("unknown",))
    folder = writable_folder(Path(FLAGS.output), "--output folder") if FLAGS.output else None
    loaded = aux.load_for_evaluation(checkpoint, FLAGS, test_images=images)
    explained = new_images.explain(loaded.model, loaded.cache, loaded.data.classes, paths)
    for row, item in enumerate(explained):
        print(json.dumps(item.to_json()) if FLAGS.json else item.line(), flush=True)
        if folder is not None:
            figure = folder / f"{row}_{Path(item.image).stem}.png"
            new_images.prediction_figure(figure, loaded.model, loaded.data, loaded.cache, row, item,
                                         FLAGS.max_samples, FLAGS.n_steps)
    if folder is not None and not FLAGS.json:
        print(f"{len(explained)} figures written to {folder}")


if __name__ == "__main__":
    app.run(main)
