"""Metric guidance for prototype heads (Sainte Fare Garnot & Landrieu, 2020; their torch_prototypes package):
a class metric ``D`` (C x C costs: symmetric, zero diagonal, non-negative) shapes the prototypes.

    DistortionLoss(D)       scale-free squared distortion between the prototypes' pairwise distances and D
    RankLoss(D)             the prototypes' distances ranked as D ranks them, on random triplets
    soft_label_loss         cross-entropy against soft labels softmax(-beta * D[y] / max D)
    hierarchical_log_probs  YOLOv2-style inference along a class tree: a softmax within each group of siblings,
                            a leaf's log-probability is the sum of the conditional ones on its path to the root
"""
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def euclidean_matrix(points: torch.Tensor) -> torch.Tensor:
    return torch.cdist(points, points)


def cosine_matrix(points: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(points, dim=1)
    return 1.0 - unit @ unit.T


class DistortionLoss(nn.Module):
    """Scale-free squared distortion: mean over pairs of ((s * d_ij - D_ij) / D_ij)^2 with the best scale s."""

    def __init__(self, costs: torch.Tensor, distance: str = "euclidean"):
        super().__init__()
        self.register_buffer("costs", torch.as_tensor(costs, dtype=torch.float32), persistent=False)
        self.matrix = cosine_matrix if distance == "cosine" else euclidean_matrix

    def forward(self, prototypes: torch.Tensor) -> torch.Tensor:
        distances = self.matrix(prototypes.float())
        count = len(self.costs)
        denominator = self.costs + torch.eye(count, device=self.costs.device)
        ratios = distances / denominator
        scale = ratios.sum() / ratios.pow(2).sum().clamp(min=1e-12)  # the least-squares scale of the ratios
        distortion = (scale * distances - self.costs).pow(2) / denominator.pow(2)
        return distortion.sum() / (count * count - count)


class RankLoss(nn.Module):
    """For random triplets (i, j, k): the prototypes' d_ij > d_ik exactly when D_ij > D_ik (a logistic loss)."""

    def __init__(self, costs: torch.Tensor, triplets: int = 50, distance: str = "euclidean"):
        super().__init__()
        self.register_buffer("costs", torch.as_tensor(costs, dtype=torch.float32), persistent=False)
        self.triplets = triplets
        self.matrix = cosine_matrix if distance == "cosine" else euclidean_matrix

    def forward(self, prototypes: torch.Tensor) -> torch.Tensor:
        count = len(self.costs)
        i, j, k = torch.stack([torch.randperm(count)[:3] for _ in range(self.triplets)], dim=1).to(self.costs.device)
        target = (self.costs[i, j] > self.costs[i, k]).float()
        distances = self.matrix(prototypes.float())
        return F.binary_cross_entropy_with_logits(distances[i, j] - distances[i, k], target)


def soft_label_loss(logits: torch.Tensor, labels: torch.Tensor, costs: torch.Tensor, beta: float) -> torch.Tensor:
    """KL divergence from the soft labels softmax(-beta * D[y] / max D) to softmax(logits) (torch_prototypes'
    SoftCrossEntropy)."""
    targets = torch.softmax(-beta * costs[labels] / costs.max().clamp(min=1e-12), dim=1)
    return F.kl_div(F.log_softmax(logits.float(), dim=1), targets, reduction="batchmean")


def hierarchical_log_probs(node_scores: torch.Tensor, parents: Sequence[int], num_classes: int) -> torch.Tensor:
    """Leaf log-probabilities [B, C] from scores of every tree node [B, N] (leaves 0..C-1, then inner nodes).

    ``parents[n]`` is the node index of n's parent, or -1 for a child of the root. P(node | parent) is a softmax
    over the node's siblings; a leaf's probability is the product along its path, so the leaves sum to 1."""
    parents = torch.as_tensor(parents, device=node_scores.device)
    conditional = torch.empty_like(node_scores, dtype=torch.float32)
    scores = node_scores.float()
    for parent in parents.unique():
        siblings = (parents == parent).nonzero().flatten()
        conditional[:, siblings] = F.log_softmax(scores[:, siblings], dim=1)
    log_probs = conditional[:, :num_classes].clone()
    ancestors = parents[:num_classes].clone()
    while (ancestors >= 0).any():
        present = ancestors >= 0
        log_probs[:, present] += conditional[:, ancestors[present]]
        ancestors = torch.where(present, parents[ancestors.clamp(min=0)], ancestors)
    return log_probs
