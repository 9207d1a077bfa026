"""Dataset loading time, and the cost of producing one epoch of batches vs training on them.

Run: python -m bench.bench_data [--train_steps 3]

1. Time to load each dataset available here from disk (DIGITS; the shared CIFAR-10 subset if present;
   any of SVHN/CIFAR10/CINIC10 under --dataset_dir).
2. For 5000 training examples (CIFAR10-shaped uint8 images, random pixels: batch cost does not depend
   on content): time to produce one epoch of training batches (index shuffle, gather, flip, normalise)
   plus one memory set of 100 per step, with AutoAugment a sub-policy per image (the ViT code's, the default)
   and per batch, vs the time of mobilenet encoder_memory training steps on the same batches. Training is
   timed on --train_steps steps and scaled to the epoch's step count.
"""
import argparse
import pathlib
import time

import torch

import datasets as D
import readers
from architectures import build_model

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
    fake = D.ImageSet(images, labels, readers.CIFAR10_CLASSES)
    batch_size = 128

    def epoch(augment: str, per_image: bool = True) -> tuple:
        data = D.ExperimentData.build(D.get_spec("CIFAR10"), fake, fake, args.train_examples, 6000, seed=0,
                                      mem_examples=100, augment=augment, autoaugment_per_image=per_image)
        start, batches = time.perf_counter(), []
        for inputs, targets in data.batches(batch_size, generator):
            batches.append((inputs, targets, data.memory_set(generator).images))
        return time.perf_counter() - start, batches, data.steps_per_epoch(batch_size)

    batch_seconds, batches, steps = epoch("flip")
    autoaugment = {per_image: epoch("autoaugment", per_image)[0] for per_image in (True, False)}

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
    print("| work | seconds per epoch | share of the fp32 training step |\n|---|---|---|")
    print(f"| batch production (shuffle, gather, flip, normalise, memory draw) | {batch_seconds:.3f} | "
          f"{100 * batch_seconds / train_seconds:.2f}% |")
    for per_image, seconds in autoaugment.items():
        print(f"| the same with AutoAugment, a sub-policy per {'image (default)' if per_image else 'batch'} | "
              f"{seconds:.2f} | {100 * seconds / train_seconds:.1f}% |")
    print(f"| mobilenet encoder_memory training, fp32 (from {args.train_steps} steps) | {train_seconds:.1f} | 100% |")


if __name__ == "__main__":
    main()
