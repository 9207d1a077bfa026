"""Classify and explain new images with a trained model: the predicted class and its probability, and for memory
heads the memory samples with positive weight, each named by the training image it is (a folder dataset's file, or
"CIFAR10 data_batch_3 #1234"): the top example of the predicted class, the top counterfactual of another, and the
decisive ones (left out alone, the prediction changes). A thin shell over the Python API (memory_wrap.load_model).

    python predict.py --path_model=model.pt photo.png more_photos/              # an exported model (export.py)
    python predict.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt digit.png --json
    python predict.py --path_model=model.pt photo.png --output=explained/       # + one PNG per image
    python predict.py --path_model=model.pt photo.png --memory=pool --exclude=distrusted.txt --classes=cat,dog

Each image is preprocessed as the run's training images were (RGB, resized to its image_size, its normalisation).
--memory: which memory the prediction reads: draws (the evaluation's random memory sets, averaged over --draws),
pool (the whole memory pool at once: the training images most like the input) or balanced (as many images of every
class). --exclude: a file of images to leave out of the pool (one source or pool position a line); --classes: keep
the memory to these classes. --json: one JSON line per image on stdout. --output: one PNG per image with the input,
its Integrated Gradients heatmap (the first memory set held fixed) and its memory samples. A training checkpoint
reads its memory pool from its dataset (--dataset_dir); an exported model carries it.
"""
import json
import sys
from pathlib import Path

from absl import app, flags

import aux
from base.files import writable_folder
from core import config
from explanations import new_images
from explanations.model import Model
from memory_wrap import MEMORY_POLICIES

flags.DEFINE_string("path_model", None, "a checkpoint (*.pt) or an exported model (export.py)")
flags.DEFINE_bool("json", False, "one JSON line per image on stdout")
flags.DEFINE_string("output", None, "folder for one PNG per image: the input, its heatmap, its memory samples")
flags.DEFINE_integer("max_samples", 8, "memory samples shown per figure", lower_bound=1, upper_bound=1000)
flags.DEFINE_integer("n_steps", 40, "Integrated Gradients steps of the heatmap", lower_bound=1, upper_bound=10_000)
flags.DEFINE_enum("memory", "draws", list(MEMORY_POLICIES), "the memory a prediction reads: draws (the evaluation's "
                  "random memory sets), pool (the whole memory pool at once) or balanced (as many of every class)")
flags.DEFINE_string("exclude", None, "a file of memory pool images to leave out: one source (as --json names it) or "
                    "pool position a line")
flags.DEFINE_list("classes", None, "keep the memory to these classes (comma-separated names)")
aux.define_evaluation_flags()
flags.mark_flag_as_required("path_model")
FLAGS = flags.FLAGS
INTERRUPTED = ("the lines printed and the figures written so far are kept: run the same command again for all of "
               "them")  # what Ctrl-C keeps


def excluded(path) -> list:
    """The lines of an --exclude file: sources or pool positions (blank lines and # comments skipped)."""
    if path is None:
        return []
    lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line]


@aux.exit_on_user_errors(positional=True, interrupted=INTERRUPTED)
def main(argv):
    paths = new_images.image_paths(argv[1:])
    checkpoint = aux.load_checkpoint(FLAGS.path_model, FLAGS)
    exclude = excluded(FLAGS.exclude)
    created = FLAGS.output is not None and not Path(FLAGS.output).exists()
    folder = writable_folder(Path(FLAGS.output), "--output folder") if FLAGS.output else None
    model = Model(checkpoint, dataset_dir=FLAGS.dataset_dir, device=FLAGS.device,
                  default_config=config.load_config(FLAGS.config), draws=FLAGS.draws,
                  memory_source=FLAGS.memory_source, val_examples=FLAGS.val_examples)
    if model.warning:
        print(f"Warning: {FLAGS.path_model}: {model.warning}", file=sys.stderr, flush=True)
    try:
        explained = model.run(paths, memory=FLAGS.memory, exclude=exclude, classes=FLAGS.classes)
        width = len(str(len(explained) - 1))  # 00_, 01_, ... 10_: the figures sort as the images
        for row, item in enumerate(explained):
            if folder is not None:  # its figure first: a line printed is a figure kept
                explained.figure(row, folder / f"{row:0{width}d}_{Path(item.image).stem}.png", FLAGS.max_samples,
                                 FLAGS.n_steps)
            print(json.dumps(item.to_json()) if FLAGS.json else item.line(), flush=True)
    except KeyboardInterrupt:
        if created and folder is not None and not any(folder.iterdir()):
            folder.rmdir()  # Ctrl-C before any figure: no empty folder left behind
        raise
    if folder is not None and not FLAGS.json:
        print(f"{len(explained)} figures written to {folder}")


if __name__ == "__main__":
    app.run(main)
