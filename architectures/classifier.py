"""One composition for every modality: an encoder and a registered head.

    model = build_model("mobilenet", "encoder_memory", num_classes=10)
    logits = model(images, memory_images)                      # memory modalities
    logits, content_weights = model(images, memory_images, return_weights=True)
    logits = build_model("mobilenet", "std", 10)(images)       # std

    features = model.encode(images)                            # the encoder alone
    logits = model.classify(features, memory_features)         # the head alone, on cached features
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .registry import build_head, create_encoder, head_entry
from .self_attention import insert_self_attention


class Classifier(nn.Module):
    """An encoder composed with a head. Memory heads read a memory set of images encoded by the same encoder."""

    def __init__(self, encoder: nn.Module, head: nn.Module, modality: str):
        super().__init__()
        entry = head_entry(modality)
        self.encoder = encoder
        self.head = head
        self.modality = modality
        self._memory_labels = entry.memory_labels
        self._uses_memory = entry.uses_memory

    @property
    def uses_memory(self) -> bool:
        return self._uses_memory

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be a 4-D batch [N, C, H, W], got shape {tuple(images.shape)}")
        return self.encoder(images)

    def classify(self, features: torch.Tensor, memory_features: Optional[torch.Tensor] = None,
                 memory_labels: Optional[torch.Tensor] = None, return_weights: bool = False):
        """The head alone, on precomputed features."""
        if not self.uses_memory:
            if memory_features is not None:
                raise ValueError(f"a {self.modality} model takes no memory set")
            if return_weights:
                raise ValueError(f"a {self.modality} model has no content weights (return_weights=True needs a "
                                 f"memory modality)")
            return self.head(features)
        if memory_features is None:
            raise ValueError(f"a {self.modality} model needs a memory set: call model(images, memory_images)")
        if self._memory_labels:
            if memory_labels is None:
                raise ValueError(f"a {self.modality} model needs the labels of its memory set: call "
                                 f"model(images, memory_images, memory_labels)")
            return self.head(features, memory_features, memory_labels=memory_labels, return_weights=return_weights)
        return self.head(features, memory_features, return_weights=return_weights)

    def forward(self, images: torch.Tensor, memory_images: Optional[torch.Tensor] = None,
                memory_labels: Optional[torch.Tensor] = None, return_weights: bool = False,
                labels: Optional[torch.Tensor] = None):
        """``labels`` (training only) reach heads that learn class statistics from the batch (``head.update``)."""
        if self.uses_memory and memory_images is None:
            raise ValueError(f"a {self.modality} model needs a memory set: call model(images, memory_images)")
        features = self.encode(images)
        # Two encoder passes, as the paper (BatchNorm sees input and memory batches separately).
        memory_features = self.encode(memory_images) if memory_images is not None else None
        return self.forward_features(features, memory_features, memory_labels, return_weights, labels)

    def forward_features(self, features: torch.Tensor, memory_features: Optional[torch.Tensor] = None,
                         memory_labels: Optional[torch.Tensor] = None, return_weights: bool = False,
                         labels: Optional[torch.Tensor] = None):
        """``forward`` after the encoder: the head on features, learning class statistics from ``labels`` in
        training (a frozen encoder's cached features train the head through here, core/frozen.py)."""
        if labels is not None and self.training and hasattr(self.head, "update"):
            self.head.update(features.detach(), labels)
        return self.classify(features, memory_features, memory_labels, return_weights)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The head's loss on its outputs: cross-entropy (with ``label_smoothing``) unless the head defines its own
        ``loss`` (which then ignores label smoothing)."""
        if hasattr(self.head, "loss"):
            return self.head.loss(outputs, labels)
        return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing)

    def regularization(self) -> torch.Tensor | float:
        """What the head adds to the training loss beyond ``loss`` (e.g. a metric-guidance term), or 0."""
        return self.head.regularization() if hasattr(self.head, "regularization") else 0.0


def build_model(model_name: str, modality: str, num_classes: int, self_attention: Optional[str] = None,
                self_attention_ks: int = 1, self_attention_sym: bool = False, self_attention_spectral_norm: bool = True,
                encoder_options: Optional[Mapping[str, Any]] = None, **head_options) -> Classifier:
    """Any registered encoder with any registered head; ``head_options`` (``distance=...``) go to the head,
    ``encoder_options`` (``{"final_norm": False}`` for the ViT) to the encoder's factory.
    ``self_attention`` ('reference', 'last_stage' or a module path) inserts a SimpleSelfAttention block into the
    encoder. An encoder may define ``initialise_head(head)``, its reference's initialisation of the layers after it
    (WRN-28-10 zeroes every Linear bias)."""
    head_entry(modality)  # unknown modality: the error names the registered ones
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    encoder = create_encoder(model_name, **(encoder_options or {}))
    if self_attention is not None:
        insert_self_attention(encoder, self_attention, self_attention_ks, self_attention_sym,
                              self_attention_spectral_norm)
    head = build_head(modality, encoder.feature_dim, num_classes, **head_options)
    if hasattr(encoder, "initialise_head"):
        encoder.initialise_head(head)
    return Classifier(encoder, head, modality)
