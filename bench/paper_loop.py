"""The paper's own training and evaluation loop on a CPU, for the whole-run row of bench/bench_training.py.

What KRLGroup/memory-wrap's paper/train.py does when no GPU is there, step for step, without torchvision (which
cannot be installed beside the CPU build of torch here); its per-image work is done as torchvision does it:

- data (paper/utils/datasets.py, get_CIFAR10): the images held as uint8 HWC arrays; every item goes through PIL
  (``Image.fromarray``), RandomHorizontalFlip (training only), ToTensor and Normalize, one image at a time, in
  DataLoaders with the default ``num_workers=0`` (the official loaders set no workers); the training subset is
  ``split_dataset``'s two ``random_split`` calls (``datasets.split_indices`` gives the same images); the memory
  loader shuffles the whole training set (test transforms), and every step draws its memory set with
  ``next(iter(mem_loader))``;
- model: this repository's encoders and heads (the same architectures: tests/test_models.py checks their state-dict
  keys and shapes against the official models), contiguous NCHW: the official ``torch.cuda.amp.autocast()`` and
  ``GradScaler()`` are disabled without CUDA, so a CPU run is plain fp32; with ``--device=cuda`` the step runs as the
  official one does on its GPU: fp16 autocast and a GradScaler, loaders with ``pin_memory=True``, every batch and
  memory set moved with ``.to(device)``, evaluation in fp32;
- optimizer: SGD(lr 0.1, momentum 0.9, weight decay 5e-4, Nesterov) as torch builds it by default (single-tensor
  updates on a CPU), MultiStepLR at the config's milestones scaled to ``--epochs``; glibc's default allocator;
- evaluation: std models one pass over the test set; memory models ``eval_memory`` five times, each test batch of 500
  with a fresh memory set.

    python -m bench.paper_loop --modality=encoder_memory --model=mobilenet --train_examples=1024 --epochs=2 \\
        --dataset_dir=../shared/data/cifar10-subset                    # --device=cuda: the official GPU path

It prints the accuracy and the wall seconds of training (of which producing the data), and of evaluation;
bench_training.py times the whole process.
"""
import argparse
import pathlib
import time

import numpy as np
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
import aux
import datasets
import readers
from architectures import build_model, list_encoders
from core import runtime

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]  # the official get_CIFAR10's Normalize


class CifarItems(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's __getitem__: an HWC uint8 array through PIL, then the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, flip: bool):
        self.images, self.labels, self.flip = images, labels, flip

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index])
        if self.flip and torch.rand(1) < 0.5:  # RandomHorizontalFlip(p=0.5)
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        tensor = torch.from_numpy(np.array(image, np.uint8, copy=True))  # ToTensor
        tensor = tensor.view(image.size[1], image.size[0], 3).permute(2, 0, 1).contiguous().float().div(255)
        mean = torch.as_tensor(MEAN, dtype=tensor.dtype).view(-1, 1, 1)  # Normalize (F.normalize, not in place)
        std = torch.as_tensor(STD, dtype=tensor.dtype).view(-1, 1, 1)
        return tensor.sub(mean).div(std), int(self.labels[index])


def evaluate(model, loader, mem_loader, loss_criterion, uses_memory: bool, device=torch.device("cpu")) -> float:
    """The official eval_memory / eval_std: fp32, a fresh memory set for every test batch."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            if uses_memory:
                memory, _ = next(iter(mem_loader))
                output = model(data, memory.to(device))
            else:
                output = model(data)
            loss_criterion(output, target).item()
            correct += output.max(1, keepdim=True)[1].eq(target.view(-1, 1)).sum().item()
    return 100.0 * correct / len(loader.dataset)


@aux.exit_on_user_errors
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", required=True, choices=["std", "memory", "encoder_memory"])
    parser.add_argument("--model", default="mobilenet", choices=list_encoders())
    parser.add_argument("--train_examples", type=int, default=1024)
    parser.add_argument("--val_examples", type=int, default=600, help="the official code holds out 6000")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--milestones", default="150,225", help="the CIFAR10 config's, for 300 epochs")
    parser.add_argument("--dataset_dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: the official GPU path (fp16 autocast + GradScaler, pinned loaders)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device=cuda needs a CUDA GPU, and torch finds none here (torch.cuda.is_available() is False)")
    device, cuda = torch.device(args.device), args.device == "cuda"
    if args.train_examples < 1 or args.val_examples < 0 or args.epochs < 1:
        parser.error(f"--train_examples and --epochs must be >= 1 and --val_examples >= 0, got {args.train_examples}, "
                     f"{args.epochs} and {args.val_examples}")
    try:
        milestones = [max(1, round(int(m) * args.epochs / 300)) for m in args.milestones.split(",")]
    except ValueError:
        parser.error(f"--milestones must be integers separated by commas, got {args.milestones!r}")

    train_set, test_set = readers.read_cifar10(pathlib.Path(args.dataset_dir), download=False)
    as_hwc = lambda images: images.permute(0, 2, 3, 1).contiguous().numpy()  # noqa: E731 (torchvision's layout)
    train_hwc, test_hwc = as_hwc(train_set.images), as_hwc(test_set.images)
    if len(train_hwc) < 100:
        parser.error(f"{args.dataset_dir} holds {len(train_hwc)} training images: the memory loader needs 100")
    # the official split_dataset's two random_split calls, as datasets.split_indices reproduces them (it refuses
    # sizes the training set cannot give, where the official code silently trains on fewer images)
    subset, _ = datasets.split_indices(len(train_hwc), args.train_examples, args.val_examples, args.seed)
    uses_memory = args.modality != "std"
    runtime.seed_everything(args.seed)  # the official utils.set_seed
    model = build_model(args.model, args.modality, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones)
    train_data = CifarItems(train_hwc, train_set.labels.numpy(), flip=True)
    memory_data = CifarItems(train_hwc, train_set.labels.numpy(), flip=False)
    test_data = CifarItems(test_hwc, test_set.labels.numpy(), flip=False)
    train_subset = torch.utils.data.Subset(train_data, subset.tolist())
    batch_size = min(128, args.train_examples)
    pinned = dict(pin_memory=True) if cuda else {}  # the official loaders pin; without CUDA pinning only warns
    train_loader = torch.utils.data.DataLoader(train_subset, batch_size=batch_size, shuffle=True, drop_last=True,
                                               **pinned)
    test_loader = torch.utils.data.DataLoader(test_data, batch_size=500, **pinned)
    mem_loader = torch.utils.data.DataLoader(memory_data, batch_size=100, shuffle=True, drop_last=True, **pinned)
    loss_criterion = torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    start = time.perf_counter()
    data_seconds = 0.0  # of the training time: producing the batches and memory sets (the per-image pipeline)
    model.train()
    for epoch in range(1, args.epochs + 1):
        batches = iter(train_loader)
        while True:
            began = time.perf_counter()
            batch = next(batches, None)
            memory_input = next(iter(mem_loader))[0] if uses_memory and batch is not None else None
            data_seconds += time.perf_counter() - began
            if batch is None:
                break
            data, y = batch
            optimizer.zero_grad()
            data, y = data.to(device), y.to(device)
            memory_input = memory_input.to(device) if memory_input is not None else None
            with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
                outputs = model(data, memory_input) if uses_memory else model(data)
                loss = loss_criterion(outputs, y)
            scaler.scale(loss).backward()  # without CUDA the scaler is disabled: loss.backward(), optimizer.step()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
    if cuda:
        torch.cuda.synchronize()
    trained = time.perf_counter()
    accuracies = [evaluate(model, test_loader, mem_loader, loss_criterion, uses_memory, device)
                  for _ in range(5 if uses_memory else 1)]
    print(f"paper loop | {args.model} {args.modality} | accuracy {np.mean(accuracies):.2f} | train "
          f"{trained - start:.1f} s (data {data_seconds:.2f} s) | eval {time.perf_counter() - trained:.1f} s",
          flush=True)


if __name__ == "__main__":
    main()
