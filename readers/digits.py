"""DIGITS: scikit-learn's 1797 real handwritten 8x8 digits, shipped with scikit-learn (no download)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from .common import ImageSet

DIGITS_TEST_SIZE = 500
DIGITS_SPLIT_SEED = 0


def read_digits(dataset_dir: Optional[Path] = None, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    """scikit-learn's 1797 handwritten 8x8 digits, scaled to 0-255, resized (bilinear) to 32x32, 3 channels.

    Fixed split: a permutation with numpy seed 0; its first 500 images are the test set, the other
    1297 the training set.
    """
    pixel_rows, targets = _digits_table()
    pixels = torch.from_numpy(pixel_rows.reshape(-1, 8, 8).astype(np.float32) * (255.0 / 16.0))[:, None]
    resized = torch.nn.functional.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False)
    images = resized.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(targets.astype(np.int64))
    order = torch.from_numpy(np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels)))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    everything = ImageSet(images, labels, tuple(str(d) for d in range(10)),
                          tuple(f"DIGITS load_digits #{i}" for i in range(len(labels))))
    return everything.take(train), everything.take(test)


def _digits_table() -> Tuple[np.ndarray, np.ndarray]:
    """(pixels [1797, 64], targets [1797]) of scikit-learn's digits. Read from the CSV file scikit-learn ships
    (``load_digits`` reads the same file) without importing scikit-learn, which costs more than half a second
    in every process; ``load_digits`` if the file is not where it has always been."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target

