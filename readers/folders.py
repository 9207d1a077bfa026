"""Image folder trees: CINIC10's (``CINIC10/{train,test}/<class>/*.png``, 32x32) and a dataset of your own
(``DIR/{train,test}/<class>/*``: png, jpg/jpeg, bmp, webp, any size and mode, converted to RGB and resized).

Each split is decoded once with Pillow and cached beside its folder as an ``.npz`` file that records a fingerprint
of the listing (every image's path and the sha256 of its content; CINIC10's: path, size and modification time): a
file added, removed or changed rebuilds it. Every image keeps its path relative to the dataset root (its source).

    train, test = read_cinic10(Path("datasets"))
    train, test = read_image_folders(Path("my_images"), image_size=32)   # classes: the sorted folder names
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from base.files import atomic_write_bytes

from .common import DatasetError, ImageSet

CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MIN_CLASSES = 2


def class_folders(split_dir: Path) -> List[str]:
    """The class folder names of a split, sorted (hidden folders are not classes)."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(class_dir: Path, suffixes: Sequence[str]) -> List[Path]:
    """The images of one class folder (by suffix, in any case), sorted by name; hidden files are skipped."""
    return sorted(p for p in class_dir.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fingerprint(files: Sequence[Tuple[int, Path]], root: Path, image_size: Optional[int], classes,
                 contents: Optional[Sequence[str]] = None) -> str:
    """A listing's fingerprint: every image's path and label, and its content's sha256 where given (else its size and
    modification time: an edit that keeps both is not seen)."""
    digest = hashlib.sha256(f"{image_size}|{'/'.join(classes)}".encode())
    for row, (label, path) in enumerate(files):
        if contents is not None:
            identity = contents[row]
        else:
            stat = path.stat()
            identity = f"{stat.st_size}\t{stat.st_mtime_ns}"
        digest.update(f"\n{label}\t{path.relative_to(root)}\t{identity}".encode())
    return digest.hexdigest()


def decode(path: Path, image_size: Optional[int]) -> np.ndarray:
    """One image file as uint8 [H, W, 3]: ``to_rgb``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return to_rgb(image, image_size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable image ({error}); replace or delete it") from error


def to_rgb(image, image_size: Optional[int]) -> np.ndarray:
    """A Pillow image as uint8 [H, W, 3]: converted to RGB, resized (bilinear) to image_size x image_size when given
    (how every image of a folder dataset, and every new image predict.py explains, is decoded)."""
    from PIL import Image

    image = image.convert("RGB")
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(image)


def read_tree(split_dir: Path, classes: Sequence[str], suffixes: Sequence[str], image_size: Optional[int],
              cache: Path, order: str = "class", hash_files: bool = False) -> ImageSet:
    """The images of ``split_dir/<class>/`` for ``classes`` (labels: their positions), decoded once and cached in
    ``cache``. ``order``: ``class`` (class by class, each sorted by name: torchvision's ImageFolder, as the paper
    read CINIC10) or ``name`` (every image by file name, across classes, then by class). ``image_size`` None:
    every image must already be 32x32 (CINIC10). Each image's source is its path relative to the dataset root
    (``train/cat/0042.jpg``); ``hash_files``: each file's sha256 too, which the cache's fingerprint then holds (an
    edit in place is seen whatever its size and time; CINIC10's 270,000 files keep size and time)."""
    files = [(label, path) for label, name in enumerate(classes) if (split_dir / name).is_dir()
             for path in image_files(split_dir / name, suffixes)]
    if order == "name":
        files.sort(key=lambda item: (item[1].name, item[0]))
    root = split_dir.parent
    sources = tuple(path.relative_to(root).as_posix() for _, path in files)
    contents = tuple(file_sha256(path) for _, path in files) if hash_files else None
    fingerprint = _fingerprint(files, split_dir, image_size, classes, contents)
    if cache.is_file():
        try:
            with np.load(cache) as cached:
                if str(cached["fingerprint"]) == fingerprint:
                    return ImageSet(torch.from_numpy(cached["images"]), torch.from_numpy(cached["labels"]),
                                    tuple(classes), sources, contents)
        except (OSError, KeyError, ValueError):
            pass  # an old or damaged cache: decoded again and rewritten
    images = []
    for _, path in files:
        array = decode(path, image_size)
        if image_size is None and array.shape != (32, 32, 3):
            raise DatasetError(f"{path} is {array.shape[1]}x{array.shape[0]}, expected a 32x32 image")
        images.append(array)
    if not images:
        raise DatasetError(f"{split_dir} has class folders but no images ({', '.join(suffixes)})")
    image_array = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    label_array = np.asarray([label for label, _ in files], dtype=np.int64)
    try:
        atomic_write_bytes(cache, lambda out: np.savez(out, images=image_array, labels=label_array,
                                                       classes=np.asarray(classes), fingerprint=fingerprint))
    except OSError:
        pass  # a read-only folder: no cache, still correct
    return ImageSet(torch.from_numpy(image_array), torch.from_numpy(label_array), tuple(classes), sources, contents)


def read_cinic10(dataset_dir: Path, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    root = dataset_dir / "CINIC10"
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DatasetError(f"CINIC10: missing {[str(root / s) for s in missing]}. CINIC10 is not downloaded "
                           f"automatically: get it from {CINIC10_URL} and extract it so that "
                           f"{root}/train/<class>/*.png and {root}/test/<class>/*.png exist")
    splits = []
    for split in ("train", "test"):
        classes = class_folders(root / split)
        if not classes:
            raise DatasetError(f"{root / split} has no class folders; expected {root / split}/<class>/*.png")
        splits.append(read_tree(root / split, classes, (".png",), None, root / f"{split}.npz"))
    train, test = splits
    if train.classes != test.classes:
        raise DatasetError(f"CINIC10: train classes {train.classes} differ from test classes {test.classes}")
    return train, test


def folder_classes(root: Path) -> List[str]:
    """The classes of a folder dataset (the sorted folder names of ``root/train``), after checking what needs no
    decoding: ``train/`` and ``test/`` exist, at least 2 classes, no empty class folder, no class in ``test/`` that
    ``train/`` lacks."""
    root = Path(root)
    layout = f"{root}/train/<class>/*.png (or .jpg, .jpeg, .bmp, .webp) and {root}/test/<class>/*"
    if not root.is_dir():
        raise DatasetError(f"folder dataset {root} does not exist; give --dataset_dir=DIR with {layout}")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetError(f"folder dataset {root} has no {split}/ folder; expected {layout}")
    classes = class_folders(root / "train")
    if len(classes) < MIN_CLASSES:
        raise DatasetError(f"{root / 'train'} has {len(classes)} class folder{'s' if len(classes) != 1 else ''}"
                           f"{' (' + classes[0] + ')' if classes else ''}: a classifier needs at least {MIN_CLASSES}; "
                           f"expected {layout}")
    for split in ("train", "test"):
        for name in class_folders(root / split):
            if not image_files(root / split / name, IMAGE_SUFFIXES):
                raise DatasetError(f"{root / split / name} has no images ({', '.join(IMAGE_SUFFIXES)}): add images "
                                   f"or remove the folder")
    unknown = [name for name in class_folders(root / "test") if name not in classes]
    if unknown:
        raise DatasetError(f"{root / 'test' / unknown[0]}: class {unknown[0]!r} is not in {root / 'train'} (its "
                           f"classes: {', '.join(classes)}); add training images of it or remove it from test/")
    return classes


def read_image_folders(root: Path, image_size: int = 32) -> Tuple[ImageSet, ImageSet]:
    """A dataset of your own: ``root/train/<class>/*`` and ``root/test/<class>/*``, classes from the sorted folder
    names of ``train/`` (``test/`` may lack some), every image converted to RGB and resized to ``image_size``.
    Images are ordered by file name across classes (then by class), so that a dataset written out with numbered
    files keeps its order. Cached as ``root/{train,test}.<image_size>.npz``."""
    root = Path(root)
    classes = folder_classes(root)
    return tuple(read_tree(root / split, classes, IMAGE_SUFFIXES, image_size, root / f"{split}.{image_size}.npz",
                           order="name", hash_files=True) for split in ("train", "test"))
