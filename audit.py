"""Which of my training images are mislabeled? The memory of a trained Memory Wrap model as an auditor: every image of
a run's training subset is predicted out of sample (K folds: models trained without its fold, reading a memory of
their training folds only), and ranked by how strongly that memory disagrees with its label.

    python audit.py --path_models=models/folder/encoder_memory/timm/tf_efficientnet_lite0/100000 --train_folds
    python audit.py --path_models=DIR --run=2 --folds=10 --top=24

--train_folds trains the K fold models (each as the run was trained, without one fold; a frozen pretrained encoder
encodes every image once for all of them) into <output>/run_<r>/folds_<K>/; without it, they must be there. Writes
<output>/label_issues_run<r>.csv (every image, most suspect first: its source, score, given label, the label the
memory supports, the memory samples that argue for it) and label_issues_run<r>.png (the top suspects beside their
evidence); <output> defaults to <path_models>/audit, nothing of the run's own files is touched. The score
(--score): other_weight (the content weight of memory samples of other classes: the default, chosen on validation
data, docs/audit.md) or one_minus_probability.
"""
import csv
import io
from pathlib import Path

from absl import app, flags

import aux
import explanations
from base.files import atomic_write_bytes, writable_folder
from core import audit, frozen, runtime
from core.checkpoints import list_checkpoints
from core.runner import pretrained_weights
from core.execution import make_model

flags.DEFINE_string("path_models", None, "an experiment folder of a memory model (train.py's)")
flags.DEFINE_integer("run", 1, "the run to audit (1-based)", lower_bound=1)
flags.DEFINE_integer("folds", 5, "K: the folds of the out-of-sample predictions", lower_bound=2, upper_bound=100)
flags.DEFINE_bool("train_folds", False, "train the K fold models first (else they must be in <output>)")
flags.DEFINE_enum("score", audit.DEFAULT_SCORE, list(audit.SCORES), "how a suspect is scored")
flags.DEFINE_integer("top", 12, "suspects shown in the figure", lower_bound=1, upper_bound=1000)
flags.DEFINE_string("output", None, "the audit's folder (default: <path_models>/audit)")
aux.define_evaluation_flags(draws=False)
flags.mark_flag_as_required("path_models")
FLAGS = flags.FLAGS


@aux.exit_on_user_errors
def main(argv):
    del argv
    paths = {int(p.stem): p for p in list_checkpoints(FLAGS.path_models) if p.stem.isdigit()}
    if FLAGS.run not in paths:
        raise audit.AuditError(f"{FLAGS.path_models} has no run {FLAGS.run} (its runs: {sorted(paths)})")
    checkpoint = aux.load_checkpoint(paths[FLAGS.run], FLAGS)
    explanations.require_memory_model(checkpoint, "audit.py")
    output = writable_folder(Path(FLAGS.output or Path(FLAGS.path_models) / "audit"), "--output folder")
    loaded = aux.load_for_evaluation(checkpoint, FLAGS, encode_now=False)
    data, config, device = loaded.data, checkpoint.saved_config, runtime.choose_device(FLAGS.device)
    labels = data.train_labels[data.subset.to(data.device)]
    assignment = audit.stratified_folds(labels, FLAGS.folds, checkpoint.seed, data.classes)
    fold_files = audit.fold_paths(output, FLAGS.run, FLAGS.folds)
    if FLAGS.train_folds:
        table = encoder_state = None
        if frozen.cached(config):  # the run's fixed encoder; one encoding of the subset for every fold
            encoder_state = loaded.model.encoder.state_dict()
            table = frozen.FeatureTable.encode(loaded.model, data, config.batch_size_test, checkpoint.seed, 1)
        elif config.pretrained or config.pretrained_path:  # fine-tuned from pretrained weights, as the run was
            _, encoder_state = pretrained_weights(config, make_model(config, checkpoint.modality))
        models = audit.train_folds(config, checkpoint.modality, data, assignment, checkpoint.seed, device,
                                   encoder_state, table)
        audit.save_fold_models(models, checkpoint, assignment, fold_files)
    else:
        command = f"python audit.py --path_models={FLAGS.path_models} --run={FLAGS.run} --folds={FLAGS.folds} " \
                  f"--train_folds"
        models = audit.load_fold_models(fold_files, assignment, command, device)
    found = audit.out_of_fold(models, data, assignment)
    suspects = audit.ranking(found, data, FLAGS.score)
    table_path = output / f"label_issues_run{FLAGS.run}.csv"
    atomic_write_bytes(table_path, lambda f: f.write(as_csv(suspects).encode()))
    figure = output / f"label_issues_run{FLAGS.run}.png"
    explanations.audit_figure(figure, data, suspects[:FLAGS.top], FLAGS.score)
    disagreeing = sum(s.supported != s.given for s in suspects)
    print(f"{len(suspects)} training images of run {FLAGS.run} audited ({FLAGS.folds} folds, score {FLAGS.score}): "
          f"the memory supports another label than the given one for {disagreeing}. Most suspect first:")
    for rank, suspect in enumerate(suspects[:10], start=1):
        print(f"  {rank:2d}. {suspect.source}: labelled {suspect.given}, the memory says {suspect.supported} "
              f"(score {suspect.score:.3f}; evidence: {', '.join(suspect.evidence) or 'none'})")
    print(f"Written: {table_path}, {figure}")


def as_csv(suspects) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "source", "file_sha256", "score", "given_label", "supported_label", "evidence", "fold",
                     "subset_position"])
    for rank, s in enumerate(suspects, start=1):
        writer.writerow([rank, s.source, s.file_sha256 or "", f"{s.score:.6f}", s.given, s.supported,
                         ";".join(s.evidence), s.fold + 1, s.position])
    return buffer.getvalue()


if __name__ == "__main__":
    app.run(main)
