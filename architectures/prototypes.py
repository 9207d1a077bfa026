"""Prototype heads on the encoder's features (after torch_prototypes; logits are minus distances).

    prototypes      learnt prototypes (LearntPrototypes): ``prototypes_per_class`` per class, initialised uniform
                    in [0, 1) as torch_prototypes; logits = -distance to the nearest prototype of each class, the
                    distance Euclidean (default, as torch_prototypes), squared Euclidean or cosine. Fixed, given
                    prototypes: ``prototypes_file`` (a [C * k, D] tensor saved with torch.save, or a .npy / .csv).
                    With a class metric D (config ``hierarchy``): a metric-guidance term (DistortionLoss, the
                    default, or RankLoss) on the class prototypes, weighted by ``metric_loss_weight``; soft labels
                    from D; YOLOv2-style hierarchical inference along the class tree (prototypes for the inner
                    nodes too).
    hyperspherical  Hyperspherical Prototype Networks (Mettes et al., 2019): fixed prototypes on the unit sphere,
                    spread by minimising their largest pairwise cosine (seeded, computed once per process and
                    saved in the checkpoint), features projected to the prototype dimension by a linear layer;
                    scores = -(1 - cos)^2, loss = (1 - cos)^2 to the true class's prototype, summed over the batch as
                    Mettes et al.'s code (``hyperspherical_reduction: mean`` averages it: the sum at a learning rate
                    batch-size times smaller).

A prototype head explains by ``distances(features)`` [B, P] and ``prototype_classes`` [P] (the class of each
prototype): the figures show the training images nearest to each prototype and each test image's distances.
"""
import functools
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .metric_guidance import DistortionLoss, RankLoss, hierarchical_log_probs, soft_label_loss
from .registry import register_head

PROTOTYPE_DISTANCES = ("euclidean", "squared_euclidean", "cosine")
METRIC_LOSSES = ("distortion", "rank", "none")
HYPERSPHERICAL_REDUCTIONS = ("sum", "mean")  # of the hyperspherical loss over the batch (the reference: sum)


def prototype_distances(points: torch.Tensor, prototypes: torch.Tensor, distance: str) -> torch.Tensor:
    """[N, P] distances, in float32 also under autocast (in bfloat16 the cancellation in |x|^2 + |p|^2 - 2 x.p
    changes the nearest prototype when the prototypes lie far from the origin, as learnt ones and class means
    drift to)."""
    with torch.autocast(points.device.type, enabled=False):
        points, prototypes = points.float(), prototypes.float()
        if distance == "cosine":
            return 1.0 - F.normalize(points, dim=1) @ F.normalize(prototypes, dim=1).T
        squared = (points.pow(2).sum(1, keepdim=True) + prototypes.pow(2).sum(1)[None, :]
                   - 2.0 * points @ prototypes.T).clamp(min=0)
        return squared if distance == "squared_euclidean" else squared.sqrt()


def load_prototypes(path) -> torch.Tensor:
    """Given prototypes: a tensor saved with torch.save, a .npy array, or a .csv of numbers, one prototype a row."""
    path = Path(path)
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path)).float()
    if path.suffix == ".csv":
        return torch.from_numpy(np.loadtxt(path, delimiter=",", ndmin=2)).float()
    return torch.as_tensor(torch.load(path, map_location="cpu", weights_only=True)).float()


@register_head("prototypes")
class LearntPrototypes(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, prototypes_per_class: int = 1,
                 prototype_distance: str = "euclidean", prototypes_file: Optional[str] = None,
                 class_costs: Optional[Sequence[Sequence[float]]] = None, class_parents: Optional[Sequence[int]] = None,
                 metric_loss: str = "distortion", metric_loss_weight: float = 1.0, rank_triplets: int = 50,
                 soft_labels: bool = False, soft_labels_beta: float = 1.0, hierarchical_inference: bool = False,
                 **options):
        super().__init__()
        if prototype_distance not in PROTOTYPE_DISTANCES:
            raise ValueError(f"prototype_distance must be one of {list(PROTOTYPE_DISTANCES)}, got {prototype_distance!r}")
        self.num_classes, self.per_class, self.distance = num_classes, prototypes_per_class, prototype_distance
        self.parents = list(class_parents) if hierarchical_inference else None
        nodes = len(self.parents) if self.parents is not None else num_classes  # inner nodes have prototypes too
        shape = (nodes * prototypes_per_class, feature_dim)
        if prototypes_file:
            given = load_prototypes(prototypes_file)
            if tuple(given.shape) != shape:
                raise ValueError(f"{prototypes_file} holds prototypes of shape {tuple(given.shape)}, expected {shape} "
                                 f"({nodes} classes x {prototypes_per_class} per class, {feature_dim} features)")
            self.register_buffer("prototypes", given)  # fixed
        else:
            self.prototypes = nn.Parameter(torch.rand(shape))
        costs = torch.as_tensor(class_costs, dtype=torch.float32) if class_costs is not None else None
        self.register_buffer("costs", costs)
        self.guidance, self.guidance_weight = None, metric_loss_weight
        if costs is not None and metric_loss != "none":
            metric = "cosine" if prototype_distance == "cosine" else "euclidean"
            self.guidance = (RankLoss(costs, rank_triplets, metric) if metric_loss == "rank"
                             else DistortionLoss(costs, metric))
        self.soft_labels_beta = soft_labels_beta if soft_labels and costs is not None else None

    @property
    def prototype_classes(self) -> torch.Tensor:
        return torch.arange(len(self.prototypes) // self.per_class).repeat_interleave(self.per_class)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        return prototype_distances(features.float(), self.prototypes.float(), self.distance)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        distances = self.distances(features).view(len(features), -1, self.per_class)
        scores = -distances.min(dim=2).values  # the nearest prototype of each class (node)
        if self.parents is not None:
            return hierarchical_log_probs(scores, self.parents, self.num_classes)
        return scores

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.soft_labels_beta is not None:
            return soft_label_loss(outputs, labels, self.costs, self.soft_labels_beta)
        return F.cross_entropy(outputs.float(), labels)

    def regularization(self) -> torch.Tensor:
        if self.guidance is None:
            return torch.zeros((), device=self.prototypes.device)
        leaves = self.prototypes[: self.num_classes * self.per_class].float()
        class_prototypes = leaves.view(self.num_classes, self.per_class, -1).mean(1)
        return self.guidance_weight * self.guidance(class_prototypes)


SEPARATION_TEMPERATURE = 0.05


@functools.lru_cache(maxsize=None)
def hyperspherical_prototypes(num_classes: int, dimension: int, seed: int = 0, steps: int = 2000) -> torch.Tensor:
    """Unit vectors spread on the sphere, the optimum of Mettes et al.'s separation loss (the mean over prototypes of
    their largest cosine to another); seeded, computed once per process.

    For C <= D + 1 the optimum is known: a regular simplex (every pairwise cosine -1/(C-1)), here the centred
    one-hot vectors placed in a random (seeded) C-dimensional subspace, in milliseconds at any dimension. Otherwise
    SGD (lr 0.1, momentum 0.9, as Mettes et al.) on the loss, renormalised after every step, with the max smoothed
    by a log-sum-exp at temperature 0.05 (with the exact max, 10000 steps stop short of the optimum)."""
    generator = torch.Generator().manual_seed(seed)
    if num_classes <= dimension + 1:
        simplex = F.normalize(torch.eye(num_classes) - 1.0 / num_classes, dim=1)  # [C, C], in the plane sum = 0
        size = max(dimension, num_classes)
        basis, _ = torch.linalg.qr(torch.randn(size, num_classes, generator=generator))  # orthonormal columns
        placed = simplex @ basis.T  # [C, size]
        if size > dimension:  # C = D + 1: the simplex spans D dimensions; rotate it into the first D
            _, _, right = torch.linalg.svd(placed, full_matrices=False)
            placed = placed @ right[:dimension].T
        return F.normalize(placed, dim=1)
    prototypes = F.normalize(torch.randn(num_classes, dimension, generator=generator), dim=1).requires_grad_()
    optimizer = torch.optim.SGD([prototypes], lr=0.1, momentum=0.9)
    for _ in range(steps):
        unit = F.normalize(prototypes, dim=1)
        cosines = unit @ unit.T - 2.0 * torch.eye(num_classes)
        loss = (SEPARATION_TEMPERATURE * torch.logsumexp(cosines / SEPARATION_TEMPERATURE, dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            prototypes.copy_(F.normalize(prototypes, dim=1))
    return prototypes.detach()


def largest_cosines(prototypes: torch.Tensor) -> torch.Tensor:
    """Per prototype, its largest cosine similarity to another prototype."""
    unit = F.normalize(prototypes, dim=1)
    return (unit @ unit.T - 2.0 * torch.eye(len(unit), device=unit.device)).max(dim=1).values


@register_head("hyperspherical")
class HypersphericalPrototypes(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, prototype_dim: Optional[int] = None,
                 prototype_seed: int = 0, hyperspherical_reduction: str = "sum", **options):
        super().__init__()
        if hyperspherical_reduction not in HYPERSPHERICAL_REDUCTIONS:
            raise ValueError(f"hyperspherical_reduction must be one of {list(HYPERSPHERICAL_REDUCTIONS)}, got "
                             f"{hyperspherical_reduction!r}")
        self.reduction = hyperspherical_reduction
        dimension = prototype_dim or num_classes
        self.projection = nn.Linear(feature_dim, dimension)
        self.register_buffer("prototypes", hyperspherical_prototypes(num_classes, dimension, prototype_seed).clone())

    @property
    def prototype_classes(self) -> torch.Tensor:
        return torch.arange(len(self.prototypes))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine distances of the projected features to the prototypes (in float32)."""
        return prototype_distances(self.projection(features), self.prototypes, "cosine")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distances(features).pow(2)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(1 - cos)^2 to the true class's prototype, summed over the batch (the reference) or averaged."""
        losses = -outputs.gather(1, labels[:, None])
        return losses.sum() if self.reduction == "sum" else losses.mean()
