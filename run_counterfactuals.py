"""The paper's command for counterfactuals, as written in its scripts' README; the same as counterfactuals.py
(--path_aes=<S> reads the autoencoders of train_aes_svhn.py --saving_path=<S>):

    python run_counterfactuals.py --path_models=<DIR> --path_aes=<S> --dir_dataset=datasets/ --algo=memory
"""
from absl import app

from counterfactuals import main

if __name__ == "__main__":
    app.run(main)
