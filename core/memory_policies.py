"""Which memory a prediction reads: the memory sets drawn from a model's memory pool when it predicts, by name.

    sets = memory_sets("draws", pool_labels, kept, mem_examples=100, draws=5, generator=generator)
    for positions, flips in sets: ...      # positions in the pool [M]; which are flipped [M] bool, or None

- ``draws`` (the paper's, and evaluation's): ``draws`` memory sets of ``mem_examples`` images drawn at random, each
  by the run's protocol (datasets.MemoryProtocol: the very generator calls of training and evaluation, so that with
  nothing excluded the sets are evaluation's, position for position).
- ``pool``: the whole pool as one memory set, the same for every image ("the training images most like this one",
  sparsemax over all of them); deterministic.
- ``balanced``: ``draws`` memory sets with the same number of images of every class (``mem_examples`` // classes,
  at least one), drawn at random.

``kept`` (positions in the pool) is what a policy may draw from: every position, or fewer where images were left out
(``--exclude``) or the memory kept to some classes (``--classes``). A policy other than ``draws`` changes what the
model reads, not how it was trained: its test accuracy is measured in docs/results.md. A new policy is one function
here and one line in ``POLICIES``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from datasets import MemoryProtocol

MemorySets = List[Tuple[torch.Tensor, Optional[torch.Tensor]]]


def evaluation_draws(pool_labels: torch.Tensor, kept: torch.Tensor, mem_examples: int, draws: int,
                     generator: torch.Generator, flip: bool = False) -> MemorySets:
    protocol = MemoryProtocol(len(kept), min(mem_examples, len(kept)), flip)
    sets = []
    for _ in range(draws):
        positions, flips = protocol.draw(generator)
        sets.append((kept[positions], flips))
    return sets


def whole_pool(pool_labels: torch.Tensor, kept: torch.Tensor, mem_examples: int, draws: int,
               generator: torch.Generator, flip: bool = False) -> MemorySets:
    return [(kept, None)]


def balanced_draws(pool_labels: torch.Tensor, kept: torch.Tensor, mem_examples: int, draws: int,
                   generator: torch.Generator, flip: bool = False) -> MemorySets:
    labels = pool_labels[kept].cpu()
    classes = labels.unique()
    per_class = max(1, mem_examples // len(classes))
    sets = []
    for _ in range(draws):
        chosen = []
        for label in classes.tolist():
            members = kept[labels == label]
            chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
        positions = torch.cat(chosen)
        flips = torch.rand(len(positions), generator=generator) < 0.5 if flip else None
        sets.append((positions, flips))
    return sets


POLICIES: Dict[str, Callable[..., MemorySets]] = {  # a new policy: one function and one line here
    "draws": evaluation_draws,
    "pool": whole_pool,
    "balanced": balanced_draws,
}


def memory_sets(policy: str, pool_labels: torch.Tensor, kept: torch.Tensor, mem_examples: int, draws: int,
                generator: torch.Generator, flip: bool = False) -> MemorySets:
    """The memory sets ``policy`` reads, as (positions in the pool, flips or None); a ValueError for an unknown
    policy or nothing to draw from."""
    if policy not in POLICIES:
        raise ValueError(f"unknown memory policy {policy!r}; the policies are {list(POLICIES)}")
    if not len(kept):
        raise ValueError("the memory pool is empty: every image was left out")
    return POLICIES[policy](pool_labels, kept, mem_examples, draws, generator, flip)
