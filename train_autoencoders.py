"""The autoencoders of the counterfactual experiment (the paper's train_aes_svhn.py), for every run of one experiment
folder: one per class and one on all of the run's reduced training subset, with the paper's recipe (Adam, mean
squared error, batches of 32, 4 epochs). explanations/autoencoders.py has the details.

    python train_autoencoders.py --path_models=models/DIGITS/encoder_memory/shufflenet/1000/
    python train_autoencoders.py --path_models=<DIR> --epochs=10

Writes <DIR>/autoencoders/<run>/class_<k>.pt and full.pt. Interrupted, it keeps what is trained and trains the
rest when run again; autoencoders of another dataset, subset or seed in that folder are refused.
"""
from pathlib import Path

from absl import app, flags
from tqdm import tqdm

import aux
from core.config import MAX_EPOCHS
from base.files import writable_folder
from explanations import autoencoders

flags.DEFINE_string("path_models", None, "folder with the checkpoints (*.pt) of one experiment")
flags.DEFINE_integer("epochs", autoencoders.PAPER_EPOCHS, "epochs of each autoencoder (the paper: 4)", lower_bound=1,
                     upper_bound=MAX_EPOCHS)
flags.DEFINE_enum("ae_pool", "subset", list(autoencoders.AE_POOLS), "what they learn from: the run's reduced subset "
                  "(default), or every training image but the validation split (the paper's code)")
flags.DEFINE_string("saving_path", None, "where to write them (default: <path_models>/autoencoders/<run>/; given: "
                    "<saving_path>/<seed>/, the paper's layout)")
aux.define_evaluation_flags(draws=False)
flags.mark_flag_as_required("path_models")
FLAGS = flags.FLAGS
INTERRUPTED = ("the autoencoders finished so far are kept, and the interrupted one's last epoch: go on with the same"
               " command")  # what Ctrl-C keeps


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    checkpoints = aux.load_experiment(FLAGS.path_models, FLAGS)
    root = Path(FLAGS.saving_path) if FLAGS.saving_path else Path(FLAGS.path_models) / autoencoders.FOLDER
    folders = [writable_folder(autoencoders.run_folder(root, c, paper_layout=FLAGS.saving_path is not None))
               for c in checkpoints]
    dataset_cache = {}
    for checkpoint, folder in zip(checkpoints, folders):
        data = aux.load_for_evaluation(checkpoint, FLAGS, dataset_cache, encode_now=False).data
        total = (data.num_classes + 1) * FLAGS.epochs
        with tqdm(total=total, desc=f"run {checkpoint.path.stem}: autoencoders", unit="epoch", disable=None) as bar:
            written = autoencoders.train_for_run(checkpoint, data, folder, FLAGS.epochs, FLAGS.ae_pool,
                                                 data.device, bar)
        print(f"Run {checkpoint.path.stem}: {len(written)} autoencoders in {folder}", flush=True)


if __name__ == "__main__":
    app.run(main)
