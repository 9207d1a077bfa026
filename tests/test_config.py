"""core/config.py: the YAML schema, checked once, every problem in one message; overrides."""
import re

import pytest

from conftest import REPO
from core.config import Config, ConfigError, load_config
from helpers import TINY, write_config


def test_config_errors_listed_together(tmp_path):
    path = write_config(tmp_path, "\nbatch_size_train: 0\nmodell: mobilenet\nprecision: fp8\nruns: two\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    for expected in ("unknown keys ['modell']", "batch_size_train: must be > 0", "precision: 'fp8' is not one of",
                     "runs: expected int, got 'two'"):
        assert expected in message


@pytest.mark.parametrize("extra,expected", [
    ("\ndataset_name: CIFAR10\n", "no CIFAR10: section"),
    ("\nDIGITS: {num_classes: 10, num_epochs: 0, opt_milestones: [3, 2], mem_examples: 20}\n",
     "DIGITS.num_epochs: must be > 0"),
    ("\nDIGITS: {num_classes: 10, num_epochs: 5, opt_milestones: [3, 2], mem_examples: 20}\n",
     "strictly increasing"),
    ("\nDIGITS: {num_classes: 10, num_epochs: 5, opt_milestones: [3], mem_examples: 20, lr: 1}\n",
     "DIGITS: unknown keys ['lr']"),
    ("\nmodel: vgg\n", "unknown model 'vgg'"),
    ("\noptimizer: {learning_rate: fast, weight_decay: 0, momentum: 0.9, nesterov: True}\n",
     "optimizer.learning_rate: expected a number, got 'fast'"),
    ("\noptimizer: {learning_rate: 0.1, weight_decay: 0, momentum: 0.9}\n", "optimizer.nesterov: missing"),
])
def test_config_errors(tmp_path, extra, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write_config(tmp_path, extra))


def test_paper_yaml_and_overrides():
    config = load_config(REPO / "config" / "train.yaml")
    assert config.optimizer.learning_rate == 0.1 and config.optimizer.weight_decay == 5e-4  # "1e-1" strings
    assert config.dataset_name == "SVHN" and config.dataset.num_epochs == 40 and config.dataset.opt_milestones == (20, 30)
    assert config.datasets["CINIC10"].scheduler == "cosine" and config.memory_source == "subset"
    short = load_config(REPO / "config" / "train.yaml", {"dataset": "CIFAR10", "epochs": 15, "runs": 2, "model": None})
    assert short.dataset.num_epochs == 15 and short.dataset.opt_milestones == (8, 11) and short.runs == 2
    assert short.model == "mobilenet"


PAPER_CONFIG = """# the paper's config/train.yaml keys and values, as its repository has them (no keys of ours)
model: mobilenet
save: True
train_examples: 2000
runs: 15
batch_size_train: 128
batch_size_test: 500
optimizer:
  learning_rate: 1e-1
  weight_decay: 5e-4
  momentum: 0.9
  nesterov: True
dataset_dir: datasets
dataset_name: SVHN
SVHN:
  num_classes: 10
  num_epochs: 40
  opt_milestones: [20, 30]
  mem_examples: 100
CIFAR10:
  num_classes: 10
  num_epochs: 300
  opt_milestones: [150, 225]
  mem_examples: 100
CINIC10:
  num_classes: 10
  num_epochs: 300
  opt_milestones: [150, 225]
  mem_examples: 100
"""


def test_the_papers_config_loads_unchanged_and_behaves_as_its_code(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(PAPER_CONFIG)
    config = load_config(path)
    assert config.optimizer.learning_rate == 0.1 and config.dataset.scheduler == "multistep"
    cinic = load_config(path, {"dataset": "CINIC10"})
    assert cinic.dataset.scheduler == "cosine" and cinic.memory_flip  # by dataset name, as the paper's code
    assert not load_config(path, {"dataset": "CIFAR10"}).memory_flip
    assert config.eval_autocast is False and config.max_nonfinite_steps == 20


def test_config_round_trips_through_its_dict():
    config = load_config(REPO / "config" / "train.yaml", {"dataset": "CINIC10", "epochs": 7})
    assert Config.from_dict(config.to_dict()) == config


def test_the_docs_table_of_choices_is_built_from_the_choice_lists():
    from core.config import choices_table

    assert choices_table() in (REPO / "docs" / "replicating.md").read_text(), \
        "docs/replicating.md's table of choices is stale: paste core.config.choices_table() into it"


def test_a_config_read_again_is_a_fresh_parse_that_a_setting_never_changes_for_the_next(tmp_path):
    """core/config/reading keeps the last file's parse (a grid reads its base config once per cell): each read
    gets its own copy, and an edited file is parsed again."""
    from core.config.reading import read_yaml

    path = write_config(tmp_path, "")
    first = read_yaml(path)
    first["DIGITS"]["num_epochs"] = 99
    assert read_yaml(path)["DIGITS"]["num_epochs"] == 1
    assert load_config(path, {}, ["DIGITS.num_epochs=7"]).dataset.num_epochs == 7
    assert load_config(path).dataset.num_epochs == 1
    path.write_text(path.read_text().replace("num_epochs: 1,", "num_epochs: 3,"))
    assert load_config(path).dataset.num_epochs == 3
