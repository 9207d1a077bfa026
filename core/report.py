"""One static HTML report of the experiments under a root: the tables of tables.py (the same code path), figures
(accuracy against training size, learning curves per cell, std against Memory Wrap per network), explanation
galleries of memory heads, and per cell the machine, the config and the command that reproduce it.

    report = Report.collect(root, keep)                   # tables, curves, cells: from results.json and run records
    report.figures(folder)                                 # PNG files beside the page
    report.render(folder / "index.html", galleries)        # Jinja2, no remote asset: it opens from the file system

Everything comes from what the runs recorded (one source for every view); a run recorded before histories existed
gets its tables, and its curves are marked missing.
"""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml

from architectures import build_model
from base.files import atomic_write_bytes, atomic_write_json
from base.plots import pyplot
from .config import Config, as_computed, resolved_levers
from .layer_precision import depthwise
from .results import at_chance, chance
from .collect import Row, TableError, read_results
from .tables import BuiltTable, build_tables

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "report.html.j2"


@dataclass
class Cell:
    """One experiment folder: its rows' identity, its runs' histories and what produced it."""
    row: Row
    histories: List[Optional[List[Dict[str, Any]]]]  # per run (None: recorded before histories existed)
    machine: Dict[str, Any]
    config: Dict[str, Any]  # as its runs computed: what ``auto`` chose pinned where it can be (``pinned``)
    name: str  # a file-safe name
    notes: List[str] = field(default_factory=list)  # what the config could not pin
    warnings: List[str] = field(default_factory=list)  # runs at chance: their explanations carry no information

    @property
    def title(self) -> str:
        return f"{self.row.dataset} · {self.row.model} · {self.row.label} · {self.row.train_examples}"


def pinned(config: Dict[str, Any], runs: List[Dict[str, Any]], modality: str) -> Tuple[Dict[str, Any], List[str]]:
    """A saved config with what its runs' ``auto`` settings chose written in, so that it repeats their computation
    on a machine whose measurement would choose otherwise (core/autotune.py): ``precision`` and ``memory_format`` as
    the runs recorded them, ``depthwise_fp32`` as ``none``, ``all`` or the list of layers the runs computed in fp32,
    and a key the config was saved without as it computed then (``config.as_computed``). Returns the config and a
    note for each setting left to a new measurement (runs that computed differently)."""
    out, notes, resolved = as_computed(config), [], resolved_levers(runs)
    for key in ("precision", "memory_format"):
        if out.get(key) == "auto" and runs:
            if key in resolved:
                out[key] = resolved[key]
            else:
                chosen = sorted({str(run.get(key)) for run in runs})
                notes.append(f"{key}: auto, which its runs resolved to {' and '.join(chosen)}")
    if out.get("depthwise_fp32") == "auto" and out.get("precision") == "bf16" and runs:
        layers = resolved.get("depthwise_fp32")
        if layers is None:
            counts = " or ".join(dict.fromkeys(str(n) for n in sorted(len(run.get("fp32_layers") or ())
                                                                        for run in runs)))
            notes.append(f"depthwise_fp32: auto, which its runs resolved to different layers in fp32 ({counts} "
                         f"depthwise convolutions: fp32_layers in each run's record); a run of this config measures "
                         f"them again")
        elif layers != "none" and set(layers) == depthwise_layers(out, modality):
            out["depthwise_fp32"] = "all"
        else:
            out["depthwise_fp32"] = layers  # none, or the layers in the order the first record lists them
    return out, notes


def depthwise_layers(config: Dict[str, Any], modality: str) -> Optional[set]:
    """The names of the depthwise convolutions of the config's model (built on the meta device: no weights are
    allocated), or None where it cannot be built here (a prototypes file that is gone...)."""
    try:
        settings = Config.from_saved(config)
        with torch.device("meta"):
            model = build_model(settings.model, modality, settings.dataset.num_classes, **settings.model_options())
    except (ValueError, TypeError, KeyError, OSError):  # a config or a file this version cannot build it from
        return None
    return set(depthwise(model))


@dataclass
class Gallery:
    """The explanation figures of one run of a memory-head cell."""
    cell: str  # the cell's title
    checkpoint: str
    images: List[str]  # memory images, relative to the page
    heatmaps: List[str] = field(default_factory=list)
    warning: Optional[str] = None  # its model explains nothing (explanations/records.py)
    support: Optional[str] = None  # the distribution of its test images' support and its threshold (a figure)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


@dataclass
class Report:
    root: Path
    tables: List[BuiltTable]
    cells: List[Cell]

    @classmethod
    def collect(cls, root, keep: Callable[[Row], bool]) -> "Report":
        tables = build_tables(root, keep)
        cells = []
        for row in tables[0].table.rows():  # Table 1's rows: one per experiment folder (tuned rows point at theirs)
            if row.variant == "tuned" or row.folder is None:
                continue
            results = read_results(row.folder / "results.json")
            runs = results["runs"]
            config, notes = pinned(results.get("config") or {}, runs, row.modality)
            classes = ((config.get("datasets") or {}).get(row.dataset) or {}).get("num_classes") or 2
            warnings = [f"run {run.get('run')}: accuracy {run['accuracy']:.1f} %, chance {chance(classes):.1f} %: its "
                        f"explanations carry no information" for run in runs if at_chance(run.get("accuracy"), classes)]
            cells.append(Cell(row, [run.get("history") for run in runs], (runs[0].get("machine") or {}) if runs else {},
                              config, _safe(f"{row.dataset}_{row.model}_{row.modality}_{row.variant or 'grid'}_"
                                            f"{row.train_examples}"), notes, warnings))
        return cls(Path(root), tables, cells)

    @property
    def datasets(self) -> List[str]:
        return sorted({cell.row.dataset for cell in self.cells})

    # --- figures -----------------------------------------------------------------------------------
    def figures(self, folder: Path) -> Dict[str, Any]:
        """Write every figure under ``folder``; returns what the page shows: accuracy figure per dataset, curves per
        cell (None: no history), std vs Memory Wrap per dataset."""
        folder.mkdir(parents=True, exist_ok=True)
        shown = {"accuracy": {}, "curves": {}, "std_vs_mw": {}, "forest": {}}
        accuracy = self.tables[0]
        for dataset in self.datasets:
            rows = [row for row in accuracy.table.rows() if row.dataset == dataset]
            path = folder / f"accuracy_{_safe(dataset)}.png"
            type(accuracy.table).build(rows, f"{dataset}: test accuracy against training size").figure(
                path, accuracy.ylabel)
            shown["accuracy"][dataset] = path.name
            pair = self._std_vs_memory_wrap(folder, dataset)
            if pair:
                shown["std_vs_mw"][dataset] = pair
            forest = self._forest(folder, dataset)
            if forest:
                shown["forest"][dataset] = forest
        for cell in self.cells:
            shown["curves"][cell.name] = self._curves(folder, cell)
        return shown

    def _curves(self, folder: Path, cell: Cell) -> Optional[str]:
        histories = [h for h in cell.histories if h]
        if not histories:
            return None
        plt = pyplot()
        panels = [("train_loss", "training loss"), ("train_accuracy", "training accuracy (%)")]
        if any(entry.get("val_accuracy") is not None for h in histories for entry in h):
            panels.append(("val_accuracy", "validation accuracy (%)"))
        figure, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.6), dpi=100, squeeze=False)
        for axis, (key, label) in zip(axes[0], panels):
            series = []
            for history in histories:
                points = [(e["epoch"], e[key]) for e in history if e.get(key) is not None]
                if points:
                    epochs, values = zip(*points)
                    axis.plot(epochs, values, linewidth=0.8, alpha=0.45, color="tab:blue")
                    series.append(dict(points))
            common = sorted(set.intersection(*(set(s) for s in series))) if series else []
            if len(series) > 1 and common:
                axis.plot(common, [np.mean([s[e] for s in series]) for e in common], linewidth=2.2, color="tab:blue",
                          label=f"mean of {len(series)} runs")
                axis.legend(fontsize=7)
            axis.set_xlabel("epoch", fontsize=8)
            axis.set_ylabel(label, fontsize=8)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
        figure.suptitle(cell.title, fontsize=9)
        figure.tight_layout()
        path = folder / f"curves_{cell.name}.png"
        atomic_write_bytes(path, lambda f: figure.savefig(f, format="png"))
        plt.close(figure)
        return path.name

    def _std_vs_memory_wrap(self, folder: Path, dataset: str) -> Optional[str]:
        """Per network and training size: std's mean accuracy against Memory Wrap's, with std bars (above the
        diagonal: the memory helps)."""
        rows = {(row.model, row.train_examples, row.modality): row for row in self.tables[0].table.rows()
                if row.dataset == dataset and not row.variant}
        pairs = [(model, size, rows[(model, size, "std")], rows[(model, size, "encoder_memory")])
                 for model, size, modality in rows if modality == "std" and (model, size, "encoder_memory") in rows]
        pairs = [p for p in pairs if p[2].values and p[3].values]
        if not pairs:
            return None
        plt = pyplot()
        figure, axis = plt.subplots(figsize=(4.2, 4.0), dpi=100)
        for model in sorted({p[0] for p in pairs}):
            mine = [p for p in pairs if p[0] == model]
            axis.errorbar([np.mean(p[2].values) for p in mine], [np.mean(p[3].values) for p in mine],
                          xerr=[np.std(p[2].values) for p in mine], yerr=[np.std(p[3].values) for p in mine],
                          fmt="o", capsize=3, label=model)
            for p in mine:
                axis.annotate(str(p[1]), (np.mean(p[2].values), np.mean(p[3].values)), fontsize=6,
                              textcoords="offset points", xytext=(4, 4))
        low = min(min(np.mean(p[2].values), np.mean(p[3].values)) for p in pairs) - 5
        axis.plot([low, 100], [low, 100], color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel("std: test accuracy (%)", fontsize=8)
        axis.set_ylabel("Memory Wrap: test accuracy (%)", fontsize=8)
        axis.set_title(f"{dataset}: std against Memory Wrap (labels: training size)", fontsize=9)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = folder / f"std_vs_memory_wrap_{_safe(dataset)}.png"
        atomic_write_bytes(path, lambda f: figure.savefig(f, format="png"))
        plt.close(figure)
        return path.name

    def _forest(self, folder: Path, dataset: str) -> Optional[str]:
        """The paired differences of the accuracy table (row - reference, by seed) with their 95 % intervals, a line
        per row, network and training size; zero marked (a forest plot)."""
        paired = self.tables[0].paired
        lines = [line for line in paired.lines if line.dataset == dataset] if paired else []
        if not lines:
            return None
        plt = pyplot()
        figure, axis = plt.subplots(figsize=(6.4, 0.9 + 0.28 * len(lines)), dpi=100)
        for y, line in enumerate(reversed(lines)):
            found = line.found
            if found.mean is None:
                continue
            colour = "tab:green" if found.excludes_zero and found.mean > 0 else (
                "tab:red" if found.excludes_zero else "tab:grey")
            if found.low is not None:
                axis.plot([found.low, found.high], [y, y], color=colour, linewidth=2)
            axis.plot([found.mean], [y], "o", color=colour, markersize=4)
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_yticks(range(len(lines)), [f"{line.network} {line.train_examples}: {line.label} − {line.versus} "
                                             f"({line.found.pairs} pairs)" for line in reversed(lines)], fontsize=7)
        axis.set_xlabel("paired difference of test accuracy (points), 95 % interval", fontsize=8)
        axis.set_title(f"{dataset}: paired differences against {lines[0].versus} (grey: the interval includes 0)",
                       fontsize=9)
        axis.grid(axis="x", alpha=0.3)
        figure.tight_layout()
        path = folder / f"paired_{_safe(dataset)}.png"
        atomic_write_bytes(path, lambda f: figure.savefig(f, format="png"))
        plt.close(figure)
        return path.name

    # --- the page ------------------------------------------------------------------------------------
    def commands(self, cell: Cell, configs: Path) -> Dict[str, str]:
        """The config file of the cell (written under ``configs``) and the train.py command that reproduces it."""
        configs.mkdir(parents=True, exist_ok=True)
        path = configs / f"{cell.name}.yaml"
        text = yaml.safe_dump(json.loads(json.dumps(cell.config)), sort_keys=False)
        atomic_write_bytes(path, lambda f: f.write(text.encode()))
        runs, threads = len(cell.histories), cell.machine.get("threads")
        threads = f"OMP_NUM_THREADS={threads} " if isinstance(threads, int) and "gpu" not in cell.machine else ""
        return {"config": f"{configs.name}/{path.name}", "notes": cell.notes,
                "command": f"{threads}python train.py --config={path} --modality={cell.row.modality} "
                           f"--output_dir=models  # {runs} run{'s' if runs != 1 else ''}, seeds 0..{runs - 1}"}

    def render(self, path: Path, shown: Dict[str, Any], galleries: List[Gallery]) -> None:
        import jinja2

        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
                                         autoescape=jinja2.select_autoescape(["html", "j2"]))
        configs = path.parent / "configs"
        sections = []
        for dataset in self.datasets:
            cells = [cell for cell in self.cells if cell.row.dataset == dataset]
            tables = [(built.title, _html_table(built, dataset)) for built in self.tables
                      if any(row.dataset == dataset for row in built.table.rows())]
            paired = [(built.paired.title, _html_paired(built.paired, dataset)) for built in self.tables
                      if built.paired is not None and any(line.dataset == dataset for line in built.paired.lines)]
            sections.append({
                "dataset": dataset, "anchor": _safe(dataset), "tables": tables, "paired": paired,
                "forest": shown["forest"].get(dataset),
                "accuracy": shown["accuracy"].get(dataset), "std_vs_mw": shown["std_vs_mw"].get(dataset),
                "cells": [{"title": cell.title, "curves": shown["curves"].get(cell.name), "machine": cell.machine,
                           "warnings": cell.warnings,
                           "folder": str(cell.row.folder), **self.commands(cell, configs)} for cell in cells],
                "galleries": [g for g in galleries if g.cell.startswith(f"{dataset} ")]})
        page = environment.get_template(TEMPLATE.name).render(
            root=str(self.root), generated=time.strftime("%Y-%m-%d %H:%M"), sections=sections)
        atomic_write_bytes(path, lambda f: f.write(page.encode()))

    def written(self, output: Path, shown: Dict[str, Any], galleries: List[Gallery]) -> set:
        """Every file this report wrote under ``output``: the page, its figures, galleries and configs."""
        figures = [*shown["accuracy"].values(), *shown["std_vs_mw"].values(), *shown["forest"].values(),
                   *shown["curves"].values()]
        return {output / "index.html", *(output / "figures" / name for name in figures if name),
                *(output / path for gallery in galleries
                  for path in gallery.images + gallery.heatmaps + ([gallery.support] if gallery.support else [])),
                *(output / "configs" / f"{cell.name}.yaml" for cell in self.cells)}


MANIFEST = ".report-files.json"  # beside index.html: every file the report wrote, relative to its folder


def earlier_report(output: Path) -> set:
    """The files an earlier report wrote in ``output`` (its manifest), before anything is written: an empty or new
    folder has none; a folder with files and no manifest (files this project did not write) is refused."""
    manifest = output / MANIFEST
    if manifest.is_file():
        try:
            names = json.loads(manifest.read_text())["files"]
            return {output / name for name in names if isinstance(name, str) and ".." not in Path(name).parts}
        except (ValueError, KeyError, TypeError) as error:
            raise TableError(f"{manifest} is not a report's list of its files ({error}): delete it only if "
                             f"{output} holds nothing of yours, or give another --output") from None
    present = sorted(str(path.relative_to(output)) for path in output.rglob("*")) if output.is_dir() else []
    if present:
        raise TableError(f"--output={output} holds files no report wrote ({', '.join(present[:3])}"
                         f"{' ...' if len(present) > 3 else ''}): a report replaces only its own files; give an "
                         f"empty or new folder")
    return set()


def remove_stale(output: Path, written: set, earlier: set) -> List[Path]:
    """The files of the earlier report (its manifest, ``earlier``) that this one did not write are removed, and the
    folders they leave empty; nothing the project did not write is touched. The manifest is rewritten with
    ``written``. Returns what was removed."""
    removed = []
    for path in sorted(earlier - written, reverse=True):
        if path.is_file():
            path.unlink()
            removed.append(path)
    for folder in sorted({path.parent for path in removed}, key=lambda p: len(p.parts), reverse=True):
        while folder != output and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    atomic_write_json({"files": sorted(str(path.relative_to(output)) for path in written)}, output / MANIFEST)
    return removed


def _html_table(built: BuiltTable, dataset: str) -> str:
    """A table of the tables.py code path as HTML (escaped), for one dataset; footnotes below it."""
    table = built.table
    keys = [key for key in table.cells if key[0] == dataset]
    from .tables import size_label

    head = "".join(f"<th>{html.escape(size_label(s))}</th>" for s in table.sizes)
    lines = [f"<table><thead><tr><th>network</th><th>modality</th>{head}</tr></thead><tbody>"]
    for key in keys:
        cells = "".join(f"<td>{html.escape(table.cell(key, s))}</td>" for s in table.sizes)
        note = f' <sup title="{html.escape(table.notes[key])}">*</sup>' if key in table.notes else ""
        lines.append(f"<tr><td>{html.escape(key[1])}</td><td>{html.escape(key[2])}{note}</td>{cells}</tr>")
    lines.append("</tbody></table>")
    notes = [f"<li>{html.escape(key[2])}: its settings differ from most of the table's: {html.escape(table.notes[key])}"
             f"</li>" for key in keys if key in table.notes]
    if notes:
        lines.append(f"<ul class='notes'>{''.join(notes)}</ul>")
    return "\n".join(lines)


def _html_paired(paired, dataset: str) -> str:
    """A paired table (core/paired.py) as HTML, for one dataset, with its footnote."""
    head = "<tr><th>network</th><th>train examples</th><th>row</th><th>reference</th><th>pairs</th>" \
           "<th>difference [95 % interval]</th></tr>"
    lines = [f"<table class='paired'><thead>{head}</thead><tbody>"]
    for line in paired.lines:
        if line.dataset == dataset:
            lines.append("<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in (
                line.network, line.train_examples, line.label, line.versus, line.found.pairs,
                line.found.text(paired.precision))) + "</tr>")
    lines.append(f"</tbody></table><p class='notes'>{html.escape(paired.footnote())}</p>")
    return "\n".join(lines)


def support_figure(path: Path, scores, threshold: Dict[str, Any]) -> None:
    """The histogram of a memory model's test images' support (core/support.py) with its threshold: the images left
    of the line would be marked unsupported."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.0, 2.4), dpi=110)
    values = [float(v) for v in scores]
    axis.hist(values, bins=30, color="#4c72b0")
    axis.axvline(threshold["threshold"], color="#c44e52", linestyle="--")
    below = sum(v < threshold["threshold"] for v in values)
    axis.set_title(f"support ({threshold['score']}) of the test images: {below} of {len(values)} below the threshold "
                   f"(calibrated on {threshold['calibrated_on']})", fontsize=7)
    axis.set_xlabel(threshold["score"], fontsize=8)
    axis.tick_params(labelsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
