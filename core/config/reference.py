"""The README's reference table of config choices, built from the lists the flags and the checks use."""
from __future__ import annotations

import dataclasses

from architectures import list_encoders

from .choices import (AUGMENTATIONS, DEPTHWISE_FP32, DEVICES, DISTANCE_NAMES, MEMORY_FORMATS, MEMORY_SOURCES,
                      OPTIMIZERS, PRECISIONS, SCHEDULERS, dataset_names, modalities)
from .reading import overrides
from .schema import Config, DatasetConfig, HeadConfig, OptimizerConfig


def choices_table() -> str:
    """The README's table of every config key with a fixed set of values, built from the lists above (the flag
    that overrides a key, and its default, come from ``overrides()`` and the dataclasses)."""
    from architectures.prototypes import HYPERSPHERICAL_REDUCTIONS, METRIC_LOSSES, PROTOTYPE_DISTANCES

    flags = {o.key: f"`--{o.flag}`" for o in overrides()}
    defaults = {**{f"heads.{f.name}": f.default for f in dataclasses.fields(HeadConfig)},
                **{f"optimizer.{f.name}": f.default for f in dataclasses.fields(OptimizerConfig)},
                **{f"<dataset>.{f.name}": f.default for f in dataclasses.fields(DatasetConfig)},
                **{f.name: f.default for f in dataclasses.fields(Config)}}
    rows = [("model", list_encoders()), ("modality", modalities()), ("dataset_name", dataset_names()),
            ("device", DEVICES), ("precision", PRECISIONS), ("memory_format", MEMORY_FORMATS),
            ("depthwise_fp32", DEPTHWISE_FP32), ("memory_source", MEMORY_SOURCES), ("distance", DISTANCE_NAMES),
            ("augment", AUGMENTATIONS),
            ("optimizer.name", OPTIMIZERS), ("<dataset>.scheduler", SCHEDULERS),
            ("heads.prototype_distance", PROTOTYPE_DISTANCES), ("heads.metric_loss", METRIC_LOSSES),
            ("heads.hyperspherical_reduction", HYPERSPHERICAL_REDUCTIONS)]
    lines = ["| key | flag | values | default |", "|---|---|---|---|"]
    for key, values in rows:
        default = defaults.get(key, dataclasses.MISSING)
        shown = "a train.py flag (required)" if key == "modality" else (
            "set in the YAML" if default is dataclasses.MISSING else f"`{default}`")
        flag = "`--modality`" if key == "modality" else flags.get(key, "`--set`")
        listed = ", or a list of their module names" if key == "depthwise_fp32" else ""
        lines.append(f"| `{key}` | {flag} | {', '.join(f'`{v}`' for v in values)}{listed} | {shown} |")
    return "\n".join(lines)
