"""The paper's tables from experiment folders: Table 1 (accuracy), Tables 5-6 (explanation and counterfactual
accuracy), as rows dataset x network x modality and columns training sizes, each cell mean ± std over runs.

    rows = collect_accuracy("models")                 # one Row per experiment folder with a results.json
    table = Table.build(rows, "accuracy")
    table.markdown(), table.csv(), table.latex()

A cell with fewer runs than its experiment asks for shows the count (e.g. "12/15"); a cell with no results is
shown as missing, never as zero.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from base.errors import UserError
from base.files import atomic_write_bytes

from .results import mean_std


class TableError(UserError, ValueError):
    """The experiments under a root cannot make one table."""


ALL_TRAIN_EXAMPLES = 100_000
METHOD_ORDER = {name: i for i, name in enumerate(("memory_wrap", "twin_chp", "knn", "random", "memory", "proto"))}
MISSING = "—"


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

    @property
    def label(self) -> str:
        """The modality as the tables show it: with its variant and method, e.g. 'encoder_memory [fp32]'."""
        extra = ", ".join(part for part in (self.variant, self.method) if part)
        return f"{self.modality} [{extra}]" if extra else self.modality


def variant_of(root, folder: Path) -> str:
    """The grid variant of an experiment folder: the folders between ``root`` and the experiment's
    <DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES> (grid.py puts a variant's copy of a grid under its name)."""
    try:
        parts = folder.resolve().relative_to(Path(root).resolve()).parts
    except ValueError:
        return ""
    return "/".join(parts[:-4])


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


def collect_runs(root, value: Callable[[dict, dict], Optional[float]]) -> List[Row]:
    """One Row per results.json under ``root``, with ``value(run, config)`` per run that has one, the runs'
    settings and final validation accuracies (when their history has them)."""
    rows = []
    for path in sorted(Path(root).rglob("results.json")):
        if any(part.startswith("replaced-") for part in path.relative_to(root).parts):
            continue  # runs moved aside by a fresh start (below the root: the root itself may be anywhere)
        results = read_results(path)
        config = results.get("config") or {}
        runs = results["runs"]
        values = [v for v in (value(run, config) for run in runs) if v is not None]
        validation = [entries[-1]["val_accuracy"] for entries in (run.get("history") or [] for run in runs)
                      if entries and entries[-1].get("val_accuracy") is not None]
        settings = result_settings(config, path)
        check_runs_agree(path.parent, runs, settings)
        rows.append(Row(results["dataset_name"], results["model"], results["modality"], int(results["train_examples"]),
                        values, config.get("runs"), path.parent, variant_of(root, path.parent),
                        settings=settings, val_values=validation))
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


def differing_settings(rows: Sequence[Row]) -> Dict[int, str]:
    """Row index -> the settings in which it differs from most rows of its dataset (other than the network, the
    training size and what a dataset's own section holds), e.g. "optimizer.learning_rate 0.03 (others: 0.1)"."""
    ignored = ("model", "train_examples", "dataset_name")
    out = {}
    for dataset in {row.dataset for row in rows}:
        members = [i for i, row in enumerate(rows) if row.dataset == dataset and row.settings]
        keys = {k for i in members for k in rows[i].settings if k not in ignored}
        common = {}
        for key in keys:
            counts: Dict[str, int] = {}
            for i in members:
                counts[repr(rows[i].settings.get(key))] = counts.get(repr(rows[i].settings.get(key)), 0) + 1
            common[key] = max(counts, key=counts.get)
        for i in members:
            differences = [f"{key} {rows[i].settings.get(key)!r} (others: {common[key]})" for key in sorted(keys)
                           if repr(rows[i].settings.get(key)) != common[key]]
            if differences:
                out[i] = "; ".join(differences)
    return out


def _experiment_of(folder: Path) -> Tuple[str, str, str, int]:
    """(dataset, model, modality, train_examples) of an experiment folder: its results.json, else the folder names
    (<DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES>)."""
    results_path = folder / "results.json"
    if results_path.is_file():
        results = read_results(results_path)
        return results["dataset_name"], results["model"], results["modality"], int(results["train_examples"])
    dataset, modality, model, size = folder.parts[-4:]
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
    for path in sorted(Path(root).rglob(name)):
        models = _models(path, read_json(path))
        rows.append(Row(*_experiment_of(path.parent), [m[key] for m in models if isinstance(m.get(key), (int, float))],
                        len(models),
                        path.parent, variant_of(root, path.parent)))
    return rows


def collect_explanation_examples(root, metric: str) -> List[Row]:
    """Every explanation_examples.json under ``root`` (explanation_examples.py): one row per method ("modality
    [method]"), ``metric`` (input or prediction non-representativeness) per model."""
    rows = []
    for path in sorted(Path(root).rglob("explanation_examples.json")):
        content = read_json(path)
        models = [m for m in _models(path, content) if isinstance(m.get(metric), dict)]
        for method in content.get("methods", []):
            values = [m[metric].get(method) for m in models]
            rows.append(Row(*_experiment_of(path.parent), [v for v in values if isinstance(v, (int, float))], len(models),
                            path.parent, variant_of(root, path.parent), method=method))
    return rows


def collect_counterfactuals(root, score: str) -> List[Row]:
    """Every counterfactuals_<algo>.json under ``root`` (counterfactuals.py): one row per algorithm ("modality
    [memory]", "modality [proto]"), ``score`` (im1, iim1, im2, l1, l0, seconds) per model."""
    rows = []
    for path in sorted(Path(root).rglob("counterfactuals_*.json")):
        content = read_json(path)
        models = [m for m in _models(path, content) if isinstance(m.get(score), (int, float)) and m.get("counterfactuals")]
        rows.append(Row(*_experiment_of(path.parent), [m[score] for m in models], len(_models(path, content)),
                        path.parent, variant_of(root, path.parent), method=str(content.get("algo", path.stem))))
    return rows


def size_label(train_examples: int) -> str:
    return "Full" if train_examples >= ALL_TRAIN_EXAMPLES else str(train_examples)


@dataclass
class Table:
    title: str
    sizes: List[int]
    cells: Dict[Tuple[str, str, str], Dict[int, Row]] = field(default_factory=dict)
    precision: int = 2  # decimals of the cells
    notes: Dict[Tuple[str, str, str], str] = field(default_factory=dict)  # row -> how its settings differ

    @classmethod
    def build(cls, rows: Sequence[Row], title: str, modality_order: Sequence[str] = (), precision: int = 2) -> "Table":
        """Rows in order: per dataset and network, the plain cells by modality, each followed by its tuned row, then
        every other variant's; a row whose settings differ from most of its dataset's rows gets a footnote."""
        order = {name: i for i, name in enumerate(modality_order)}
        table = cls(title, sorted({row.train_examples for row in rows}), precision=precision)
        plain = ("", "tuned")

        def position(r):
            return (r.dataset, r.model, r.variant not in plain, "" if r.variant in plain else r.variant,
                    order.get(r.modality, len(order)), r.modality, r.variant == "tuned",
                    METHOD_ORDER.get(r.method, len(METHOD_ORDER)), r.method)
        differing = differing_settings(rows)
        for index, row in sorted(enumerate(rows), key=lambda pair: position(pair[1])):
            if index in differing and row.variant != "tuned":
                table.notes.setdefault((row.dataset, row.model, row.label), differing[index])
            by_size = table.cells.setdefault((row.dataset, row.model, row.label), {})
            if row.train_examples in by_size:
                raise TableError(f"two experiments fill one cell ({row.dataset}, {row.model}, {row.label}, "
                                 f"{row.train_examples}): {by_size[row.train_examples].folder} and {row.folder}; "
                                 "give tables.py a --root that holds one of them")
            by_size[row.train_examples] = row
        return table

    def rows(self) -> List[Row]:
        return [row for by_size in self.cells.values() for row in by_size.values()]

    def cell(self, key, size: int, precision: Optional[int] = None) -> str:
        precision = self.precision if precision is None else precision
        row = self.cells[key].get(size)
        if row is None or not row.values:
            return MISSING
        mean, std = mean_std(row.values)
        text = f"{mean:.{precision}f} ± {std:.{precision}f}"
        if row.expected_runs and len(row.values) < row.expected_runs:
            text += f" ({len(row.values)}/{row.expected_runs})"
        return text + (f" ({row.note})" if row.note else "")

    def markdown(self) -> str:
        header = "| dataset | network | modality | " + " | ".join(size_label(s) for s in self.sizes) + " |"
        lines = [header, "|" + "---|" * (3 + len(self.sizes))]
        marks = {key: f"({chr(ord('a') + i)})" for i, key in enumerate(self.notes)}
        for key in self.cells:
            label = f"{key[2]} {marks[key]}" if key in marks else key[2]
            lines.append(f"| {key[0]} | {key[1]} | {label} | " + " | ".join(self.cell(key, s) for s in self.sizes)
                         + " |")
        if marks:
            lines.append("")
            lines += [f"{marks[key]} {key[2]}: its settings differ from most of the table's: {note}"
                      for key, note in self.notes.items()]
        return "\n".join(lines)

    def csv(self) -> str:
        """Long format: one line per cell (missing cells have empty numbers)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["dataset", "network", "modality", "train_examples", "mean", "std", "runs", "expected_runs"])
        for key, by_size in self.cells.items():
            for size in self.sizes:
                row = by_size.get(size)
                mean, std = mean_std(row.values) if row and row.values else (None, None)
                writer.writerow([*key, size, "" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}",
                                 len(row.values) if row else 0, (row.expected_runs or "") if row else ""])
        return out.getvalue()

    def latex(self) -> str:
        columns = "lll" + "c" * len(self.sizes)
        lines = [f"% {self.title}", f"\\begin{{tabular}}{{{columns}}}", "\\toprule",
                 "Dataset & Network & Variant & " + " & ".join(size_label(s) for s in self.sizes) + " \\\\",
                 "\\midrule"]
        for key in self.cells:
            values = [self.cell(key, s).replace("±", "$\\pm$").replace(MISSING, "--") for s in self.sizes]
            lines.append(" & ".join(part.replace("_", "\\_") for part in key) + " & " + " & ".join(values) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)

    def figure(self, path: Path, ylabel: str) -> None:
        """Accuracy against training size, a line per modality with std error bars, a panel per dataset x network."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = list(dict.fromkeys((dataset, model) for dataset, model, _ in self.cells))
        labels = list(dict.fromkeys(label for _, _, label in self.cells))
        colours, markers = plt.get_cmap("tab20").colors, "osD^vPX<>*"
        style = {label: dict(color=colours[k % len(colours)], marker=markers[k % len(markers)])
                 for k, label in enumerate(labels)}  # one look per modality in every panel, 20 before a repeat
        figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.8, max(3.6, 0.8 + 0.17 * len(labels))),
                                     squeeze=False, dpi=100)
        for axis, (dataset, model) in zip(axes[0], panels):
            series = [(label, by_size) for (d, m, label), by_size in self.cells.items() if (d, m) == (dataset, model)]
            for k, (modality, by_size) in enumerate(series):
                offset = 0.3 * (k - (len(series) - 1) / 2) / max(len(series), 1)  # identical points stay visible
                points = [(i + offset, *mean_std(by_size[s].values)) for i, s in enumerate(self.sizes)
                          if s in by_size and by_size[s].values]
                if points:
                    positions, means, stds = zip(*points)
                    axis.errorbar(positions, means, yerr=stds, capsize=3, label=modality, **style[modality])
            axis.set_xticks(range(len(self.sizes)), [size_label(s) for s in self.sizes])
            axis.set_title(f"{dataset}, {model}", fontsize=10)
            axis.set_xlabel("training examples")
            axis.set_ylabel(ylabel)
            axis.grid(alpha=0.3)
        handles = {}
        for axis in axes[0]:  # one legend beside the panels, where it covers no point
            for handle, label in zip(*axis.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        figure.suptitle(self.title, fontsize=10)
        figure.tight_layout()
        atomic_write_bytes(path, lambda f: figure.savefig(f, format="png"))
        plt.close(figure)


# --- every table of a root, as tables.py and report.py show them ------------------------------------

def _explanation_tables():
    """Tables 5-6 for each memory pool, the by-example metrics and the counterfactual scores."""
    tables = []
    for pool, said in (("run", "memory from the run's own pool"), ("full", "memory as the paper's code drew it")):
        suffix = "" if pool == "run" else f"_{pool}"
        tables += [(f"explanation{suffix}", f"Table 5: explanation accuracy (%), {said}",
                    functools.partial(collect_explanations, key="explanation_accuracy", pool=pool),
                    "explanation accuracy (%)", 2),
                   (f"counterfactual{suffix}", f"Table 6: accuracy on the inputs whose top memory sample is a "
                    f"counterfactual (%), {said}", functools.partial(collect_explanations, key="counterfactual_accuracy",
                                                                      pool=pool), "counterfactual accuracy (%)", 2)]
    for metric in ("input", "prediction"):
        tables.append((f"examples_{metric}", f"Explanations by example: {metric} non-representativeness (lower is "
                       f"better)", functools.partial(collect_explanation_examples, metric=metric), None, 4))
    for score, title in (("im1", "IM1 (lower is better)"), ("iim1", "IIM1, the inverse of IM1"),
                         ("im2", "IM2 (lower is better)"), ("l1", "L1 distance to the input"),
                         ("l0", "L0: fraction of the input's values changed"),
                         ("seconds", "seconds per counterfactual")):
        tables.append((f"counterfactuals_{score}", f"Counterfactuals: {title}",
                       functools.partial(collect_counterfactuals, score=score), None, 4))
    return tables


TABLES = (  # name, title, how its rows are collected, the y label of its figure (None: no figure), decimals
    ("accuracy", "Table 1: test accuracy (%)", collect_accuracy, "test accuracy (%)", 2),
    ("epoch_seconds", "Training seconds per epoch", collect_epoch_seconds, None, 2),
    *_explanation_tables())


@dataclass
class RowFilter:
    """tables.py's and report.py's filters: empty lists keep everything; variant 'none': the cells of no variant."""
    datasets: Sequence[str] = ()
    models: Sequence[str] = ()
    modalities: Sequence[str] = ()
    variants: Sequence[str] = ()

    def __call__(self, row: Row) -> bool:
        return ((not self.datasets or row.dataset in self.datasets) and (not self.models or row.model in self.models)
                and (not self.modalities or row.modality in self.modalities)
                and (not self.variants or (row.variant or "none") in self.variants))


@dataclass
class BuiltTable:
    name: str
    title: str
    table: "Table"
    ylabel: Optional[str]  # of its figure; None: no figure

    def __iter__(self):
        return iter((self.name, self.title, self.table, self.ylabel))


def build_tables(root, keep: Callable[[Row], bool] = lambda row: True, modality_order: Sequence[str] = ()
                 ) -> List[BuiltTable]:
    """Every table of the experiments under ``root`` that has rows ``keep`` keeps, Table 1 first (tuned rows
    beside their cells, the learning-rate variants they were chosen from left out unless ``keep`` asks for them by
    variant). A TableError when no experiment is there or none is kept."""
    from .config import modalities

    order = modality_order or modalities()
    built = []
    for name, title, collect, ylabel, precision in TABLES:
        found = collect(root)
        if name in ("accuracy", "epoch_seconds"):  # each cell at its best learning rate, by validation accuracy
            tuned, candidates = tuned_rows(found)
            asked = set(getattr(keep, "variants", ()) or ())
            found = [row for row in found if not (row in candidates and row.variant not in asked)] + tuned
        rows = [row for row in found if keep(row)]
        if not rows and name == "accuracy":
            raise TableError(f"no results.json under {root} (train.py writes one per experiment)" if not found else
                             f"none of the {len(found)} experiments under {root} matches the filters (--dataset, "
                             f"--model, --modality, --variant)")
        if rows:
            built.append(BuiltTable(name, title, Table.build(rows, title, order, precision), ylabel))
    return built
