"""``precision: auto`` and ``memory_format: auto``, chosen by measuring this machine instead of by a rule.

Which lever is fastest depends on the CPU family, the oneDNN kernels it gets, the network and the modality: on an
AMD EPYC with AVX-512 bf16, bf16 + channels_last makes GoogLeNet 3x faster than the paper's step but ShuffleNetV2
slower than fp32 + channels_last (README, Speed), while on an Intel Xeon with AMX bf16 + channels_last was measured
1.33x slower than fp32 + channels_last for MobileNetV2 Memory Wrap. So, at the
start of a run with an ``auto`` setting on a CPU, the candidates are timed on this network and modality with the
run's batch shapes (synthetic tensors, a copy of the model: the run's own model and random streams are untouched):

    candidates   fp32 and, where the CPU has native bf16, bf16; x channels_last and contiguous (an explicit setting
                 keeps its value); on CUDA the rule stays (fp16 + channels_last, the paper's AMP)
    order        the rule's guess first (bf16 + channels_last where bf16 is native, fp32 for FP32_ON_CPU), then the
                 other precision's channels_last, then contiguous: the first of each precision is always measured
    timing       at the run's batch shapes: one warm-up step each (kernel creation), then rounds of one timed step
                 per candidate (3; up to 9 while a round takes under a second), interleaved so that the
                 machine's moments hit every candidate alike; a candidate whose warm-up took twice the fastest
                 warm-up is not timed further, nor, after a round, one 10%
                 behind the fastest lever of its precision (the contest left is fp32 against bf16)
    budget       ``autotune_budget`` seconds (default 15; 0: no limit). A warm-up or a round that would pass it is
                 not started: the remaining candidates are not measured, a round times the fastest fp32 and the
                 fastest bf16 candidate (by their warm-ups) and others while they fit, and with no round the
                 warm-up steps decide. On heavy networks (GoogLeNet Memory Wrap: a step of several seconds) the
                 two candidates that are always measured can pass the budget on their own
    choice       the fastest; contiguous only when it beats channels_last of its precision by more than 5%, bf16
                 only when it beats fp32 by more than 10% (both change the numbers: near ties go to the rule)
    layers       a bf16 lever is timed with the depthwise convolutions that ``depthwise_fp32`` puts in fp32
                 (core/layer_precision.py: auto measures them once, with the first bf16 lever, and the answer is
                 cached with the choice, also where precision and memory_format are set)

The answer is cached in a JSON file (``autotune_cache``, default ``$XDG_CACHE_HOME/memory-wrap/autotune.json``) keyed
by CPU model, capability, threads, torch version, network, modality, head options that change the computation, batch
shapes and budget; later runs read it and cost nothing, and concurrent runs wait on a lock so that one measures and the
others read its answer. Once written, the entry is this machine's answer: the same config on the same machine gives
the same numbers. Pin ``precision``, ``memory_format`` and ``depthwise_fp32`` (none, all or a list of layers) to
compare machines.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

from base.files import atomic_write_json, exclusive, writable_folder

from . import runtime
from .config import Config, ConfigError

TIMED_STEPS = 3  # rounds at most, unless the rounds are short:
SHORT_ROUND = 1.0  # a round whose steps took less than this (seconds) is followed by more, up to SHORT_ROUNDS, within
SHORT_ROUNDS = 9  # the budget: one step of a fast network (ShuffleNetV2: 0.2 s) is a noisy measurement
PRUNE_FACTOR = 2.0  # a candidate whose warm-up step is this much slower than the fastest warm-up is not timed
ROUND_MARGIN = 1.1  # after a round, a lever slower than its precision's fastest by more than this is not timed again
BF16_MARGIN = 0.9  # bf16 is chosen only when its step takes less than 90% of fp32's
FORMAT_MARGIN = 0.95  # contiguous is chosen only when its step takes less than 95% of channels_last's


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memory-wrap" / "autotune.json"


def cache_path(config: Config) -> Path:
    return Path(config.autotune_cache or default_cache())


def check_cache(config: Config, device: torch.device) -> None:
    """Before any work: where a run that measures keeps its answer must be a file path in a writable folder."""
    levers = candidates(config.precision, config.memory_format, device)
    if len(levers) == 1 and not (device.type == "cpu" and config.depthwise_fp32 == "auto"
                                 and levers[0].autocast == torch.bfloat16):
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
    """The fastest lever's name ("fp32 channels_last"...); contiguous only when faster than channels_last of its
    precision by over 5%, bf16 only when faster than fp32 by over 10% (both change the numbers: a near tie decided
    by a rule, not by the measurement's noise, gives the same run on the same machine kind more often)."""
    def fastest(group: Dict[str, float]) -> Optional[str]:
        if not group:
            return None
        best = min(group, key=group.get)
        kept = best.replace("contiguous", "channels_last")
        return kept if kept in group and group[best] >= FORMAT_MARGIN * group[kept] else best
    fp32 = {name: seconds for name, seconds in timings.items() if name.startswith("fp32")}
    others = {name: seconds for name, seconds in timings.items() if not name.startswith("fp32")}
    best_fp32, best_other = fastest(fp32), fastest(others)
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
                       "precision": config.precision, "memory_format": config.memory_format,
                       "budget": config.autotune_budget, "depthwise_fp32": config.depthwise_fp32}, sort_keys=True)


def measure_order(levers: List[runtime.Execution], network: str) -> List[runtime.Execution]:
    """The order in which candidates are measured: the rule's guess first, then the other precision's first
    candidate (channels_last before contiguous), then the rest."""
    guess = runtime.autocast_dtype("auto", torch.device("cpu"), network)
    by_precision = sorted(levers, key=lambda lever: (lever.autocast != guess,
                                                     lever.memory_format != torch.channels_last))
    firsts = [next(lever for lever in by_precision if lever.autocast == dtype)
              for dtype in dict.fromkeys(lever.autocast for lever in by_precision)]
    return firsts + [lever for lever in by_precision if lever not in firsts]


def measure(levers: List[runtime.Execution], step_for: Callable[[runtime.Execution], Callable[[], None]],
            budget: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> Dict:
    """Seconds per step of each lever, measured in ``levers``' order within ``budget`` seconds (0: no limit):
    {"timings": {name: seconds}, "timed": [names timed in rounds], "not_measured": [names], "rounds": n}.

    A warm-up step each, then up to TIMED_STEPS rounds of one step per lever (up to SHORT_ROUNDS while a round takes
    less than SHORT_ROUND seconds), interleaved (a slow moment of the
    machine, or its warming up, hits every lever alike); a timed lever's seconds are its median step, an untimed
    one's its warm-up. A lever whose warm-up took PRUNE_FACTOR times the fastest warm-up is not timed further, nor
    one that a round put more than ROUND_MARGIN behind the fastest lever of its precision. The
    first lever of each precision is always warmed up; another warm-up, or a round, starts only when it fits in what
    is left of the budget, judged by the slowest warm-up so far (a warm-up) or the round's levers' last steps."""
    started = clock()
    fits = lambda seconds: not budget or clock() - started + seconds <= budget  # noqa: E731
    names = [lever_name(lever) for lever in levers]
    precisions = [name.split()[0] for name in names]
    always = {names[precisions.index(precision)] for precision in set(precisions)}
    steps, warmups = {}, {}
    for lever, name in zip(levers, names):
        if name not in always and not fits(max(warmups.values(), default=0.0)):
            continue  # the budget is spent: this lever is not measured
        steps[name] = step_for(lever)
        began = clock()
        steps[name]()  # warm-up: oneDNN creates its kernels for these shapes and this lever
        warmups[name] = clock() - began
    ranked = sorted((name for name in warmups if warmups[name] <= PRUNE_FACTOR * min(warmups.values())),
                    key=warmups.get)
    fastest = [next(name for name in ranked if name.split()[0] == precision)
               for precision in dict.fromkeys(name.split()[0] for name in ranked)]
    last = dict(warmups)
    members: List[str] = []
    if fits(sum(last[name] for name in fastest)):  # a round needs the fastest of each precision, to compare them
        members = list(fastest)
        for name in ranked:
            if name not in members and fits(sum(last[m] for m in members) + last[name]):
                members.append(name)
    timed, seconds = list(members), {name: [] for name in members}
    rounds = 0

    def more_rounds() -> bool:
        short = sum(last[m] for m in members) < SHORT_ROUND
        return rounds < (SHORT_ROUNDS if short else TIMED_STEPS) and (rounds == 0 or fits(sum(last[m] for m in members)))
    while members and (rounds == 0 or len(members) > 1) and more_rounds():  # one lever left: nothing to compare
        for name in members:
            began = clock()
            steps[name]()
            last[name] = clock() - began
            seconds[name].append(last[name])
        rounds += 1
        # the next round times the levers still in contention: within ROUND_MARGIN of their precision's fastest
        median = {name: statistics.median(seconds[name]) for name in members}
        best = {name.split()[0]: min(median[m] for m in members if m.split()[0] == name.split()[0]) for name in members}
        members = [name for name in members if median[name] <= ROUND_MARGIN * best[name.split()[0]]]
    timings = {name: statistics.median(seconds[name]) if name in seconds else warmups[name] for name in warmups}
    return {"timings": timings, "timed": timed, "rounds": rounds,
            "not_measured": [name for name in names if name not in warmups]}


def resolve(config: Config, modality: str, device: torch.device, batch_size: int, mem_examples: int,
            step_for: Callable[[runtime.Execution], Callable[[], None]], cache: Optional[Path] = None,
            layers_for: Optional[Callable[[runtime.Execution], Dict]] = None,
            layer_names: Optional[Callable[[], Iterable[str]]] = None) -> Tuple[runtime.Execution, Dict]:
    """How the run computes, and how that was decided: {"source": "set" | "rule" | "measured" | "cache", ...}.

    ``layers_for(execution)`` gives a bf16 lever on a CPU its depthwise convolutions in fp32 ({"fp32": [names],
    ...}: core/layer_precision.py); with ``depthwise_fp32: auto`` it measures, and its answer is cached with the
    lever's, also where precision and memory_format are set. ``layer_names()`` gives the model's depthwise
    convolutions: a cached answer naming others (the network's code changed since) is measured again."""
    levers = candidates(config.precision, config.memory_format, device)
    layer_info: Dict[str, Dict] = {}  # the lever the layers were measured with -> layers_for's answer
    fp32_layers: Dict[str, List[str]] = {}  # lever -> its depthwise convolutions in fp32

    def with_layers(lever: runtime.Execution) -> runtime.Execution:
        """The lever with its fp32 layers: measured with the first bf16 lever (channels_last where it is a
        candidate), and the same for the other memory format (the slow kernels are slow in both)."""
        if layers_for is not None and device.type == "cpu" and lever.autocast == torch.bfloat16:
            found = next(iter(layer_info.values()), None) or layers_for(lever)
            if "timings" in found and not layer_info:
                layer_info[lever_name(lever)] = found
            lever.fp32_layers = tuple(found["fp32"])
            fp32_layers[lever_name(lever)] = list(found["fp32"])
        return lever
    measures_layers = layers_for is not None and config.depthwise_fp32 == "auto" and device.type == "cpu" and any(
        lever.autocast == torch.bfloat16 for lever in levers)
    if len(levers) == 1 and not measures_layers:
        execution = levers[0] if device.type == "cpu" or config.precision != "auto" else \
            runtime.Execution.resolve(config.precision, config.memory_format, device, config.model)
        pinned = config.precision != "auto" and config.memory_format != "auto"
        return with_layers(execution), {"source": "set" if pinned or device.type == "cpu" else "rule"}
    path = Path(cache) if cache else cache_path(config)
    key = cache_key(config, modality, device, batch_size, mem_examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + ".lock")):  # concurrent runs: one measures, the others read it
        entries = _read(path)
        cached = entries.get(key)
        listed = set((cached.get("fp32_layers") or {}).get(cached.get("choice"), [])) if cached else set()
        stale = bool(listed) and layer_names is not None and not listed <= set(layer_names())  # only then a model
        if cached is not None and not stale:
            entry = cached
            return _execution(entry["choice"], entry), {"source": "cache", "choice": entry["choice"],
                                                         "cache": str(path), "timings": entry.get("timings", {})}
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            if len(levers) > 1:
                measured = measure(measure_order(levers, config.model),
                                   lambda lever: step_for(with_layers(lever)), config.autotune_budget)
            else:  # precision and memory_format set: only the layers are measured
                with_layers(levers[0])
                measured = {"timings": {}}
        seconds = time.perf_counter() - started
        choice = choose(measured["timings"]) if len(levers) > 1 else lever_name(levers[0])
        layers = {"fp32_layers": fp32_layers,
                  "layer_timings_ms": {name: found["timings"] for name, found in layer_info.items()},
                  "layer_seconds": {name: found["seconds"] for name, found in layer_info.items()}}
        entries[key] = {"choice": choice, **measured, **layers, "budget": config.autotune_budget,
                        "seconds": round(seconds, 2), "measured": time.strftime("%Y-%m-%d %H:%M")}
        atomic_write_json(entries, path)
    return _execution(choice, entries[key]), {"source": "measured", "choice": choice, "cache": str(path), **measured,
                                              **layers, "budget": config.autotune_budget, "seconds": round(seconds, 2)}


def describe(info: Dict) -> str:
    """For the run's header: how the levers were chosen."""
    if info["source"] in ("measured", "cache") and not info.get("timings"):  # levers set: only the layers measured
        return "as set; depthwise convolutions " + (f"measured now in {info['seconds']:.1f} s"
                                                    if info["source"] == "measured" else "from the autotune cache")
    if info["source"] == "measured":
        skipped = info.get("not_measured") or []
        return f"measured now in {info['seconds']:.1f} s" + (
            f"; {', '.join(skipped)} not measured within autotune_budget {info['budget']:g} s" if skipped else "")
    if info["source"] == "cache":
        return "measured earlier on this machine: autotune cache"
    return "as set" if info["source"] == "set" else "the CUDA rule"


def _execution(name: str, entry: Optional[Dict] = None) -> runtime.Execution:
    """The lever of a name ("bf16 channels_last"), with the fp32 layers a cache entry gives it."""
    precision, memory_format = name.split()
    return runtime.Execution.from_names({"precision": precision, "memory_format": memory_format,
                                         "fp32_layers": (entry or {}).get("fp32_layers", {}).get(name, [])})


def _read(path: Path) -> Dict:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except ValueError:
        return {}  # a damaged cache is measured again and rewritten
    return entries if isinstance(entries, dict) else {}
