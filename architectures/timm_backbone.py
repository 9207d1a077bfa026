"""Any timm model as an encoder: ``model: timm/<name>`` is ``timm.create_model(name, num_classes=0)`` (the backbone
without its classifier), its feature size read from the model.

    encoder = TimmEncoder("resnet18")                                     # encoder.feature_dim == 512
    state, source = pretrained_backbone("resnet18")                       # timm's weights: the Hugging Face Hub
    state, source = pretrained_backbone("resnet18", "resnet18.safetensors")   # or a local file
    encoder.model.load_state_dict(state)
    preprocessing("resnet18")                                             # (224, mean, std): what the weights expect

Pretrained weights are loaded by timm itself, the way every timm user gets them: ``pretrained: true`` is
``timm.create_model(name, pretrained=True, num_classes=0)``, which downloads the weights from the Hugging Face Hub
once and caches them (``HF_HUB_OFFLINE=1`` reads the cache alone, without asking the network); ``pretrained_path`` is
the same call with ``pretrained_cfg_overlay=dict(file=path)``, so that timm's adaptation applies to a local file too
(classifier dropped, the model's own key filter). Keys that timm could not place, either way, are an error here.

timm imports torchvision when it is imported (for FrozenBatchNorm2d and its data transforms, which building and
running a backbone never uses). Where torchvision is installed but cannot be imported (PyPI has no CPU build of it
for the CPU build of torch 2.13 that this project pins: importing it fails with ``operator torchvision::nms does not
exist``) or is missing, ``import_timm`` puts a stand-in for torchvision in its place that raises on any use, so that
timm's models work; a working torchvision is always preferred.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.abc
import importlib.machinery
import logging
import sys
import types
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

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
        self.timm_name = bare_name(name)
        self.model = timm.create_model(self.timm_name, pretrained=False, num_classes=0)
        self.feature_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def bare_name(name: str) -> str:
    """timm's own name of ``timm/<name>``."""
    return name[len(TIMM_PREFIX):] if is_timm_name(name) else name


class WeightsUnavailable(ValueError):
    """Pretrained weights that cannot be had here (no network and no cached copy, or none published)."""


def preprocessing(name: str) -> Tuple[int, Tuple[float, ...], Tuple[float, ...]]:
    """(image size, mean, std) the model's pretrained weights were trained with (timm's ``pretrained_cfg``; the
    default weights of an untagged name)."""
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(bare_name(name))
    if cfg is None:
        raise WeightsUnavailable(f"timm knows no pretrained weights of {bare_name(name)!r}")
    return int(cfg.input_size[-1]), tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)


@contextlib.contextmanager
def _timm_load_report() -> Iterator[List[str]]:
    """What timm's loader reports of keys it could not place (it logs them and goes on, since dropping the classifier
    makes its load non-strict), collected while the block runs."""
    messages: List[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if text.startswith(("Missing keys", "Unexpected keys")):
                messages.append(text)
    logger, handler = logging.getLogger("timm.models._builder"), Collect(logging.INFO)
    quiet = logging.getLogger("timm")  # its progress lines ("Loading pretrained weights...") stay out of the output
    level, propagate = logger.level, quiet.propagate
    logger.setLevel(logging.INFO)
    quiet.propagate = False
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        quiet.propagate = propagate


def _cached_hub_file(hub_id: str) -> Tuple[Optional[Path], Optional[str]]:
    """(the cached weights file, its revision) that timm read from the Hugging Face cache, or (None, None)."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            path = Path(found)
            return path, path.parent.name if path.parent.parent.name == "snapshots" else revision or None
    return None, None


def pretrained_backbone(name: str, path: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The backbone of timm model ``name`` with pretrained weights, loaded by timm (``create_model(name,
    pretrained=True, num_classes=0)``): timm's published weights (the Hugging Face Hub, or its cache), or the local
    file ``path``. Returns its state dict and where the weights came from (for the run's record): {"source": "hub",
    "hub_id", "revision", "sha256"} or {"source": "file", "path", "sha256"}. A file that is not the model's, weights
    that cannot be had and keys timm could not place are one-line errors."""
    timm, name = import_timm(), bare_name(name)
    overlay = None
    if path is not None:
        from .efficientnet_lite_weights import CONVERT_COMMAND, is_efficientnet_pytorch_layout

        if is_efficientnet_pytorch_layout(read_weights(path)):  # a file that is no state dict is named here too
            raise ValueError(f"pretrained_path {path} is named in the efficientnet_pytorch layout (_conv_stem, "
                             f"_blocks.N); write it with timm's names first: {CONVERT_COMMAND} --input={path}")
        overlay = {"file": str(Path(path).resolve())}
    try:
        with _timm_load_report() as report:
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as error:  # timm and huggingface_hub raise many types; each is a reason the weights are not here
        raise _why_unavailable(name, path, error) from None
    if report:
        raise ValueError(f"{'pretrained_path ' + str(path) if path else 'the weights timm loaded'} does not fit "
                         f"timm's {name}: " + "; ".join(" ".join(text.split())[:300] for text in report))
    if path is not None:
        return model.state_dict(), {"source": "file", "path": str(path), "sha256": sha256_of(Path(path))}
    hub_id = model.pretrained_cfg.get("hf_hub_id")
    cached, revision = _cached_hub_file(hub_id) if hub_id else (None, None)
    source = {"source": "hub", "hub_id": hub_id, "revision": revision,
              "sha256": sha256_of(cached) if cached else None}
    if not hub_id:
        source.update(source="url", url=model.pretrained_cfg.get("url"))
    return model.state_dict(), source


def _why_unavailable(name: str, path: Optional[str], error: Exception) -> ValueError:
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    if path is not None:
        return ValueError(f"pretrained_path {path} does not fit timm's {name}: {reason}")
    if "No pretrained weights exist" in reason or "Invalid pretrained config" in reason:
        return WeightsUnavailable(f"timm publishes no pretrained weights of {name}: give your own file as "
                                  f"pretrained_path, or choose a model timm.list_pretrained() lists")
    cfg = import_timm().models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) or name
    return WeightsUnavailable(
        f"the pretrained weights of timm/{name} ({hub_id} on the Hugging Face Hub) are not here: no network, and no "
        f"copy in the Hugging Face cache ({_hub_cache()}). On a machine with network, run the same command once (timm "
        f"downloads and caches them; copy the cache folder to an offline machine and set HF_HUB_OFFLINE=1), or give a "
        f"local file: pretrained_path=FILE" + (" (EfficientNet-Lite0 without network: "
                                               "python convert_weights.py writes one)"
                                               if "efficientnet_lite0" in name else "") + f" [{type(error).__name__}]")


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


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


def load_pretrained(encoder: nn.Module, path=None) -> dict:
    """Pretrained weights into ``encoder``, and where they came from (for the run's record): a timm backbone's by
    timm (``pretrained_backbone``: the Hub's when ``path`` is None, else the file's); another encoder's from the
    file ``path`` of its own keys, strictly."""
    if isinstance(encoder, TimmEncoder):
        state, source = pretrained_backbone(encoder.timm_name, path)
        encoder.model.load_state_dict(state)
        return source
    if path is None:
        raise ValueError("pretrained: true takes timm's published weights, for a timm/<name> model; give this "
                         "encoder's own weights as pretrained_path")
    state = read_weights(path)
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors of other shapes
        raise ValueError(f"pretrained_path {path} does not fit the encoder: "
                         f"{' '.join(str(error).split())[:400]}") from None
    if missing or unexpected:
        raise ValueError(f"pretrained_path {path} does not fit the encoder: missing {sorted(missing)[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {sorted(unexpected)[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    return {"source": "file", "path": str(path), "sha256": sha256_of(Path(path))}
