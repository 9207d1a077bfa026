"""Answers with error bars: the 95 % interval of a mean and the paired differences of rows by seed (core/paired.py),
in tables.py's files and the report's, for accuracy, explanations by example and counterfactuals."""
import csv
import io
import json

import pytest

from core.collect import collect_accuracy
from core.paired import interval, metric_cells, paired, paired_rows
from core.tables import build_tables
from helpers import run_script


def test_the_interval_of_a_mean_is_students_t():
    # hand-computed: mean 2, s = 1, t(0.975, 2) = 4.302652729911275, half-width 4.3027 / sqrt(3) = 2.484138
    mean, low, high = interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(-0.484138, abs=1e-6) and high == pytest.approx(4.484138, abs=1e-6)
    # t(0.975, 9) = 2.262157, s = 3.027650, n = 10: half-width 2.262157 * 3.027650 / sqrt(10) = 2.165851
    mean, low, high = interval([float(v) for v in range(10)])
    assert mean == 4.5 and high - mean == pytest.approx(2.165851, abs=1e-6)
    assert interval([5.0]) == (5.0, None, None) and interval([]) == (None, None, None)
    assert interval([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)


def test_paired_differences_use_the_seeds_both_rows_have():
    row = {0: 97.0, 1: 95.0, 2: 96.0, 3: 90.0}
    reference = {0: 96.0, 1: 93.0, 2: 93.0, 4: 80.0}
    found = paired(row, reference)  # differences 1, 2, 3 over seeds 0, 1, 2
    assert found.pairs == 3 and found.mean == 2.0 and found.only_row == [3] and found.only_reference == [4]
    assert found.low == pytest.approx(-0.484138, abs=1e-6) and not found.excludes_zero
    assert found.text() == "+2.00 [-0.48, +4.48]"
    one = paired({0: 90.0, 1: 91.0}, {1: 80.0})
    assert (one.pairs, one.mean, one.low, one.high) == (1, 11.0, None, None) and one.text() == "+11.00 [n/a]"
    equal = paired({0: 5.0, 1: 6.0, 2: 7.0}, {0: 4.0, 1: 5.0, 2: 6.0})  # the same difference every run: no spread
    assert (equal.mean, equal.low, equal.high) == (1.0, 1.0, 1.0) and equal.excludes_zero and equal.text().endswith("*")
    assert paired({0: 1.0}, {1: 2.0}).text() == "n/a"


def _experiment(root, modality, accuracies, dataset="DIGITS", model="shufflenet", size=500):
    folder = root / dataset / modality / model / str(size)
    folder.mkdir(parents=True)
    runs = [{"run": seed + 1, "seed": seed, "accuracy": value} for seed, value in accuracies.items()]
    (folder / "results.json").write_text(json.dumps({"dataset_name": dataset, "model": model, "modality": modality,
                                                     "train_examples": size, "runs": runs, "config": {}}))
    return folder


def test_tables_write_the_paired_differences_and_each_cells_interval(tmp_path):
    root = tmp_path / "models"
    _experiment(root, "std", {0: 80.0, 1: 82.0, 2: 84.0, 3: 70.0})
    _experiment(root, "encoder_memory", {0: 81.0, 1: 84.0, 2: 87.0, 4: 99.0})
    _experiment(root, "memory", {0: 50.0})
    rows = collect_accuracy(root)
    assert {row.modality: row.seeds for row in rows}["encoder_memory"] == [0, 1, 2, 4]
    table = paired_rows(rows, "std", "Table 1")
    by_label = {line.label: line.found for line in table.lines}
    assert by_label["encoder_memory"].text() == "+2.00 [-0.48, +4.48]" and by_label["memory"].pairs == 1
    assert "encoder_memory vs std at 500: runs 5 of the row, 4 of the reference" in table.footnote()
    run_script("tables.py", f"--root={root}", f"--output={tmp_path / 'out'}")
    lines = list(csv.reader(io.StringIO((tmp_path / "out_paired.csv").read_text())))
    assert lines[0] == ["dataset", "network", "train_examples", "modality", "versus", "pairs", "diff_mean", "diff_lo",
                        "diff_hi"]
    assert ["DIGITS", "shufflenet", "500", "encoder_memory", "std", "3", "2.0000", "-0.4841", "4.4841"] in lines
    assert ["DIGITS", "shufflenet", "500", "memory", "std", "1", "-30.0000", "", ""] in lines
    accuracy = list(csv.DictReader(io.StringIO((tmp_path / "out_accuracy.csv").read_text())))
    std = next(line for line in accuracy if line["modality"] == "std")
    mean, low, high = interval([80.0, 82.0, 84.0, 70.0])
    assert float(std["ci95_lo"]) == pytest.approx(low, abs=1e-4) and float(std["ci95_hi"]) == pytest.approx(high, abs=1e-4)
    markdown = (tmp_path / "out_accuracy.md").read_text()
    assert f"79.00 ± 5.39 [{low:.2f}, {high:.2f}]" in markdown and "| 50.00 ± 0.00 [n/a] |" in markdown
    assert "Student t" in (tmp_path / "out_paired.md").read_text()
    versus = run_script("tables.py", f"--root={root}", f"--output={tmp_path / 'v'}", "--versus=encoder_memory").stdout
    assert "| std | encoder_memory | 3 | -2.00 [-4.48, +0.48] |" in versus


def test_explanations_are_paired_by_run_between_methods_and_counterfactuals_on_common_images(tmp_path):
    root = tmp_path / "models"
    folder = _experiment(root, "encoder_memory", {0: 90.0, 1: 91.0, 2: 92.0})
    models = [{"checkpoint": str(folder / f"{seed + 1}.pt"), "seed": seed,
               "input": {"memory_wrap": 0.5 + seed, "knn": 0.7 + seed, "random": 1.5},
               "prediction": {"memory_wrap": 0.1, "knn": 0.2, "random": 0.3}} for seed in range(3)]
    (folder / "explanation_examples.json").write_text(json.dumps({"models": models, "methods": ["memory_wrap", "knn",
                                                                                              "random"]}))
    for algo, scores in (("memory", {0: 1.0, 1: 2.0, 2: 3.0}), ("proto", {1: 1.5, 2: 2.0, 3: 9.0})):
        rows = [{"checkpoint": str(folder / f"{seed + 1}.pt"), "seed": seed, "counterfactuals": 3, "im1": 1.0,
                 "per_image": {"image": list(scores), "im1": [value + seed for value in scores.values()]}}
                for seed in range(3)]
        (folder / f"counterfactuals_{algo}.json").write_text(json.dumps({"algo": algo, "models": rows}))
    built = {table.name: table for table in build_tables(root)}
    examples = {line.versus: line.found for line in built["examples_input"].paired.lines}
    assert examples["encoder_memory [knn]"].mean == pytest.approx(-0.2) and examples["encoder_memory [knn]"].pairs == 3
    assert examples["encoder_memory [knn]"].excludes_zero  # the same difference for every run
    counterfactual = built["counterfactuals_im1"].paired.lines[0].found
    # images 1 and 2 both found, in every run: memory - proto = (2 - 1.5 + 3 - 2) / 2 = 0.75, for each run
    assert (counterfactual.pairs, counterfactual.mean) == (3, pytest.approx(0.75))
    assert built["counterfactuals_seconds"].paired is None


def test_metric_cells_give_the_mean_interval_and_the_paired_difference_by_hand():
    reference = {0: 0.5, 1: 0.7}
    values = {0: 0.6, 1: 0.9}  # differences 0.1 and 0.2: mean 0.15, standard error 0.05, t(1) 12.706 -> +-0.635
    cell, difference = metric_cells(values, reference)
    assert cell == "0.750 [-1.156, 2.656]"  # mean 0.75, standard error 0.15: 12.706 * 0.15 = 1.906
    assert difference == "+0.150 [-0.485, +0.785]"
    assert metric_cells(reference, reference)[1] == "" and metric_cells({0: 0.5}, {0: 0.4})[0] == "0.500"
