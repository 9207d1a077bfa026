"""The paper's tables and a figure from the experiments under a folder.

    python tables.py --root=models                      # Table 1: accuracy, mean ± std over runs
    python tables.py --root=models --dataset=DIGITS --model=shufflenet --output=docs/digits

Rows: dataset x network x modality (a grid variant's experiments, under <root>/<variant>/, as "modality
[variant]"); columns: training sizes (100000 = Full). Written as <output>_accuracy.md, .csv (one line per
cell) and .tex, with <output>_accuracy.png (accuracy against training size, a line per modality, std error
bars); the training seconds per epoch of the same cells as <output>_epoch_seconds.*; where
explanation_accuracy.py has run, also <output>_explanation.* (the paper's Table 5) and
<output>_counterfactual.* (Table 6), with _full for its --memory_pool=full; where explanation_examples.py has
run, <output>_examples_input.* and _examples_prediction.* (a row per method); where counterfactuals.py has run,
<output>_counterfactuals_<score>.* (a row per algorithm). Missing cells are shown as missing (—), cells with fewer
runs than asked for show their count (e.g. 12/15).

Learning-rate tuning: where a cell was also trained at other learning rates with otherwise the same settings (the
grids' lr_* variants, with eval_every), a row "modality [tuned]" follows its plain row: the rate with the best mean
validation accuracy at the last epoch (never the test set), named in its cells. The lr_* rows themselves are left
out unless --variant names them. A row whose settings differ from most of its table's gets a footnote saying how.
"""
import functools
from pathlib import Path

from absl import app, flags

import aux
from base.files import atomic_write_bytes, writable_folder
from core import config
from core.tables import (Table, collect_accuracy, collect_counterfactuals, collect_epoch_seconds,
                         collect_explanation_examples, collect_explanations, missing_files, tuned_rows)

flags.DEFINE_string("root", "models", "folder of the experiments (train.py's --output_dir)")
flags.DEFINE_string("output", None, "path prefix of the files written (default: <root>/table)")
flags.DEFINE_multi_string("dataset", [], "only these datasets (repeatable)")
flags.DEFINE_multi_string("model", [], "only these networks (repeatable)")
flags.DEFINE_multi_string("modality", [], "only these modalities (repeatable)")
flags.DEFINE_multi_string("variant", [], "only these grid variants (repeatable; 'none': the cells outside any variant)")
FLAGS = flags.FLAGS

def _explanation_tables():
    """Tables 5-6 for each memory pool, the by-example metrics and the counterfactual scores."""
    tables = []
    for pool, said in (("run", "memory from the run's own pool"), ("full", "memory as the paper's code drew it")):
        suffix = "" if pool == "run" else f"_{pool}"
        tables += [(f"explanation{suffix}", f"Table 5: explanation accuracy (%), {said}",
                    functools.partial(collect_explanations, key="explanation_accuracy", pool=pool), True, 2),
                   (f"counterfactual{suffix}", f"Table 6: accuracy on the inputs whose top memory sample is a "
                    f"counterfactual (%), {said}",
                    functools.partial(collect_explanations, key="counterfactual_accuracy", pool=pool), True, 2)]
    for metric, title in (("input", "input"), ("prediction", "prediction")):
        tables.append((f"examples_{metric}", f"Explanations by example: {title} non-representativeness (lower is "
                       f"better)", functools.partial(collect_explanation_examples, metric=metric), False, 4))
    for score, title in (("im1", "IM1 (lower is better)"), ("iim1", "IIM1, the inverse of IM1"),
                         ("im2", "IM2 (lower is better)"), ("l1", "L1 distance to the input"),
                         ("l0", "L0: fraction of the input's values changed"),
                         ("seconds", "seconds per counterfactual")):
        tables.append((f"counterfactuals_{score}", f"Counterfactuals: {title}",
                       functools.partial(collect_counterfactuals, score=score), False, 4))
    return tables


TABLES = (  # name, title, how its rows are collected, whether it gets a figure, decimals
    ("accuracy", "Table 1: test accuracy (%)", collect_accuracy, True, 2),
    ("epoch_seconds", "Training seconds per epoch", collect_epoch_seconds, False, 2),
    *_explanation_tables())


@aux.exit_on_user_errors
def main(argv):
    del argv
    root = Path(FLAGS.root)
    if not root.is_dir():
        raise config.ConfigError(f"--root={root} is not a folder: give train.py's --output_dir")
    output = Path(FLAGS.output) if FLAGS.output else root / "table"
    writable_folder(output.parent)
    keep = lambda row: ((not FLAGS.dataset or row.dataset in FLAGS.dataset) and  # noqa: E731
                        (not FLAGS.model or row.model in FLAGS.model) and
                        (not FLAGS.modality or row.modality in FLAGS.modality) and
                        (not FLAGS.variant or (row.variant or "none") in FLAGS.variant))
    written = []
    for name, title, collect, with_figure, precision in TABLES:
        found = collect(root)
        if name in ("accuracy", "epoch_seconds"):  # each cell at its best learning rate, by validation accuracy
            tuned, candidates = tuned_rows(found)
            shown = set(FLAGS.variant)
            found = [row for row in found if not (row in candidates and row.variant not in shown)] + tuned
        rows = [row for row in found if keep(row)]
        if not rows and name == "accuracy":
            raise config.ConfigError(f"no results.json under {root} (train.py writes one per experiment)" if not found
                                     else f"none of the {len(found)} experiments under {root} matches --dataset, "
                                     "--model, --modality and --variant")
        if not rows:
            continue
        if name == "accuracy":
            for note in missing_files(rows):
                print(f"Note: {note}")
        table = Table.build(rows, title, config.modalities(), precision)
        print(f"\n{title}\n\n{table.markdown()}")
        for suffix, text in (("md", f"{title}\n\n{table.markdown()}\n"), ("csv", table.csv()), ("tex", table.latex() + "\n")):
            path = output.with_name(f"{output.name}_{name}.{suffix}")
            atomic_write_bytes(path, lambda f, text=text: f.write(text.encode()))
            written.append(path)
        if with_figure:
            figure = output.with_name(f"{output.name}_{name}.png")
            table.figure(figure, "accuracy (%)")
            written.append(figure)
    print("\nWritten: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    app.run(main)
