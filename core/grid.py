"""A grid of experiments (config/grid_*.yaml): networks x datasets x training sizes x modalities, each with its
seeded runs, and the state of every run on disk.

    grid = Grid.load("config/grid_table1.yaml")
    for run in grid.runs(): run.command(), run.state()     # done | running | stale | partial | missing

Every run is one ``train.py --run=r --continue_train`` command: it skips a finished run, resumes a partial one,
refuses a run another process trains, and writes into the experiment folder that its cell shares with the
cell's other runs (core/experiment.py merges them).
"""
from __future__ import annotations

import itertools
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from architectures import encoder_problem, list_encoders

from .config import (MAX_RUNS, Config, ConfigError, check_modality, dataset_names, load_config, modalities, read_yaml,
                     setting_differences, shown)
from .experiment import ExperimentFolder

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "train.py"
GRID_KEYS = {"config", "output_dir", "runs", "networks", "datasets", "train_examples", "modalities", "settings", "cells",
             "variants"}
AXES = {"networks": "model", "datasets": "dataset", "train_examples": "train_examples", "modalities": "modality"}
CELL_KEYS = ("dataset", "model", "train_examples", "modality")  # what a cells: entry's where: may name
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Cell:
    """One experiment of the grid: one folder, ``runs`` seeded runs."""
    config: str
    output_dir: str
    runs: int
    dataset: str
    model: str
    train_examples: int
    modality: str
    settings: Sequence[str] = ()
    variant: str = ""  # the grid variant the cell belongs to ("" for the grid itself)
    run_config: Optional[Config] = field(default=None, compare=False, hash=False)  # what its runs are trained with

    @property
    def folder(self) -> ExperimentFolder:
        return ExperimentFolder(Path(self.output_dir) / self.dataset / self.modality / self.model /
                                str(self.train_examples))

    def command(self, run: int) -> List[str]:
        return [sys.executable, str(TRAIN_SCRIPT), f"--config={self.config}", f"--modality={self.modality}",
                f"--dataset={self.dataset}", f"--model={self.model}", f"--train_examples={self.train_examples}",
                f"--runs={self.runs}", f"--run={run}", f"--output_dir={self.output_dir}", "--continue_train",
                *(f"--set={setting}" for setting in self.settings)]

    def run_state(self, run: int) -> str:
        """done (its record exists, made with the cell's settings), changed (a record made with other settings: the
        grid changed since), running (a live process holds its lock), stale (a lock whose process died), partial (a
        resumable state, nobody training it), or missing."""
        folder = self.folder
        record = folder.record(run) if folder.record_path(run).is_file() else None
        if record is not None:
            if self.run_config is not None and (record.get("modality") not in (None, self.modality) or
                                                setting_differences(record.get("config") or {}, self.run_config,
                                                                    [record])):
                return "changed"
            return "done"
        lock = folder.lock(run).state()
        if lock != "free":
            return "running" if lock == "held" else "stale"
        return "partial" if folder.state(run).is_file() else "missing"


@dataclass(frozen=True)
class GridRun:
    cell: Cell
    run: int

    def command(self) -> List[str]:
        return self.cell.command(self.run)

    def shell(self) -> str:
        return shlex.join(self.command())

    def state(self) -> str:
        return self.cell.run_state(self.run)


RESERVED_PREFIX = "replaced-"  # the folders into which a fresh start moves the runs of other settings
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a folder name: lr_0.03, fp32, ... (not . or ..)


def base_config_path(name: str, grid_path: Path) -> Path:
    """A grid's base config: an absolute path, else relative to the repository (as the grids shipped here name
    them: config/...), else relative to the grid file, so that grid.py runs from any working directory."""
    given = Path(name)
    if given.is_absolute():
        return given
    for candidate in (REPO / given, Path(grid_path).resolve().parent / given):
        if candidate.exists():
            return candidate.resolve()
    return (REPO / given).resolve()  # missing: load_config names it


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def axis_problems(raw) -> List[str]:
    """What is wrong with what a grid (or one of its variants) sets: each axis a non-empty list without repeats, of
    the right type and among the known values; settings a list of key=value strings; cells a list of mappings."""
    problems = []
    allowed = {"datasets": dataset_names(), "modalities": modalities(), "networks": tuple(list_encoders())}
    for key in AXES:
        if key not in raw:
            continue
        values = raw[key]
        if not isinstance(values, list) or not values:
            problems.append(f"{key}: expected a non-empty list, got {shown(values)}")
            continue
        if key == "train_examples":
            wrong = [v for v in values if not _is_int(v) or v < 1]
            if wrong:
                problems.append(f"train_examples: {shown(wrong)} are not positive whole numbers")
        else:
            wrong = [v for v in values if not isinstance(v, str) or (v not in allowed[key] and not (
                key == "networks" and not encoder_problem(v)))]
            if wrong:
                problems.append(f"{key}: {shown(wrong)} are not among {list(allowed[key])}")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            problems.append(f"{key}: {repeated} appear more than once")
    settings = raw.get("settings")
    if settings is not None and (not isinstance(settings, list) or
                                 not all(isinstance(s, str) and "=" in s for s in settings)):
        problems.append(f"settings: expected a list of key=value strings (the --set of train.py), got {shown(settings)}")
    cells = raw.get("cells")
    if cells is not None and (not isinstance(cells, list) or not all(
            isinstance(c, dict) and isinstance(c.get("where", {}), dict) and set(c) <= {"where", "settings"} and
            set(c.get("where") or {}) <= set(CELL_KEYS) and isinstance(c.get("settings", []), list)
            for c in cells)):
        problems.append(f"cells: expected a list of {{where: {{{', '.join(CELL_KEYS)}: ...}}, settings: [key=value, "
                        f"...]}}, got {shown(cells)}")
    if "runs" in raw and (not _is_int(raw["runs"]) or not 1 <= raw["runs"] <= MAX_RUNS):
        problems.append(f"runs: expected a whole number from 1 to {MAX_RUNS}, got {shown(raw['runs'])}")
    for key in ("config", "output_dir"):
        if key in raw and not isinstance(raw[key], str):
            problems.append(f"{key}: expected a path, got {shown(raw[key])}")
    return problems


@dataclass
class Grid:
    path: Path
    cells: List[Cell] = field(default_factory=list)

    @classmethod
    def load(cls, path) -> "Grid":
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a grid is a YAML mapping with {sorted(GRID_KEYS)}")
        problems = [f"unknown keys {sorted(set(raw) - GRID_KEYS)}; a grid has {sorted(GRID_KEYS)}"] \
            if set(raw) - GRID_KEYS else []
        problems += [f"{key}: missing" for key in ("config", *AXES) if key not in raw]
        problems += axis_problems(raw)
        variants = raw.get("variants") or {}
        if not isinstance(variants, dict):
            problems.append(f"variants: expected a mapping of names to grid keys, got {shown(variants)}")
            variants = {}
        for name, variant in variants.items():
            if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name) or name.startswith(RESERVED_PREFIX):
                problems.append(f"variant {shown(name)}: a name of letters, digits, '_', '-' and '.', not starting "
                                f"with '.' or '{RESERVED_PREFIX}' (it names a folder; {RESERVED_PREFIX}* folders hold "
                                f"runs moved aside)")
            elif not isinstance(variant, dict):
                problems.append(f"variant {name}: expected a mapping of grid keys, got {shown(variant)}")
            elif set(variant) - set(AXES) - {"settings", "runs"}:
                problems.append(f"variant {name}: unknown keys {sorted(set(variant) - set(AXES) - {'settings', 'runs'})}"
                                f"; a variant may set {sorted(AXES)}, runs and settings")
            else:
                problems += [f"variant {name}: {problem}" for problem in axis_problems(variant)]
        if problems:
            raise ConfigError(f"grid {path}: " + "; ".join(problems))
        base = base_config_path(raw["config"], Path(path))
        try:
            base_config = load_config(base)  # fails early on a bad base config
        except ConfigError as error:
            raise ConfigError(f"grid {path}: its config: {error}") from None
        runs = raw.get("runs", base_config.runs)
        output_dir = Path(raw.get("output_dir", "models")).resolve()
        cells = cls._cells(raw, raw, base, output_dir, runs, list(raw.get("settings") or []), path=path)
        for name, variant in variants.items():  # copies of the grid in folders of their own
            cells += cls._cells({**raw, **variant}, raw, base, output_dir / name, variant.get("runs", runs),
                                list(raw.get("settings") or []) + list(variant.get("settings") or []), name, path)
        for special in raw.get("cells") or []:  # an entry that matches no cell would be silently ignored
            where = special.get("where") or {}
            if not any(all(getattr(cell, key) == value for key, value in where.items()) for cell in cells):
                raise ConfigError(f"grid {path}: cells: the entry where {shown(where)} matches no cell of the grid "
                                  f"(its keys: {', '.join(CELL_KEYS)}); fix its values or drop it")
        return cls(Path(path), cells)

    @staticmethod
    def _cells(axes, raw, base: Path, output_dir: Path, runs: int, settings: List[str],
               variant: str = "", path=None) -> List[Cell]:
        cells = []
        for dataset, model, size, modality in itertools.product(axes["datasets"], axes["networks"],
                                                                axes["train_examples"], axes["modalities"]):
            where = {"dataset": dataset, "model": model, "train_examples": size, "modality": modality}
            cell_settings = list(settings)
            for special in raw.get("cells") or []:
                if all(where.get(key) == value for key, value in (special.get("where") or {}).items()):
                    cell_settings += list(special.get("settings") or [])
            try:  # every cell's config is valid before anything runs
                config = load_config(base, {"dataset": dataset, "model": model, "train_examples": size, "runs": runs},
                                     cell_settings)
                check_modality(config, modality)
            except ConfigError as error:
                named = f"variant {variant}, " if variant else ""
                raise ConfigError(f"grid {path}: {named}cell {dataset} {model} {size} {modality}: {error}") from None
            cells.append(Cell(str(base), str(output_dir), runs, dataset, model, size, modality,
                              tuple(cell_settings), variant, config))
        return cells

    def runs(self) -> Iterator[GridRun]:
        for cell in self.cells:
            for run in range(1, cell.runs + 1):
                yield GridRun(cell, run)

    def summary(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for run in self.runs():
            counts[run.state()] = counts.get(run.state(), 0) + 1
        return counts
