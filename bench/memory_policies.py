"""The test accuracy of each memory policy (core/memory_policies.py) against the evaluation's draws, on the same
trained models: draws (the paper's, as every table reports), pool (the whole memory pool as one memory set) and
balanced (as many memory images of every class). A policy other than draws changes what the model reads, not how
it was trained. Run from the repository root:

    python -m bench.memory_policies --path_models=models/pretrained_cifar_subset/CIFAR10/encoder_memory/timm/tf_efficientnet_lite0/1000

Prints, per folder, each policy's mean test accuracy with its 95 % interval and its paired difference with draws
(run by run), with the machine.
"""
import argparse
import datetime

import torch

from core import paired, runtime
from core.checkpoints import Checkpoint, check_one_experiment, list_checkpoints
from core.evaluation import policy_accuracy
from core.loading import load_run
from core.memory_policies import POLICIES


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path_models", nargs="+", required=True, help="experiment folders of memory models")
    args = parser.parse_args()
    machine = runtime.describe_machine(torch.device("cpu"))
    print(f"Machine: {machine['cpu']} | CPU capability {machine['cpu_capability']} | torch {machine['torch']} | "
          f"{datetime.date.today()}")
    for folder in args.path_models:
        checkpoints = [Checkpoint.load(path) for path in list_checkpoints(folder)]
        check_one_experiment(checkpoints)
        values = {policy: {} for policy in POLICIES}
        for checkpoint in checkpoints:
            loaded = load_run(checkpoint)  # the test set and the memory pool encoded once
            for policy in POLICIES:
                values[policy][checkpoint.seed] = policy_accuracy(loaded.model, loaded.cache, policy)
        first = checkpoints[0]
        print(f"\n### {first.dataset_name}, {first.model_name} {first.modality}, {first.train_examples} training "
              f"images, {len(checkpoints)} runs: test accuracy (%) by memory policy\n")
        print("| memory | test accuracy | − draws (paired) |\n|---|---|---|")
        for policy in POLICIES:
            mean, low, high = paired.interval(list(values[policy].values()))
            versus = paired.paired(values[policy], values["draws"]).text() if policy != "draws" else ""
            shown = f"{mean:.2f} [{low:.2f}, {high:.2f}]" if low is not None else f"{mean:.2f}"
            print(f"| {policy} | {shown} | {versus} |", flush=True)


if __name__ == "__main__":
    main()
