"""CIFAR-10's official python batches (cifar-10-batches-py/), downloaded and extracted when missing."""
from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from .download import download_file, md5_of
from .common import DatasetError, ImageSet, ensure_files

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code on load."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
                # pickle protocol 5 stores arrays as out-of-band buffers rebuilt by _frombuffer
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_cifar_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as error:
        raise DatasetError(f"{path} is not a readable CIFAR-10 batch ({type(error).__name__}: {error}); it is corrupt "
                           f"or truncated: replace it with the file of the same name from {CIFAR10_URL}") from error
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path}: expected keys 'data' and 'labels', found {sorted(batch)}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.shape} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels must be in [0, 9], found [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels


def _safe_extract(archive: Path, destination: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(destination, filter="data")


def read_cifar10(dataset_dir: Path, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    folder = dataset_dir / CIFAR10_FOLDER
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    ensure_files(folder, names, CIFAR10_URL, download, "CIFAR10")
    if any(not (folder / n).is_file() for n in names):
        archive = dataset_dir / "cifar-10-python.tar.gz"
        if not archive.is_file() or md5_of(archive) != CIFAR10_MD5:
            download_file(CIFAR10_URL, archive, CIFAR10_MD5)
        # extract next to the destination, then move the folder into place in one rename
        with tempfile.TemporaryDirectory(dir=dataset_dir, prefix=".extract-") as staging:
            try:
                _safe_extract(archive, Path(staging))
            except (tarfile.TarError, OSError, EOFError) as error:
                raise DatasetError(f"{archive} could not be extracted ({error}); delete it and download again") from error
            extracted = Path(staging) / CIFAR10_FOLDER
            if not all((extracted / n).is_file() for n in names):
                raise DatasetError(f"{archive} does not contain {CIFAR10_FOLDER}/ with {names}")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(extracted, folder)
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    train_parts = [_read_cifar_batch(folder / name) for name in train_names]
    test_data, test_labels = _read_cifar_batch(folder / "test_batch")
    train = ImageSet(torch.from_numpy(np.concatenate([d for d, _ in train_parts])),
                     torch.from_numpy(np.concatenate([l for _, l in train_parts])), CIFAR10_CLASSES,
                     tuple(f"CIFAR10 {name} #{i}" for name, (_, part) in zip(train_names, train_parts)
                           for i in range(len(part))))
    return train, ImageSet(torch.from_numpy(test_data), torch.from_numpy(test_labels), CIFAR10_CLASSES,
                           tuple(f"CIFAR10 test_batch #{i}" for i in range(len(test_labels))))

