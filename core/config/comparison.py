"""Whether two configurations compute the same runs: the result-shaping settings in which a saved config differs
from the current one, what ``auto`` settings resolved to in saved runs, and how keys a config was saved without
computed."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from .schema import Config, ConfigError

def setting_differences(saved: Mapping[str, Any], current: "Config",
                        computed: Sequence[Mapping[str, Any]] = ()) -> List[str]:
    """``key was <saved>, now <current>`` for every result-shaping setting that differs between a saved config
    (plain data, as written into checkpoints, states and results.json) and ``current``. ``computed``: how the saved
    config's runs computed (their records' or states' ``precision``, ``memory_format`` and ``fp32_layers``); a
    setting saved as ``auto`` that every one of them resolved to what ``current`` sets is the same computation, not
    a difference (a grid that pins what its runs' measurement chose is not changed)."""
    try:
        old = Config.from_saved(saved).result_settings()
    except ConfigError as error:
        return [f"a config this version cannot read ({str(error).splitlines()[-1].strip()})"]
    new = current.result_settings()
    resolved = resolved_levers(computed)
    for key, value in resolved.items():
        if old.get(key) == "auto" and (set(new[key]) == set(value) if isinstance(new.get(key), list)
                                       and isinstance(value, list) else new.get(key) == value):
            old[key] = new[key]
    if old.get("precision") in ("fp32", "fp16"):  # resolved to a precision that depthwise_fp32 does not change
        old.pop("depthwise_fp32", None)
    if resolved.get("precision") in ("fp32", "fp16"):  # the runs never read it (fp16 on a GPU, fp32 on a CPU)
        old.pop("depthwise_fp32", None)
        new.pop("depthwise_fp32", None)
    return [f"{key} was {old.get(key)!r}, now {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def resolved_levers(computed: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """What every one of these runs resolved ``auto`` to (a setting they differ in, or that one of them does not
    record, is left out): ``precision``, ``memory_format``, and ``depthwise_fp32`` as ``none`` or the layers they
    computed in fp32, in the first run's order (a run recorded before ``fp32_layers`` existed computed none)."""
    found: Dict[str, Any] = {}
    for key in ("precision", "memory_format"):
        values = {run.get(key) for run in computed}
        if len(values) == 1 and None not in values:
            found[key] = values.pop()
    layers = {frozenset(run.get("fp32_layers") or ()) for run in computed}
    if len(layers) == 1:
        found["depthwise_fp32"] = list(computed[0].get("fp32_layers") or ()) or "none"
    return found

