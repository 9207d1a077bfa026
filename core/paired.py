"""Answers with error bars: the 95 % interval of a cell's mean, and paired differences between rows.

Runs with the same seed share their training subset, validation split and data order, so two rows of the same
dataset, network and training size are compared run by run: the differences of the runs both have (the pairs), their
mean, and its 95 % interval from Student's t on those differences, mean ± t(0.975, n - 1) · s / √n with s their
sample standard deviation (ddof 1). One pair, or none, has no interval (``None``: shown as n/a, never made up).

    mean, low, high = interval([96.4, 97.0, 95.8])              # the 95 % interval of a mean over runs
    found = paired({0: 96.4, 1: 97.0}, {0: 94.1, 1: 96.2})       # row - reference, by seed
    found.mean, found.low, found.high, found.pairs, found.excludes_zero
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from scipy import stats

LEVEL = 0.95


def interval(values: Sequence[float]) -> Tuple[Optional[float], Optional[float], Optional[float]]:
    """(mean, low, high): the mean and its 95 % Student t interval; (mean, None, None) with one value, all None with
    none. Equal values give a zero-width interval."""
    values = [float(v) for v in values]
    if not values:
        return None, None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None, None
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(values) - 1)) * spread / math.sqrt(len(values))
    return mean, mean - half, mean + half


@dataclass
class Paired:
    """``row - reference`` over the seeds both have."""
    mean: Optional[float]
    low: Optional[float]
    high: Optional[float]
    pairs: int
    only_row: List = field(default_factory=list)  # seeds the row has and the reference lacks
    only_reference: List = field(default_factory=list)

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def text(self, precision: int = 2) -> str:
        """'+4.10 [+1.20, +7.00] *' (the mark: the interval excludes 0), or '+4.10 [n/a]' with one pair."""
        if self.mean is None:
            return "n/a"
        shown = f"{self.mean:+.{precision}f} "
        if self.low is None:
            return shown + "[n/a]"
        return shown + f"[{self.low:+.{precision}f}, {self.high:+.{precision}f}]" + (" *" if self.excludes_zero else "")


def metric_cells(values: Mapping, reference: Mapping, digits: int = 3) -> Tuple[str, str]:
    """Two Markdown cells for a metric measured seed by seed: its mean with the 95 % interval, and its paired
    difference with ``reference`` (empty where the values are the reference's own)."""
    mean, low, high = interval(list(values.values()))
    cell = f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else f"{mean:.{digits}f}"
    return cell, (paired(values, reference).text(digits) if values is not reference else "")


def paired(row: Mapping, reference: Mapping) -> Paired:
    """The paired difference of two rows' values by seed (``{seed: value}``)."""
    common = sorted(set(row) & set(reference), key=str)
    mean, low, high = interval([row[seed] - reference[seed] for seed in common])
    return Paired(mean, low, high, len(common), sorted(set(row) - set(reference), key=str),
                  sorted(set(reference) - set(row), key=str))


def by_seed(values: Sequence[float], seeds: Sequence) -> Dict:
    """``{seed: value}`` of a row (a value without a seed is not paired)."""
    return {seed: value for value, seed in zip(values, seeds) if seed is not None}


@dataclass
class PairedLine:
    dataset: str
    network: str
    train_examples: int
    label: str  # the row: a modality with its variant, or a method
    versus: str  # its reference
    found: Paired


@dataclass
class PairedTable:
    """Paired differences of a table's rows against a reference row (``versus``), one line per row and size."""
    title: str
    lines: List[PairedLine]
    precision: int = 2

    def footnote(self) -> str:
        unpaired = [line for line in self.lines if line.found.only_row or line.found.only_reference]
        text = (f"Paired differences (row − reference) over the runs both have, with the 95 % interval of their mean "
                f"(Student t on the paired differences); * the interval excludes 0; n/a: one pair, no interval.")
        if unpaired:
            text += " Left out, present in one row only: " + "; ".join(
                f"{line.label} vs {line.versus} at {line.train_examples}: runs {_runs(line.found.only_row)} of the "
                f"row, {_runs(line.found.only_reference)} of the reference" for line in unpaired) + "."
        return text

    def markdown(self) -> str:
        out = ["| dataset | network | train examples | row | reference | pairs | difference [95 % interval] |",
               "|---|---|---|---|---|---|---|"]
        out += [f"| {line.dataset} | {line.network} | {line.train_examples} | {line.label} | {line.versus} | "
                f"{line.found.pairs} | {line.found.text(self.precision)} |" for line in self.lines]
        return "\n".join(out + ["", self.footnote()])

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["dataset", "network", "train_examples", "modality", "versus", "pairs", "diff_mean", "diff_lo",
                         "diff_hi"])
        for line in self.lines:
            found = line.found
            writer.writerow([line.dataset, line.network, line.train_examples, line.label, line.versus, found.pairs,
                             *("" if v is None else f"{v:.4f}" for v in (found.mean, found.low, found.high))])
        return out.getvalue()

    def latex(self) -> str:
        lines = [f"% {self.title}", "\\begin{tabular}{lllllcc}", "\\toprule",
                 "Dataset & Network & Size & Row & Reference & Pairs & Difference [95\\% CI] \\\\", "\\midrule"]
        for line in self.lines:
            cells = [line.dataset, line.network, str(line.train_examples), line.label, line.versus,
                     str(line.found.pairs), line.found.text(self.precision).replace("*", "$^*$")]
            lines.append(" & ".join(cell.replace("_", "\\_") for cell in cells) + " \\\\")
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"])


def _runs(seeds) -> str:
    return ", ".join(str(seed + 1) if isinstance(seed, int) else str(seed) for seed in seeds) or "none"


# --- paired tables of a root's rows ------------------------------------------------------------------------

def versus_label(versus: str) -> str:
    """``--versus`` as a row's label: "std" -> "std", "std tuned" -> "std [tuned]"."""
    parts = versus.split()
    return parts[0] if len(parts) == 1 else f"{parts[0]} [{' '.join(parts[1:])}]"


def paired_rows(rows, versus: str = "std", title: str = "") -> Optional[PairedTable]:
    """Every row against the reference row (``versus``: a modality, with a variant) of its dataset, network and
    training size: row - reference by seed. None when no row has a reference."""
    label = versus_label(versus)
    references = {(row.dataset, row.model, row.train_examples): row for row in rows if row.label == label}
    lines = []
    for row in rows:
        reference = references.get((row.dataset, row.model, row.train_examples))
        if reference is None or row is reference:
            continue
        lines.append(PairedLine(row.dataset, row.model, row.train_examples, row.label, label,
                                paired(by_seed(row.values, row.seeds), by_seed(reference.values, reference.seeds))))
    return PairedTable(f"{title}: paired differences against {label}", lines) if lines else None


def paired_methods(rows, reference: str = "memory_wrap", title: str = "") -> Optional[PairedTable]:
    """Explanations by example: Memory Wrap's own choice against every other method of the same models (the rows
    of one folder), run by run: ``memory_wrap - method`` (lower scores are better: a negative difference favours
    Memory Wrap)."""
    ours = {(row.folder, row.train_examples): row for row in rows if row.method == reference}
    lines = []
    for row in rows:
        mine = ours.get((row.folder, row.train_examples))
        if mine is None or row.method == reference:
            continue
        lines.append(PairedLine(row.dataset, row.model, row.train_examples, mine.label, row.label,
                                paired(by_seed(mine.values, mine.seeds), by_seed(row.values, row.seeds))))
    return PairedTable(f"{title}: {reference} against the other methods", lines, precision=4) if lines else None


def paired_counterfactuals(pairs, score: str, title: str = "") -> Optional[PairedTable]:
    """Memory Wrap's counterfactuals against CFProto's on the images both found: per run, the mean of ``memory -
    proto`` over those images; then the paired interval over runs. ``pairs``: (row identity, {seed: difference}),
    from core.collect.counterfactual_differences."""
    lines = [PairedLine(dataset, model, size, f"{modality} [memory]", f"{modality} [proto]",
                        paired(differences, {seed: 0.0 for seed in differences}))
             for (dataset, model, modality, size), differences in pairs]
    return PairedTable(f"{title}: memory - CFProto on the images both found", lines, precision=4) if lines else None
