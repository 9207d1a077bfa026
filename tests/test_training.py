"""training.py: the training loop's own guarantees."""
import pytest
import torch

import datasets
import training
from architectures import build_model
from core.config import load_config
from helpers import TINY


def test_nan_loss_stops_the_run_with_its_position():
    config = load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0, mem_examples=20)
    model = build_model("shufflenet", "std", 10)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(training.TrainingDiverged, match=r"loss became nan at run 3, epoch 1, step 1"):
        training.train_run(model, data, config, run=2, device=torch.device("cpu"))
