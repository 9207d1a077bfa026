"""Encoders and heads register themselves by name; one factory builds any of them (as timm's create_model).

    @register_encoder("mynet")            # a class or function taking no arguments (or options with defaults)
    class MyNet(nn.Module): feature_dim = 256; ...

    @register_head("myhead", uses_memory=False)   # factory(feature_dim, num_classes, **options)
    def my_head(feature_dim, num_classes, **options): return nn.Linear(feature_dim, num_classes)

A head factory receives every head option of the config (``distance``, ...) as keywords and takes the
ones it needs (end its signature with ``**options``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from torch import nn

_ENCODERS: Dict[str, Callable[[], nn.Module]] = {}
_HEADS: Dict[str, "HeadEntry"] = {}


def register_encoder(name: str):
    """Class or function decorator: ``@register_encoder("mynet")`` makes ``create_encoder("mynet")`` work.

    The registered callable takes no arguments (or keyword options with defaults) and returns an ``nn.Module`` that maps
    ``[N, 3, 32, 32]`` images to ``[N, feature_dim]`` features and has an int ``feature_dim``.
    """
    def decorator(factory):
        if name in _ENCODERS:
            raise ValueError(f"an encoder named {name!r} is already registered")
        _ENCODERS[name] = factory
        return factory
    return decorator


def list_encoders() -> List[str]:
    return sorted(_ENCODERS)


def encoder_problem(name: str) -> Optional[str]:
    """Why ``name`` is no encoder (None when it is one): not registered, or a ``timm/<name>`` that timm lacks."""
    from .timm_backbone import check_timm_name, is_timm_name

    if is_timm_name(name):
        try:
            check_timm_name(name)
        except ValueError as error:
            return str(error)
        return None
    if name in _ENCODERS:
        return None
    return f"unknown model {name!r}; registered encoders are {list_encoders()}, or timm/<name> for a timm model"


def create_encoder(name: str, **options) -> nn.Module:
    """The encoder ``name``; ``options`` go to its factory (the ViT's ``final_norm``), which must accept them.
    ``timm/<name>``: a timm backbone (architectures/timm_backbone.py), which takes no options."""
    from .timm_backbone import TimmEncoder, is_timm_name

    if is_timm_name(name):
        if options:
            raise ValueError(f"encoder {name!r} takes no option {sorted(options)}")
        return TimmEncoder(name)
    if name not in _ENCODERS:
        raise ValueError(encoder_problem(name))
    try:
        inspect.signature(_ENCODERS[name]).bind(**options)
    except TypeError:
        raise ValueError(f"encoder {name!r} takes no option {sorted(options)} (options: "
                         f"{list(inspect.signature(_ENCODERS[name]).parameters) or 'none'})") from None
    encoder = _ENCODERS[name](**options)
    if not isinstance(getattr(encoder, "feature_dim", None), int):
        raise TypeError(f"encoder {name!r} must expose an int attribute `feature_dim`")
    return encoder


@dataclass(frozen=True)
class HeadEntry:
    """A registered head (a modality)."""
    name: str
    factory: Callable[..., nn.Module]
    uses_memory: bool  # forward(features, memory_features, ...) with a fresh memory set at every step
    memory_labels: bool  # ... and forward(..., memory_labels=...) gets the memory set's labels


def register_head(name: str, uses_memory: bool = False, memory_labels: bool = False):
    """Decorator for a head factory ``factory(feature_dim, num_classes, **options) -> nn.Module``.

    A head without memory is called as ``head(features)``; a memory head as
    ``head(features, memory_features, return_weights=...)`` (plus ``memory_labels=`` when
    ``memory_labels``), returning logits, or ``(logits, content_weights [B, M])``. Optional methods:
    ``loss(outputs, labels)`` (default cross-entropy), ``update(features, labels)`` (called in training
    before the forward pass, for heads that learn class statistics such as DeepNCM),
    ``regularization()`` (added to the loss).
    """
    def decorator(factory):
        if name in _HEADS:
            raise ValueError(f"a head named {name!r} is already registered")
        _HEADS[name] = HeadEntry(name, factory, uses_memory, memory_labels or False)
        return factory
    return decorator


def list_heads() -> List[str]:
    """Registered heads, in registration order (the paper's three first)."""
    return list(_HEADS)


def head_entry(name: str) -> HeadEntry:
    if name not in _HEADS:
        raise ValueError(f"unknown modality {name!r}; allowed modalities are {list_heads()}")
    return _HEADS[name]


def build_head(modality: str, feature_dim: int, num_classes: int, **options) -> nn.Module:
    return head_entry(modality).factory(feature_dim, num_classes, **options)
