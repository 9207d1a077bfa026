"""The choice lists of the config: the only ones; flags, checks and the README's tables are built from them."""
from __future__ import annotations

from typing import Tuple

import datasets
from architectures import DISTANCES, list_heads

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
DEPTHWISE_FP32 = ("auto", "all", "none")  # bf16 on a CPU: which depthwise convolutions compute in fp32
MEMORY_SOURCES = ("subset", "full")
SCHEDULERS = ("multistep", "cosine", "warmup_cosine", "warmup_cosine_code")
OPTIMIZERS = ("sgd", "adam")
AUGMENTATIONS = datasets.AUGMENTATIONS
DISTANCE_NAMES = tuple(DISTANCES)


def modalities() -> Tuple[str, ...]:
    """Every registered head (std, memory, encoder_memory, ...)."""
    return tuple(list_heads())


def dataset_names() -> Tuple[str, ...]:
    return tuple(sorted(datasets.DATASETS))


# Upper bounds, far above what any experiment uses, so that a typo (runs: 1e11, --epochs=1000000000000) is refused
# at once instead of starting work that never ends.
MAX_RUNS = 10_000  # seeded runs (the paper: 15)
MAX_EPOCHS = 10_000  # epochs (the paper: at most 300)
MAX_DRAWS = 1_000  # memory draws averaged over (the paper: 5)
MAX_IMAGES = 10_000_000  # images in a batch, a memory set, a figure or a study
MAX_ITERATIONS = 1_000_000  # optimisation steps of a counterfactual search (CFProto: 1000)
MAX_STEPS = 10_000  # Integrated Gradients steps (the paper: 40)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024  # image_size of a folder dataset
MAX_MLP_HIDDEN = 65_536  # heads.mlp_hidden (the paper: 4 x 1280 = 5120 at most)

