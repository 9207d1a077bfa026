"""Where and how a run executes: seeds and RNG state, the device, the precision and memory format.

    seed_everything(run)                       # the paper's set_seed
    state = rng_state(); set_rng_state(state)  # plain data, loadable with weights_only=True
    device = choose_device("auto")
    dtype = autocast_dtype("auto", device, "mobilenet")  # None: fp32; auto: fp16 on CUDA, bf16 on CPUs with it
    fmt = memory_format("auto", device)        # channels_last on CPU and CUDA
    keep_freed_memory()                        # CPU: reuse freed activation buffers instead of page-faulting anew
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import random
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from .config import DEVICES, MEMORY_FORMATS, ConfigError


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


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels use: 'AVX512', 'AVX2', ... (ATEN_CPU_CAPABILITY can lower it)."""
    return torch.backends.cpu.get_cpu_capability()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 / AMX); without it bf16 is emulated and slow."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# The rule's guess of the networks that train faster in fp32 than in bf16 on CPUs with native bf16, from an AMD EPYC
# before their slow bf16 depthwise kernels computed in fp32 (core/layer_precision.py). A run on a CPU measures both
# precisions (core/autotune.py): this guess only orders the measurements (the guess first), and with their fp32
# depthwise layers bf16 was chosen for both networks and both modalities in the README's autotune table (Speed).
FP32_ON_CPU = ("efficientnet", "shufflenet", "shufflenet1x")


def autocast_dtype(precision: str, device: torch.device, model_name: Optional[str] = None) -> Optional[torch.dtype]:
    """The autocast dtype of a precision setting on a device; None means fp32.

    'auto': fp16 autocast (with GradScaler) on CUDA, as the paper; on a CPU, the rule's guess, which the autotune
    measures first (core/autotune.py decides): bf16 where it is native (2-4x faster there for most networks), else
    fp32 (emulated bf16 is about 5x slower); fp32 for the networks of ``FP32_ON_CPU``. An explicit 'bf16' on a CPU
    without native bf16 warns; 'fp16' needs CUDA.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if native_bf16() and model_name not in FP32_ON_CPU else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32' (or 'auto')")
    if precision == "bf16" and device.type == "cpu" and not native_bf16():
        warnings.warn(f"precision bf16 on a CPU without native bfloat16 ({cpu_capability()}): it is emulated and "
                      f"about 5x slower than fp32; 'auto' picks fp32 here", stacklevel=2)
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def memory_format(name: str, device: torch.device) -> torch.memory_format:
    """'auto' is channels_last on CPU and CUDA (faster convolutions on both, see the README's benchmark)."""
    if name not in MEMORY_FORMATS:
        raise ConfigError(f"memory_format must be one of {list(MEMORY_FORMATS)}, got {name!r}")
    return torch.contiguous_format if name == "contiguous" else torch.channels_last


def precision_name(dtype: Optional[torch.dtype]) -> str:
    return "fp32" if dtype is None else {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def memory_format_name(fmt: torch.memory_format) -> str:
    return "channels_last" if fmt == torch.channels_last else "contiguous"


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory(enable: bool = True) -> bool:
    """CPU training allocates activation buffers of tens of MB every step. glibc serves each with a fresh mmap and
    returns it at free, so every step page-faults its memory anew (about a quarter of a CPU step). With
    ``enable``, allocations come from the heap and freed memory is kept for reuse (the process keeps its peak
    memory). ``enable=False`` restores glibc's defaults. Returns False where there is no glibc (nothing changes)."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if enable:
        return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return bool(mallopt(_M_MMAP_MAX, 65536)) and bool(mallopt(_M_TRIM_THRESHOLD, 128 * 1024))


def describe_machine(device: torch.device) -> Dict[str, Any]:
    """What a timing or a run was measured on (written next to every timing and into results)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_capability": cpu_capability(), "native_bf16": native_bf16(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


class Execution:
    """How a run computes: its autocast dtype (None: fp32), the memory format of its images and weights, and the
    depthwise convolutions that compute in fp32 under bf16 autocast (core/layer_precision.py)."""

    def __init__(self, autocast: Optional[torch.dtype], memory_format: torch.memory_format,
                 fp32_layers: Sequence[str] = ()):
        self.autocast, self.memory_format, self.fp32_layers = autocast, memory_format, tuple(fp32_layers)

    @classmethod
    def resolve(cls, precision: str, memory_format_setting: str, device: torch.device,
                model_name: Optional[str] = None) -> "Execution":
        return cls(autocast_dtype(precision, device, model_name), memory_format(memory_format_setting, device))

    @classmethod
    def from_names(cls, names: Mapping[str, Any]) -> "Execution":
        """The inverse of ``names`` (a resumed run keeps how it started computing; states written before
        fp32_layers existed computed every layer under autocast)."""
        return cls(_DTYPES[names["precision"]], _FORMATS[names["memory_format"]], names.get("fp32_layers") or ())

    def names(self) -> Dict[str, Any]:
        return {"precision": precision_name(self.autocast), "memory_format": memory_format_name(self.memory_format),
                "fp32_layers": list(self.fp32_layers)}

    def describe(self) -> str:
        """The precision for the run's header: "bf16", or "bf16 (3 depthwise convolutions in fp32)"."""
        count = len(self.fp32_layers)
        return precision_name(self.autocast) + (
            f" ({count} depthwise convolution{'s' if count > 1 else ''} in fp32)" if count else "")

    def __eq__(self, other) -> bool:
        return isinstance(other, Execution) and self.names() == other.names()

    def __repr__(self) -> str:
        return f"Execution({self.names()})"
