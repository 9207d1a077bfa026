"""The paper's datasets, read from their official files; seeded reduced splits; memory sets.

Data are tensors: each dataset is a uint8 tensor ``[N, 3, 32, 32]`` plus int64 labels; a batch
is an index tensor; flip and normalisation run on whole batches on the training device.

    train, test = load_dataset("CIFAR10", "datasets")              # uint8 ImageSets
    data = ExperimentData.build(spec, train, test, train_examples=1000, val_examples=6000,
                                seed=run, memory_source="subset", mem_examples=100, device=device)
    for images, labels in data.batches(batch_size, generator):     # one epoch: flipped (CIFAR10/CINIC10), normalised
        memory = data.memory_set(generator)                        # 100 images of the memory pool, and their labels

Layout under ``dataset_dir`` (the same as torchvision's, so existing folders work):
    cifar-10-batches-py/{data_batch_1..5,test_batch}   (downloaded when missing)
    train_32x32.mat, test_32x32.mat                     (SVHN, downloaded when missing)
    CINIC10/{train,valid,test}/<class>/*.png            (put there by hand, as in the paper)
DIGITS needs no files: scikit-learn ships it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from base.errors import UserError
from base.files import atomic_write_bytes

__all__ = ["DatasetError", "ImageSet", "DatasetSpec", "DATASETS", "get_spec", "load_dataset", "split_indices",
           "ExperimentData", "MemorySet", "draw_positions", "download_file", "normalize", "denormalize",
           "random_flip"]


class DatasetError(UserError, RuntimeError):
    """A dataset is missing, corrupt, or asked for with impossible sizes. The message says what to do."""


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor  # int64 [N]
    classes: Tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or tuple(self.images.shape[1:]) != (3, 32, 32):
            raise DatasetError(f"images must be uint8 [N, 3, 32, 32], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DatasetError(f"labels must be in [0, {len(self.classes) - 1}], found "
                               f"[{int(self.labels.min())}, {int(self.labels.max())}]")

    def __len__(self):
        return len(self.labels)


# --- downloads ----------------------------------------------------------------------------------

def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, destination: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` with a progress bar; verify the md5; write atomically.

    Nothing is left at ``destination`` unless the whole file arrived with the right checksum.
    """
    from tqdm import tqdm

    destination = Path(destination)

    def write(out):
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {destination.name}",
                      disable=None) as progress:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DatasetError(f"{url} arrived with md5 {digest.hexdigest()}, expected {md5}: the download is corrupt "
                               f"or truncated; nothing was kept. Try again, or download it by hand into "
                               f"{destination.parent}")

    try:
        atomic_write_bytes(destination, write)
        return destination
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DatasetError(f"could not download {url} ({error}). Without a network, download it by hand and put "
                           f"{destination.name} in {destination.parent}") from error


def _ensure_files(folder: Path, names: Sequence[str], url: str, download: bool, what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing and not download:
        raise DatasetError(f"{what}: missing {missing} in {folder}. Download {url} and put the files there "
                           f"(or allow the download: download: True in the config)")


# --- CIFAR10 --------------------------------------------------------------------------------------

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
    _ensure_files(folder, names, CIFAR10_URL, download, "CIFAR10")
    if any(not (folder / n).is_file() for n in names):
        archive = dataset_dir / "cifar-10-python.tar.gz"
        if not archive.is_file() or _md5(archive) != CIFAR10_MD5:
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
    train_parts = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_data, test_labels = _read_cifar_batch(folder / "test_batch")
    train = ImageSet(torch.from_numpy(np.concatenate([d for d, _ in train_parts])),
                     torch.from_numpy(np.concatenate([l for _, l in train_parts])), CIFAR10_CLASSES)
    return train, ImageSet(torch.from_numpy(test_data), torch.from_numpy(test_labels), CIFAR10_CLASSES)


# --- SVHN -----------------------------------------------------------------------------------------

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
                    SVHN_CLASSES)


def read_svhn(dataset_dir: Path, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    names = [name for name, _ in SVHN_FILES.values()]
    _ensure_files(dataset_dir, names, SVHN_URL, download, "SVHN")
    for name, md5 in SVHN_FILES.values():
        if not (dataset_dir / name).is_file():
            download_file(SVHN_URL + name, dataset_dir / name, md5)
    return _read_svhn_mat(dataset_dir / SVHN_FILES["train"][0]), _read_svhn_mat(dataset_dir / SVHN_FILES["test"][0])


# --- CINIC10 --------------------------------------------------------------------------------------

CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"


def _newest_mtime(split_dir: Path) -> float:
    return max([split_dir.stat().st_mtime] + [p.stat().st_mtime for p in split_dir.iterdir() if p.is_dir()])


def _read_png_tree(split_dir: Path) -> ImageSet:
    """An ImageFolder-style tree, decoded once with Pillow and cached next to the images as <split>.npz."""
    from PIL import Image, UnidentifiedImageError

    cache = split_dir.parent / f"{split_dir.name}.npz"
    if cache.is_file() and cache.stat().st_mtime > _newest_mtime(split_dir):
        with np.load(cache) as cached:
            return ImageSet(torch.from_numpy(cached["images"]), torch.from_numpy(cached["labels"]),
                            tuple(str(c) for c in cached["classes"]))
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{split_dir} has no class folders; expected {split_dir}/<class>/*.png")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).glob("*.png")):
            try:
                with Image.open(path) as image:
                    array = np.asarray(image.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                raise DatasetError(f"{path} is not a readable PNG ({error}); replace or delete it") from error
            if array.shape != (32, 32, 3):
                raise DatasetError(f"{path} is {array.shape[1]}x{array.shape[0]}, expected a 32x32 image")
            images.append(array)
            labels.append(label)
    if not images:
        raise DatasetError(f"{split_dir} has class folders but no .png images")
    image_array = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    label_array = np.asarray(labels, dtype=np.int64)
    try:
        atomic_write_bytes(cache, lambda out: np.savez(out, images=image_array, labels=label_array,
                                                       classes=np.asarray(classes)))
    except OSError:
        pass  # a read-only folder: no cache, still correct
    return ImageSet(torch.from_numpy(image_array), torch.from_numpy(label_array), tuple(classes))


def read_cinic10(dataset_dir: Path, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    root = dataset_dir / "CINIC10"
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DatasetError(f"CINIC10: missing {[str(root / s) for s in missing]}. CINIC10 is not downloaded "
                           f"automatically: get it from {CINIC10_URL} and extract it so that "
                           f"{root}/train/<class>/*.png and {root}/test/<class>/*.png exist")
    train, test = _read_png_tree(root / "train"), _read_png_tree(root / "test")
    if train.classes != test.classes:
        raise DatasetError(f"CINIC10: train classes {train.classes} differ from test classes {test.classes}")
    return train, test


# --- DIGITS ---------------------------------------------------------------------------------------

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
    classes = tuple(str(d) for d in range(10))
    return ImageSet(images[train], labels[train], classes), ImageSet(images[test], labels[test], classes)


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


# --- the registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    flip: bool  # random horizontal flip of training batches (the paper's augmentation)
    read: Callable[[Path, bool], Tuple[ImageSet, ImageSet]]
    autoaugment_policy: str = "cifar10"  # augment: autoaugment's policy (the paper's ViT: svhn for SVHN)
    vit_mean: Optional[Tuple[float, float, float]] = None  # the paper's ViT code's statistics (None: the same)
    vit_std: Optional[Tuple[float, float, float]] = None

    def for_vit(self) -> "DatasetSpec":
        """This dataset normalised with the statistics of the paper's ViT code (its VIT/utils.py)."""
        return dataclasses.replace(self, mean=self.vit_mean or self.mean, std=self.vit_std or self.std)


DATASETS: Dict[str, DatasetSpec] = {
    # the CNNs' statistics are the paper's datasets.py's; the ViT code normalised SVHN and CIFAR10 with its own
    "SVHN": DatasetSpec("SVHN", 10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False, read_svhn, "svhn",
                        vit_mean=(0.4377, 0.4438, 0.4728), vit_std=(0.1980, 0.2010, 0.1970)),
    "CIFAR10": DatasetSpec("CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True, read_cifar10,
                           vit_mean=(0.4914, 0.4822, 0.4465), vit_std=(0.2470, 0.2435, 0.2616)),
    "CINIC10": DatasetSpec("CINIC10", 10, (0.47889522, 0.47227842, 0.43047404),
                           (0.24205776, 0.23828046, 0.25874835), True, read_cinic10),
    # mean and std of the 1297 DIGITS training images (checked in tests/test_datasets.py)
    "DIGITS": DatasetSpec("DIGITS", 10, (0.3055, 0.3055, 0.3055), (0.3242, 0.3242, 0.3242), False, read_digits, "svhn"),
}

AUGMENTATIONS = ("auto", "none", "flip", "autoaugment")


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available datasets are {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, dataset_dir, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    """(train, test) of the official files of ``name`` under ``dataset_dir``, as uint8 ImageSets."""
    spec = get_spec(name)
    dataset_dir = Path(dataset_dir if dataset_dir is not None else "datasets")
    if spec.name != "DIGITS":
        dataset_dir.mkdir(parents=True, exist_ok=True)
    train, test = spec.read(dataset_dir, download)
    if max(len(train.classes), len(test.classes)) != spec.num_classes:
        raise DatasetError(f"{name}: found {len(train.classes)} classes, expected {spec.num_classes}")
    return train, test


# --- the paper's protocol -------------------------------------------------------------------------

ALL_TRAIN_EXAMPLES = 100_000  # the paper's convention: train_examples 100000 = every image left after validation


def subset_size(num_images: int, train_examples: int, val_examples: int) -> int:
    """How many images the reduced training subset has; refuses sizes the training set cannot give."""
    if not isinstance(train_examples, int) or train_examples <= 0:
        raise DatasetError(f"train_examples must be a positive int, got {train_examples!r}")
    if not isinstance(val_examples, int) or val_examples < 0 or val_examples >= num_images:
        raise DatasetError(f"val_examples={val_examples!r} must be in [0, {num_images - 1}]: the training set has "
                           f"{num_images} images; lower val_examples (--val_examples)")
    available = num_images - val_examples
    if train_examples == ALL_TRAIN_EXAMPLES:
        return available
    if train_examples > available:
        raise DatasetError(f"train_examples={train_examples} is more than the {available} training images left after "
                           f"holding out val_examples={val_examples} of {num_images}: use at most {available}, "
                           f"{ALL_TRAIN_EXAMPLES} for all of them, or lower val_examples (--val_examples)")
    return train_examples


def split_indices(num_images: int, train_examples: int, val_examples: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The paper's seeded split: (reduced training subset, validation) indices into the official training set.

    Identical to the paper's two ``torch.utils.data.random_split`` calls with ``manual_seed(seed)``:
    the same seed gives the very same images. ``train_examples`` 100000 means all the images left.
    """
    size = subset_size(num_images, train_examples, val_examples)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    rest, validation = order[: num_images - val_examples], order[num_images - val_examples:]
    subset = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:size]]
    return subset, validation


def draw_positions(pool_size: int, mem_examples: int, generator: torch.Generator) -> torch.Tensor:
    """``mem_examples`` distinct random positions in a pool of ``pool_size`` (the paper's shuffled memory loader)."""
    return torch.randperm(pool_size, generator=generator)[:mem_examples]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [N, 3, H, W] (or floats in [0, 1]) -> normalised float32, on the images' device."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    unit = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    return (unit - mean_t) / std_t


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images -> [0, 1] floats, for showing them."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2 (one torch.where for the whole batch)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


class AutoAugment:
    """The AutoAugment policies (CIFAR-10's, or SVHN's) on their device, via kornia; seeded by the run's generator
    (kornia draws from torch's global RNG, forked here so that it is left untouched). uint8 [N, 3, H, W] -> floats
    in [0, 1].

    As the paper's ViT code (a per-image transform), every image draws its own sub-policy: the batch is split by
    sub-policy and each group goes through kornia at once (at most 25 calls per batch). ``per_image=False`` draws
    one sub-policy per batch, as one call of kornia's AutoAugment does."""

    def __init__(self, policy: str, per_image: bool = True):
        from kornia.augmentation.auto import AutoAugment as KorniaAutoAugment

        self.policy, self.per_image = policy, per_image
        self.augment = KorniaAutoAugment(policy=policy)

    def sub_policies(self, count: int) -> torch.Tensor:
        """The sub-policy of each of ``count`` images, from the global RNG (seeded by the caller)."""
        return torch.randint(len(self.augment), (count,))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            unit = images.float() / 255.0
            if not self.per_image:
                return self.augment(unit).clamp_(0.0, 1.0)
            chosen = self.sub_policies(len(images)).to(images.device)
            out = torch.empty_like(unit)
            for index in chosen.unique().tolist():
                rows = torch.nonzero(chosen == index).flatten()
                out[rows] = self.augment[index](unit[rows])
            return out.clamp_(0.0, 1.0)


@dataclass(frozen=True)
class MemoryProtocol:
    """How memory sets are drawn, the one protocol of training, evaluation and explanations: ``mem_examples``
    distinct random positions in a pool of ``pool_size`` images (the paper's shuffled memory loader), each image
    then flipped with probability 1/2 when ``flip`` (the paper's CINIC10 code). Each draw takes the same calls
    from the generator, whether it becomes images (training) or cached features (evaluation)."""
    pool_size: int
    mem_examples: int
    flip: bool = False

    def draw(self, generator: torch.Generator) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(positions in the pool [M], which of them are flipped [M] bool, or None without ``flip``)."""
        positions = draw_positions(self.pool_size, self.mem_examples, generator)
        flips = torch.rand(len(positions), generator=generator) < 0.5 if self.flip else None
        return positions, flips


def paper_code_pool(num_images: int, val_examples: Optional[int], seed: int) -> torch.Tensor:
    """A memory pool the paper's explanation scripts drew from: every training image (``val_examples`` None), or
    every image left after a ``val_examples`` validation split drawn with ``seed`` (indices into the training set)."""
    if val_examples is None:
        return torch.arange(num_images)
    return split_indices(num_images, ALL_TRAIN_EXAMPLES, val_examples, seed)[0]


@dataclass
class MemorySet:
    """A memory set: ``indices`` into the training set, their normalised ``images`` and their ``labels``."""
    indices: torch.Tensor  # [M]
    images: torch.Tensor  # [M, 3, 32, 32] float, normalised
    labels: torch.Tensor  # [M]


class ExperimentData:
    """One run's data and its memory protocol: the dataset on the device, the seeded subset, the memory pool
    and the memory size, batch preparation (flip, AutoAugment and normalisation on whole batches)."""

    def __init__(self, spec: DatasetSpec, train: ImageSet, test: ImageSet, subset: torch.Tensor,
                 validation: torch.Tensor, memory_pool: torch.Tensor, mem_examples: int = 0, device="cpu",
                 memory_flip: bool = False, augment: str = "auto", autoaugment_per_image: bool = True):
        self.spec = spec
        self.device = torch.device(device)
        self.train_images = train.images.to(self.device)
        self.train_labels = train.labels.to(self.device)
        self.test_images = test.images.to(self.device)
        self.test_labels = test.labels.to(self.device)
        self.classes = train.classes
        self.subset = subset  # indices into the training set: the reduced training subset
        self.validation = validation
        self.memory_pool = memory_pool  # indices into the training set that memory sets are drawn from
        self.mem_examples = mem_examples  # images per memory set
        self.memory_flip = memory_flip  # flip memory images at random (the paper's CINIC10 code); else never augmented
        if augment not in AUGMENTATIONS:
            raise DatasetError(f"augment must be one of {list(AUGMENTATIONS)}, got {augment!r}")
        # training batches: flip (auto: the paper's, CIFAR10 and CINIC10), then AutoAugment (the paper's ViT)
        self.flip = spec.flip if augment in ("auto", "autoaugment") else augment == "flip"
        self.autoaugment = (AutoAugment(spec.autoaugment_policy, autoaugment_per_image) if augment == "autoaugment"
                            else None)

    @classmethod
    def build(cls, spec: DatasetSpec, train: ImageSet, test: ImageSet, train_examples: int, val_examples: int,
              seed: int, memory_source: str = "subset", mem_examples: int = 0, device="cpu",
              memory_flip: bool = False, augment: str = "auto", autoaugment_per_image: bool = True
              ) -> "ExperimentData":
        subset, validation = split_indices(len(train), train_examples, val_examples, seed)
        if memory_source == "subset":
            pool = subset
        elif memory_source == "full":  # the paper's code for CIFAR10: the whole official training set
            pool = torch.arange(len(train))
        else:
            raise DatasetError(f"memory_source must be 'subset' or 'full', got {memory_source!r}")
        if mem_examples > len(pool):
            raise DatasetError(f"mem_examples={mem_examples} is larger than the {memory_source} memory pool "
                               f"({len(pool)} images); lower mem_examples or raise train_examples")
        return cls(spec, train, test, subset, validation, pool, mem_examples, device, memory_flip, augment,
                   autoaugment_per_image)

    def with_memory_pool(self, pool: torch.Tensor) -> "ExperimentData":
        """The same run's data with another memory pool (indices into the training set)."""
        other = copy.copy(self)
        other.memory_pool = pool
        return other

    # training batches --------------------------------------------------------------------------
    def batches(self, batch_size: int, generator: torch.Generator,
                shard: Tuple[int, int] = (0, 1)) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled full batches of the subset, prepared: ``(images, labels)`` on the device.

        The last partial batch is dropped, as the paper; fewer images than a batch make one batch of all.
        ``shard=(rank, world_size)`` (data-parallel training) yields every rank's share of the same batches: the
        batch is drawn and augmented whole, then rank r keeps its images r, r + world_size, ...
        """
        rank, world_size = shard
        batch_size = min(batch_size, len(self.subset))
        order = self.subset[torch.randperm(len(self.subset), generator=generator)]
        for start in range(0, len(order) - batch_size + 1, batch_size):
            indices = order[start:start + batch_size].to(self.device)
            images = self.train_images[indices]
            if self.flip:
                images = random_flip(images, generator)
            if self.autoaugment is not None:
                images = self.autoaugment(images, generator)
            yield self._prepare(images[rank::world_size]), self.train_labels[indices[rank::world_size]]

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.subset) // min(batch_size, len(self.subset))

    # memory -----------------------------------------------------------------------------------
    @property
    def memory_protocol(self) -> MemoryProtocol:
        return MemoryProtocol(len(self.memory_pool), self.mem_examples, self.memory_flip)

    def draw_memory(self, generator: torch.Generator) -> torch.Tensor:
        """``mem_examples`` distinct random images of the memory pool (indices into the training set), unflipped."""
        return self.memory_pool[draw_positions(len(self.memory_pool), self.mem_examples, generator)]

    def memory_set(self, generator: torch.Generator) -> MemorySet:
        """A fresh memory set drawn by ``memory_protocol``: ``mem_examples`` images of the memory pool (flipped at
        random only with ``memory_flip``, the paper's CINIC10 code; otherwise never augmented)."""
        positions, flips = self.memory_protocol.draw(generator)
        indices = self.memory_pool[positions].to(self.device)
        images = self.train_images[indices]
        if flips is not None:
            images = torch.where(flips.to(self.device).view(-1, 1, 1, 1), images.flip(-1), images)
        return MemorySet(indices, self._prepare(images), self.train_labels[indices])

    def memory_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Normalised training images (memory images are never augmented)."""
        return self._prepare(self.train_images[indices.to(self.device)])

    def validation_images(self, positions: torch.Tensor) -> torch.Tensor:
        """Normalised images of the held-out validation split (``positions`` into it; never augmented)."""
        return self._prepare(self.train_images[self.validation[positions].to(self.device)])

    # test images ------------------------------------------------------------------------------
    def test_batch(self, indices: torch.Tensor):
        indices = indices.to(self.device)
        return self._prepare(self.test_images[indices]), self.test_labels[indices]

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.spec.mean, self.spec.std)
