"""How stable ``precision: auto`` / ``memory_format: auto`` are on this machine for one config: the autotune of
train.py (``core.execution.choose_execution``) run ``--tries`` times per modality, each with an empty cache, at the
config's batch and memory shapes. Where the counts split, the levers are near ties here and two fresh runs of the
config can compute different models: pin the levers (README, Reproducibility).

    python -m bench.autotune_choices --config=config/digits.yaml --tries=8

The config's own ``precision`` / ``memory_format`` / ``depthwise_fp32`` are replaced by ``auto`` (``--set`` adds
other settings, as train.py's).
"""
import argparse
import collections
import datetime
import pathlib
import sys
import tempfile

import torch

REPO = pathlib.Path(__file__).resolve().parent.parent
from core import runtime
from core.execution import choose_execution
from core.config import ConfigError, load_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "digits.yaml"))
    parser.add_argument("--modalities", default="std,encoder_memory")
    parser.add_argument("--tries", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="key=value, as train.py's --set")
    args = parser.parse_args()
    if args.tries <= 0:
        parser.error(f"--tries must be > 0, got {args.tries}")
    device = torch.device("cpu")
    runtime.keep_freed_memory()  # as train.py on a CPU
    machine = runtime.describe_machine(device)
    print(f"Machine: {machine['cpu']} | CPU capability {machine['cpu_capability']} | native bf16 "
          f"{'yes' if machine['native_bf16'] else 'no'} | {machine['threads']} threads | torch {machine['torch']} | "
          f"{datetime.date.today()}")
    print("\n| modality | choice | tries | autotune seconds (min-max) |\n|---|---|---|---|")
    for modality in args.modalities.split(","):
        choices, seconds = collections.Counter(), collections.defaultdict(list)
        for _ in range(args.tries):
            with tempfile.TemporaryDirectory() as folder:
                try:
                    config = load_config(args.config, {}, [*args.set, "precision=auto", "memory_format=auto",
                                                           "depthwise_fp32=auto", f"autotune_cache={folder}/c.json"])
                except ConfigError as error:
                    sys.exit(f"error: {error}")
                memory = config.dataset.mem_examples if modality != "std" else 0
                execution, info = choose_execution(config, modality, device, config.batch_size_train, memory)
            choice = f"{info.get('choice', execution.names()['precision'])}" + (
                f" ({len(execution.fp32_layers)} depthwise in fp32)" if execution.fp32_layers else "")
            choices[choice] += 1
            seconds[choice].append(info.get("seconds", 0.0))
        for choice, count in choices.most_common():
            print(f"| {modality} | {choice} | {count} of {args.tries} | "
                  f"{min(seconds[choice]):.1f}-{max(seconds[choice]):.1f} |", flush=True)


if __name__ == "__main__":
    main()
