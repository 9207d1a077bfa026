"""Saying when nothing in memory resembles the input: a memory model's support (core/support.py) against the standard
out-of-distribution scores, on the same models and features. Run from the repository root:

    python -m bench.abstention --case=near --seeds=0,1,2,3      # CIFAR-10, 8 classes known, ship and truck unknown
    python -m bench.abstention --case=far --seeds=0,1,2,3       # CIFAR-10 shown to a DIGITS model, and the reverse
    python -m bench.abstention --summary

Models: Memory Wrap (encoder_memory). DIGITS: ShuffleNetV2 from scratch, the quickstart's recipe (config/digits.yaml).
CIFAR-10: the shared real subset on frozen ImageNet EfficientNet-Lite0 at 224 px (the pretrained study's recipe,
config/grid_pretrained_cifar_subset.yaml; near: its subset kept to the 8 known classes, a 10-way head whose two
unknown classes have no training image). In-distribution: the model's test images (near: of the known classes);
out-of-distribution: ship and truck test images (near), the other dataset's test images (far), each preprocessed as
the model's own. Scores, higher = in-distribution: support nearest_similarity and top_weight (the pool's), maximum
softmax probability, energy (logsumexp of the logits), k-th nearest training feature (k = 50, normalised features).
Metrics: AUROC and the false positive rate at 95 % true positive rate. Results: bench/results/abstention/.
"""
import argparse
import datetime
import json
import time
from pathlib import Path

import torch

import datasets
from architectures.timm_backbone import load_pretrained
from base.files import atomic_write_json
from core import audit, frozen, paired, runtime, support
from core.config import load_config
from core.evaluation import FeatureCache, encode, evaluate
from core.execution import make_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "abstention"
SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset"
WEIGHTS = REPO / "weights" / "tf_efficientnet_lite0.safetensors"
KNOWN = 8  # near: CIFAR-10 classes 0-7 known, 8 (ship) and 9 (truck) unknown
SCORES = ("support_nearest_similarity", "support_top_weight", "msp", "energy", "knn")


def cifar_config():
    if not WEIGHTS.is_file():
        raise SystemExit(f"{WEIGHTS} is missing: python convert_weights.py writes it")
    return load_config(REPO / "config" / "train.yaml",
                       {"dataset": "CIFAR10", "model": "timm/tf_efficientnet_lite0", "train_examples": "1000",
                        "epochs": 30, "val_examples": 600, "dataset_dir": str(SUBSET)},
                       ["download=false", f"pretrained_path={WEIGHTS}", "freeze_encoder=true",
                        "CIFAR10.opt_milestones=[15, 22]", "precision=fp32", "memory_format=channels_last"])


def trained(dataset: str, seed: int, device, known_only: bool = False):
    """(model, its data, its feature cache): Memory Wrap of ``dataset``'s recipe, seed ``seed``."""
    if dataset == "DIGITS":
        config = load_config(REPO / "config" / "digits.yaml")
        train, test = datasets.load_dataset("DIGITS", None)
    else:
        config = cifar_config()
        train, test = datasets.load_dataset("CIFAR10", SUBSET, download=False)
    data = datasets.ExperimentData.build(config.dataset_spec(), train, test, config.train_examples,
                                         config.dataset.val_examples, seed=seed, mem_examples=config.dataset.mem_examples,
                                         device=device, augment=config.augment, image_size=config.image_size)
    encoder_state = table = None
    if config.freeze_encoder:
        probe = make_model(config, "encoder_memory")
        load_pretrained(probe.encoder, config.pretrained_path)
        encoder_state = probe.encoder.state_dict()
        table = frozen.FeatureTable.encode(probe.to(device), data, config.batch_size_test, seed, config.eval_draws)
    if known_only:
        keep = (data.train_labels[data.subset.to(data.device)] < KNOWN).nonzero().flatten().cpu()
        data = data.restricted(keep)
        table = table.restricted(data, keep) if table is not None else None
    model = audit.train_model(config, "encoder_memory", data, seed, device, encoder_state, table)
    cache = table.cache if table is not None else FeatureCache.build(model, data, config.batch_size_test, seed, 1)
    return model, data, cache


@torch.no_grad()
def scores(model, features: torch.Tensor, cache: FeatureCache) -> dict:
    """Every score of ``features`` (higher = in-distribution), the model's pool as its memory and training set."""
    logits = torch.cat([model.classify(features[i:i + 250], cache.memory_features, cache.memory_labels)
                        for i in range(0, len(features), 250)]).float()
    return {"support_nearest_similarity": support.support(model, features, cache.memory_features, cache.memory_labels,
                                                          "nearest_similarity"),
            "support_top_weight": support.support(model, features, cache.memory_features, cache.memory_labels,
                                                  "top_weight"),
            "msp": support.msp(logits), "energy": support.energy(logits),
            "knn": support.knn(features, cache.memory_features)}


def encode_images(model, data: datasets.ExperimentData, batch_size: int = 250) -> torch.Tensor:
    """The test images of ``data`` (another dataset's, put in its place) encoded as the model's own are."""
    return encode(model, lambda i: data.test_batch(i)[0], len(data.test_labels), batch_size)


def compare(model, cache, inside: torch.Tensor, outside: torch.Tensor) -> dict:
    found_in, found_out = scores(model, inside, cache), scores(model, outside, cache)
    return {name: {"auroc": support.auroc(found_in[name], found_out[name]),
                   "fpr_at_95_tpr": support.fpr_at_95_tpr(found_in[name], found_out[name])} for name in SCORES}


def run_seed(case: str, seed: int, device) -> dict:
    started = time.time()
    result = {"case": case, "seed": seed, "machine": runtime.describe_machine(device), "date": str(datetime.date.today())}
    if case == "near":
        model, data, cache = trained("CIFAR10", seed, device, known_only=True)
        known = data.test_labels.cpu() < KNOWN
        result["cifar8"] = compare(model, cache, cache.test_features[known], cache.test_features[~known])
        result["accuracy_known"] = 100.0 * float((evaluate_known(model, cache, known)))
    else:
        digits, digits_data, digits_cache = trained("DIGITS", seed, device)
        cifar, cifar_data, cifar_cache = trained("CIFAR10", seed, device)
        result["digits_model"] = compare(digits, digits_cache, digits_cache.test_features,
                                         encode_images(digits, digits_data.with_test_images(cifar_data.test_set)))
        result["cifar_model"] = compare(cifar, cifar_cache, cifar_cache.test_features,
                                        encode_images(cifar, cifar_data.with_test_images(digits_data.test_set), 100))
        result["accuracy"] = {"digits": evaluate(digits, digits_cache).accuracy,
                              "cifar": evaluate(cifar, cifar_cache).accuracy}
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}), flush=True)
    return result


@torch.no_grad()
def evaluate_known(model, cache, known: torch.Tensor) -> float:
    generator, _ = cache.generators()
    drawn = cache.draw(generator)
    predictions = model.classify(cache.test_features[known], drawn.features, drawn.labels).argmax(1).cpu()
    return float((predictions == cache.test_labels[known].cpu()).float().mean())


def summary() -> None:
    rows = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*_seed*.json"))]
    parts = [("near", "cifar8", "CIFAR-10 subset, frozen EfficientNet-Lite0, 8 classes known; unknown: ship and truck"),
             ("far", "digits_model", "DIGITS model (ShuffleNetV2 from scratch); unknown: CIFAR-10 test images"),
             ("far", "cifar_model", "CIFAR-10 model (frozen EfficientNet-Lite0); unknown: DIGITS test images")]
    for case, key, title in parts:
        mine = {row["seed"]: row[key] for row in rows if row["case"] == case and key in row}
        if not mine:
            continue
        machine = next(row["machine"] for row in rows if row["case"] == case)
        print(f"\n### {title}: {len(mine)} seeds ({', '.join(map(str, mine))}), {machine['cpu']} "
              f"{machine['cpu_capability']}\n")
        print("| score | AUROC | − support (paired) | FPR at 95 % TPR | − support (paired) |\n|---|---|---|---|---|")
        for name in SCORES:
            cells = []
            for metric in ("auroc", "fpr_at_95_tpr"):
                reference = {seed: found["support_nearest_similarity"][metric] for seed, found in mine.items()}
                values = reference if name == "support_nearest_similarity" else {
                    seed: found[name][metric] for seed, found in mine.items()}
                cells.extend(paired.metric_cells(values, reference))
            print(f"| {name} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["near", "far"], default="near")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        return summary()
    device = torch.device("cpu")
    runtime.keep_freed_memory()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        atomic_write_json(run_seed(args.case, seed, device), RESULTS / f"{args.case}_seed{seed}.json")


if __name__ == "__main__":
    main()
