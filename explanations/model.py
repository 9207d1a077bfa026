"""One door for use: a model file loaded in one call, and new images predicted and explained with the training
images that carry each prediction, named by where they came from. ``memory_wrap.py`` (the repository root) hands
these names on; predict.py, the tutorial notebook and the tests go through them.

    from memory_wrap import load_model
    model = load_model("model.pt")                 # export.py's file; a training checkpoint reads its dataset
    model.predict(["photo.jpg", pil_image, array, tensor])          # [Prediction(image, predicted, probability...)]
    for explained in model.explain("photo.jpg", memory="pool", exclude=["train/cat/0042.jpg"], heatmap=True):
        explained.predicted, explained.example.source, [s.source for s in explained.decisive], explained.heatmap

The memory pool is encoded once, when the model is loaded; each call encodes its own images only. Images are
decoded as the training images were (RGB, the run's image size and normalisation). Nothing here reads absl flags.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

import datasets
from core import runtime
from core.checkpoints import Checkpoint
from core.config import Config
from core.evaluation import FeatureCache
from core.loading import load_run
from core.memory_policies import POLICIES
from core.support import pool_threshold

from .accuracy import ExplanationError
from .new_images import (Explained, MemoryChoice, explain, first_memory_set, input_attribution, prediction_figure,
                         read_images)
from .records import uninformative


@dataclass
class Prediction:
    image: str  # its path, or "#<i>" for an image given in memory
    predicted: str  # the class
    probability: float  # of the predicted class
    probabilities: Dict[str, float]  # of every class
    supported: Optional[bool] = None  # False: no training image resembles it (memory heads; core/support.py)


class Explanations(list):
    """``Model.run``'s answer: the Explained images, and what made them (for figures: ``figure``)."""

    def __init__(self, items, model: "Model", data: datasets.ExperimentData, cache: FeatureCache,
                 choice: MemoryChoice):
        super().__init__(items)
        self.model, self.data, self.cache, self.choice = model, data, cache, choice

    def figure(self, row: int, path: Path, max_samples: int = 8, n_steps: int = 40) -> float:
        """Image ``row`` explained as one PNG (input, Integrated Gradients heatmap, memory samples); the IG delta."""
        return prediction_figure(path, self.model.network, self.data, self.cache, row, self[row], max_samples,
                                 n_steps, choice=self.choice)


class Model:
    """A trained model ready to predict and explain: its network (eval mode), its memory pool (encoded once) with
    each image's source, its classes, image size and normalisation."""

    def __init__(self, checkpoint: Checkpoint, dataset_dir=None, device: str = "auto",
                 default_config: Optional[Config] = None, draws: Optional[int] = None, **run_options):
        """``run_options``: what a paper checkpoint does not record (core.loading.load_run's memory_source,
        val_examples)."""
        own = checkpoint.memory_pool is not None and dataset_dir is None
        loaded = load_run(checkpoint, default_config=default_config, dataset_dir=dataset_dir, device=device,
                          encode_now=False, own_pool=own, **run_options)
        self.checkpoint, self.network, self.data = checkpoint, loaded.model, loaded.data
        saved = checkpoint.saved_config
        self.stored_size = saved.stored_image_size if saved else 32
        self.draws = draws or (saved.eval_draws if saved else 5)
        self.device = runtime.choose_device(device)
        self.pool = FeatureCache.build(self.network, self.data, saved.batch_size_test if saved else 500,
                                       checkpoint.seed, self.draws, checkpoint.autocast(self.device), test_count=0)
        self.sources, self.files = self.data.pool_sources()
        # the test accuracy the run recorded near chance: its predictions and explanations carry no information
        self.warning = uninformative(self.network, None, checkpoint)
        # the support below which a prediction is unsupported: the run's record, else the pool's own (leave-one-out)
        self.threshold = checkpoint.support or (pool_threshold(self.network, self.pool.memory_features,
                                                               self.pool.memory_labels) if self.uses_memory else None)

    @property
    def classes(self) -> List[str]:
        return list(self.data.classes)

    @property
    def uses_memory(self) -> bool:
        return self.network.uses_memory

    def choice(self, memory: str = "draws", exclude: Iterable[Union[str, int]] = (),
               classes: Optional[Sequence[str]] = None) -> MemoryChoice:
        """What a prediction reads: the memory ``memory`` policy over the pool less ``exclude`` (sources, or
        positions in the pool), kept to ``classes``; an ExplanationError names what does not exist."""
        if memory not in POLICIES:
            raise ExplanationError(f"memory: {memory!r} is not one of {list(POLICIES)}")
        if not self.uses_memory:
            if list(exclude) or classes is not None:
                raise ExplanationError(f"a {self.network.modality} model reads no memory: exclude and classes apply "
                                       f"to memory heads")
            return MemoryChoice(memory)
        labels = self.pool.memory_labels.cpu()
        keep = torch.ones(len(self.sources), dtype=torch.bool)
        where = {source: position for position, source in enumerate(self.sources)}
        for item in exclude:
            text = str(item).strip()
            position = int(text) if text.isdigit() else where.get(text)
            if position is None or not 0 <= position < len(keep):
                raise ExplanationError(f"exclude: {text!r} is no image of the memory pool (give its source as "
                                       f"predict.py --json names it, e.g. {self.sources[0]!r}, or its position 0.."
                                       f"{len(keep) - 1})")
            keep[position] = False
        if classes is not None:
            unknown = [name for name in classes if name not in self.classes]
            if unknown:
                raise ExplanationError(f"classes: {unknown} are not classes of the model ({', '.join(self.classes)})")
            keep &= torch.isin(labels.cpu(), torch.tensor([self.classes.index(name) for name in classes]))
        if not keep.any():
            raise ExplanationError("no image of the memory pool is left: exclude fewer, or keep more classes")
        return MemoryChoice(memory, None if keep.all() else keep.nonzero().flatten())

    def run(self, images, memory: str = "draws", draws: Optional[int] = None, exclude: Iterable = (),
            classes: Optional[Sequence[str]] = None, decisive: bool = True) -> Explanations:
        """Every image explained (``explain``), with what figures need."""
        images = [images] if isinstance(images, (str, Path)) or not isinstance(images, (list, tuple)) else images
        image_set, names = read_images(images, self.stored_size)
        data = self.data.with_test_images(image_set)
        cache = FeatureCache.build(self.network, data, len(image_set), self.checkpoint.seed, draws or self.draws,
                                   self.checkpoint.autocast(self.device), pool_features=self.pool)
        choice = self.choice(memory, exclude, classes)
        items = explain(self.network, cache, data.classes, names, self.sources, self.files, choice, decisive,
                        self.threshold)
        return Explanations(items, self, data, cache, choice)

    def explain(self, images, memory: str = "draws", draws: Optional[int] = None, exclude: Iterable = (),
                classes: Optional[Sequence[str]] = None, heatmap: bool = False, n_steps: int = 40) -> List[Explained]:
        """Each image's prediction with the memory samples that carry it (source, label, weight, example or
        counterfactual, decisive or not), read with the ``memory`` policy: ``draws`` (the evaluation's random
        memory sets, averaged over ``draws``), ``pool`` (the whole pool at once) or ``balanced``; ``exclude``
        leaves images out of the pool, ``classes`` keeps it to some classes; ``heatmap``: each image's Integrated
        Gradients attribution [3, H, W] (numpy), the first memory set held fixed."""
        explained = self.run(images, memory, draws, exclude, classes)
        if heatmap:
            for row, item in enumerate(explained):
                item.heatmap = self.heatmap(explained, row, n_steps)
        return list(explained)

    def predict(self, images, memory: str = "draws", draws: Optional[int] = None) -> List[Prediction]:
        """Each image's class and probabilities (memory heads: averaged over the memory sets ``memory`` reads)."""
        return [Prediction(item.image, item.predicted, item.probability, item.probabilities, item.supported)
                for item in self.run(images, memory, draws, decisive=False)]

    def heatmap(self, explained: Explanations, row: int, n_steps: int = 40) -> np.ndarray:
        image = explained.data.test_batch(torch.tensor([row]))[0][0]
        memory_features = memory_labels = None
        if self.uses_memory:
            positions, flips = first_memory_set(explained.cache, explained.choice)
            memory_features = explained.cache.features_at(positions, flips)
            memory_labels = explained.cache.memory_labels[positions]
        attribution, _, _ = input_attribution(self.network, image, memory_features, memory_labels,
                                              self.classes.index(explained[row].predicted), self.data.spec, n_steps)
        return attribution.detach().cpu().numpy()


def load_model(path, dataset_dir=None, device: str = "auto", draws: Optional[int] = None) -> Model:
    """A model file (export.py's: it carries its memory pool) or a training checkpoint (its memory pool is read from
    its dataset: ``dataset_dir``, default the one it was trained on), ready to predict and explain."""
    return Model(Checkpoint.load(path), dataset_dir=dataset_dir, device=device, draws=draws)
