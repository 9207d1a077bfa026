"""What every reader returns and raises: an ImageSet of uint8 images, a DatasetError a user can act on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import torch

from base.errors import UserError


class DatasetError(UserError, RuntimeError):
    """A dataset is missing, corrupt, or asked for with impossible sizes. The message says what to do."""


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: Tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DatasetError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DatasetError(f"labels must be in [0, {len(self.classes) - 1}], found "
                               f"[{int(self.labels.min())}, {int(self.labels.max())}]")

    def __len__(self):
        return len(self.labels)


def ensure_files(folder: Path, names: Sequence[str], url: str, download: bool, what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing and not download:
        raise DatasetError(f"{what}: missing {missing} in {folder}. Download {url} and put the files there "
                           f"(or allow the download: download: True in the config)")

