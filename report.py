"""One self-contained HTML report of the experiments under a root: the tables (as tables.py builds them), figures
(accuracy against training size, learning curves per cell, std against Memory Wrap), explanation galleries of the
memory heads (memory images and Integrated Gradients heatmaps of one run per cell), and for every cell the machine,
the config and the command that reproduce it. It opens from the file system, with no server and no remote asset.

    python report.py --root=models --output=report/
    python report.py --root=models/grid --output=report/ --dataset=DIGITS --model=shufflenet --heatmaps=false

Filters as tables.py (--dataset, --model, --modality, --variant). Writes <output>/index.html, figures/, gallery/
and configs/, and lists them in <output>/.report-files.json: a later report removes only the files that list names
and it did not write again. A folder holding files no report wrote is refused (nothing of yours is replaced).
"""
from pathlib import Path
from types import SimpleNamespace

import torch
from absl import app, flags
from tqdm import tqdm

import aux
from core.config import MAX_IMAGES, MAX_STEPS
import explanations
from explanations import records
from base.files import writable_folder
from core import config
from core.checkpoints import list_checkpoints
from core.evaluation import FeatureCache, eval_generators
from core import support
from core.report import Gallery, Report, earlier_report, remove_stale, support_figure
from core.collect import TableError
from core.tables import RowFilter

flags.DEFINE_string("root", "models", "folder of the experiments (train.py's --output_dir)")
flags.DEFINE_string("output", "report", "folder of the report (index.html and its files)")
flags.DEFINE_multi_string("dataset", [], "only these datasets (repeatable)")
flags.DEFINE_multi_string("model", [], "only these networks (repeatable)")
flags.DEFINE_multi_string("modality", [], "only these modalities (repeatable)")
flags.DEFINE_multi_string("variant", [], "only these grid variants (repeatable; 'none': the cells outside any variant)")
flags.DEFINE_integer("images", 12, "test images per gallery", lower_bound=1, upper_bound=MAX_IMAGES)
flags.DEFINE_integer("max_samples", 8, "memory samples shown per image", lower_bound=1, upper_bound=MAX_IMAGES)
flags.DEFINE_bool("heatmaps", True, "Integrated Gradients heatmaps in the galleries (the slow part)")
flags.DEFINE_integer("n_steps", 40, "Integrated Gradients steps", lower_bound=1, upper_bound=MAX_STEPS)
flags.DEFINE_string("dataset_dir", None, "folder of the datasets (default: the one each run recorded)")
flags.DEFINE_enum("device", "auto", list(config.DEVICES), "device")
FLAGS = flags.FLAGS
HEATMAP_ROWS = 3  # inputs per heatmap figure
INTERRUPTED = "the page was not written (the next report replaces what this one wrote): run the same command again"


@aux.exit_on_user_errors(interrupted=INTERRUPTED)
def main(argv):
    del argv
    root, output = Path(FLAGS.root), Path(FLAGS.output)
    if not root.is_dir():
        raise TableError(f"--root={root} is not a folder: give train.py's --output_dir")
    writable_folder(output, "report folder")
    earlier = earlier_report(output)  # a folder of files no report wrote is refused before any work
    report = Report.collect(root, RowFilter(FLAGS.dataset, FLAGS.model, FLAGS.modality, FLAGS.variant))
    shown = report.figures(output / "figures")
    memory_cells = [cell for cell in report.cells if cell.row.modality in explanations.memory_modalities()]
    galleries, dataset_cache = [], {}
    recorded = SimpleNamespace(model=None, modality=None, dataset=None, train_examples=None, mem_examples=None,
                               seed=None, memory_source=None, val_examples=None, batch_size_test=None,
                               config=str(aux.DEFAULT_CONFIG), dataset_dir=FLAGS.dataset_dir, device=FLAGS.device)
    for cell in tqdm(memory_cells, desc="galleries", unit="cell", disable=None):
        checkpoint = aux.load_checkpoint(list_checkpoints(cell.row.folder)[0], recorded)  # what the runs recorded
        loaded = aux.load_for_evaluation(checkpoint, recorded, dataset_cache, test_count=FLAGS.images)
        folder = output / "gallery" / cell.name
        warning = records.uninformative(loaded.model, loaded.cache, checkpoint)
        if warning:
            print(f"Warning: {cell.title}: {warning}", flush=True)
        images = explanations.memory_images(loaded.model, loaded.cache, loaded.data, folder, FLAGS.max_samples)
        heatmaps = gallery_heatmaps(loaded, folder) if FLAGS.heatmaps else []
        shown_support = gallery_support(loaded, folder)
        galleries.append(Gallery(cell.title, str(checkpoint.path), [str(p.relative_to(output)) for p in images],
                                 [str(p.relative_to(output)) for p in heatmaps], warning,
                                 str(shown_support.relative_to(output)) if shown_support else None))
    report.render(output / "index.html", shown, galleries)
    stale = remove_stale(output, report.written(output, shown, galleries), earlier)
    print(f"Written: {output / 'index.html'} ({len(report.cells)} cells, {len(galleries)} galleries"
          + (f"; removed {len(stale)} files of an earlier report" if stale else "") + ")")


def gallery_support(loaded, folder):
    """The support of every test image of the run against its threshold (its record's, else the pool's own)."""
    model = loaded.model
    cache = FeatureCache.build(model, loaded.data, 500, loaded.checkpoint.seed, 1, pool_features=loaded.cache)
    threshold = loaded.checkpoint.support or support.pool_threshold(model, cache.memory_features, cache.memory_labels)
    scores = support.support(model, cache.test_features, cache.memory_features, cache.memory_labels,
                             threshold["score"])
    path = folder / "support.png"
    support_figure(path, scores, threshold)
    return path


def gallery_heatmaps(loaded, folder):
    """The heatmaps of the gallery's images, HEATMAP_ROWS a figure, with generate_heatmaps.py's memory draws."""
    generator, auxiliary = eval_generators(loaded.checkpoint.seed)
    paths = []
    for start in range(0, FLAGS.images, HEATMAP_ROWS):
        indices = torch.arange(start, min(start + HEATMAP_ROWS, FLAGS.images, len(loaded.data.test_labels)))
        if not len(indices):
            break
        images, labels = loaded.data.test_batch(indices)
        memory, other = loaded.data.memory_set(generator), loaded.data.memory_set(auxiliary)
        path = folder / f"heatmaps_{start}.png"
        explanations.heatmap_figure(path, loaded.model, loaded.data, images, labels, memory, other, FLAGS.n_steps,
                                    first_index=start)
        paths.append(path)
    return paths


if __name__ == "__main__":
    app.run(main)
