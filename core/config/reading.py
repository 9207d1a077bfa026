"""From text to a Config: YAML without aliases, the flag overrides of train.py and ``--set key=value`` make plain
data, which ``schema.parse`` checks (every problem of a file in one message, before any data are read or any model is
built).

    config = load_config("config/train.yaml", {"dataset": "CIFAR10", "epochs": 15}, ["optimizer.learning_rate=0.05"])
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import yaml

import datasets

from .choices import (DEVICES, MAX_EPOCHS, MAX_IMAGES, MAX_RUNS, MEMORY_FORMATS, MEMORY_SOURCES, PRECISIONS,
                      dataset_names)
from .schema import Config, ConfigError, parse, shown

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


_PARSED: dict = {}  # text -> its parse: a grid reads its base config once per cell (grid_table1: 216 times)


def read_yaml(path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if text not in _PARSED:
            _PARSED.clear()  # one file at a time is all a grid needs; nothing grows
            _PARSED[text] = load_yaml_text(text)
        return copy.deepcopy(_PARSED[text])  # the caller's settings change its copy, never the cached parse
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problem(path, error)) from None
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None


def yaml_problem(path: Path, error: yaml.YAMLError) -> str:
    """A YAML syntax error in one line: the file, the line and column, what is wrong, and the offending line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    if mark is None:
        return f"{path} is not valid YAML: {shown(problem, 300)}"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    text = lines[mark.line].strip() if mark.line < len(lines) else ""
    return (f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML ({problem})"
            + (f": {shown(text, 200)}" if text else ""))


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
        given = [f"--set={setting}" for setting in settings] + [f"--{flag}={value}" for flag, value in
                                                               (override_values or {}).items() if value is not None]
        if given and _valid(read_yaml(path)):  # the file alone is valid: the flags made the problem
            named = " ".join(flag if len(flag) <= 80 else flag[:80] + "..." for flag in given)
            raise ConfigError(f"{named} (over {path}): {error}") from None
        raise ConfigError(f"{path}: {error}") from None


def _valid(raw) -> bool:
    try:
        parse(raw)
        return True
    except ConfigError:
        return False


