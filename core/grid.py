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
from typing import Any, Dict, Iterator, List, Mapping, Sequence

from .config import ConfigError, dataset_names, load_config, modalities, read_yaml
from .experiment import ExperimentFolder

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "train.py"
GRID_KEYS = {"config", "output_dir", "runs", "networks", "datasets", "train_examples", "modalities", "settings", "cells",
             "variants"}
AXES = {"networks": "model", "datasets": "dataset", "train_examples": "train_examples", "modalities": "modality"}


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
        """done (its record exists), running (a live process holds its lock), stale (a lock whose process died),
        partial (a resumable state, nobody training it), or missing."""
        folder = self.folder
        if folder.record_path(run).is_file():
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


VARIANT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a folder name: lr_0.03, fp32, ... (not . or ..)


def axis_problems(raw) -> List[str]:
    """What is wrong with the axes a grid (or one of its variants) sets: each a non-empty list, the datasets and
    modalities among the known ones."""
    problems = []
    for key in AXES:
        if key in raw and (not isinstance(raw[key], list) or not raw[key]):
            problems.append(f"{key}: expected a non-empty list, got {raw[key]!r}")
    for key, allowed in (("datasets", dataset_names()), ("modalities", modalities())):
        unknown = [v for v in raw.get(key) or [] if v not in allowed] if isinstance(raw.get(key), list) else []
        if unknown:
            problems.append(f"{key}: {unknown} are not among {list(allowed)}")
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
            problems.append(f"variants: expected a mapping of names to grid keys, got {variants!r}")
            variants = {}
        for name, variant in variants.items():
            if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
                problems.append(f"variant {name!r}: a name of letters, digits, '_', '-' and '.', not starting with '.' "
                                f"(it names a folder)")
            elif not isinstance(variant, dict):
                problems.append(f"variant {name}: expected a mapping of grid keys, got {variant!r}")
            elif set(variant) - set(AXES) - {"settings"}:
                problems.append(f"variant {name}: unknown keys {sorted(set(variant) - set(AXES) - {'settings'})}; a "
                                f"variant may set {sorted(AXES)} and settings")
            else:
                problems += [f"variant {name}: {problem}" for problem in axis_problems(variant)]
        if problems:
            raise ConfigError(f"{path}: " + "; ".join(problems))
        base = Path(raw["config"]).resolve()  # commands run from any folder
        base_config = load_config(base)  # fails early on a bad base config
        runs = int(raw.get("runs", base_config.runs))
        output_dir = Path(raw.get("output_dir", "models")).resolve()
        cells = cls._cells(raw, raw, base, output_dir, runs, list(raw.get("settings") or []))
        for name, variant in variants.items():  # copies of the grid in folders of their own
            cells += cls._cells({**raw, **variant}, raw, base, output_dir / name, runs,
                                list(raw.get("settings") or []) + list(variant.get("settings") or []), name)
        return cls(Path(path), cells)

    @staticmethod
    def _cells(axes, raw, base: Path, output_dir: Path, runs: int, settings: List[str],
               variant: str = "") -> List[Cell]:
        cells = []
        for dataset, model, size, modality in itertools.product(axes["datasets"], axes["networks"],
                                                                axes["train_examples"], axes["modalities"]):
            where = {"dataset": dataset, "model": model, "train_examples": size, "modality": modality}
            cell_settings = list(settings)
            for special in raw.get("cells") or []:
                if all(where.get(key) == value for key, value in (special.get("where") or {}).items()):
                    cell_settings += list(special.get("settings") or [])
            load_config(base, {"dataset": dataset, "model": model, "train_examples": int(size), "runs": runs},
                        cell_settings)  # every cell's config is valid before anything runs
            cells.append(Cell(str(base), str(output_dir), runs, dataset, model, int(size), modality,
                              tuple(cell_settings), variant))
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
