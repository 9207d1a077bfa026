"""Explanation accuracy on cached features (the paper's Tables 5-6), and which models an explanation serves.

Memory heads (memory, encoder_memory, protonet, matching): the memory samples with positive weight explain a
prediction, by example when the model predicts them in the same class as the input, by counterfactual
otherwise. A memory sample's own prediction comes from the model with another memory draw, as the paper.
The weights are Memory Wrap's sparse content weights, Matching Networks' attention, and for ProtoNet each
member's share of the input's similarity to the winning prototype (architectures/protonet.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

import datasets
from architectures import Classifier, head_entry, list_heads
from base.errors import UserError
from core.checkpoints import Checkpoint
from core.config import PAPER_CODE_EVALUATION
from core.evaluation import FeatureCache, MemoryPass, memory_pass


class ExplanationError(UserError, ValueError):
    """A request the explanation scripts cannot serve (a model without memory...)."""


MEMORY_POOLS = ("run", "full")  # explanation_accuracy.py --memory_pool
PAPER_SPLIT_SEED = 42  # the seed of the paper's data loaders when its scripts pass none


def paper_memory_pool(data: datasets.ExperimentData) -> torch.Tensor:
    """The pool the paper's explanation_accuracy.py drew memory sets from (``--memory_pool=full``): every
    training image for CIFAR10, else every image left after the paper loaders' validation split (seed 42;
    6000 images, 10 for CINIC10) -- not the run's reduced subset (``datasets.paper_code_pool``)."""
    val_examples = (None if data.spec.name == "CIFAR10" else
                    PAPER_CODE_EVALUATION.get(data.spec.name, {}).get("val_examples", len(data.validation)))
    return datasets.paper_code_pool(len(data.train_labels), val_examples, seed=PAPER_SPLIT_SEED)


def memory_modalities() -> List[str]:
    """The heads whose predictions memory samples explain."""
    return [name for name in list_heads() if head_entry(name).uses_memory]


def prototype_modalities() -> List[str]:
    """The heads that classify by distances to class prototypes (they define ``distances``)."""
    return [name for name in list_heads() if hasattr(head_entry(name).factory, "distances")]


def require_explainable(checkpoint: Checkpoint, modalities: List[str], what: str) -> None:
    """One line naming the modalities ``what`` serves, for a checkpoint of another modality."""
    if checkpoint.modality not in modalities:
        reason = "it has no memory" if not head_entry(checkpoint.modality).uses_memory else "it is not supported"
        raise ExplanationError(f"{checkpoint.path} is a {checkpoint.modality} model: {reason}, so {what} cannot "
                               f"explain it; {what} serves the modalities {modalities}")


def require_memory_model(checkpoint: Checkpoint, what: str = "this script") -> None:
    require_explainable(checkpoint, memory_modalities(), what)


# --- explanation accuracy -------------------------------------------------------------------------

@dataclass
class ExplanationScores:
    explanation_accuracy: float  # % of test images whose top memory sample is predicted in the input's predicted class
    counterfactual_accuracy: Optional[float]  # accuracy on the images whose top sample is a counterfactual (None: none)
    example_accuracy: Optional[float]  # accuracy on the images whose top sample is an explanation by example
    counterfactuals: int
    examples: int


def top_sample_scores(result: MemoryPass, labels: torch.Tensor) -> ExplanationScores:
    top = result.content_weights.argmax(1)
    top_prediction = result.memory_predictions.gather(1, top[:, None]).squeeze(1)
    predictions = result.predictions
    by_example = (top_prediction == predictions).cpu()
    correct = (predictions == labels).cpu()
    examples, counterfactuals = int(by_example.sum()), int((~by_example).sum())
    return ExplanationScores(
        explanation_accuracy=100.0 * by_example.float().mean().item(),
        counterfactual_accuracy=100.0 * correct[~by_example].float().mean().item() if counterfactuals else None,
        example_accuracy=100.0 * correct[by_example].float().mean().item() if examples else None,
        counterfactuals=counterfactuals, examples=examples)


@torch.no_grad()
def explanation_scores(model: Classifier, cache: FeatureCache) -> List[ExplanationScores]:
    """One ExplanationScores per memory draw (``cache.draws``), on cached features (no image is encoded twice)."""
    generator, auxiliary = cache.generators()
    return [top_sample_scores(memory_pass(model, cache, generator, auxiliary), cache.test_labels)
            for _ in range(cache.draws)]


def mean_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
