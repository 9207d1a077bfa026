"""Prototypical Networks (Snell et al., 2017) as the paper's baseline: prototypes are the per-class means of the
encoded memory set, drawn anew every step as for Memory Wrap; logits = minus the cosine distance to them.

A class with no image in the memory set has no prototype: its distance is the largest a cosine distance
can be, 2, so it gets the lowest logit (never NaN, and its probability is small but not zero).

Explanations: the memory samples that explain a prediction are the members of the winning prototype (the
memory images of the predicted class). Each member's weight is its share of the input's cosine similarity
to that prototype, ``x̂ · m_i / (n_c |mean_c|)`` (the shares sum to the similarity), clamped at zero (a member
that pulls away from the input does not support the prediction) and normalised to sum to 1. The top sample
is the member that contributes most.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .memory import pairwise_distance
from .registry import register_head

ABSENT_CLASS_DISTANCE = 2.0  # the largest cosine distance


def class_prototypes(memory_features: torch.Tensor, memory_labels: torch.Tensor, num_classes: int):
    """(prototypes [C, D]: the mean feature per class, counts [C]), in float32 also under autocast; a class without
    members gets zeros."""
    with torch.autocast(memory_features.device.type, enabled=False):
        members = F.one_hot(memory_labels, num_classes).float()  # [M, C]
        counts = members.sum(0)
        prototypes = (members.T @ memory_features.float()) / counts.clamp(min=1)[:, None]
    return prototypes, counts


@register_head("protonet", uses_memory=True, memory_labels=True)
class PrototypicalHead(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, **options):
        super().__init__()
        self.feature_dim, self.num_classes = feature_dim, num_classes

    def forward(self, features: torch.Tensor, memory_features: torch.Tensor, memory_labels: torch.Tensor,
                return_weights: bool = False):
        prototypes, counts = class_prototypes(memory_features, memory_labels, self.num_classes)
        distances = pairwise_distance(features, prototypes, "cosine")
        distances = torch.where(counts[None, :] > 0, distances, torch.full_like(distances, ABSENT_CLASS_DISTANCE))
        logits = -distances
        if not return_weights:
            return logits
        return logits, self.member_weights(features, memory_features, memory_labels, logits.argmax(1), prototypes)

    @staticmethod
    def member_weights(features, memory_features, memory_labels, predictions, prototypes) -> torch.Tensor:
        """[B, M]: each member's share of the input's cosine similarity to its predicted class's prototype."""
        members = memory_labels[None, :] == predictions[:, None]  # [B, M]
        counts = members.sum(1, keepdim=True).clamp(min=1)
        unit_inputs = F.normalize(features.float(), dim=1)
        prototype_norms = prototypes.float().norm(dim=1)[predictions].clamp(min=1e-12)[:, None]
        with torch.autocast(features.device.type, enabled=False):
            shares = (unit_inputs @ memory_features.float().T) / (counts * prototype_norms)
        shares = torch.where(members, shares.clamp(min=0), torch.zeros_like(shares))
        total = shares.sum(1, keepdim=True)
        uniform = members.float() / counts  # all members pull away: every member weighs the same
        return torch.where(total > 0, shares / total.clamp(min=1e-12), uniform)
