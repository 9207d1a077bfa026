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

Every cell shows its mean ± std and the 95 % interval of its mean. Paired differences (core/paired.py): every row
against the reference row of its dataset, network and size (--versus, default std), over the runs (seeds) both have,
with a 95 % Student t interval on the differences, as <output>_paired.md/.csv/.tex; explanations by example
(Memory Wrap's choice against each other method) and counterfactuals (memory against CFProto, on the images both
found) as <output>_<table>_paired.*.
"""
from pathlib import Path

from absl import app, flags

import aux
from base.files import atomic_write_bytes, writable_folder
from core import config
from core.collect import TableError, missing_files
from core.paired import versus_label
from core.tables import RowFilter, build_tables

flags.DEFINE_string("root", "models", "folder of the experiments (train.py's --output_dir)")
flags.DEFINE_string("output", None, "path prefix of the files written (default: <root>/table)")
flags.DEFINE_multi_string("dataset", [], "only these datasets (repeatable)")
flags.DEFINE_multi_string("model", [], "only these networks (repeatable)")
flags.DEFINE_multi_string("modality", [], "only these modalities (repeatable)")
flags.DEFINE_multi_string("variant", [], "only these grid variants (repeatable; 'none': the cells outside any variant)")
flags.DEFINE_string("versus", "std", "the reference row of the paired differences: MODALITY or 'MODALITY VARIANT' "
                    "(e.g. 'std tuned')")
FLAGS = flags.FLAGS

@aux.exit_on_user_errors
def main(argv):
    del argv
    root = Path(FLAGS.root)
    if not root.is_dir():
        raise config.ConfigError(f"--root={root} is not a folder: give train.py's --output_dir")
    output = Path(FLAGS.output) if FLAGS.output else root / "table"
    writable_folder(output.parent)
    written = []
    built = build_tables(root, RowFilter(FLAGS.dataset, FLAGS.model, FLAGS.modality, FLAGS.variant),
                         versus=FLAGS.versus)
    for note in missing_files(built[0].table.rows()):
        print(f"Note: {note}")
    if FLAGS["versus"].present and built[0].paired is None:  # a reference asked for by name must exist
        labels = sorted({row.label for row in built[0].table.rows()})
        raise TableError(f"--versus={FLAGS.versus!r} matches no row of the table (as {versus_label(FLAGS.versus)!r}); "
                         f"its rows are {', '.join(labels)}: give one of them")
    for name, title, table, ylabel in built:
        print(f"\n{title}\n\n{table.markdown()}")
        written += write(output, name, title, table)
        paired = next(b.paired for b in built if b.name == name)
        if paired is not None:
            print(f"\n{paired.title}\n\n{paired.markdown()}")
            written += write(output, "paired" if name == "accuracy" else f"{name}_paired", paired.title, paired)
        if ylabel:
            figure = output.with_name(f"{output.name}_{name}.png")
            table.figure(figure, ylabel)
            written.append(figure)
    print("\nWritten: " + ", ".join(str(p) for p in written))


def write(output: Path, name: str, title: str, table) -> list:
    """<output>_<name>.md, .csv and .tex of a table (or a paired table)."""
    paths = []
    for suffix, text in (("md", f"{title}\n\n{table.markdown()}\n"), ("csv", table.csv()), ("tex", table.latex() + "\n")):
        path = output.with_name(f"{output.name}_{name}.{suffix}")
        atomic_write_bytes(path, lambda f, text=text: f.write(text.encode()))
        paths.append(path)
    return paths


if __name__ == "__main__":
    app.run(main)
