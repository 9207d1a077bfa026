"""What every reader returns and raises: an ImageSet of uint8 images, a DatasetError a user can act on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from base.errors import UserError


class DatasetError(UserError, RuntimeError):
    """A dataset is missing, corrupt, or asked for with impossible sizes. The message says what to do."""


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: Tuple[str, ...]
    # where each image came from (its provenance): an official file and index ("CIFAR10 data_batch_3 #1234"), or a
    # folder dataset's file path relative to the dataset root ("train/cat/0042.jpg"); None: unknown
    sources: Optional[Tuple[str, ...]] = None
    file_sha256: Optional[Tuple[str, ...]] = None  # a folder dataset's files' sha256, in the same order
    notes: Tuple[str, ...] = ()  # what the reader has to say (files it skipped, a cache it could not write)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DatasetError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DatasetError(f"labels must be in [0, {len(self.classes) - 1}], found "
                               f"[{int(self.labels.min())}, {int(self.labels.max())}]")
        for name in ("sources", "file_sha256"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.labels):
                raise DatasetError(f"{len(self.labels)} images but {len(value)} {name}")

    def __len__(self):
        return len(self.labels)

    def take(self, indices) -> "ImageSet":
        """The images at ``indices`` (a tensor or a list), with their provenance."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        rows = indices.tolist()
        pick = (lambda values: tuple(values[i] for i in rows) if values is not None else None)  # noqa: E731
        return ImageSet(self.images[indices], self.labels[indices], self.classes, pick(self.sources),
                        pick(self.file_sha256))

    def source(self, index: int) -> str:
        """Where image ``index`` came from ("#index" when the reader did not say)."""
        return self.sources[index] if self.sources is not None else f"#{index}"


def ensure_files(folder: Path, names: Sequence[str], url: str, download: bool, what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing and not download:
        raise DatasetError(f"{what}: missing {missing} in {folder}. Download {url} and put the files there "
                           f"(or allow the download: download: True in the config)")

