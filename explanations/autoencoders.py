"""The autoencoders of the counterfactual experiment, trained for the runs of an experiment folder: one per class
(on the images of that class) and one on every image, of the run's reduced training subset.

    DIR/autoencoders/<run>/class_<k>.pt, DIR/autoencoders/<run>/full.pt      (train_autoencoders.py)
    <saving_path>/<seed>/class_<k>.pt, .../full.pt                            (the paper's train_aes_svhn.py layout)

The paper's recipe (its train_aes_svhn.py): Adam (lr 1e-3), mean squared error on the normalised images, batches
of 32 shuffled, 4 epochs. Each autoencoder is seeded by (run seed, which one) and written atomically when it is
trained, with what it was trained on; a training interrupted half-way keeps the finished ones and trains the rest
(the result equals an uninterrupted one's). A folder of autoencoders for another dataset, subset or seed is
refused, when training and when loading.

The paper's code trained them on every training image but the validation split (``--ae_pool=full``), and its
per-class selection mixed the index spaces of two nested subsets (harmless only for that full pool). Our default
is the run's reduced subset, the small-data budget the model itself saw.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.nn import functional as F
from tqdm import tqdm

import datasets
from architectures.autoencoder import AutoEncoder
from base.errors import UserError
from base.files import atomic_torch_save
from core.checkpoints import Checkpoint, safe_torch_load
from core.experiment import AUTOENCODERS

PAPER_EPOCHS = 4  # NUM_EPOCHS_AE of the paper's train_aes_svhn.py
PAPER_BATCH_SIZE = 32
PAPER_LEARNING_RATE = 1e-3  # torch.optim.Adam's default, as the paper's script
AE_POOLS = ("subset", "full")  # the run's reduced subset (default), or every image but the validation split
FOLDER = AUTOENCODERS  # <experiment>/autoencoders/<run>/ (core/experiment.py moves them with their run)


class AutoencoderError(UserError, ValueError):
    """Autoencoders missing, or trained for another experiment."""


@dataclass(frozen=True)
class AutoencoderKey:
    """What an autoencoder was trained on: it must match the run it scores."""
    dataset_name: str
    train_examples: int
    seed: int
    pool: str
    epochs: int


def names(num_classes: int) -> List[str]:
    return [f"class_{k}" for k in range(num_classes)] + ["full"]


def run_folder(root: Path, checkpoint: Checkpoint, paper_layout: bool = False) -> Path:
    """Where a run's autoencoders are: ``<root>/<run>`` (ours, under the experiment folder), or ``<root>/<seed>``
    (the paper's scripts)."""
    return Path(root) / str(checkpoint.seed if paper_layout or checkpoint.run is None else checkpoint.run)


def training_pool(data: datasets.ExperimentData, pool: str) -> torch.Tensor:
    """Indices into the training set the autoencoders learn from."""
    if pool == "subset":
        return data.subset
    keep = torch.ones(len(data.train_labels), dtype=torch.bool)
    keep[data.validation] = False
    return torch.nonzero(keep).flatten()


def train_autoencoder(images_of, count: int, epochs: int, seed: int, device, num_channels: int = 3,
                      progress: Optional[tqdm] = None) -> AutoEncoder:
    """The paper's recipe on ``count`` images (``images_of(positions)`` gives them normalised), seeded."""
    torch.manual_seed(seed)
    autoencoder = AutoEncoder(num_channels).to(device)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=PAPER_LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    autoencoder.train()
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, PAPER_BATCH_SIZE):  # the last partial batch too, as a DataLoader
            images = images_of(order[start:start + PAPER_BATCH_SIZE])
            loss = F.mse_loss(autoencoder(images), images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if progress is not None:
            progress.update(1)
    return autoencoder.eval()


def train_for_run(checkpoint: Checkpoint, data: datasets.ExperimentData, folder: Path, epochs: int = PAPER_EPOCHS,
                  pool: str = "subset", device="cpu", progress: Optional[tqdm] = None) -> List[Path]:
    """Train (or keep, when already trained for this run) the run's autoencoders in ``folder``; their paths."""
    key = AutoencoderKey(checkpoint.dataset_name, checkpoint.train_examples, checkpoint.seed, pool, epochs)
    indices = training_pool(data, pool)
    labels = data.train_labels[indices.to(data.device)].cpu()
    written = []
    for which, name in enumerate(names(data.num_classes)):
        path = folder / f"{name}.pt"
        if path.exists():
            check_key(path, key, KEY_FIELDS, what="train_autoencoders.py")
            if progress is not None:
                progress.update(epochs)
            written.append(path)
            continue
        chosen = indices if name == "full" else indices[labels == which]
        if not len(chosen):
            raise AutoencoderError(f"the training pool of run {checkpoint.run} has no image of class {which}: "
                                   f"no autoencoder can learn it; use more training examples")
        autoencoder = train_autoencoder(lambda positions, chosen=chosen: data.memory_batch(chosen[positions]),
                                        len(chosen), epochs, seed=1000 * checkpoint.seed + which, device=device,
                                        progress=progress)
        atomic_torch_save({"model_state_dict": autoencoder.state_dict(), "trained_on": asdict(key), "name": name,
                           "images": len(chosen)}, path)
        written.append(path)
    return written


KEY_FIELDS = ("dataset_name", "train_examples", "seed", "pool", "epochs")
RUN_FIELDS = ("dataset_name", "train_examples", "seed")  # what a run's scores need to match


def check_key(path: Path, expected: AutoencoderKey, fields, what: str) -> Dict:
    """The file's content; refuses one trained with other ``fields`` than ``expected`` (a plain state dict, as the
    paper's scripts save, records nothing and is taken as it is)."""
    content = safe_torch_load(path)
    if not isinstance(content, dict):
        raise AutoencoderError(f"{path} is not an autoencoder checkpoint")
    recorded = content.get("trained_on")
    if isinstance(recorded, dict):
        differences = [f"{field} {recorded.get(field)!r} (expected {getattr(expected, field)!r})" for field in fields
                       if recorded.get(field) != getattr(expected, field)]
        if differences:
            raise AutoencoderError(f"{path} was trained for another experiment: {', '.join(differences)}; {what} "
                                   f"needs this run's autoencoders: move that folder away, or give another one")
    return content


def load_for_run(checkpoint: Checkpoint, folder: Path, num_classes: int, device="cpu") -> Dict[str, AutoEncoder]:
    """The run's autoencoders by name (class_<k>, full), checked against the run."""
    missing = [name for name in names(num_classes) if not (folder / f"{name}.pt").is_file()]
    if missing:
        raise AutoencoderError(f"{folder} lacks the autoencoders {missing} of run {checkpoint.run}: train them with "
                               f"python train_autoencoders.py --path_models={checkpoint.path.parent}")
    expected = AutoencoderKey(checkpoint.dataset_name, checkpoint.train_examples, checkpoint.seed, "", 0)
    autoencoders = {}
    for name in names(num_classes):
        content = check_key(folder / f"{name}.pt", expected, RUN_FIELDS, what="counterfactuals.py")
        state = content.get("model_state_dict", content)
        autoencoder = AutoEncoder(3)
        try:
            autoencoder.load_state_dict(state)
        except (RuntimeError, TypeError) as error:
            raise AutoencoderError(f"{folder / (name + '.pt')} is not the paper's autoencoder ("
                                   f"{str(error).splitlines()[0]})") from None
        autoencoders[name] = autoencoder.to(device).eval()
    return autoencoders
