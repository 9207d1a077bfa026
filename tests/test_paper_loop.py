"""bench/paper_loop.py, the official code's loop on a CPU that the whole-run benchmark measures train.py against:
its per-image pipeline computes what torchvision's transforms compute, and it runs on CIFAR-10 batches."""
import sys

import numpy as np
import torch

import datasets as D
from helpers import REPO, run_script
from test_datasets import write_cifar_folder

sys.path.insert(0, str(REPO / "bench"))
import paper_loop  # noqa: E402


def test_per_image_transforms_equal_the_batched_normalisation_and_flip():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = np.arange(6)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    expected = D.normalize(images, paper_loop.MEAN, paper_loop.STD)
    plain = paper_loop.CifarItems(hwc, labels, flip=False)
    for index in range(6):
        tensor, label = plain[index]
        assert label == index and torch.allclose(tensor, expected[index], atol=1e-6)
    torch.manual_seed(3)
    flipped = [paper_loop.CifarItems(hwc, labels, flip=True)[0][0] for _ in range(40)]
    kinds = {bool(torch.allclose(t, expected[0].flip(-1), atol=1e-6)) for t in flipped}
    assert kinds == {True, False}, "RandomHorizontalFlip flips some items and leaves others"
    assert all(torch.allclose(t, expected[0], atol=1e-6) or torch.allclose(t, expected[0].flip(-1), atol=1e-6)
               for t in flipped)


def test_the_paper_loop_trains_and_evaluates_on_cifar_batches(tmp_path):
    write_cifar_folder(tmp_path, n=30)  # 150 training images, 30 test images
    result = run_script("bench/paper_loop.py", "--modality=encoder_memory", "--model=shufflenet",
                        "--train_examples=40", "--val_examples=20", "--epochs=1", f"--dataset_dir={tmp_path}")
    line = [line for line in result.stdout.splitlines() if line.startswith("paper loop |")]
    assert len(line) == 1 and "shufflenet encoder_memory" in line[0]
    accuracy = float(line[0].split("accuracy ")[1].split(" |")[0])
    data_seconds = float(line[0].split("(data ")[1].split(" s)")[0])
    train_seconds = float(line[0].split("train ")[1].split(" s")[0])
    assert 0 <= accuracy <= 100 and 0 < data_seconds <= train_seconds + 0.05


def test_the_paper_loop_ends_bad_input_in_one_line(tmp_path):
    missing = run_script("bench/paper_loop.py", "--modality=std", f"--dataset_dir={tmp_path}", check=False)
    assert missing.returncode == 1 and missing.stderr.strip().startswith("error: CIFAR10: missing") and \
        "Traceback" not in missing.stderr
    bad_flags = ["--train_examples=0", "--milestones=a,b", "--model=foo"]
    if not torch.cuda.is_available():  # the official GPU path, asked for on a machine without one
        bad_flags.append("--device=cuda")
    for bad in bad_flags:
        result = run_script("bench/paper_loop.py", "--modality=std", f"--dataset_dir={tmp_path}", bad, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr and bad.split("=")[0] in result.stderr
    write_cifar_folder(tmp_path / "few", n=10)  # 50 training images
    few = run_script("bench/paper_loop.py", "--modality=std", f"--dataset_dir={tmp_path / 'few'}", check=False)
    assert few.returncode == 2 and "holds 50 training images: the memory loader needs 100" in few.stderr and \
        "Traceback" not in few.stderr
    write_cifar_folder(tmp_path, n=30)
    too_many = run_script("bench/paper_loop.py", "--modality=std", f"--dataset_dir={tmp_path}",
                          "--train_examples=200", check=False)
    assert too_many.returncode == 1 and too_many.stderr.startswith("error: val_examples=600") and \
        "Traceback" not in too_many.stderr
