"""The paper's three heads: a linear layer (std), BaselineMemory (memory), MemoryWrapLayer (encoder_memory)."""
from torch import nn

from .memory import BaselineMemory, MemoryWrapLayer
from .registry import register_head


@register_head("std")
def linear(feature_dim: int, num_classes: int, **options) -> nn.Module:
    return nn.Linear(feature_dim, num_classes)


@register_head("memory", uses_memory=True)
def memory_only(feature_dim: int, num_classes: int, distance: str = "cosine", **options) -> nn.Module:
    """The paper's baseline: classifies from the memory vector alone."""
    return BaselineMemory(feature_dim, num_classes, distance=distance)


@register_head("encoder_memory", uses_memory=True)
def memory_wrap(feature_dim: int, num_classes: int, distance: str = "cosine", **options) -> nn.Module:
    """Memory Wrap: classifies from [input features, memory vector]."""
    return MemoryWrapLayer(feature_dim, num_classes, distance=distance)
