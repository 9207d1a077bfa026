"""The paper's checkpoint layout, mapped to ours.

The paper's code keeps one class per network and modality: encoder parameters at the top level, the std
head as ``linear.*``, the memory heads as ``mw.*``. Ours: ``encoder.*`` and ``head.*``.
"""
from __future__ import annotations

from typing import Dict, Mapping

import torch

from .classifier import Classifier


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


def describe_mismatch(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """One line on why ``state_dict`` does not fit ``model`` (torch's own message lists every key), or ''."""
    if not isinstance(state_dict, Mapping):
        return f"expected a state dict, found {type(state_dict).__name__}"
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        return (f"{len(missing)} missing keys (first: {missing[:2]}), {len(unexpected)} unexpected keys "
                f"(first: {unexpected[:2]})")
    wrong = [k for k, v in expected.items() if getattr(state_dict[k], "shape", None) != v.shape]
    if wrong:
        return (f"{len(wrong)} keys with other shapes (first: {wrong[0]}: {tuple(state_dict[wrong[0]].shape)} "
                f"here, {tuple(expected[wrong[0]].shape)} in the model)")
    return ""


def load_paper_state_dict(model: Classifier, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict saved by the paper's code (``linear.*`` / ``mw.*`` / encoder keys) into ``model``.

    Strict: a missing or unexpected key, or a shape mismatch, raises ValueError with the names involved.
    """
    mapped = {_from_paper_key(key): value for key, value in state_dict.items()}
    problem = describe_mismatch(model, mapped)
    if "missing keys" in problem:
        raise ValueError(f"this checkpoint does not match a {type(model.encoder).__name__} {model.modality} model: "
                         f"{problem}; check --model and --modality")
    if problem:
        raise ValueError(f"shape mismatch: {problem}; check --model, --modality and the number of classes")
    model.load_state_dict(mapped, strict=True)


def to_paper_state_dict(model: Classifier) -> Dict[str, torch.Tensor]:
    """Our state dict in the paper's key layout (to use our weights with the paper's code)."""
    return {_to_paper_key(key, model.modality): value for key, value in model.state_dict().items()}
