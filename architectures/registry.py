"""Encoders register themselves by name; one factory builds any of them (as timm's create_model)."""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

_ENCODERS: Dict[str, Callable[[], nn.Module]] = {}


def register_encoder(name: str):
    """Class or function decorator: ``@register_encoder("mynet")`` makes ``create_encoder("mynet")`` work.

    The registered callable takes no arguments and returns an ``nn.Module`` that maps
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


def create_encoder(name: str) -> nn.Module:
    if name not in _ENCODERS:
        raise ValueError(f"unknown model {name!r}; registered encoders are {list_encoders()}")
    encoder = _ENCODERS[name]()
    if not isinstance(getattr(encoder, "feature_dim", None), int):
        raise TypeError(f"encoder {name!r} must expose an int attribute `feature_dim`")
    return encoder
