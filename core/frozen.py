"""A frozen encoder is a feature table: with ``freeze_encoder: true`` the encoder is a fixed function of the image
(eval mode), so each run encodes every image it uses once, and the head trains on the cached features.

    table = FeatureTable.encode(model, data, batch_size=500, seed=run, draws=5)
    for features, labels in table.batches(64, generator):     # the draws of data.batches, made of features
        memory = table.memory_set(generator)                    # the draws of data.memory_set
    result = evaluation.evaluate(model, table.cache)            # the test set and memory pool, encoded as evaluation

Which images: the test set and the memory pool, encoded exactly as evaluation encodes them (``FeatureCache.build``:
the same images, order and batches, in fp32), so that train.py's test accuracy is eval.py's to the digit; the
training subset (the pool's rows where the pool is the subset) with its flipped views where training batches are
flipped, and the validation split where ``eval_every`` asks for it. Batches and memory sets take the very generator
calls of ``ExperimentData.batches`` and ``ExperimentData.memory_set``, so a cached run trains on the features of the
images an uncached run would encode (tests/test_frozen.py: the same losses within float tolerance).

Not cached: AutoAugment (other pixels every epoch) and torchrun; those runs encode step by step, as fine-tuning does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
from torch import nn

import datasets
from architectures import Classifier

from .evaluation import FeatureCache, encode


def cached(config, distributed=None) -> bool:
    """Whether a run of ``config`` trains its head on a feature table: a frozen encoder, images that stay the same
    from epoch to epoch (no AutoAugment), one process."""
    return bool(config.freeze_encoder) and config.augment != "autoaugment" and distributed is None


@dataclass
class FeatureTable:
    """Every image a run uses, encoded once by the frozen encoder."""
    cache: FeatureCache  # the test set and the memory pool (and its flipped views), as evaluation encodes them
    rows: torch.Tensor  # [N] each training image's row of subset_features (-1: not in the training subset)
    subset_features: torch.Tensor  # [S, D] the training subset, in its order
    subset_flipped: Optional[torch.Tensor]  # [S, D] the same images flipped (training batches flip), or None
    validation: Optional[FeatureCache] = None  # the validation split in the test set's place (eval_every)
    data: Optional[datasets.ExperimentData] = None

    @classmethod
    @torch.no_grad()
    def encode(cls, model: Classifier, data: datasets.ExperimentData, batch_size: int, seed: int, draws: int,
               validation: bool = False) -> "FeatureTable":
        """Encode what a run of ``data`` uses, in eval mode and fp32, each image once per view."""
        cache = FeatureCache.build(model, data, batch_size, seed=seed, draws=draws)
        subset, pool = data.subset, data.memory_pool
        same = model.uses_memory and torch.equal(subset, pool)  # the paper's memory_source: subset
        subset_features = (cache.memory_features if same else
                           encode(model, lambda i: data.memory_batch(subset[i]), len(subset), batch_size))
        flipped = None
        if data.flip:
            flipped = (cache.flipped_memory_features if same and cache.flipped_memory_features is not None else
                       encode(model, lambda i: data.memory_batch(subset[i]).flip(-1), len(subset), batch_size))
        rows = torch.full((len(data.train_labels),), -1, dtype=torch.long)
        rows[subset] = torch.arange(len(subset))
        checked = FeatureCache.build(model, data, batch_size, seed=seed, draws=draws, split="validation",
                                     pool_features=cache) if validation else None
        return cls(cache, rows.to(subset_features.device), subset_features, flipped, checked, data)

    def restricted(self, data: datasets.ExperimentData, keep: torch.Tensor) -> "FeatureTable":
        """This table for ``data`` (this table's data restricted to subset positions ``keep``: ExperimentData.restricted;
        the same images, so the same features): no image is encoded again."""
        keep = torch.as_tensor(keep, dtype=torch.long)
        rows = torch.full_like(self.rows, -1)
        rows[data.subset.to(rows.device)] = torch.arange(len(keep), device=rows.device)
        cache = self.cache
        if cache.memory_features is not None and len(data.memory_pool) != len(self.data.memory_pool):
            at = keep.to(cache.memory_features.device)
            flipped = cache.flipped_memory_features[at] if cache.flipped_memory_features is not None else None
            cache = dataclasses.replace(cache, memory_features=cache.memory_features[at],
                                        memory_labels=data.train_labels[data.memory_pool.to(data.device)],
                                        protocol=data.memory_protocol, flipped_memory_features=flipped)
        elif cache.memory_features is not None:  # the same pool, perhaps other labels
            cache = dataclasses.replace(cache, memory_labels=data.train_labels[data.memory_pool.to(data.device)])
        subset_flipped = self.subset_flipped[keep] if self.subset_flipped is not None else None
        return FeatureTable(cache, rows, self.subset_features[keep], subset_flipped, None, data)

    def batches(self, batch_size: int, generator: torch.Generator,
                shard: Tuple[int, int] = (0, 1)) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches as ``ExperimentData.batches`` draws them: (features, labels)."""
        if shard != (0, 1):
            raise ValueError("a feature table trains in one process")
        for indices, flips in self.data.batch_indices(batch_size, generator):
            rows = self.rows[indices]
            features = self.subset_features[rows]
            if flips is not None:
                features = torch.where(flips[:, None], self.subset_flipped[rows], features)
            yield features, self.data.train_labels[indices]

    def memory_set(self, generator: torch.Generator) -> datasets.MemorySet:
        """A memory set as ``ExperimentData.memory_set`` draws it, of the pool's features."""
        drawn = self.cache.draw(generator)
        return datasets.MemorySet(self.data.memory_pool[drawn.positions.cpu()], drawn.features, drawn.labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.data.steps_per_epoch(batch_size)


class HeadOnly(nn.Module):
    """A Classifier trained on features: ``forward`` is its head (``Classifier.forward_features``), with the loss and
    regularisation of the model (what ``training.training_step`` asks of a model)."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, features, memory_features=None, memory_labels=None, return_weights=False, labels=None):
        return self.model.forward_features(features, memory_features, memory_labels, return_weights, labels)

    def loss(self, outputs, labels, label_smoothing: float = 0.0):
        return self.model.loss(outputs, labels, label_smoothing)

    def regularization(self):
        return self.model.regularization()
