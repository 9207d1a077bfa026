"""The paper's command for explanations by example, as written in its scripts' README; the same as
explanation_examples.py (--dir_models is --path_models):

    python run_exp_by_examples.py --dir_models=<DIR> --dir_dataset=datasets/ --metric=input
"""
from absl import app, flags

from explanation_examples import main

flags.DEFINE_alias("dir_models", "path_models")

if __name__ == "__main__":
    app.run(main)
