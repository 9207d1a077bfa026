import os
import pathlib

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CIFAR_SUBSET = SHARED / "data" / "cifar10-subset"
PAPER_ARCHITECTURES = SHARED / "reference" / "paper_architectures.json"


@pytest.fixture
def repo():
    return REPO
