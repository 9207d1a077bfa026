"""Dataset loading time, and the cost of producing one epoch of batches vs training on them.

Run: python bench/bench_data.py [--train_steps 3]

1. Time to load each dataset available here from disk (DIGITS; the shared CIFAR-10 subset if present;
   any of SVHN/CIFAR10/CINIC10 under --dataset_dir).
2. For 5000 training examples (CIFAR10-shaped uint8 images, random pixels: batch cost does not depend
   on content): time to produce one epoch of training batches (index shuffle, gather, flip, normalise)
   plus one memory set of 100 per step, vs the time of mobilenet encoder_memory training steps on the
   same batches. Training is timed on --train_steps steps and scaled to the epoch's step count.
"""
import argparse
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import datasets as D  # noqa: E402
from architectures import build_model  # noqa: E402

SHARED_CIFAR = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-subset"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_dir", default="datasets")
    parser.add_argument("--train_steps", type=int, default=3)
    parser.add_argument("--train_examples", type=int, default=5000)
    args = parser.parse_args()

    print("| dataset | images (train+test) | load seconds |\n|---|---|---|")
    candidates = [("DIGITS", None), ("CIFAR10 (shared subset)", SHARED_CIFAR)]
    candidates += [(name, args.dataset_dir) for name in ("SVHN", "CIFAR10", "CINIC10")]
    for label, folder in candidates:
        name = label.split()[0]
        try:
            start = time.perf_counter()
            train, test = D.load_dataset(name, folder, download=False)
            print(f"| {label} | {len(train) + len(test)} | {time.perf_counter() - start:.2f} |")
        except D.DatasetError:
            continue

    generator = torch.Generator().manual_seed(0)
    n = args.train_examples + 6000
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    fake = D.ImageSet(images, labels, D.CIFAR10_CLASSES)
    data = D.ExperimentData.build(D.get_spec("CIFAR10"), fake, fake, args.train_examples, 6000, seed=0,
                                  mem_examples=100)
    batch_size, steps = 128, data.steps_per_epoch(128)

    start = time.perf_counter()
    batches = []
    for indices in data.train_batches(batch_size, generator):
        inputs, targets = data.train_batch(indices, generator)
        memory = data.memory_batch(data.draw_memory(100, generator))
        batches.append((inputs, targets, memory))
    batch_seconds = time.perf_counter() - start

    torch.manual_seed(0)
    model = build_model("mobilenet", "encoder_memory", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train_step(inputs, targets, memory):
        loss = torch.nn.functional.cross_entropy(model(inputs, memory), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step(*batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches[1: 1 + args.train_steps]:
        train_step(*batch)
    train_seconds = (time.perf_counter() - start) / args.train_steps * steps

    print(f"\n{args.train_examples} training examples, batch {batch_size}, {steps} steps/epoch, memory 100, "
          f"{torch.get_num_threads()} threads")
    print("| work | seconds per epoch | share of training |\n|---|---|---|")
    print(f"| batch production (shuffle, gather, flip, normalise, memory draw) | {batch_seconds:.3f} | "
          f"{100 * batch_seconds / train_seconds:.2f}% |")
    print(f"| mobilenet encoder_memory training (from {args.train_steps} steps) | {train_seconds:.1f} | 100% |")


if __name__ == "__main__":
    main()
