"""The paper's command for the counterfactual experiment's autoencoders, as written in its scripts' README; the same
as train_autoencoders.py (--dir_models is --path_models; --saving_path=<S> writes <S>/<seed>/ as the paper did). It
serves every dataset, not only SVHN:

    python train_aes_svhn.py --dir_models=<DIR> --saving_path=<S> --dir_dataset=datasets/
"""
from absl import app, flags

from train_autoencoders import main

flags.DEFINE_alias("dir_models", "path_models")

if __name__ == "__main__":
    app.run(main)
