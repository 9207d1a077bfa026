"""Export a trained model as one file you can hand over: weights, class names, image size, normalisation, the
network and head settings, and its memory pool (the reduced training subset as lossless PNGs, each at its file's
own size where that is smaller), so that predict.py needs no dataset folder.

    python export.py --path_model=models/DIGITS/encoder_memory/shufflenet/1000/1.pt --output=model.pt
    python predict.py --path_model=model.pt digit.png

The file is plain data: torch.load(path, weights_only=True) reads it, and so does every script that reads a
checkpoint. An existing file is replaced only when it is an exported model itself.
"""
from absl import app, flags

import aux
from core.export import check_export_target, export_model

flags.DEFINE_string("path_model", None, "the checkpoint to export (*.pt)")
flags.DEFINE_string("output", None, "the file to write, e.g. model.pt")
flags.DEFINE_bool("overwrite", False, "replace an export of another model at --output")
aux.define_evaluation_flags(draws=False)
flags.mark_flags_as_required(["path_model", "output"])
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    checkpoint = aux.load_checkpoint(FLAGS.path_model, FLAGS)
    replaced = check_export_target(FLAGS.output, checkpoint.path, FLAGS.overwrite)  # before the data are read
    loaded = aux.load_for_evaluation(checkpoint, FLAGS, encode_now=False)
    path = export_model(checkpoint, loaded.data, FLAGS.output, FLAGS.overwrite, FLAGS.dataset_dir)
    if replaced:
        print(f"replaced {replaced}")
    print(f"{path}: {checkpoint.model_name} {checkpoint.modality}, {len(loaded.data.classes)} classes, memory pool of "
          f"{len(loaded.data.memory_pool)} images, {path.stat().st_size / 2 ** 20:.1f} MiB")


if __name__ == "__main__":
    app.run(main)
