"""The datasets by name, and the paper's protocol: seeded reduced splits, batches, memory sets.

Data are tensors: each dataset is a uint8 tensor ``[N, 3, H, W]`` plus int64 labels (readers/ reads the files);
a batch is an index tensor; flip and normalisation run on whole batches on the training device.

    train, test = load_dataset("CIFAR10", "datasets")              # uint8 ImageSets
    data = ExperimentData.build(spec, train, test, train_examples=1000, val_examples=6000,
                                seed=run, memory_source="subset", mem_examples=100, device=device)
    for images, labels in data.batches(batch_size, generator):     # one epoch: flipped (CIFAR10/CINIC10), normalised
        memory = data.memory_set(generator)                        # 100 images of the memory pool, and their labels

Layout under ``dataset_dir`` (the same as torchvision's, so existing folders work):
    cifar-10-batches-py/{data_batch_1..5,test_batch}   (downloaded when missing)
    train_32x32.mat, test_32x32.mat                     (SVHN, downloaded when missing)
    CINIC10/{train,valid,test}/<class>/*.png            (put there by hand, as in the paper)
    {train,test}/<class>/*.png|jpg|jpeg|bmp|webp         (dataset_name: folder, a dataset of your own)
DIGITS needs no files: scikit-learn ships it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from readers import (DatasetError, ImageSet, download_file, folder_classes, read_cifar10, read_cinic10,
                     read_digits, read_image_folders, read_svhn)

__all__ = ["DatasetError", "ImageSet", "DatasetSpec", "DATASETS", "get_spec", "load_dataset", "split_indices",
           "ExperimentData", "MemorySet", "draw_positions", "download_file", "normalize", "denormalize",
           "resize", "statistics", "folder_classes", "pixels_sha256"]


# --- the registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: Optional[int]  # None: any number of 2 or more (a folder dataset: its folders say)
    mean: Optional[Tuple[float, float, float]]  # None: computed on each run's reduced training subset (statistics)
    std: Optional[Tuple[float, float, float]]
    flip: bool  # random horizontal flip of training batches (the paper's augmentation)
    read: Callable[..., Tuple[ImageSet, ImageSet]]  # (dataset_dir, download), or (dataset_dir, image_size): resizes
    autoaugment_policy: str = "cifar10"  # augment: autoaugment's policy (the paper's ViT: svhn for SVHN)
    vit_mean: Optional[Tuple[float, float, float]] = None  # the paper's ViT code's statistics (None: the same)
    vit_std: Optional[Tuple[float, float, float]] = None
    resizes: bool = False  # its images are resized to image_size when decoded (otherwise they are 32x32)

    def for_vit(self) -> "DatasetSpec":
        """This dataset normalised with the statistics of the paper's ViT code (its VIT/utils.py)."""
        return dataclasses.replace(self, mean=self.vit_mean or self.mean, std=self.vit_std or self.std)

    def normalized_with(self, mean: Sequence[float], std: Sequence[float]) -> "DatasetSpec":
        return dataclasses.replace(self, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


FOLDER = "folder"  # dataset_name of a dataset of your own: dataset_dir/{train,test}/<class>/*

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
    # your own images: flipped as the paper's natural-image datasets (augment: none where a mirror changes the
    # class), normalised with the statistics of each run's subset
    FOLDER: DatasetSpec(FOLDER, None, None, None, True, read_image_folders, resizes=True),
}

AUGMENTATIONS = ("auto", "none", "flip", "autoaugment")


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available datasets are {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, dataset_dir, download: bool = True, image_size: int = 32) -> Tuple[ImageSet, ImageSet]:
    """(train, test) of ``name``'s files under ``dataset_dir``, as uint8 ImageSets (a folder dataset's images
    resized to ``image_size``)."""
    spec = get_spec(name)
    dataset_dir = Path(dataset_dir if dataset_dir is not None else "datasets")
    if spec.resizes:
        return spec.read(dataset_dir, image_size)
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


def pixels_sha256(image: torch.Tensor) -> str:
    """The first 16 hex digits of the sha256 of a uint8 image's pixels (its shape included)."""
    digest = hashlib.sha256(str(tuple(image.shape)).encode())
    digest.update(image.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def resize(images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Float images [N, C, H, W] resized bilinearly to size x size (as Pillow resizes a folder dataset's images when
    it decodes them); unchanged without ``size`` or at that size already. After normalisation or before, the same:
    a bilinear resize commutes with a per-channel affine map."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=size < max(images.shape[-2:]))


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images -> [0, 1] floats, for showing them."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(-1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def statistics(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images [N, 3, H, W] scaled to [0, 1]: the
    normalisation of a folder dataset, computed on a run's reduced training subset."""
    unit = images.double().div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    mean, std = unit.mean(1), unit.std(1, unbiased=False).clamp_min(1e-6)
    return tuple(round(float(m), 8) for m in mean), tuple(round(float(s), 8) for s in std)


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
    images: torch.Tensor  # [M, 3, H, W] float, normalised
    labels: torch.Tensor  # [M]


class ExperimentData:
    """One run's data and its memory protocol: the dataset on the device, the seeded subset, the memory pool
    and the memory size, batch preparation (flip, AutoAugment and normalisation on whole batches)."""

    def __init__(self, spec: DatasetSpec, train: ImageSet, test: ImageSet, subset: torch.Tensor,
                 validation: torch.Tensor, memory_pool: torch.Tensor, mem_examples: int = 0, device="cpu",
                 memory_flip: bool = False, augment: str = "auto", autoaugment_per_image: bool = True,
                 image_size: Optional[int] = None):
        self.spec = spec
        self.image_size = image_size  # what the network is fed: stored images of another size are resized per batch
        self.device = torch.device(device)
        self.train_images = train.images.to(self.device)
        self.train_labels = train.labels.to(self.device)
        self.test_images = test.images.to(self.device)
        self.test_labels = test.labels.to(self.device)
        self.classes = train.classes
        self.train_set, self.test_set = train, test  # with their provenance (ImageSet.sources, file_sha256)
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
              memory_flip: bool = False, augment: str = "auto", autoaugment_per_image: bool = True,
              image_size: Optional[int] = None) -> "ExperimentData":
        """``image_size``: the size the network is fed; images stored at another size (the paper's 32x32 datasets
        under a pretrained backbone) are resized bilinearly on the device, batch by batch."""
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
        if spec.mean is None:  # a folder dataset: the statistics of this run's subset (saved in its checkpoint)
            spec = spec.normalized_with(*statistics(train.images[subset]))
        return cls(spec, train, test, subset, validation, pool, mem_examples, device, memory_flip, augment,
                   autoaugment_per_image, image_size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> Dict[str, int]:
        """How many images of each class the reduced training subset holds."""
        counts = torch.bincount(self.train_labels[self.subset.to(self.device)], minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist()))

    @classmethod
    def from_pool(cls, spec: DatasetSpec, pool: ImageSet, mem_examples: int, device="cpu",
                  image_size: Optional[int] = None) -> "ExperimentData":
        """A model file's own data (export.py): its memory pool, the reduced training subset it was trained on,
        with the normalisation it was trained with (``spec``); no test set (``with_test_images`` gives one)."""
        empty = ImageSet(pool.images[:0], pool.labels[:0], pool.classes)
        everything = torch.arange(len(pool))
        return cls(spec, pool, empty, everything, everything[:0], everything, mem_examples, device,
                   image_size=image_size)

    def with_test_images(self, test: ImageSet) -> "ExperimentData":
        """The same run's data with other images in the test set's place (predict.py: new images to explain)."""
        other = copy.copy(self)
        other.test_images, other.test_labels = test.images.to(self.device), test.labels.to(self.device)
        other.test_set = test
        return other

    def with_memory_pool(self, pool: torch.Tensor) -> "ExperimentData":
        """The same run's data with another memory pool (indices into the training set)."""
        other = copy.copy(self)
        other.memory_pool = pool
        return other

    def restricted(self, keep: torch.Tensor) -> "ExperimentData":
        """The same run's data with its training subset kept to positions ``keep`` of it (a fold's training folds,
        a subset less the images an audit suspects); a memory pool that is the subset is kept to them too. The
        normalisation stays the run's."""
        other = copy.copy(self)
        keep = torch.as_tensor(keep, dtype=torch.long)
        if torch.equal(self.memory_pool, self.subset):
            other.memory_pool = self.subset[keep]
        other.subset = self.subset[keep]
        return other

    def with_train_labels(self, labels: torch.Tensor) -> "ExperimentData":
        """The same run's data with other training labels (a noise study's flipped labels), everywhere they are
        read: training batches, memory sets, provenance records."""
        other = copy.copy(self)
        other.train_set = dataclasses.replace(self.train_set, labels=labels.cpu())
        other.train_labels = labels.to(self.device)
        return other

    # provenance -----------------------------------------------------------------------------------
    def source(self, index: int) -> str:
        """Where training image ``index`` came from: a folder dataset's file path relative to its root, or the
        official file and index of a paper dataset ("CIFAR10 data_batch_3 #1234")."""
        return self.train_set.source(int(index))

    def pool_record(self) -> Dict[str, list]:
        """The memory pool as a checkpoint records it, position by position: each image's source, label, the sha256
        of its pixels (16 hex digits: what the model saw) and, for a folder dataset, of its file. The one record of
        the pool: predict.py names memory samples from it, a dataset folder is checked against it."""
        pool = self.memory_pool.tolist()
        images = self.train_set.images
        sources, files = self.pool_sources()
        record = {"sources": sources, "labels": self.train_set.labels[pool].tolist(),
                  "pixels": [pixels_sha256(images[index]) for index in pool]}
        if files is not None:
            record["files"] = files
        return record

    def pool_sources(self) -> Tuple[List[str], Optional[List[str]]]:
        """(each pool image's source, each one's file sha256 or None), in pool order."""
        pool = self.memory_pool.tolist()
        files = self.train_set.file_sha256
        return [self.source(index) for index in pool], [files[index] for index in pool] if files is not None else None

    # training batches --------------------------------------------------------------------------
    def batches(self, batch_size: int, generator: torch.Generator,
                shard: Tuple[int, int] = (0, 1)) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled full batches of the subset, prepared: ``(images, labels)`` on the device.

        The last partial batch is dropped, as the paper; fewer images than a batch make one batch of all.
        ``shard=(rank, world_size)`` (data-parallel training) yields every rank's share of the same batches: the
        batch is drawn and augmented whole, then rank r keeps its images r, r + world_size, ...
        """
        rank, world_size = shard
        for indices, flips in self.batch_indices(batch_size, generator):
            images = self.train_images[indices]
            if flips is not None:
                images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
            if self.autoaugment is not None:
                images = self.autoaugment(images, generator)
            yield self._prepare(images[rank::world_size]), self.train_labels[indices[rank::world_size]]

    def batch_indices(self, batch_size: int, generator: torch.Generator
                      ) -> Iterator[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """One epoch's draws, which ``batches`` turns into images (and a frozen encoder's feature table into
        features): per batch, its indices into the training set and which images are flipped (None without flips),
        on the device. The generator's calls are the same whichever is made of them."""
        batch_size = min(batch_size, len(self.subset))
        order = self.subset[torch.randperm(len(self.subset), generator=generator)]
        for start in range(0, len(order) - batch_size + 1, batch_size):
            indices = order[start:start + batch_size].to(self.device)
            flips = (torch.rand(len(indices), generator=generator) < 0.5).to(self.device) if self.flip else None
            yield indices, flips

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
        return resize(normalize(images, self.spec.mean, self.spec.std), self.image_size)
