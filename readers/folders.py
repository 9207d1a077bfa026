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
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from base.files import atomic_write_bytes

from .common import DatasetError, ImageSet

CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
HIGH_DEPTH = {"I;16": 257.0, "I;16B": 257.0, "I;16L": 257.0, "I;16N": 257.0, "I": 257.0}  # 16-bit modes: / 257
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
    """One image file as uint8 [H, W, 3]: ``to_rgb``. An image over Pillow's decompression-bomb limit is refused in
    one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return to_rgb(image, image_size)
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{path} is too large to decode safely ({' '.join(str(error).split()[:6])} ...: over "
                           f"Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels against "
                           f"decompression bombs): shrink it, or delete it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable image ({error}); replace or delete it") from error


def to_rgb(image, image_size: Optional[int]) -> np.ndarray:
    """A Pillow image as uint8 [H, W, 3]: converted to RGB (16-bit and 32-bit grey scaled to 8 bits, floats from
    [0, 1]: Pillow's own conversion clips them to white), resized (bilinear) to image_size x image_size when given
    (how every image of a folder dataset, and every new image predict.py explains, is decoded)."""
    from PIL import Image

    if image.mode in HIGH_DEPTH or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scaled = values * (255.0 if values.max(initial=0) <= 1.0 else 1.0)
        else:
            scaled = values / (HIGH_DEPTH[image.mode] if values.max(initial=0) <= 65535 else values.max() / 255.0)
        image = Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")
    image = image.convert("RGB")
    if image_size is not None and image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(image)


def resized(image: np.ndarray, image_size: int) -> torch.Tensor:
    """A decoded uint8 [H, W, 3] image at image_size x image_size as ``to_rgb`` resizes it, as uint8 [3, S, S] (an
    exported model's pool image stored at its file's own size, brought to the size the model saw)."""
    from PIL import Image

    return torch.from_numpy(to_rgb(Image.fromarray(image), image_size).copy()).permute(2, 0, 1).contiguous()


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
    notes = skipped_entries(split_dir, classes, suffixes)
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
                                    tuple(classes), sources, contents, notes)
        except (OSError, KeyError, ValueError):
            pass  # an old or damaged cache: decoded again and rewritten
    images, started = [], time.perf_counter()
    for _, path in files:
        array = decode(path, image_size)
        if image_size is None and array.shape != (32, 32, 3):
            raise DatasetError(f"{path} is {array.shape[1]}x{array.shape[0]}, expected a 32x32 image")
        images.append(array)
    if not images:
        present = [name for name in classes if (split_dir / name).is_dir()]
        raise DatasetError(f"{split_dir} holds no images: put them in {split_dir}/<class>/ (" + (
            f"its class folders {', '.join(present[:5])} are empty" if present else
            f"classes {', '.join(classes[:5])}{' ...' if len(classes) > 5 else ''}") + f"; {', '.join(suffixes)})")
    image_array = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    label_array = np.asarray([label for label, _ in files], dtype=np.int64)
    try:
        atomic_write_bytes(cache, lambda out: np.savez(out, images=image_array, labels=label_array,
                                                       classes=np.asarray(classes), fingerprint=fingerprint))
    except OSError as error:  # a read-only folder: no cache, still correct, and said once with what it costs
        notes += (f"{cache.parent} cannot hold the cache of its decoded images ({error.strerror or error}): its "
                  f"{len(files)} {split_dir.name} images are decoded on every run ({time.perf_counter() - started:.1f} "
                  f"s here); a writable copy of the folder caches them",)
    return ImageSet(torch.from_numpy(image_array), torch.from_numpy(label_array), tuple(classes), sources, contents,
                    notes)


def skipped_entries(split_dir: Path, classes: Sequence[str], suffixes: Sequence[str]) -> Tuple[str, ...]:
    """What a split's class folders hold that is not read, counted and named: folders inside a class folder (a class
    is one folder level) and files of other kinds (hidden entries aside)."""
    folders, others = [], []
    for name in classes:
        if not (split_dir / name).is_dir():
            continue
        for path in sorted((split_dir / name).iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                folders.append(path)
            elif path.suffix.lower() not in suffixes:
                others.append(path)
    notes = ()
    if folders:
        notes += (f"{len(folders)} folder{'s' if len(folders) > 1 else ''} inside class folders of {split_dir} "
                  f"{'are' if len(folders) > 1 else 'is'} not read (a class is one folder of images): "
                  f"{', '.join(str(p.relative_to(split_dir)) for p in folders[:3])}{' ...' if len(folders) > 3 else ''}",)
    if others:
        notes += (f"{len(others)} file{'s' if len(others) > 1 else ''} in class folders of {split_dir} "
                  f"{'are' if len(others) > 1 else 'is'} not read (images are {', '.join(suffixes)}): "
                  f"{', '.join(str(p.relative_to(split_dir)) for p in others[:3])}{' ...' if len(others) > 3 else ''}",)
    return notes


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
    layout = f"{root}/train/<class>/*.png (or .jpg, .jpeg, .bmp, .webp, .tif, .gif) and {root}/test/<class>/*"
    if root.is_file():
        raise DatasetError(f"folder dataset {root} is a file, not a folder; give --dataset_dir=DIR with {layout}")
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
