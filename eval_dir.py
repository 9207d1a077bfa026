"""Evaluate every saved model in a folder: mean and std of accuracy; for memory models also the paper's
majority-vote baselines (among the memory samples with positive weight: the majority of their predicted
classes, MVO, and of their true labels, MVY).

    python eval_dir.py --path=models/DIGITS/encoder_memory/shufflenet/1000/
"""
import time

import numpy as np
from absl import app, flags

import aux
import datasets

flags.DEFINE_string("path", None, "folder with *.pt checkpoints")
flags.DEFINE_string("dataset_dir", None, "folder of the datasets (default: the one recorded at training)")
flags.DEFINE_string("config", "config/train.yaml", "defaults for what a paper checkpoint does not record")
flags.DEFINE_string("model", None, "network name, for paper checkpoints that do not record it")
flags.DEFINE_integer("batch_size_test", 500, "test batch size (each batch gets its own memory draw)")
flags.DEFINE_integer("draws", 5, "memory draws to average over")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "device")
flags.DEFINE_string("output_json", None, "also write the numbers to this JSON file")
flags.mark_flag_as_required("path")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        device = aux.choose_device(FLAGS.device)
        default_config = aux.load_config(FLAGS.config)
        paths = aux.list_checkpoints(FLAGS.path)
        loaded, rows = {}, []
        for path in paths:
            start = time.time()
            checkpoint = aux.load_checkpoint(path, model_name=FLAGS.model)
            model = checkpoint.build_model(device)
            data = aux.checkpoint_data(checkpoint, default_config, FLAGS.dataset_dir, loaded, device)
            cache = aux.FeatureCache.build(model, data, FLAGS.batch_size_test)
            evaluation = aux.evaluate(model, cache, checkpoint.mem_examples, FLAGS.batch_size_test, checkpoint.seed,
                                      draws=FLAGS.draws, majority=model.uses_memory)
            rows.append({"checkpoint": str(path), "seed": checkpoint.seed, "modality": checkpoint.modality,
                         "accuracy": evaluation.accuracy, "mvo_accuracy": evaluation.majority_vote_predictions,
                         "mvy_accuracy": evaluation.majority_vote_labels})
            print(line(path.stem, rows, (time.time() - start) / 60), flush=True)
    except (aux.ConfigError, aux.CheckpointError, datasets.DatasetError) as error:
        raise SystemExit(f"error: {error}")
    summary = {"mean": aux.mean_std([r["accuracy"] for r in rows])[0], "std": aux.mean_std([r["accuracy"] for r in rows])[1]}
    if rows[0]["mvo_accuracy"] is not None:
        summary.update(mvo_mean=aux.mean_std([r["mvo_accuracy"] for r in rows])[0],
                       mvo_std=aux.mean_std([r["mvo_accuracy"] for r in rows])[1],
                       mvy_mean=aux.mean_std([r["mvy_accuracy"] for r in rows])[0],
                       mvy_std=aux.mean_std([r["mvy_accuracy"] for r in rows])[1])
    print(f"\nModels:{len(rows)} | " + " | ".join(f"{k}:{v:.2f}" for k, v in summary.items()))
    if FLAGS.output_json:
        aux.atomic_write_json({"models": rows, **summary}, FLAGS.output_json)


def line(name, rows, minutes):
    """The paper's eval_dir line for the latest model, with running mean/std over the models so far."""
    accuracy_mean, accuracy_std = aux.mean_std([r["accuracy"] for r in rows])
    text = (f"Run:{name} | Accuracy {rows[-1]['accuracy']:.2f} | Mean Accuracy:{accuracy_mean:.2f} | "
            f"Std Dev:{accuracy_std:.2f}")
    mvo = [r["mvo_accuracy"] for r in rows if r["mvo_accuracy"] is not None]
    if mvo:
        mvy = [r["mvy_accuracy"] for r in rows if r["mvy_accuracy"] is not None]
        text += (f" | MVO Accuracy:{np.mean(mvo):.2f} | Std Dev:{np.std(mvo):.2f} | MVY Accuracy:{np.mean(mvy):.2f} | "
                 f"Std Dev:{np.std(mvy):.2f}")
    return text + f"\tE:{minutes:.2f}min"


if __name__ == "__main__":
    app.run(main)
