import os
import pathlib

# `make test` runs the tests in 2 processes (pytest-xdist, -n 2): every test process and every script it starts
# uses one thread, so that two of them share 2 cores without fighting over them.
os.environ["OMP_NUM_THREADS"] = "1"
# precision/memory_format auto keep their measured choice in a cache of the tests' own, never the user's
_TEMPORARY = __import__("tempfile").mkdtemp(prefix="memory-wrap-tests-")
os.environ["XDG_CACHE_HOME"] = os.path.join(_TEMPORARY, "cache")
# pretrained weights: never the network, never the user's Hugging Face cache; tests build the cache they read
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_TEMPORARY, "huggingface")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CIFAR_SUBSET = SHARED / "data" / "cifar10-subset"
PAPER_ARCHITECTURES = SHARED / "reference" / "paper_architectures.json"


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort: the rest keep their order). pytest-xdist hands out the shared-fixture
    groups first, then the other tests in this order: the longest ones start early instead of ending the run on one
    worker while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def repo():
    return REPO


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One 1-epoch DIGITS training per paper modality (the paper's train.py flags; the memory heads' MLP small:
    helpers.SMALL_MLP), shared by the test files: (root of the models, modality -> train.py's output)."""
    from helpers import SMALL_MLP, TINY, run_script

    root = tmp_path_factory.mktemp("models")
    outputs = {}
    for modality in ("std", "memory", "encoder_memory"):
        outputs[modality] = run_script("train.py", f"--modality={modality}", "--continue_train=False",
                                       "--log_interval=100", f"--config={TINY}", f"--output_dir={root}",
                                       *([] if modality == "std" else [SMALL_MLP])).stdout
    return root, outputs
