"""``precision: auto`` and ``memory_format: auto``, chosen by measuring this machine instead of by a rule.

Which lever is fastest depends on the CPU family, the oneDNN kernels it gets, the network and the modality: on an
AMD EPYC with AVX-512 bf16, bf16 + channels_last makes MobileNetV2 Memory Wrap 3.4x faster than the paper's step,
while on an Intel Xeon with AMX the same choice was measured 1.33x slower than fp32 + channels_last. So, at the
start of a run with an ``auto`` setting on a CPU, the candidates are timed on this network and modality with the
run's batch shapes (synthetic tensors, a copy of the model: the run's own model and random streams are untouched):

    candidates   fp32 and, where the CPU has native bf16, bf16; x channels_last and contiguous (an explicit setting
                 keeps its value); on CUDA the rule stays (fp16 + channels_last, the paper's AMP)
    timing       one warm-up step each (kernel creation), then rounds of one timed step per candidate, interleaved
                 so that the machine's moments hit every candidate alike; a candidate whose warm-up took twice the
                 fastest warm-up is not timed further
    choice       the fastest; bf16 only when it beats fp32 by more than 10% (precision changes numbers)

The answer is cached in a JSON file (``autotune_cache``, default ``$XDG_CACHE_HOME/memory-wrap/autotune.json``) keyed
by CPU model, capability, threads, torch version, network, modality, head options that change the computation, and
batch shapes; later runs read it and cost nothing, and concurrent runs wait on a lock so that one measures and the
others read its answer. Once written, the entry is this machine's answer: the same config on the same machine gives
the same numbers. Pin ``precision`` and ``memory_format`` to compare machines.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from base.files import atomic_write_json, exclusive, writable_folder

from . import runtime
from .config import Config, ConfigError

TIMED_STEPS = 2
PRUNE_FACTOR = 2.0  # a candidate whose warm-up step is this much slower than the fastest warm-up is not timed
BF16_MARGIN = 0.9  # bf16 is chosen only when its step takes less than 90% of fp32's


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memory-wrap" / "autotune.json"


def cache_path(config: Config) -> Path:
    return Path(config.autotune_cache or default_cache())


def check_cache(config: Config, device: torch.device) -> None:
    """Before any work: where a run that measures keeps its answer must be a file path in a writable folder."""
    if len(candidates(config.precision, config.memory_format, device)) == 1:
        return  # nothing is measured: the cache is never opened
    path = cache_path(config)
    if path.is_dir():
        raise ConfigError(f"autotune_cache={path} is a folder: give a file path, e.g. {path / 'autotune.json'}")
    writable_folder(path.parent, "folder of autotune_cache")


def candidates(precision: str, memory_format: str, device: torch.device) -> List[runtime.Execution]:
    """The levers to time for these settings on this device (one when nothing is auto or on CUDA)."""
    if device.type == "cuda" or (precision != "auto" and memory_format != "auto"):
        return [runtime.Execution.resolve(precision, memory_format, device)]
    precisions = ([None] + ([torch.bfloat16] if runtime.native_bf16() else [])) if precision == "auto" else \
        [runtime.autocast_dtype(precision, device)]
    formats = [torch.channels_last, torch.contiguous_format] if memory_format == "auto" else \
        [runtime.memory_format(memory_format, device)]
    return [runtime.Execution(dtype, fmt) for dtype in precisions for fmt in formats]


def choose(timings: Dict[str, float]) -> str:
    """The fastest lever's name ("fp32 channels_last"...); bf16 only when faster than fp32 by over 10%."""
    fp32 = {name: seconds for name, seconds in timings.items() if name.startswith("fp32")}
    others = {name: seconds for name, seconds in timings.items() if not name.startswith("fp32")}
    best_fp32 = min(fp32, key=fp32.get) if fp32 else None
    best_other = min(others, key=others.get) if others else None
    if best_fp32 is None:
        return best_other
    if best_other is not None and others[best_other] < BF16_MARGIN * fp32[best_fp32]:
        return best_other
    return best_fp32


def lever_name(execution: runtime.Execution) -> str:
    names = execution.names()
    return f"{names['precision']} {names['memory_format']}"


def cache_key(config: Config, modality: str, device: torch.device, batch_size: int, mem_examples: int) -> str:
    machine = runtime.describe_machine(device)
    shaping = {key: value for key, value in config.model_options().items() if key.startswith("self_attention")}
    return json.dumps({"cpu": machine["cpu"], "capability": machine["cpu_capability"], "threads": machine["threads"],
                       "torch": machine["torch"], "network": config.model, "modality": modality,
                       "options": shaping, "batch": batch_size, "memory": mem_examples,
                       "precision": config.precision, "memory_format": config.memory_format}, sort_keys=True)


def measure(levers: List[runtime.Execution], step_for: Callable[[runtime.Execution], Callable[[], None]]
            ) -> Dict[str, float]:
    """Seconds per step of each lever: a warm-up step each, then TIMED_STEPS rounds of one step per lever,
    interleaved (a slow moment of the machine, or its warming up, hits every lever alike); the median. A lever
    whose warm-up took PRUNE_FACTOR times the fastest warm-up is not timed further (its warm-up stands for it)."""
    steps, warmups = {}, {}
    for lever in levers:
        steps[lever_name(lever)] = step_for(lever)
        started = time.perf_counter()
        steps[lever_name(lever)]()  # warm-up: oneDNN creates its kernels for these shapes and this lever
        warmups[lever_name(lever)] = time.perf_counter() - started
    timed = [name for name in steps if warmups[name] <= PRUNE_FACTOR * min(warmups.values())]
    seconds: Dict[str, List[float]] = {name: [] for name in timed}
    for _ in range(TIMED_STEPS):
        for name in timed:
            started = time.perf_counter()
            steps[name]()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds[name]) if name in seconds else warmups[name] for name in steps}


def resolve(config: Config, modality: str, device: torch.device, batch_size: int, mem_examples: int,
            step_for: Callable[[runtime.Execution], Callable[[], None]], cache: Optional[Path] = None
            ) -> Tuple[runtime.Execution, Dict]:
    """How the run computes, and how that was decided: {"source": "set" | "rule" | "measured" | "cache", ...}."""
    levers = candidates(config.precision, config.memory_format, device)
    if len(levers) == 1:
        execution = levers[0] if device.type == "cpu" or config.precision != "auto" else \
            runtime.Execution.resolve(config.precision, config.memory_format, device, config.model)
        pinned = config.precision != "auto" and config.memory_format != "auto"
        return execution, {"source": "set" if pinned or device.type == "cpu" else "rule"}
    path = Path(cache) if cache else cache_path(config)
    key = cache_key(config, modality, device, batch_size, mem_examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + ".lock")):  # concurrent runs: one measures, the others read it
        entries = _read(path)
        if key in entries:
            entry = entries[key]
            return _execution(entry["choice"]), {"source": "cache", "choice": entry["choice"], "cache": str(path),
                                                  "timings": entry["timings"]}
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            timings = measure(levers, step_for)
        seconds = time.perf_counter() - started
        choice = choose(timings)
        entries[key] = {"choice": choice, "timings": timings, "seconds": round(seconds, 2),
                        "measured": time.strftime("%Y-%m-%d %H:%M")}
        atomic_write_json(entries, path)
    return _execution(choice), {"source": "measured", "choice": choice, "cache": str(path), "timings": timings,
                                "seconds": round(seconds, 2)}


def describe(info: Dict) -> str:
    """For the run's header: how the levers were chosen."""
    if info["source"] == "measured":
        return f"measured now in {info['seconds']:.1f} s"
    if info["source"] == "cache":
        return "measured earlier on this machine (autotune cache)"
    return "as set" if info["source"] == "set" else "the CUDA rule"


def _execution(name: str) -> runtime.Execution:
    precision, memory_format = name.split()
    return runtime.Execution.from_names({"precision": precision, "memory_format": memory_format})


def _read(path: Path) -> Dict:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except ValueError:
        return {}  # a damaged cache is measured again and rewritten
    return entries if isinstance(entries, dict) else {}
