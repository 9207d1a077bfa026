"""Where the time of a training step goes: torch.profiler over two steps of the real train.py step, after two
warm-up steps, for each lever given (the README's "where the time goes").

    python -m bench.profile_step                                   # mobilenet encoder_memory, bf16 and fp32 channels_last
    python -m bench.profile_step --levers="bf16 channels_last + fp32 depthwise"   # train.py's bf16 (depthwise_fp32: auto)
    python -m bench.profile_step --network=resnet18 --modality=std --levers="fp32 channels_last"
"""
import argparse
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

import datasets
from bench.bench_training import BATCH, MEMORY, TRAIN_EXAMPLES, Lever, autotuned, fake_cifar, make_step
from core.runtime import Execution, keep_freed_memory

LEVERS = {"fp32 channels_last": Execution(None, torch.channels_last),
          "fp32 contiguous": Execution(None, torch.contiguous_format),
          "bf16 channels_last": Execution(torch.bfloat16, torch.channels_last),
          "bf16 contiguous": Execution(torch.bfloat16, torch.contiguous_format),
          "bf16 channels_last + fp32 depthwise": None}  # the layers measured as train.py measures them


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="mobilenet")
    parser.add_argument("--modality", default="encoder_memory")
    parser.add_argument("--levers", default="bf16 channels_last,fp32 channels_last")
    parser.add_argument("--rows", type=int, default=14)
    args = parser.parse_args()
    unknown = [name for name in args.levers.split(",") if name not in LEVERS]
    if unknown:
        parser.error(f"--levers: {unknown} are not among {list(LEVERS)}")
    keep_freed_memory()
    train, test = fake_cifar(TRAIN_EXAMPLES + 6000), fake_cifar(10)
    data = datasets.ExperimentData.build(datasets.get_spec("CIFAR10"), train, test, TRAIN_EXAMPLES, 6000, seed=0,
                                         mem_examples=MEMORY)
    for name in args.levers.split(","):
        execution = LEVERS[name] or autotuned(args.network, args.modality, torch.device("cpu"), tempfile.mkdtemp(),
                                              ("precision=bf16", "memory_format=channels_last"))
        step = make_step(args.network, args.modality, Lever(name, execution), torch.device("cpu"), data)
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            step()
            step()
        print(f"\n{args.network} {args.modality}, {name}, batch {BATCH}, memory {MEMORY}, {torch.get_num_threads()} "
              f"threads: the {args.rows} operators with the most CPU time of their own, over two steps")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
