"""The numbers of experiment folders as rows: one Row per results.json (or explanation file) under a root, with
its runs' values, settings and validation accuracies; the tuned rows chosen by validation accuracy.

    rows = collect_accuracy("models")        # test accuracy per run, one Row per experiment folder
    tuned, candidates = tuned_rows(rows)     # each cell at its best learning rate (validation, never test)

core/tables.py renders rows as tables; core/paired.py pairs them by seed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from base.errors import UserError

from .results import mean_std


class TableError(UserError, ValueError):
    """The experiments under a root cannot make one table."""


@dataclass
class Row:
    """The numbers of one experiment folder."""
    dataset: str
    model: str
    modality: str
    train_examples: int
    values: List[float]  # one per run
    expected_runs: Optional[int] = None
    folder: Optional[Path] = None
    variant: str = ""  # a grid variant: the folders between the root and <DATASET>/<MODALITY>/<MODEL>/<SIZE>
    settings: Dict[str, Any] = field(default_factory=dict)  # the result-shaping settings of its runs (flat)
    val_values: List[float] = field(default_factory=list)  # each run's validation accuracy at its last epoch
    note: str = ""  # shown after the cells' numbers, e.g. the learning rate a tuned row chose
    method: str = ""  # the explanation method of an explanation table's row (knn, proto, ...)
    flagged: int = 0  # models whose explanations carry no information (at chance: explanations/records.py)
    seeds: List[Optional[int]] = field(default_factory=list)  # the run (seed) of each value, for pairing rows

    @property
    def label(self) -> str:
        """The modality as the tables show it: with its variant and method, e.g. 'encoder_memory [fp32]'."""
        extra = ", ".join(part for part in (self.variant, self.method) if part)
        return f"{self.modality} [{extra}]" if extra else self.modality


def variant_of(root, folder: Path, model: str = "") -> str:
    """The grid variant of an experiment folder: the folders between ``root`` and the experiment's
    <DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES> (grid.py puts a variant's copy of a grid under its name; a
    ``timm/<name>`` model is two folders)."""
    try:
        parts = folder.resolve().relative_to(Path(root).resolve()).parts
    except ValueError:
        return ""
    return "/".join(parts[:-(3 + len(Path(model).parts or ("",)))])


def collect_accuracy(root) -> List[Row]:
    """Every results.json under ``root``: test accuracy per run."""
    return collect_runs(root, lambda run, config: run.get("accuracy"))


def collect_epoch_seconds(root) -> List[Row]:
    """Every results.json under ``root``: training seconds per epoch of each run (its train_seconds over the
    dataset's num_epochs; a resumed run counts the epochs of its last process only, so it reads high or low)."""
    def per_epoch(run, config):
        epochs = ((config.get("datasets") or {}).get(config.get("dataset_name")) or {}).get("num_epochs")
        return run["train_seconds"] / epochs if run.get("train_seconds") is not None and epochs else None
    return collect_runs(root, per_epoch)


def files_under(root, pattern: str) -> List[Path]:
    """The files named ``pattern`` under ``root``, but those a fresh start moved aside (``replaced-*/``, below the
    root: the root itself may be anywhere), sorted."""
    return [path for path in sorted(Path(root).rglob(pattern))
            if not any(part.startswith("replaced-") for part in path.relative_to(root).parts)]


def collect_runs(root, value: Callable[[dict, dict], Optional[float]]) -> List[Row]:
    """One Row per results.json under ``root``, with ``value(run, config)`` per run that has one, the runs'
    settings and final validation accuracies (when their history has them)."""
    rows = []
    for path in files_under(root, "results.json"):
        results = read_results(path)
        config = results.get("config") or {}
        runs = results["runs"]
        numbers = [(value(run, config), run.get("seed", (run.get("run") or 1) - 1)) for run in runs]
        values = [v for v, _ in numbers if v is not None]
        validation = [entries[-1]["val_accuracy"] for entries in (run.get("history") or [] for run in runs)
                      if entries and entries[-1].get("val_accuracy") is not None]
        settings = result_settings(config, path)
        check_runs_agree(path.parent, runs, settings)
        rows.append(Row(results["dataset_name"], results["model"], results["modality"], int(results["train_examples"]),
                        values, config.get("runs"), path.parent, variant_of(root, path.parent, results["model"]),
                        settings=settings, val_values=validation, seeds=[seed for v, seed in numbers if v is not None]))
    return rows


def check_runs_agree(folder: Path, runs: List[dict], settings: Dict[str, Any]) -> None:
    """A TableError when a run's record was made with other settings (other than its seed) than its experiment's:
    its numbers would be averaged with runs of another configuration."""
    for run in runs:
        record_path = folder / f"{run.get('run')}.json"
        if not settings or not record_path.is_file():
            continue
        record = read_json(record_path)
        saved = result_settings(record.get("config") or {}, record_path) if isinstance(record, dict) else {}
        differing = sorted(key for key in set(saved) | set(settings) if saved and saved.get(key) != settings.get(key))
        if differing:
            key = differing[0]
            raise TableError(f"{folder}: run {run.get('run')} was made with other settings than the experiment's "
                             f"({key} {saved.get(key)!r}, the experiment's {settings.get(key)!r}"
                             + (f", and {len(differing) - 1} more" if len(differing) > 1 else "") + "): its accuracy "
                             f"cannot be averaged with the others; move it away, or train it again")


def read_json(path: Path) -> Any:
    """A JSON file, or a TableError naming it (NaN and Infinity are not JSON numbers)."""
    def refuse(constant):
        raise ValueError(f"{constant} is not a JSON number")
    try:
        return json.loads(path.read_text(), parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as error:
        raise TableError(f"{path} is not valid JSON ({error}); restore it, or delete it (train.py rebuilds a "
                         f"results.json from the run records)") from None


def read_results(path: Path) -> Dict[str, Any]:
    """A results.json, checked: what experiment it is, and a finite accuracy in [0, 100] for every run."""
    results = read_json(path)
    problems = []
    if not isinstance(results, dict):
        raise TableError(f"{path} is not a results file (a JSON mapping), it holds a {type(results).__name__}")
    for key, kind in (("dataset_name", str), ("model", str), ("modality", str), ("train_examples", int),
                      ("runs", list)):
        if not isinstance(results.get(key), kind) or isinstance(results.get(key), bool):
            problems.append(f"{key} is {'missing' if key not in results else repr(results[key])[:80]}")
    if not isinstance(results.get("config", {}), dict):
        problems.append(f"config is {repr(results['config'])[:80]}, not a mapping")
    for run in results.get("runs") if isinstance(results.get("runs"), list) else []:
        history = run.get("history", []) if isinstance(run, dict) else []
        if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
            problems.append(f"run {run.get('run')}: its history is not a list of epochs")
        accuracy = run.get("accuracy") if isinstance(run, dict) else None
        if not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool) or not 0 <= accuracy <= 100:
            problems.append(f"run {run.get('run') if isinstance(run, dict) else run!r}: accuracy {accuracy!r} is not a "
                            f"number in [0, 100]")
    if problems:
        raise TableError(f"{path}: " + "; ".join(problems) + "; restore it, or delete it (train.py rebuilds it from "
                         "the run records)")
    return results


def missing_files(rows: Sequence["Row"]) -> List[str]:
    """What the tables' results.json files list but their folders lack (checkpoints, run records)."""
    notes = []
    for row in rows:
        if row.folder is None or not (row.folder / "results.json").is_file():
            continue
        listed = [run.get("run") for run in read_results(row.folder / "results.json")["runs"]]
        lost = [f"{run}.{suffix}" for run in listed for suffix in ("pt", "json")
                if not (row.folder / f"{run}.{suffix}").is_file()]
        if lost:
            notes.append(f"{row.folder}: results.json lists runs whose files are missing: {', '.join(lost)}")
    return notes


def result_settings(config: dict, where: Path) -> Dict[str, Any]:
    """The flat result-shaping settings of a saved config ({} for a config this version cannot read)."""
    from .config import Config, ConfigError

    try:
        return Config.from_saved(config).result_settings() if config else {}
    except ConfigError:
        return {}


TUNED_KEY = "optimizer.learning_rate"  # what the tuned rows choose, on the validation split


def tuned_rows(rows: Sequence[Row]) -> Tuple[List[Row], List[Row]]:
    """For each cell trained at several learning rates and otherwise the same settings (the grids' lr_* variants),
    the one with the best mean validation accuracy at the last epoch (never the test set), as a row "modality
    [tuned]" whose note names the chosen rate. Returns (the tuned rows, the candidate rows they were chosen from)."""
    groups: Dict[Tuple, List[Row]] = {}
    for row in rows:
        if row.settings and row.val_values:
            others = tuple(sorted((k, str(v)) for k, v in row.settings.items() if k != TUNED_KEY))
            groups.setdefault((row.dataset, row.model, row.modality, row.train_examples, others), []).append(row)
    tuned, used = [], []
    for candidates in groups.values():
        if len({row.settings.get(TUNED_KEY) for row in candidates}) < 2:
            continue
        best = max(candidates, key=lambda row: mean_std(row.val_values)[0])
        base = next((row for row in candidates if not row.variant), best)
        tuned.append(dataclasses.replace(best, variant="tuned", folder=best.folder,
                                         note=f"lr {best.settings[TUNED_KEY]:g}", expected_runs=base.expected_runs))
        used += [row for row in candidates if row.variant]
    return tuned, used


def _experiment_of(folder: Path) -> Tuple[str, str, str, int]:
    """(dataset, model, modality, train_examples) of an experiment folder: its results.json, else the folder names
    (<DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES>)."""
    results_path = folder / "results.json"
    if results_path.is_file():
        results = read_results(results_path)
        return results["dataset_name"], results["model"], results["modality"], int(results["train_examples"])
    dataset, modality, model, size = folder.parts[-4:]
    if folder.parts[-3] == "timm":  # a timm/<name> model: two folders
        dataset, modality, model = folder.parts[-5], folder.parts[-4], f"timm/{folder.parts[-2]}"
    return dataset, model, modality, int(size)


def _models(path: Path, content: Any) -> List[dict]:
    """The per-model entries of an explanation script's JSON file."""
    models = content.get("models") if isinstance(content, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise TableError(f"{path} is not what the explanation scripts write (no list of models); run the script again")
    return models


def collect_explanations(root, key: str, pool: str = "run") -> List[Row]:
    """Every explanation_accuracy.json (``pool`` run) or explanation_accuracy_full.json (``pool`` full) under
    ``root`` (explanation_accuracy.py): ``key`` per model, e.g. explanation_accuracy (Table 5) or
    counterfactual_accuracy (Table 6)."""
    rows = []
    name = "explanation_accuracy.json" if pool == "run" else f"explanation_accuracy_{pool}.json"
    for path in files_under(root, name):
        models = _models(path, read_json(path))
        rows.append(_model_row(path, root, models, lambda m: m.get(key), len(models)))
    return rows


def collect_explanation_examples(root, metric: str) -> List[Row]:
    """Every explanation_examples.json under ``root`` (explanation_examples.py): one row per method ("modality
    [method]"), ``metric`` (input or prediction non-representativeness) per model."""
    rows = []
    for path in files_under(root, "explanation_examples.json"):
        content = read_json(path)
        models = [m for m in _models(path, content) if isinstance(m.get(metric), dict)]
        for method in content.get("methods", []):
            rows.append(_model_row(path, root, models, lambda m: m[metric].get(method), len(models), method=method))
    return rows


def collect_counterfactuals(root, score: str) -> List[Row]:
    """Every counterfactuals_<algo>.json under ``root`` (counterfactuals.py): one row per algorithm ("modality
    [memory]", "modality [proto]"), ``score`` (im1, iim1, im2, l1, l0, seconds) per model."""
    rows = []
    for path in files_under(root, "counterfactuals_*.json"):
        content = read_json(path)
        models = [m for m in _models(path, content) if m.get("counterfactuals")]
        rows.append(_model_row(path, root, models, lambda m: m.get(score), len(_models(path, content)),
                               method=str(content.get("algo", path.stem))))
    return rows


def _model_row(path: Path, root, models: List[dict], value: Callable[[dict], Any], expected: int,
               method: str = "") -> Row:
    """A Row of an explanation file: ``value(model)`` per model that has a number, the models' seeds, and how many
    of them were flagged as explaining nothing."""
    numbers = [(value(m), m.get("seed")) for m in models]
    kept = [(v, seed) for v, seed in numbers if isinstance(v, (int, float)) and not isinstance(v, bool)]
    experiment = _experiment_of(path.parent)
    return Row(*experiment, [v for v, _ in kept], expected, path.parent, variant_of(root, path.parent, experiment[1]),
               method=method, seeds=[seed for _, seed in kept],
               flagged=sum(1 for m in models if m.get("uninformative")))


def counterfactual_differences(root, score: str) -> List[Tuple[Tuple[str, str, str, int], Dict[int, float]]]:
    """Per experiment folder with both counterfactuals_memory.json and counterfactuals_proto.json: each run's mean
    of ``memory - proto`` for ``score`` over the test images both algorithms scored (per_image, counterfactuals.py)."""
    found = []
    for memory_path in files_under(root, "counterfactuals_memory.json"):
        proto_path = memory_path.with_name("counterfactuals_proto.json")
        if not proto_path.is_file():
            continue
        by_run = {}
        for algo, path in (("memory", memory_path), ("proto", proto_path)):
            for model in _models(path, read_json(path)):
                images = (model.get("per_image") or {})
                if score in images:
                    by_run.setdefault(model.get("seed"), {})[algo] = dict(zip(images["image"], images[score]))
        differences = {}
        for seed, algos in by_run.items():
            common = sorted(set(algos.get("memory", {})) & set(algos.get("proto", {})))
            if common:
                differences[seed] = sum(algos["memory"][i] - algos["proto"][i] for i in common) / len(common)
        if differences:
            found.append((_experiment_of(memory_path.parent), differences))
    return found
