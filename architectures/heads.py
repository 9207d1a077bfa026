"""The paper's three heads: a linear layer (std), BaselineMemory (memory), MemoryWrapLayer (encoder_memory)."""
from typing import Optional

from torch import nn

from .memory import MLP, BaselineMemory, MemoryWrapLayer
from .registry import register_head


@register_head("std")
def linear(feature_dim: int, num_classes: int, **options) -> nn.Module:
    return nn.Linear(feature_dim, num_classes)


@register_head("memory", uses_memory=True)
def memory_only(feature_dim: int, num_classes: int, distance: str = "cosine", mlp_hidden: Optional[int] = None,
                **options) -> nn.Module:
    """The paper's baseline: classifies from the memory vector alone (its MLP: D -> 2D, or ``mlp_hidden``)."""
    classifier = MLP(feature_dim, mlp_hidden, num_classes) if mlp_hidden else None
    return BaselineMemory(feature_dim, num_classes, classifier=classifier, distance=distance)


@register_head("encoder_memory", uses_memory=True)
def memory_wrap(feature_dim: int, num_classes: int, distance: str = "cosine", mlp_hidden: Optional[int] = None,
                **options) -> nn.Module:
    """Memory Wrap: classifies from [input features, memory vector] (its MLP: 2D -> 4D, or ``mlp_hidden``)."""
    classifier = MLP(2 * feature_dim, mlp_hidden, num_classes) if mlp_hidden else None
    return MemoryWrapLayer(feature_dim, num_classes, classifier=classifier, distance=distance)
