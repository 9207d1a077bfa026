"""Where and how a run executes: seeds and RNG state, the device, the precision.

    seed_everything(run)                       # the paper's set_seed
    state = rng_state(); set_rng_state(state)  # plain data, loadable with weights_only=True
    device = choose_device("auto")
    dtype = autocast_dtype("auto", device)     # None means fp32
"""
from __future__ import annotations

import os
import random
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from .config import DEVICES, ConfigError


def seed_everything(seed: int) -> None:
    """The paper's set_seed: torch, numpy, random, CUDA, deterministic cuDNN."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> Dict[str, Any]:
    """Global RNG states as plain data (loadable with weights_only=True)."""
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["random"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU (torch "
                          f"{torch.__version__}); use --device=cpu or install a CUDA build of torch")
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {list(DEVICES)}, got {name!r}")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None means fp32. 'auto' is the paper's choice: fp16 autocast (with GradScaler) on CUDA, fp32 on CPU."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def precision_name(dtype: Optional[torch.dtype]) -> str:
    return "fp32" if dtype is None else {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
