"""Finding mislabeled training images: the memory's audit (core/audit.py) against cleanlab's confident learning and the
training-loss ranking, on training labels flipped on purpose. Run from the repository root:

    python -m bench.label_issues --dataset=DIGITS --seeds=0,1,2          # ShuffleNetV2 from scratch (the quickstart's)
    python -m bench.label_issues --dataset=CIFAR10 --seeds=0,1,2,3       # frozen ImageNet EfficientNet-Lite0, 224 px
    python -m bench.label_issues --summary                               # the tables, from every result written

Per seed: the run's subset (1000 images; the shared real CIFAR-10 subset for CIFAR10), and for each noise level 10 %
and 20 % of its labels flipped uniformly at random to another class (seeded; the flipped images are recorded). Then
5 stratified folds, and for each method an out-of-sample score of every image:
- memory: Memory Wrap fold models (each trained without its fold, reading a memory of its training folds), scored by
  the content weight that memory samples of other classes carry (other_weight) and by 1 - its probability of the
  label (one_minus_probability);
- cleanlab: cleanlab.filter.find_label_issues (confident learning) on the out-of-fold probabilities of the same
  network with a linear head (std), the same folds and epochs; its label quality score for the AUROC;
- training loss: each image's cross-entropy under the std model trained on all the noisy images.
Metrics: AUROC of telling flipped from clean, and precision at k = the number of flipped labels. Then Memory Wrap is
trained again without each method's top k, and on the noisy and the clean labels: its test accuracy.
Results: bench/results/label_issues/<dataset>_seed<s>.json (one file a seed; runs of several seeds at once are
separate processes: --seeds=0,2 and --seeds=1,3 on 2 cores, OMP_NUM_THREADS=1 each).
"""
import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import torch

import datasets
from architectures.timm_backbone import load_pretrained
from base.files import atomic_write_json
from core import audit, frozen, paired, runtime, support
from core.config import load_config
from core.evaluation import FeatureCache, evaluate
from core.execution import make_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "label_issues"
SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset"
WEIGHTS = REPO / "weights" / "tf_efficientnet_lite0.safetensors"
NOISES = (0.1, 0.2)
FOLDS = 5
METHODS = ("memory", "memory_probability", "cleanlab", "training_loss")


def setup(dataset: str, epochs=None):
    """(config, train, test) of the benchmark's recipe for ``dataset`` (``epochs``: fewer, for a quick check)."""
    shorter = {"epochs": epochs} if epochs else {}
    if dataset == "DIGITS":
        config = load_config(REPO / "config" / "digits.yaml", shorter)
        train, test = datasets.load_dataset("DIGITS", None)
        return config, train, test
    if not WEIGHTS.is_file():
        raise SystemExit(f"{WEIGHTS} is missing: python convert_weights.py writes it")
    config = load_config(REPO / "config" / "train.yaml",
                         {"dataset": "CIFAR10", "model": "timm/tf_efficientnet_lite0", "train_examples": "1000",
                          "epochs": epochs or 30, "val_examples": 600, "dataset_dir": str(SUBSET)},
                         ["download=false", f"pretrained_path={WEIGHTS}", "freeze_encoder=true",
                          "CIFAR10.opt_milestones=[15, 22]", "precision=fp32", "memory_format=channels_last"])
    train, test = datasets.load_dataset("CIFAR10", SUBSET, download=False)
    return config, train, test


def accuracy(model, data, config, seed, table=None) -> float:
    cache = table.cache if table is not None else FeatureCache.build(model, data, config.batch_size_test, seed,
                                                                    config.eval_draws)
    return evaluate(model, cache).accuracy


def precision_at_k(scores: torch.Tensor, flipped: torch.Tensor, k: int) -> float:
    top = torch.sort(scores, descending=True, stable=True).indices[:k]
    return float(flipped[top].float().mean())


def run_seed(dataset: str, seed: int, device: torch.device, retrain: bool = True, epochs=None) -> dict:
    config, train, test = setup(dataset, epochs)
    data = datasets.ExperimentData.build(config.dataset_spec(), train, test, config.train_examples,
                                         config.dataset.val_examples, seed=seed, mem_examples=config.dataset.mem_examples,
                                         device=device, augment=config.augment, image_size=config.image_size)
    encoder_state = table = None
    started = time.time()
    if config.freeze_encoder:  # the frozen backbone: every image encoded once for every model of the seed
        probe = make_model(config, "encoder_memory")
        load_pretrained(probe.encoder, config.pretrained_path)
        encoder_state = probe.encoder.state_dict()
        table = frozen.FeatureTable.encode(probe.to(device), data, config.batch_size_test, seed, config.eval_draws)
    result = {"dataset": dataset, "seed": seed, "machine": runtime.describe_machine(device),
              "date": str(datetime.date.today()), "model": config.model, "noise": {}}

    def trained(modality, on, rows=None):
        view = table.restricted(on, rows if rows is not None else torch.arange(len(on.subset))) if table else None
        return audit.train_model(config, modality, on, seed, device, encoder_state, view), view

    if retrain:
        model, view = trained("encoder_memory", data)
        result["clean_accuracy"] = accuracy(model, data, config, seed, view)
    subset_labels = data.train_set.labels[data.subset]
    for noise in NOISES:
        labels, flipped_indices = audit.flip_labels(data.train_set.labels, data.subset, noise, data.num_classes,
                                                    seed=10_000 * seed + round(100 * noise))
        noisy = data.with_train_labels(labels)
        is_flipped = torch.isin(data.subset, flipped_indices)
        noisy_labels = labels[data.subset]
        folds = audit.stratified_folds(noisy_labels, FOLDS, seed)
        noisy_table = table.restricted(noisy, torch.arange(len(data.subset))) if table else None
        memory = audit.out_of_fold(audit.train_folds(config, "encoder_memory", noisy, folds, seed, device,
                                                     encoder_state, noisy_table), noisy, folds)
        linear = audit.out_of_fold(audit.train_folds(config, "std", noisy, folds, seed, device, encoder_state,
                                                     noisy_table), noisy, folds)
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        probabilities, given = linear.probabilities.numpy(), noisy_labels.numpy()
        issues = find_label_issues(given, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
        quality = torch.from_numpy(get_label_quality_scores(given, probabilities)).float()
        flagged = torch.zeros(len(given))  # cleanlab's ranking: its flagged issues first, in its order, then the rest
        flagged[torch.as_tensor(issues, dtype=torch.long)] = 2 + torch.linspace(1, 0, len(issues))
        cleanlab_rank = flagged + (1 - quality)  # ties broken by the quality score inside each group
        full_std, _ = trained("std", noisy)
        scores = {"memory": memory.scores["other_weight"], "memory_probability": memory.scores["one_minus_probability"],
                  "cleanlab": cleanlab_rank, "training_loss": audit.training_loss(full_std, noisy)}
        k = len(flipped_indices)
        entry = {"flipped": flipped_indices.tolist(), "k": k, "cleanlab_flagged": len(issues),
                 "auroc": {m: support.auroc(scores[m][is_flipped], scores[m][~is_flipped]) for m in METHODS},
                 "precision_at_k": {m: precision_at_k(scores[m], is_flipped, k) for m in METHODS},
                 "memory_supports_true_label": float((memory.supported[is_flipped] == subset_labels[is_flipped])
                                                     .float().mean())}
        if retrain:
            model, view = trained("encoder_memory", noisy)
            entry["retrained"] = {"noisy": accuracy(model, noisy, config, seed, view)}
            for method in ("memory", "cleanlab", "training_loss"):
                keep = torch.sort(scores[method], descending=True, stable=True).indices[k:].sort().values
                cleaned = noisy.restricted(keep)
                model, view = trained("encoder_memory", cleaned, keep)
                entry["retrained"][method] = accuracy(model, cleaned, config, seed, view)
        result["noise"][str(noise)] = entry
        print(f"seed {seed}, noise {noise}: AUROC " + ", ".join(f"{m} {entry['auroc'][m]:.3f}" for m in METHODS)
              + " | P@k " + ", ".join(f"{m} {entry['precision_at_k'][m]:.3f}" for m in METHODS)
              + (" | retrained " + ", ".join(f"{m} {v:.2f}" for m, v in entry["retrained"].items()) if retrain else "")
              + f" | {time.time() - started:.0f} s", flush=True)
    result["seconds"] = round(time.time() - started, 1)
    return result


def summary() -> None:
    files = sorted(path for path in RESULTS.glob("*_seed*.json") if "validation" not in path.name)
    rows = [json.loads(path.read_text()) for path in files]
    for dataset in sorted({row["dataset"] for row in rows}):
        mine = [row for row in rows if row["dataset"] == dataset]
        machine = mine[0]["machine"]
        print(f"\n### {dataset} ({mine[0]['model']}), {len(mine)} seeds ({', '.join(str(r['seed']) for r in mine)}), "
              f"{machine['cpu']} {machine['cpu_capability']}\n")
        for noise in NOISES:
            entries = {row["seed"]: row["noise"][str(noise)] for row in mine if str(noise) in row["noise"]}
            print(f"Labels flipped: {100 * noise:.0f} % (k = {next(iter(entries.values()))['k']}); mean over seeds "
                  f"with the 95 % interval; paired difference method − memory, run by run\n")
            print("| method | AUROC | − memory (paired) | precision at k | − memory (paired) |\n|---|---|---|---|---|")
            for method in METHODS:
                cells = []
                for metric in ("auroc", "precision_at_k"):
                    reference = {seed: entry[metric]["memory"] for seed, entry in entries.items()}
                    values = reference if method == "memory" else {
                        seed: entry[metric][method] for seed, entry in entries.items()}
                    cells.extend(paired.metric_cells(values, reference))
                print(f"| {method} | " + " | ".join(cells) + " |")
            retrained = {seed: entry["retrained"] for seed, entry in entries.items() if "retrained" in entry}
            if retrained:
                clean = {row["seed"]: row["clean_accuracy"] for row in mine if "clean_accuracy" in row}
                print("\nMemory Wrap's test accuracy (%), trained again without each method's top k suspects\n")
                print("| training labels | test accuracy | − noisy (paired) |\n|---|---|---|")
                noisy = {seed: values["noisy"] for seed, values in retrained.items()}
                for name, values in (("noisy (all)", noisy), *((f"without {m}'s top k",
                                                               {s: v[m] for s, v in retrained.items()})
                                                              for m in ("memory", "cleanlab", "training_loss")),
                                     ("clean (true labels)", clean)):
                    mean, low, high = paired.interval(list(values.values()))
                    versus = paired.paired(values, noisy).text() if name != "noisy (all)" else ""
                    print(f"| {name} | {mean:.2f} [{low:.2f}, {high:.2f}] | {versus} |" if low is not None else
                          f"| {name} | {mean:.2f} | {versus} |")
            print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["DIGITS", "CIFAR10"], default="DIGITS")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no_retrain", action="store_true", help="scores only: no retraining without the suspects")
    parser.add_argument("--validation", action="store_true", help="the validation run that chose the memory score "
                        "(scores only, written apart: the tables leave it out)")
    parser.add_argument("--summary", action="store_true", help="print the tables of every result written")
    parser.add_argument("--epochs", type=int, default=None, help="fewer epochs than the recipe's: a quick check only")
    args = parser.parse_args()
    if args.summary:
        return summary()
    device = torch.device("cpu")
    runtime.keep_freed_memory()
    (RESULTS / "quick").mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        result = run_seed(args.dataset, seed, device, not (args.no_retrain or args.validation), args.epochs)
        name = f"{args.dataset}_{'validation_' if args.validation else ''}seed{seed}"
        atomic_write_json(result, (RESULTS if not args.epochs else RESULTS / "quick") / f"{name}.json")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
