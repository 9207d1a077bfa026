"""From text to a Config: YAML without aliases, the flag overrides of train.py, ``--set key=value``, and the
parser that reports every problem of a file in one message, before any data are read or any model is built.

    config = load_config("config/train.yaml", {"dataset": "CIFAR10", "epochs": 15}, ["optimizer.learning_rate=0.05"])
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

import datasets

from .choices import (DEVICES, MAX_EPOCHS, MAX_IMAGES, MAX_RUNS, MEMORY_FORMATS, MEMORY_SOURCES, PRECISIONS,
                      dataset_names)
from .schema import PAPER_SCHEDULER, Config, ConfigError, DatasetConfig, HeadConfig, OptimizerConfig, _cut, shown

_UNSET = object()  # an Optional key given as null

def _coerce(value, kind, where, problems):
    """Type check with the paper's YAML quirks: `1e-1` is a string to PyYAML, so numeric strings are floats.
    A float must be finite (nan, .inf and 1e400 are refused)."""
    if typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind):  # Optional[X]: None, or X
        if value is None:
            return _UNSET
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind == Union[str, Tuple[str, ...]]:  # a name, or a list of names
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(name, str) and name for name in value):
            return tuple(value)
        problems.append(f"{where}: expected a name or a list of names, got {shown(value)}")
        return None
    if kind is float:
        number = _as_float(value)
        if number is not None and math.isfinite(number):
            return number
        problems.append(f"{where}: " + ("must be a finite number" if number is not None else "expected a number")
                        + f", got {shown(value)}")
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind == Tuple[int, ...]:
        if isinstance(value, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool) for m in value):
            return tuple(value)
        problems.append(f"{where}: expected a list of ints, got {shown(value)}")
        return None
    elif kind == Tuple[float, ...]:
        numbers = [_as_float(m) for m in value] if isinstance(value, (list, tuple)) else [None]
        if all(n is not None and math.isfinite(n) for n in numbers):
            return tuple(numbers)
        problems.append(f"{where}: expected a list of finite numbers, got {shown(value)}")
        return None
    problems.append(f"{where}: expected {getattr(kind, '__name__', kind)}, got {shown(value)}")
    return None


def _as_float(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            return float("inf")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _section(raw, cls, where: str, problems: List[str], skip=(), check=True) -> Optional[Dict[str, Any]]:
    """Check one mapping against a dataclass: unknown and missing keys, types, then the class's own checks."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {shown(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - set(fields))
    if unknown and where:
        problems.append(f"{where}: unknown keys {unknown}; allowed keys are {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                problems.append(f"{prefix}{name}: missing")
            continue
        value = _coerce(raw[name], hints[name], f"{prefix}{name}", problems)
        if value is _UNSET:
            values[name] = None
        elif value is not None:
            values[name] = value
    if check:
        problems.extend(prefix + problem for problem in cls.problems(values))
    return values


def parse(raw: Any) -> Config:
    """A Config from plain data (a YAML mapping, or a saved config), or a ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    heads_raw = raw.pop("heads", None)
    problems: List[str] = []
    nested = raw.pop("datasets", None) or {}
    if not isinstance(nested, dict):
        problems.append(f"datasets: expected a mapping of dataset sections, got {shown(nested)}")
        nested = {}
    sections_raw = dict(nested)
    for name in [name for name in list(raw) if name in datasets.DATASETS]:
        if name in sections_raw:
            problems.append(f"{name}: given both at the top level and under datasets:; keep one")
        sections_raw[name] = raw.pop(name)
    top_fields = {f.name for f in dataclasses.fields(Config)} - {"optimizer", "datasets", "heads"}
    unknown = sorted(set(raw) - top_fields - {"optimizer"})
    if unknown:
        problems.append(f"unknown keys {unknown}; allowed keys are {sorted(top_fields | {'optimizer', 'heads'})} "
                        f"and dataset sections {list(dataset_names())}")
    if isinstance(raw.get("train_examples"), str):  # all (every image), or a count from --train_examples
        text = raw["train_examples"].strip()
        raw["train_examples"] = (datasets.ALL_TRAIN_EXAMPLES if text == "all" else int(text) if text.isdigit()
                                 else raw["train_examples"])
    top = _section({k: v for k, v in raw.items() if k in top_fields}, Config, "", problems,
                   skip=("optimizer", "datasets", "heads"), check=False)
    heads = _section(heads_raw if heads_raw is not None else {}, HeadConfig, "heads", problems) or {}
    optimizer = None
    if "optimizer" not in raw:
        problems.append("optimizer: missing")
    else:
        optimizer = _section(raw["optimizer"], OptimizerConfig, "optimizer", problems)
    sections = {}
    for name, section_raw in sections_raw.items():
        if isinstance(section_raw, dict) and "scheduler" not in section_raw and name in PAPER_SCHEDULER:
            section_raw = {**section_raw, "scheduler": PAPER_SCHEDULER[name]}
        values = _section(section_raw, DatasetConfig, name, problems)
        if values is not None:
            sections[name] = values
    problems.extend(Config.problems({**top, "datasets": sections, "heads": heads}))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(_cut(problem) for problem in problems))
    return Config(**top, optimizer=OptimizerConfig(**optimizer), heads=HeadConfig(**heads),
                  datasets={name: DatasetConfig(**values) for name, values in sections.items()})


# --- overrides (the flags of train.py) ------------------------------------------------------------

@dataclass(frozen=True)
class Override:
    flag: str  # the command-line flag
    key: str  # the config key it sets
    kind: type
    help: str
    choices: Optional[Tuple[str, ...]] = None
    in_dataset: bool = False  # a key of the chosen dataset's section
    lower_bound: Optional[int] = 1  # for counts
    upper_bound: Optional[int] = None  # ... and their bounds (choices.py)


def overrides() -> Tuple[Override, ...]:
    """The flags that override config keys (train.py defines them from this list)."""
    return (
        Override("dataset", "dataset_name", str, "dataset_name", dataset_names()),
        Override("model", "model", str, "model (a registered encoder)"),
        Override("train_examples", "train_examples", str, "train_examples: a count, or all (100000 = all too)"),
        Override("runs", "runs", int, "runs", upper_bound=MAX_RUNS),
        Override("dataset_dir", "dataset_dir", str, "dataset_dir"),
        Override("device", "device", str, "device", DEVICES),
        Override("memory_source", "memory_source", str, "memory_source", MEMORY_SOURCES),
        Override("precision", "precision", str, "precision", PRECISIONS),
        Override("memory_format", "memory_format", str, "memory_format", MEMORY_FORMATS),
        Override("epochs", "num_epochs", int, "num_epochs of the dataset (opt_milestones and warmup_epochs are scaled "
                 "to match)",
                 in_dataset=True, upper_bound=MAX_EPOCHS),
        Override("mem_examples", "mem_examples", int, "mem_examples of the dataset", in_dataset=True,
                 upper_bound=MAX_IMAGES),
        Override("val_examples", "val_examples", int, "val_examples of the dataset", in_dataset=True, lower_bound=0,
                 upper_bound=MAX_IMAGES),
    )


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases: a config has no use for them, and an alias bomb (a value
    that expands exponentially) would take minutes and gigabytes before any check."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed in a config "
                                              f"or grid file: write the values out", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)


def read_yaml(path) -> Any:
    path = Path(path)
    try:
        return load_yaml_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {shown(str(error), 400)}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None


def apply_overrides(raw: Any, values: Mapping[str, Any]) -> Any:
    """``raw`` with the flag values set (None values are ignored).

    ``epochs`` rescales ``opt_milestones`` and ``warmup_epochs`` proportionally (e.g. 300 epochs [150, 225] ->
    15 epochs [8, 11]).
    """
    raw = copy.deepcopy(raw)
    values = {k: v for k, v in (values or {}).items() if v is not None}
    table = {o.flag: o for o in overrides()}
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ConfigError(f"unknown overrides {unknown}")
    if not isinstance(raw, dict):
        return raw
    for flag, value in values.items():
        if not table[flag].in_dataset:
            raw[table[flag].key] = value
    name = raw.get("dataset_name")
    section = raw.get(name) if isinstance(name, str) else None  # a dataset_name of another type is refused later
    if isinstance(section, dict):
        if "epochs" in values and isinstance(section.get("num_epochs"), int) and section["num_epochs"] > 0:
            old, new = section["num_epochs"], values["epochs"]
            milestones = section.get("opt_milestones")
            if isinstance(milestones, list) and all(isinstance(m, int) for m in milestones) and new > 0:
                section["opt_milestones"] = sorted({max(1, round(m * new / old)) for m in milestones})
            warmup = section.get("warmup_epochs")
            if isinstance(warmup, int) and warmup > 0 and new > 0:
                section["warmup_epochs"] = min(max(1, round(warmup * new / old)), new - 1)
        for flag, value in values.items():
            if table[flag].in_dataset:
                section[table[flag].key] = value
    return raw


def apply_settings(raw: Any, settings: Sequence[str]) -> Any:
    """``raw`` with ``key=value`` settings applied (train.py --set): dotted keys reach into sections
    (``heads.matching_steps=3``, ``optimizer.learning_rate=0.01``, ``CIFAR10.num_epochs=5``); values are YAML."""
    raw = copy.deepcopy(raw)
    for setting in settings:
        key, separator, text = setting.partition("=")
        if not separator or not key:
            raise ConfigError(f"--set {setting!r}: expected key=value, e.g. heads.matching_steps=3")
        try:
            value = load_yaml_text(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {shown(setting)}: the value is not YAML ({shown(str(error), 300)})") from None
        *sections, name = key.split(".")
        if isinstance(raw, dict) and len(sections) >= 2 and sections[0] == "datasets" and sections[1] in raw:
            sections = sections[1:]  # the dataset's section is at the top level: set it there
        elif (isinstance(raw, dict) and sections and sections[0] in datasets.DATASETS and sections[0] not in raw
              and isinstance(raw.get("datasets"), dict) and sections[0] in raw["datasets"]):
            sections = ["datasets", *sections]  # ... or under datasets: (a saved config's form)
        target = raw
        for section in sections:
            if not isinstance(target, dict):
                break
            target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {setting!r}: {'.'.join(sections)} is not a section of the config")
        target[name] = value
    return raw


def load_config(path, override_values: Optional[Mapping[str, Any]] = None, settings: Sequence[str] = ()) -> Config:
    """Read YAML, apply ``key=value`` settings and flag overrides (None values are ignored), check everything once."""
    raw = apply_overrides(apply_settings(read_yaml(path), settings), override_values or {})
    try:
        return parse(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


