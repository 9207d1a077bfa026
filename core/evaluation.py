"""Evaluation on features encoded once.

In eval mode the encoder is a pure function of the image, so the test set and the memory pool go through
it once (``FeatureCache``), and every memory draw, repetition, explanation metric and majority-vote baseline
is tensor work on the cached features (tests/test_evaluation.py proves it equals the batch-by-batch
``model(images, memory_images)`` path). The cache knows the run's memory protocol: memory size, seed and
number of draws.

    cache = FeatureCache.build(model, data, batch_size=500, seed=run, draws=5)
    result = evaluate(model, cache)                     # mean accuracy over the draws
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

import datasets
from architectures import Classifier

CPU_CHUNK = 100  # images encoded at once on a CPU
EVAL_SEED_OFFSET = 10_000  # evaluation draws use their own stream: seed + offset
AUXILIARY_SEED_OFFSET = 20_000  # the memory of the memory samples (explanations, majority vote): another stream


def eval_generators(seed: int) -> Tuple[torch.Generator, torch.Generator]:
    """(memory draws, auxiliary draws): separate streams, so that the test accuracy of eval.py, eval_dir.py,
    explanation_accuracy.py and train.py is the same number for the same checkpoint."""
    return (torch.Generator().manual_seed(EVAL_SEED_OFFSET + seed),
            torch.Generator().manual_seed(AUXILIARY_SEED_OFFSET + seed))


@torch.no_grad()
def encode(model: Classifier, images_of, count: int, batch_size: int, autocast: Optional[torch.dtype] = None) -> torch.Tensor:
    """Features of ``count`` images, ``images_of(index_tensor)`` giving normalised images; eval mode, once each.

    Computed in channels_last (faster convolutions on CPU and GPU; the model is given back contiguous), so that
    train.py, eval.py and the explanation scripts encode the same way and print the same numbers. On a CPU in chunks
    of at most ``CPU_CHUNK`` images, whatever ``batch_size`` (EfficientNet-Lite0 at 128 px: 25% faster than 500 at a
    time, on the 2-core AVX2 EPYC: the activations stay in the caches)."""
    model.eval()
    device = next(model.parameters()).device
    chunk = batch_size if device.type == "cuda" else min(batch_size, CPU_CHUNK)
    chunks = []
    model.to(memory_format=torch.channels_last)
    try:
        for start in range(0, count, chunk):
            indices = torch.arange(start, min(start + chunk, count))
            images = images_of(indices).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                chunks.append(model.encode(images).float())
    finally:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(chunks) if chunks else torch.zeros(0)


class Draw(NamedTuple):
    positions: torch.Tensor  # [M] positions in the memory pool
    features: torch.Tensor  # [M, D]
    labels: torch.Tensor  # [M]
    flips: Optional[torch.Tensor]  # [M] bool: flipped images (memory_flip), or None


@dataclass
class FeatureCache:
    """The test set and the memory pool encoded once, with the run's memory protocol."""
    test_features: torch.Tensor  # [T, D]
    test_labels: torch.Tensor  # [T]
    memory_features: Optional[torch.Tensor]  # [P, D], the memory pool (None for models without memory)
    memory_labels: Optional[torch.Tensor]  # [P]
    protocol: datasets.MemoryProtocol  # how memory sets are drawn from the pool (the run's, datasets.py)
    seed: int  # the run's seed: evaluation draws come from eval_generators(seed)
    draws: int  # memory draws averaged over (the paper: 5)
    batch_size: int  # test images per memory draw (the paper: 500, its batch_size_test)
    flipped_memory_features: Optional[torch.Tensor] = None  # [P, D] the pool flipped (memory_flip: CINIC10)

    @classmethod
    def build(cls, model: Classifier, data: datasets.ExperimentData, batch_size: int, seed: int, draws: int = 5,
              autocast: Optional[torch.dtype] = None, test_count: Optional[int] = None,
              split: str = "test", pool_features: Optional["FeatureCache"] = None) -> "FeatureCache":
        """Encode the test set (its first ``test_count`` images, if given) and the memory pool, once each.
        ``split="validation"``: the held-out validation split takes the test set's place (eval_every).
        ``pool_features``: a cache of the same model and data whose memory pool is taken instead of encoded again."""
        images_of, labels = ((lambda i: data.test_batch(i)[0], data.test_labels) if split == "test" else
                             (data.validation_images, data.train_labels[data.validation.to(data.device)]))
        test_count = len(labels) if test_count is None else min(test_count, len(labels))
        test_features = encode(model, images_of, test_count, batch_size, autocast)
        memory_features = memory_labels = flipped = None
        if model.uses_memory and pool_features is not None:
            memory_features, memory_labels = pool_features.memory_features, pool_features.memory_labels
            flipped = pool_features.flipped_memory_features
        elif model.uses_memory:
            pool = data.memory_pool
            memory_features = encode(model, lambda i: data.memory_batch(pool[i]), len(pool), batch_size, autocast)
            memory_labels = data.train_labels[pool.to(data.device)]
            if data.memory_flip:
                flipped = encode(model, lambda i: data.memory_batch(pool[i]).flip(-1), len(pool), batch_size, autocast)
        return cls(test_features, labels[:test_count], memory_features, memory_labels, data.memory_protocol,
                   seed, draws, batch_size, flipped)

    @property
    def mem_examples(self) -> int:
        return self.protocol.mem_examples

    def draw(self, generator: torch.Generator) -> "Draw":
        """A memory draw of the run's protocol (``ExperimentData.memory_set`` draws the same): pool positions, their
        features (the flipped image's features where the protocol flips), labels, and which were flipped."""
        positions, flips = self.protocol.draw(generator)
        positions = positions.to(self.memory_features.device)
        return Draw(positions, self.features_at(positions, flips), self.memory_labels[positions], flips)

    def features_at(self, positions: torch.Tensor, flips: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The cached features of pool ``positions``, the flipped image's where ``flips`` says."""
        positions = positions.to(self.memory_features.device)
        features = self.memory_features[positions]
        if flips is not None:
            features = torch.where(flips.to(features.device)[:, None], self.flipped_memory_features[positions], features)
        return features

    def generators(self) -> Tuple[torch.Generator, torch.Generator]:
        return eval_generators(self.seed)


@dataclass
class MemoryPass:
    """One pass over the test set with fresh memory draws per batch (as the paper), on cached features."""
    logits: torch.Tensor  # [T, C]
    content_weights: torch.Tensor  # [T, M]
    memory_positions: torch.Tensor  # [T, M] positions in the memory pool
    memory_predictions: Optional[torch.Tensor] = None  # [T, M] the model's predictions for those memory samples

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)


@dataclass
class BatchDraw:
    """One test batch with its memory draw (the paper's protocol: a fresh memory set per test batch)."""
    rows: slice  # the batch's rows of the cached test set
    features: torch.Tensor  # [B, D]
    positions: torch.Tensor  # [M] positions in the memory pool
    memory: torch.Tensor  # [M, D] their features
    memory_labels: torch.Tensor  # [M]
    flips: Optional[torch.Tensor]  # [M] which memory images are flipped (memory_flip), or None
    other: Optional[torch.Tensor] = None  # [M, D] the auxiliary draw: the memory the memory samples are classified with
    other_labels: Optional[torch.Tensor] = None


def batch_draws(cache: FeatureCache, generator: torch.Generator,
                auxiliary: Optional[torch.Generator] = None) -> Iterator[BatchDraw]:
    """The test batches in order, each with a memory draw from ``generator`` and, with ``auxiliary``, a second
    draw with which the memory samples themselves are classified (the paper's explanation protocol)."""
    for start in range(0, len(cache.test_labels), cache.batch_size):
        features = cache.test_features[start:start + cache.batch_size]
        drawn = cache.draw(generator)
        other = cache.draw(auxiliary)[1:3] if auxiliary is not None else (None, None)
        yield BatchDraw(slice(start, start + len(features)), features, *drawn, *other)


@torch.no_grad()
def memory_pass(model: Classifier, cache: FeatureCache, generator: torch.Generator,
                auxiliary: Optional[torch.Generator] = None) -> MemoryPass:
    """Test batches in order; each gets a fresh memory draw. With an ``auxiliary`` generator, a second
    draw per batch is the memory with which the memory samples themselves are classified (the paper's
    explanation protocol), giving ``memory_predictions``."""
    model.eval()
    logits, weights, positions, memory_preds = [], [], [], []
    for batch in batch_draws(cache, generator, auxiliary):
        size = len(batch.features)
        batch_logits, batch_weights = model.classify(batch.features, batch.memory, batch.memory_labels,
                                                     return_weights=True)
        logits.append(batch_logits.float())
        weights.append(batch_weights.float())
        positions.append(batch.positions.cpu().expand(size, -1))
        if auxiliary is not None:
            predicted = model.classify(batch.memory, batch.other, batch.other_labels).argmax(1)
            memory_preds.append(predicted.expand(size, -1))
    return MemoryPass(torch.cat(logits), torch.cat(weights), torch.cat(positions),
                      torch.cat(memory_preds) if auxiliary is not None else None)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (predictions.cpu() == labels.cpu()).float().mean().item()


@dataclass
class Evaluation:
    accuracy: float  # mean over draws
    accuracies: List[float]  # one per draw (one for models without memory)
    loss: float
    majority_vote_predictions: Optional[float] = None  # MVO, mean over draws
    majority_vote_labels: Optional[float] = None  # MVY


def majority_vote(values: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per row, the most frequent class among the memory samples with positive weight (ties: smallest class)."""
    votes = torch.nn.functional.one_hot(values.long(), num_classes).float() * (weights > 0).float().unsqueeze(-1)
    return votes.sum(1).argmax(1)


@torch.no_grad()
def evaluate(model: Classifier, cache: FeatureCache, majority: bool = False) -> Evaluation:
    """Test accuracy; memory models: mean over ``cache.draws`` passes with fresh memory draws (the paper uses 5)."""
    model.eval()
    labels = cache.test_labels
    if not model.uses_memory:
        logits = torch.cat([model.classify(cache.test_features[i:i + cache.batch_size]).float()
                            for i in range(0, len(labels), cache.batch_size)])
        return Evaluation(accuracy(logits.argmax(1), labels), [accuracy(logits.argmax(1), labels)],
                          model.loss(logits, labels).item())
    generator, auxiliary = cache.generators()
    accuracies, losses, mvo, mvy = [], [], [], []
    for _ in range(cache.draws):
        result = memory_pass(model, cache, generator, auxiliary if majority else None)
        accuracies.append(accuracy(result.predictions, labels))
        losses.append(model.loss(result.logits, labels).item())
        if majority:
            num_classes = result.logits.shape[1]
            mvo.append(accuracy(majority_vote(result.memory_predictions, result.content_weights, num_classes), labels))
            memory_labels = cache.memory_labels[result.memory_positions.to(cache.memory_labels.device)]
            mvy.append(accuracy(majority_vote(memory_labels, result.content_weights, num_classes), labels))
    return Evaluation(float(np.mean(accuracies)), accuracies, float(np.mean(losses)),
                      float(np.mean(mvo)) if majority else None, float(np.mean(mvy)) if majority else None)


@torch.no_grad()
def policy_accuracy(model: Classifier, cache: FeatureCache, policy: str) -> float:
    """Test accuracy when every test batch reads the memory ``policy`` gives (core/memory_policies.py: a fresh set
    per batch, as evaluation draws), the mean over ``cache.draws`` passes (one for ``pool``: it draws nothing).
    ``draws`` is evaluate()'s own accuracy, draw for draw."""
    from .memory_policies import memory_sets

    model.eval()
    generator, _ = cache.generators()
    labels = cache.memory_labels.cpu()
    kept = torch.arange(len(labels))
    accuracies = []
    for _ in range(1 if policy == "pool" else cache.draws):
        predictions = []
        for start in range(0, len(cache.test_labels), cache.batch_size):
            [(positions, flips)] = memory_sets(policy, labels, kept, cache.mem_examples, 1, generator,
                                               cache.protocol.flip)
            logits = model.classify(cache.test_features[start:start + cache.batch_size],
                                    cache.features_at(positions, flips), cache.memory_labels[positions])
            predictions.append(logits.argmax(1))
        accuracies.append(accuracy(torch.cat(predictions), cache.test_labels))
    return float(np.mean(accuracies))
