"""SVHN's official .mat files (train_32x32.mat, test_32x32.mat), downloaded when missing."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from .download import download_file
from .common import DatasetError, ImageSet, ensure_files

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = {"train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
              "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")}
SVHN_CLASSES = tuple(str(d) for d in range(10))


def _read_svhn_mat(path: Path) -> ImageSet:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises several types (MatReadError, ValueError, OSError...) on bad files
        raise DatasetError(f"{path} is not a readable SVHN .mat file ({type(error).__name__}: {error}); it is corrupt "
                           f"or truncated: replace it with a good copy of {SVHN_URL}{path.name}") from error
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{path}: expected variables 'X' and 'y', found {sorted(k for k in mat if not k.startswith('__'))}")
    images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
        raise DatasetError(f"{path}: 'X' must be uint8 32x32x3xN, got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[3],):
        raise DatasetError(f"{path}: {images.shape[3]} images but {labels.size} labels")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DatasetError(f"{path}: SVHN labels must be in [1, 10] (10 is the digit 0), found "
                           f"[{labels.min()}, {labels.max()}]")
    labels[labels == 10] = 0
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1))), torch.from_numpy(labels),
                    SVHN_CLASSES, tuple(f"SVHN {path.name} #{i}" for i in range(len(labels))))


def read_svhn(dataset_dir: Path, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    names = [name for name, _ in SVHN_FILES.values()]
    ensure_files(dataset_dir, names, SVHN_URL, download, "SVHN")
    for name, md5 in SVHN_FILES.values():
        if not (dataset_dir / name).is_file():
            download_file(SVHN_URL + name, dataset_dir / name, md5)
    return _read_svhn_mat(dataset_dir / SVHN_FILES["train"][0]), _read_svhn_mat(dataset_dir / SVHN_FILES["test"][0])

