"""A saved run ready for evaluation and explanation: its checkpoint's model (eval mode), its run's data and the
features encoded once. The one loader: the scripts call it with their flags (aux.load_for_evaluation), the Python
API (explanations/model.py) and the tests without any.

    loaded = load_run(Checkpoint.load("model.pt"), test_images=images)      # an exported model: no dataset needed
    loaded = load_run(checkpoint, dataset_dir="datasets")                   # a training checkpoint: its dataset
    loaded.model, loaded.data, loaded.cache
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import datasets
from architectures import Classifier

from . import runtime
from .checkpoints import Checkpoint
from .config import Config
from .evaluation import FeatureCache

PAPER_TEST_BATCH = 500  # test images per memory draw of a paper checkpoint (its batch_size_test)
PAPER_DRAWS = 5  # memory draws of a paper checkpoint's evaluation


@dataclass
class LoadedRun:
    """A saved run ready for evaluation: its checkpoint, its model (eval mode), its data, and the cached features."""
    checkpoint: Checkpoint
    model: Classifier
    data: datasets.ExperimentData
    cache: Optional[FeatureCache]


def load_run(checkpoint: Checkpoint, *, default_config: Optional[Config] = None, dataset_dir=None,
             device: str = "auto", dataset_cache: Optional[Dict] = None, test_count: Optional[int] = None,
             encode_now: bool = True, memory_pool: Optional[Callable] = None, batch_size: Optional[int] = None,
             test_images: Optional[datasets.ImageSet] = None, draws: Optional[int] = None,
             memory_source: Optional[str] = None, val_examples: Optional[int] = None,
             pool_features: Optional[FeatureCache] = None, own_pool: Optional[bool] = None) -> LoadedRun:
    """A checkpoint's model and its run's data (an exported model with ``test_images`` and no ``dataset_dir``: its
    own pool), the test set (its first ``test_count`` images, or ``test_images`` in one batch) and the memory pool
    encoded once (``encode_now``; ``pool_features``: a cache of the same model and data whose pool is taken instead).
    ``dataset_cache`` shares datasets between checkpoints; ``memory_pool(data)`` replaces the pool
    (--memory_pool=full); ``batch_size``: test images per memory draw (default: the run's); ``draws``: memory draws
    (default: the run's eval_draws). ``default_config``, ``memory_source`` and ``val_examples`` fill in what a paper
    checkpoint does not record. ``own_pool``: the exported model's own memory pool, without a dataset (default: for
    ``test_images`` when no ``dataset_dir`` is given)."""
    device = runtime.choose_device(device)
    model = checkpoint.build_model(device)
    if own_pool is None:  # an exported model explaining new images needs no dataset; evaluating one reads its own
        own_pool = test_images is not None and checkpoint.memory_pool is not None and dataset_dir is None
    if own_pool:
        data = checkpoint.own_data(device)
    else:
        data = checkpoint.run_data(default_config, dataset_dir, dataset_cache, device, memory_source=memory_source,
                                   val_examples=val_examples)
    if test_images is not None:
        data = data.with_test_images(test_images)
    if memory_pool is not None:
        data = data.with_memory_pool(memory_pool(data))
    saved = checkpoint.saved_config
    if test_images is not None:
        batch_size = len(test_images)
    else:
        batch_size = batch_size or (saved.batch_size_test if saved else PAPER_TEST_BATCH)
    draws = draws or (saved.eval_draws if saved else PAPER_DRAWS)
    cache = (FeatureCache.build(model, data, batch_size, checkpoint.seed, draws, checkpoint.autocast(device),
                                test_count, pool_features=pool_features) if encode_now else None)
    return LoadedRun(checkpoint, model, data, cache)
