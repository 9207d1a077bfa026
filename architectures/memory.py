"""The Memory Wrap layer (La Rosa, Capobianco, Nardi, Applied Intelligence 2022).

A drop-in replacement for the published ``memorywrap`` package (1.1.x): same
constructor arguments, same forward signature, same state-dict keys, same
numbers; plus a read head that is honoured, distances computed with matrix
products, and clear errors on bad input.

    content_weights = sparsemax(-distance(head(input), head(memory)))   [B, M]
    memory_vector   = content_weights @ memory_encoding                 [B, D]
    MemoryWrapLayer: logits = classifier(cat[input_encoding, memory_vector])
    BaselineMemory:  logits = classifier(memory_vector)
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import nn

__all__ = ["sparsemax", "DISTANCES", "pairwise_distance", "MLP", "MemoryWrapLayer", "BaselineMemory"]

# The published package normalises with sqrt(|x|^2 + eps); keep it for identical numbers.
_NORM_EPSILON = 1e-6


class _Sparsemax(torch.autograd.Function):
    """Sparsemax over the last dimension (Martins & Astudillo, 2016), sort-based and exact."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, _ = torch.sort(scores, dim=-1, descending=True)
        cumulative = sorted_scores.cumsum(dim=-1) - 1.0
        ranks = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)
        in_support = ranks * sorted_scores > cumulative
        # non-finite scores (a diverging encoder) have no support: clamp it to 1, so that they give NaN weights and
        # reach the caller's non-finite loss check, instead of an index error here
        support_size = in_support.sum(dim=-1, keepdim=True).clamp(min=1)
        threshold = cumulative.gather(-1, support_size - 1) / support_size.to(scores.dtype)
        probabilities = torch.clamp(scores - threshold, min=0.0)
        ctx.save_for_backward(probabilities)
        return probabilities

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (probabilities,) = ctx.saved_tensors
        support = probabilities > 0
        grad = torch.where(support, grad_output, torch.zeros_like(grad_output))
        mean_on_support = grad.sum(dim=-1, keepdim=True) / support.sum(dim=-1, keepdim=True).to(grad.dtype)
        return torch.where(support, grad_output - mean_on_support, torch.zeros_like(grad_output))


def sparsemax(scores: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of ``scores`` onto the probability simplex, over the last dimension.

    Half-precision inputs (autocast) are projected in float32 and cast back.
    """
    if scores.dtype in (torch.float16, torch.bfloat16):
        return _Sparsemax.apply(scores.float()).to(scores.dtype)
    return _Sparsemax.apply(scores)


def _normalise(features: torch.Tensor) -> torch.Tensor:
    return features / torch.sqrt((features * features).sum(dim=1, keepdim=True) + _NORM_EPSILON)


def _cosine(inputs: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    return 1.0 - _normalise(inputs) @ _normalise(memory).T


def _squared_l2(inputs: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    # |x|^2 + |y|^2 - 2 x.y, clamped: rounding can make it slightly negative.
    squared = (inputs * inputs).sum(dim=1, keepdim=True) + (memory * memory).sum(dim=1)[None, :]
    return torch.clamp(squared - 2.0 * (inputs @ memory.T), min=0.0)


def _negative_dot(inputs: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    return -(inputs @ memory.T)


DISTANCES: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": _cosine,  # 1 - cosine similarity
    "l2": _squared_l2,  # squared Euclidean distance
    "dot": _negative_dot,  # minus the dot product
}


def _check_distance(name: str) -> str:
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; allowed distances are {sorted(DISTANCES)}")
    return name


def pairwise_distance(inputs: torch.Tensor, memory: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distances ``[B, M]`` between ``inputs [B, D]`` and ``memory [M, D]``, by matrix products only, in float32
    also under autocast: in bfloat16, |x|^2 + |y|^2 - 2 x.y and the cosine's dot products round away the
    differences between nearby samples and can change which sample is nearest."""
    compute = DISTANCES[_check_distance(distance)]
    with torch.autocast(inputs.device.type, enabled=False):
        return compute(_at_least_float32(inputs), _at_least_float32(memory))


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class MLP(nn.Module):
    """Two-layer perceptron ``fc1 -> relu -> fc2`` (the published package's classifier)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class _SparseContentAttention(nn.Module):
    """What both layers share: validation, the read head, and the sparse content attention."""

    def __init__(self, encoder_output_dim: int, head: Optional[nn.Module], distance: str):
        super().__init__()
        if not isinstance(encoder_output_dim, int) or encoder_output_dim <= 0:
            raise ValueError(f"encoder_output_dim must be a positive int, got {encoder_output_dim!r}")
        self.encoder_output_dim = encoder_output_dim
        self.distance_name = _check_distance(distance)
        # A module is registered (its parameters train); None stays a plain attribute, so that
        # head=None keeps exactly the published package's state-dict keys.
        self.head = head

    @property
    def distance(self) -> str:  # the published BaselineMemory names it `distance`
        return self.distance_name

    def _check_inputs(self, input_encoding: torch.Tensor, memory_encoding: torch.Tensor) -> None:
        name = type(self).__name__
        for label, tensor in (("input_encoding", input_encoding), ("memory_encoding", memory_encoding)):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(tensor).__name__}")
            if tensor.dim() != 2:
                raise ValueError(
                    f"{name}: {label} must be 2-D [{'B' if label == 'input_encoding' else 'M'}, "
                    f"{self.encoder_output_dim}], got shape {tuple(tensor.shape)}"
                    + (" (a single vector? add a batch dimension with .unsqueeze(0))" if tensor.dim() == 1 else "")
                )
            if tensor.shape[1] != self.encoder_output_dim:
                raise ValueError(
                    f"{name}: {label} has feature dimension {tensor.shape[1]}, "
                    f"expected encoder_output_dim={self.encoder_output_dim}"
                )
        if memory_encoding.shape[0] == 0:
            raise ValueError(f"{name}: the memory set is empty (memory_encoding has shape {tuple(memory_encoding.shape)}); "
                             "give at least one memory sample")
        if input_encoding.device != memory_encoding.device:
            raise ValueError(f"{name}: input_encoding is on {input_encoding.device} but memory_encoding is on "
                             f"{memory_encoding.device}; move both to the same device")
        if input_encoding.dtype != memory_encoding.dtype:
            raise ValueError(f"{name}: input_encoding has dtype {input_encoding.dtype} but memory_encoding has "
                             f"{memory_encoding.dtype}; cast both to the same dtype")

    def read_memory(self, input_encoding: torch.Tensor, memory_encoding: torch.Tensor):
        """Returns ``(memory_vector [B, D], content_weights [B, M])``."""
        self._check_inputs(input_encoding, memory_encoding)
        if self.head is not None:
            keys_query, keys_memory = self.head(input_encoding), self.head(memory_encoding)
        else:
            keys_query, keys_memory = input_encoding, memory_encoding
        content_weights = sparsemax(-pairwise_distance(keys_query, keys_memory, self.distance_name))
        memory_vector = content_weights.to(memory_encoding.dtype) @ memory_encoding
        return memory_vector, content_weights

    def extra_repr(self) -> str:
        return f"encoder_output_dim={self.encoder_output_dim}, distance={self.distance_name!r}"


class MemoryWrapLayer(_SparseContentAttention):
    """Memory Wrap: classifies from ``[input_encoding, memory_vector]``.

    Args:
        encoder_output_dim: D, the feature size of the encoder.
        output_dim: number of outputs (classes).
        head: optional read head applied to input and memory encodings before the distance
            (e.g. ``nn.Linear(D, K)``). ``None`` is the identity.
        classifier: optional module mapping ``[B, 2D]`` to ``[B, output_dim]``;
            default ``MLP(2D, 4D, output_dim)``.
        distance: ``'cosine'`` (default), ``'l2'`` or ``'dot'``.
    """

    def __init__(self, encoder_output_dim: int, output_dim: int, head: Optional[nn.Module] = None,
                 classifier: Optional[nn.Module] = None, distance: str = "cosine"):
        super().__init__(encoder_output_dim, head, distance)
        self.classifier = classifier or MLP(encoder_output_dim * 2, encoder_output_dim * 4, output_dim)

    def forward(self, input_encoding: torch.Tensor, memory_encoding: torch.Tensor, return_weights: bool = False):
        memory_vector, content_weights = self.read_memory(input_encoding, memory_encoding)
        logits = self.classifier(torch.cat([input_encoding, memory_vector], dim=1))
        return (logits, content_weights) if return_weights else logits


class BaselineMemory(_SparseContentAttention):
    """The paper's memory-only baseline: classifies from ``memory_vector`` alone.

    Same arguments as :class:`MemoryWrapLayer`; the default classifier is ``MLP(D, 2D, output_dim)``.
    """

    def __init__(self, encoder_output_dim: int, output_dim: int, head: Optional[nn.Module] = None,
                 classifier: Optional[nn.Module] = None, distance: str = "cosine"):
        super().__init__(encoder_output_dim, head, distance)
        self.classifier = classifier or MLP(encoder_output_dim, encoder_output_dim * 2, output_dim)

    def forward(self, input_encoding: torch.Tensor, memory_encoding: torch.Tensor, return_weights: bool = False):
        memory_vector, content_weights = self.read_memory(input_encoding, memory_encoding)
        logits = self.classifier(memory_vector)
        return (logits, content_weights) if return_weights else logits
