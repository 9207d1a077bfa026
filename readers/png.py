"""uint8 images as PNG bytes and back, exactly: how a model file carries its memory pool compactly (export.py).

    data = to_png(image)             # uint8 [3, H, W] -> bytes (lossless)
    image = from_png(data)           # the very pixels
"""
from __future__ import annotations

import io

import numpy as np
import torch


def to_png(image: torch.Tensor) -> bytes:
    """A uint8 [3, H, W] image as PNG bytes (lossless: ``from_png`` gives the very pixels back)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> torch.Tensor:
    """PNG bytes as a uint8 [3, H, W] image; a ValueError for bytes that are no RGB PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG" or image.mode != "RGB":
                raise ValueError(f"expected an RGB PNG, got {image.format} {image.mode}")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"not a readable PNG ({error})") from None
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
