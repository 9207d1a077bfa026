"""A model file you can hand over: a checkpoint plus what explaining a new image needs without the training data.

    export_model(checkpoint, data, Path("model.pt"))     # data: the run's (Checkpoint.run_data)
    checkpoint = Checkpoint.load("model.pt")             # checkpoint.memory_pool: the images, uint8
    data = checkpoint.own_data()                         # no dataset folder needed

The file holds the weights, the run's metadata and config (network, head settings, image size), the class names,
the normalisation, and the memory pool: the reduced training subset the run drew its memory sets from, as PNG bytes
(each image at the size of its own file where resizing that gives the model's pixels again, and smaller: a folder of
32 px images under a 224-px backbone stores about a fourteenth), with their labels and where each came from. It is
plain data (``torch.load(..., weights_only=True)``), written atomically, and every script that reads a checkpoint
reads it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

import datasets
from base.files import FileError, atomic_torch_save
from readers import to_png
from readers.folders import decode, resized

from .checkpoints import EXPORT_FORMAT, Checkpoint, CheckpointError, safe_torch_load


def check_export_target(output: Path, source: Path, overwrite: bool = False) -> Optional[str]:
    """Where an export may be written: not over its own checkpoint, not over a run's files (``<r>.pt``, a state),
    not over a file that is no exported model, and over another model's export only with ``overwrite``. Returns
    what it replaces (an earlier export of the same checkpoint, or the one ``overwrite`` allows), or None."""
    output = Path(output)
    if output.is_dir():
        raise FileError(f"--output={output} is a folder; give a file name, e.g. {output / 'model.pt'}")
    if output.exists() and output.resolve() == Path(source).resolve():
        raise FileError(f"--output={output} is the checkpoint being exported; choose another file")
    if output.name.endswith(".state.pt") or (output.stem.isdigit() and output.suffix == ".pt"):
        raise FileError(f"--output={output} is named as a run's checkpoint or state (<run>.pt); an exported model "
                        f"needs another name, e.g. model.pt")
    if not output.exists():
        return None
    try:
        content = safe_torch_load(output)
    except CheckpointError:
        content = None
    if not (isinstance(content, dict) and content.get("export", {}).get("format") == EXPORT_FORMAT):
        raise FileError(f"--output={output} exists and is not an exported model: refusing to replace it; "
                        f"choose another file")
    earlier = content["export"].get("source")
    what = (f"an earlier export of {earlier} ({content.get('model_name')} {content.get('modality')}, "
            f"{output.stat().st_size / 2 ** 20:.1f} MiB)")
    if earlier is not None and Path(earlier).resolve() != Path(source).resolve() and not overwrite:
        raise FileError(f"--output={output} is {what}, another model: give --overwrite to replace it, or choose "
                        f"another file")
    return what


def export_model(checkpoint: Checkpoint, data: datasets.ExperimentData, output: Path, overwrite: bool = False,
                 dataset_dir: Optional[Path] = None) -> Path:
    """Write ``checkpoint`` with its run's memory pool (``data``) as one self-contained file: the pool's images as
    PNG bytes (lossless; ``pool_png``), its record (each image's source, label and pixel hash:
    ``ExperimentData.pool_record``). ``dataset_dir``: the folder dataset's root, whose files ``pool_png`` reads
    (default: the run's)."""
    check_export_target(output, checkpoint.path, overwrite)
    output = Path(output)
    metadata = checkpoint.metadata.to_dict()
    metadata["classes"] = list(data.classes)
    metadata["normalization"] = {"mean": list(data.spec.mean), "std": list(data.spec.std)}
    metadata["memory_pool"] = data.pool_record()
    pool = data.memory_pool.tolist()
    saved = checkpoint.saved_config
    dataset_dir = dataset_dir or (saved.dataset_dir if saved is not None else None)
    root = Path(dataset_dir) if dataset_dir is not None and data.spec.resizes else None
    content = {"model_state_dict": checkpoint.state_dict, **metadata,
               "memory_png": [torch.frombuffer(bytearray(pool_png(data, index, root)), dtype=torch.uint8)
                              for index in pool],
               "memory_labels": data.train_set.labels[pool].contiguous(),
               "memory_size": list(data.train_set.images.shape[-2:]),
               "export": {"format": EXPORT_FORMAT, "version": 3, "source": str(checkpoint.path),
                          "exported": time.strftime("%Y-%m-%d %H:%M")}}
    atomic_torch_save(content, output)
    return output


def pool_png(data: datasets.ExperimentData, index: int, root: Optional[Path]) -> bytes:
    """Training image ``index`` as PNG bytes, the smaller of two: the pixels the model saw, and (a folder dataset
    under ``root``) its file's own pixels, when resizing them as the folder reader does (``readers.folders.resized``,
    at loading too) gives the very pixels the model saw. A 32 px image under a 224-px model: its own 32 px, a
    fiftieth of the pixels."""
    image = data.train_set.images[index]
    seen = to_png(image)
    sources = data.train_set.sources
    path = root / sources[index] if root is not None and sources is not None else None
    if path is None or not path.is_file() or _pixels(path) >= image.shape[1] * image.shape[2]:
        return seen  # a file as large as the model's image or larger (a photo) is not decoded and encoded again
    try:
        native = decode(path, None)
    except datasets.DatasetError:
        return seen
    own = to_png(torch.from_numpy(native.copy()).permute(2, 0, 1))
    if len(own) >= len(seen) or not torch.equal(resized(native, image.shape[-1]), image):
        return seen
    return own


def _pixels(path: Path) -> int:
    """How many pixels an image file holds, from its header (0 when Pillow cannot tell)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size[0] * image.size[1]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0
