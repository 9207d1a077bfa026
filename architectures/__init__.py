"""Encoders, the Memory Wrap heads, and one composition for every modality.

    model = build_model("mobilenet", "encoder_memory", num_classes=10)
    logits = model(images, memory_images)                    # memory modalities
    logits, content_weights = model(images, memory_images, return_weights=True)
    logits = build_model("mobilenet", "std", 10)(images)     # std

    features = model.encode(images)                          # the encoder alone
    logits = model.classify(features, memory_features)       # the head alone, on cached features
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

# Importing the network modules registers them.
from . import densenet, efficientnet, googlenet, mobilenet, resnet, shufflenet  # noqa: F401
from .memory import MLP, BaselineMemory, MemoryWrapLayer, pairwise_distance, sparsemax
from .registry import create_encoder, list_encoders, register_encoder

__all__ = [
    "MODALITIES", "Classifier", "build_model", "build_head", "load_paper_state_dict", "to_paper_state_dict",
    "MemoryWrapLayer", "BaselineMemory", "MLP", "sparsemax", "pairwise_distance",
    "create_encoder", "list_encoders", "register_encoder",
]

MODALITIES = ("std", "memory", "encoder_memory")


def build_head(modality: str, feature_dim: int, num_classes: int, distance: str = "cosine") -> nn.Module:
    """The paper's heads: a linear layer (std), BaselineMemory (memory), MemoryWrapLayer (encoder_memory)."""
    if modality == "std":
        return nn.Linear(feature_dim, num_classes)
    if modality == "memory":
        return BaselineMemory(feature_dim, num_classes, distance=distance)
    if modality == "encoder_memory":
        return MemoryWrapLayer(feature_dim, num_classes, distance=distance)
    raise ValueError(f"unknown modality {modality!r}; allowed modalities are {list(MODALITIES)}")


class Classifier(nn.Module):
    """An encoder composed with a head. Memory heads read a memory set of images encoded by the same encoder."""

    def __init__(self, encoder: nn.Module, head: nn.Module, modality: str):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; allowed modalities are {list(MODALITIES)}")
        self.encoder = encoder
        self.head = head
        self.modality = modality

    @property
    def uses_memory(self) -> bool:
        return self.modality != "std"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be a 4-D batch [N, C, H, W], got shape {tuple(images.shape)}")
        return self.encoder(images)

    def classify(self, features: torch.Tensor, memory_features: Optional[torch.Tensor] = None,
                 return_weights: bool = False):
        """The head alone, on precomputed features."""
        if not self.uses_memory:
            if memory_features is not None:
                raise ValueError("a std model takes no memory set")
            if return_weights:
                raise ValueError("a std model has no content weights (return_weights=True needs a memory modality)")
            return self.head(features)
        if memory_features is None:
            raise ValueError(f"a {self.modality} model needs a memory set: call model(images, memory_images)")
        return self.head(features, memory_features, return_weights)

    def forward(self, images: torch.Tensor, memory_images: Optional[torch.Tensor] = None,
                return_weights: bool = False):
        if self.uses_memory and memory_images is None:
            raise ValueError(f"a {self.modality} model needs a memory set: call model(images, memory_images)")
        features = self.encode(images)
        # Two encoder passes, as the paper (BatchNorm sees input and memory batches separately).
        memory_features = self.encode(memory_images) if memory_images is not None else None
        return self.classify(features, memory_features, return_weights)


def build_model(model_name: str, modality: str, num_classes: int, distance: str = "cosine") -> Classifier:
    """Any registered encoder with any of the paper's heads."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; allowed modalities are {list(MODALITIES)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    encoder = create_encoder(model_name)
    return Classifier(encoder, build_head(modality, encoder.feature_dim, num_classes, distance), modality)


# --- the paper's checkpoints --------------------------------------------------------------------
# The paper's code keeps one class per network and modality: encoder parameters at the top level,
# the std head as `linear.*`, the memory heads as `mw.*`. Ours: `encoder.*` and `head.*`.

def _from_paper_key(key: str) -> str:
    if key.startswith("linear."):
        return "head." + key[len("linear."):]
    if key.startswith("mw."):
        return "head." + key[len("mw."):]
    return "encoder." + key


def _to_paper_key(key: str, modality: str) -> str:
    if key.startswith("head."):
        return ("linear." if modality == "std" else "mw.") + key[len("head."):]
    return key[len("encoder."):]


def is_paper_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return not any(key.startswith(("encoder.", "head.")) for key in state_dict)


def load_paper_state_dict(model: Classifier, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict saved by the paper's code (``linear.*`` / ``mw.*`` / encoder keys) into ``model``.

    Strict: a missing or unexpected key, or a shape mismatch, raises with the names involved.
    """
    mapped = {_from_paper_key(key): value for key, value in state_dict.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"this checkpoint does not match a {type(model.encoder).__name__} {model.modality} model: "
            f"{len(missing)} missing keys (first: {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(first: {unexpected[:3]}); check --model and --modality")
    wrong = [(k, tuple(mapped[k].shape), tuple(v.shape)) for k, v in expected.items() if mapped[k].shape != v.shape]
    if wrong:
        raise ValueError(f"shape mismatch for {len(wrong)} keys, first (key, checkpoint, model): {wrong[0]}; "
                         "check --model, --modality and the number of classes")
    model.load_state_dict(mapped, strict=True)


def to_paper_state_dict(model: Classifier) -> Dict[str, torch.Tensor]:
    """Our state dict in the paper's key layout (to use our weights with the paper's code)."""
    return {_to_paper_key(key, model.modality): value for key, value in model.state_dict().items()}
