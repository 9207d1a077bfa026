"""Any timm model as an encoder: ``model: timm/<name>`` is ``timm.create_model(name, pretrained=False,
num_classes=0)`` (the backbone without its classifier), its feature size read from the model.

    encoder = TimmEncoder("resnet18")                    # encoder.feature_dim == 512
    sha256 = load_encoder_weights(encoder, "resnet18.safetensors")   # a local file: nothing is downloaded

Weights are never downloaded here: ``pretrained_path`` names a local ``.safetensors`` or ``.pth`` file of the model's
own keys (the classifier's keys in it are dropped).

timm imports torchvision when it is imported (for FrozenBatchNorm2d and its data transforms, which building and
running a backbone never uses). Where torchvision is installed but cannot be imported (PyPI has no CPU build of it
for the CPU build of torch 2.13 that this project pins: importing it fails with ``operator torchvision::nms does not
exist``) or is missing, ``import_timm`` puts a stand-in for torchvision in its place that raises on any use, so that
timm's models work; a working torchvision is always preferred.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Dict

import torch
from torch import nn

TIMM_PREFIX = "timm/"


def is_timm_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


class _Unavailable(type):
    """What the torchvision stand-in hands out: a class whose attributes are more of the same, that raises when
    called."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{cls.__name__}.{name}", (), {})

    def __call__(cls, *args, **kwargs):
        raise ImportError(f"torchvision's {cls.__name__} is needed here, but torchvision cannot be imported on this "
                          f"machine (a build for another torch); install the torchvision that matches your torch")


class _StandIn(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{self.__name__}.{name}", (), {})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        module.STAND_IN = True
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """The timm module (see the module's docstring for torchvision); a ValueError that says how to install it."""
    try:
        import timm
        return timm
    except ModuleNotFoundError as error:
        if error.name == "timm":
            raise ValueError("timm/ models need timm: pip install -r requirements.txt") from None
        if not (error.name or "").startswith("torchvision"):
            raise
    except RuntimeError as error:  # a torchvision built for another torch fails while it registers its operators
        if "torchvision" not in str(error):
            raise
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith(("torchvision.", "timm"))]:
        del sys.modules[name]  # what the failed imports left half-made
    sys.meta_path.insert(0, _StandInFinder())
    import timm
    return timm


def check_timm_name(name: str) -> None:
    """A ValueError for a timm name timm does not know, with the closest names it does."""
    timm = import_timm()
    model = name[len(TIMM_PREFIX):] if is_timm_name(name) else name
    if not model or not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"timm has no model {model!r}" + (f"; close names: {', '.join(TIMM_PREFIX + c for c in close)}"
                                                           if close else "; timm.list_models() lists them"))


class TimmEncoder(nn.Module):
    """A timm backbone without its classifier; ``forward`` gives its pooled features [N, feature_dim]."""

    def __init__(self, name: str):
        super().__init__()
        check_timm_name(name)
        timm = import_timm()
        self.timm_name = name[len(TIMM_PREFIX):] if is_timm_name(name) else name
        self.model = timm.create_model(self.timm_name, pretrained=False, num_classes=0)
        self.feature_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_weights(path) -> Dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``.pth`` / ``.pt`` / ``.bin`` file (loaded with
    ``weights_only=True``; a checkpoint that wraps it under ``state_dict`` or ``model`` is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained_path {path} is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise several types for a file that is not theirs
        raise ValueError(f"pretrained_path {path} is not a state dict file ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained_path {path} holds no state dict of tensors")
    return state


def load_encoder_weights(encoder: nn.Module, path) -> str:
    """Load a local weights file into an encoder (a timm backbone: timm's keys, its classifier's keys dropped;
    another encoder: its own keys), strictly otherwise; returns the file's sha256."""
    state = read_weights(path)
    target = encoder.model if isinstance(encoder, TimmEncoder) else encoder
    if isinstance(encoder, TimmEncoder):
        classifier = (getattr(target, "pretrained_cfg", None) or {}).get("classifier") or ""
        names = [classifier] if isinstance(classifier, str) else list(classifier)
        state = {k: v for k, v in state.items()
                 if not any(name and (k == name or k.startswith(name + ".")) for name in names)}
    try:
        missing, unexpected = target.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors of other shapes
        raise ValueError(f"pretrained_path {path} does not fit the encoder: "
                         f"{' '.join(str(error).split())[:400]}") from None
    if missing or unexpected:
        raise ValueError(f"pretrained_path {path} does not fit the encoder: missing {sorted(missing)[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {sorted(unexpected)[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    return sha256_of(Path(path))
