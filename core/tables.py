"""The paper's tables from experiment folders: Table 1 (accuracy), Tables 5-6 (explanation and counterfactual
accuracy), as rows dataset x network x modality and columns training sizes, each cell mean ± std over runs.

    rows = collect_accuracy("models")                 # core/collect.py: one Row per experiment folder
    table = Table.build(rows, "accuracy")
    table.markdown(), table.csv(), table.latex()

A cell with fewer runs than its experiment asks for shows the count (e.g. "12/15"); a cell with no results is
shown as missing, never as zero.
"""
from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from base.files import atomic_write_bytes
from base.plots import pyplot
from datasets import ALL_TRAIN_EXAMPLES

from .collect import (Row, TableError, collect_accuracy, collect_counterfactuals, collect_epoch_seconds,
                      collect_explanation_examples, collect_explanations, counterfactual_differences, tuned_rows)
from .paired import PairedTable, interval, paired_counterfactuals, paired_methods, paired_rows, versus_label
from .results import mean_std

METHOD_ORDER = {name: i for i, name in enumerate(("memory_wrap", "twin_chp", "knn", "random", "memory", "proto"))}
MISSING = "—"
CELL_FOOTNOTE = ("Cells: mean ± population std over runs (the paper's), and the 95 % interval of the mean (Student t; n/a "
                 "for one run).")
UNINFORMATIVE_FOOTNOTE = ("uninformative: models whose test accuracy is within 5 points of chance or that predict one "
                          "class for 90 % of the images; their explanations carry no information (explanations/records.py)"
                          ".")


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
        _, low, high = interval(row.values)
        text = f"{mean:.{precision}f} ± {std:.{precision}f} " + (
            f"[{low:.{precision}f}, {high:.{precision}f}]" if low is not None else "[n/a]")
        if row.expected_runs and len(row.values) < row.expected_runs:
            text += f" ({len(row.values)}/{row.expected_runs})"
        if row.flagged:
            text += f" ({row.flagged} uninformative)"
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
        lines += ["", CELL_FOOTNOTE]
        if any(row.flagged for row in self.rows()):
            lines.append(UNINFORMATIVE_FOOTNOTE)
        return "\n".join(lines)

    def csv(self) -> str:
        """Long format: one line per cell (missing cells have empty numbers)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["dataset", "network", "modality", "train_examples", "mean", "std", "runs", "expected_runs",
                         "ci95_lo", "ci95_hi"])
        for key, by_size in self.cells.items():
            for size in self.sizes:
                row = by_size.get(size)
                mean, std = mean_std(row.values) if row and row.values else (None, None)
                _, low, high = interval(row.values) if row else (None, None, None)
                writer.writerow([*key, size, *("" if v is None else f"{v:.4f}" for v in (mean, std)),
                                 len(row.values) if row else 0, (row.expected_runs or "") if row else "",
                                 *("" if v is None else f"{v:.4f}" for v in (low, high))])
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
        plt = pyplot()

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
    paired: Optional[PairedTable] = None  # its rows' paired differences (core/paired.py), where they have some

    def __iter__(self):
        return iter((self.name, self.title, self.table, self.ylabel))


def build_tables(root, keep: Callable[[Row], bool] = lambda row: True, modality_order: Sequence[str] = (),
                 versus: str = "std") -> List[BuiltTable]:
    """Every table of the experiments under ``root`` that has rows ``keep`` keeps, Table 1 first (tuned rows
    beside their cells, the learning-rate variants they were chosen from left out unless ``keep`` asks for them by
    variant), each with its paired differences: accuracy against ``versus`` (a modality, and a variant: "std tuned"),
    explanations by example between methods, counterfactuals between memory and CFProto. A TableError when no
    experiment is there or none is kept."""
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
            built.append(BuiltTable(name, title, Table.build(rows, title, order, precision), ylabel,
                                    _paired(name, title, root, rows, found, keep, versus)))
    return built


def _paired(name: str, title: str, root, rows: List[Row], found: List[Row], keep, versus: str
            ) -> Optional[PairedTable]:
    if name == "accuracy":  # the reference row may be one the filters leave out of the table
        label = versus_label(versus)
        return paired_rows([row for row in found if keep(row) or row.label == label], versus, title)
    if name.startswith("examples_"):
        return paired_methods(rows, title=title)
    if name.startswith("counterfactuals_") and name != "counterfactuals_seconds":
        score = name[len("counterfactuals_"):]
        kept = {(row.dataset, row.model, row.modality, row.train_examples) for row in rows}
        return paired_counterfactuals([pair for pair in counterfactual_differences(root, score) if pair[0] in kept],
                                      score, title)
    return None
