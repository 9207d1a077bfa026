"""Explain new images with a trained model (predict.py): the predicted class and its probability, the memory
samples with positive weight (the top example of the predicted class and the top counterfactual of another), over
the evaluation's memory draws, and a figure with the input's Integrated Gradients heatmap.

    images = read_images(image_paths(["photo.jpg", "folder/"]), image_size=32)
    data = checkpoint.own_data().with_test_images(images)          # or checkpoint.run_data(...): the same
    cache = FeatureCache.build(model, data, len(images), checkpoint.seed, draws)
    for explained in explain(model, cache, data.classes, paths): explained.to_json()

Each image is decoded as the training images were (RGB, resized to the run's image_size) and normalised with the
run's statistics. Memory models: every draw is one memory set for all the images, from the evaluation's seeded
streams (core/evaluation.py), as eval.py draws them; a sample's weight is its content weight averaged over the
draws (0 in a draw that did not hold it), and its own prediction comes from a second memory draw, as for every
explanation of this project.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import datasets
from architectures import Classifier
from base.plots import pyplot
from core.evaluation import FeatureCache
from core.memory_policies import memory_sets
from core.support import support
from readers.folders import IMAGE_SUFFIXES, decode, to_rgb

from .accuracy import ExplanationError
from .figures import FIGURE_DPI, save_figure, short_source, show_attribution, show_image


def image_paths(arguments: Sequence[str]) -> List[Path]:
    """The images named on the command line: files, and the images of folders (sorted, not recursive)."""
    paths: List[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.name.startswith("."))
            if not found:
                raise ExplanationError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise ExplanationError(f"{path} does not exist: give image files or folders of images")
    if not paths:
        raise ExplanationError("no image given: predict.py --path_model=FILE IMAGE_OR_FOLDER [...]")
    return paths


def read_images(images: Sequence, image_size: int, classes: Sequence[str] = ("unknown",)
                ) -> Tuple[datasets.ImageSet, List[str]]:
    """Images given as file paths, Pillow images, numpy arrays (H x W or H x W x 3/4, uint8, or floats in [0, 1]) or
    tensors ([3, H, W] or [N, 3, H, W], likewise), decoded as a folder dataset's are (RGB, resized to
    ``image_size``): (uint8 ImageSet [N, 3, S, S], each image's name: its path, or "#<i>")."""
    from PIL import Image

    arrays, names = [], []
    for item in images:
        if isinstance(item, torch.Tensor) and item.dim() == 4:
            parts = [(f"#{len(names) + i}", part) for i, part in enumerate(item)]
        else:
            parts = [(str(item) if isinstance(item, (str, Path)) else f"#{len(names)}", item)]
        for name, part in parts:
            if isinstance(part, (str, Path)):
                arrays.append(decode(Path(part), image_size))
            elif isinstance(part, Image.Image):
                arrays.append(to_rgb(part, image_size))
            else:
                arrays.append(to_rgb(Image.fromarray(_as_uint8_array(part, name)), image_size))
            names.append(name)
    if not arrays:
        raise ExplanationError("no image given")
    tensor = torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))
    return datasets.ImageSet(tensor, torch.zeros(len(arrays), dtype=torch.long), tuple(classes)), names


def _as_uint8_array(image, name: str) -> np.ndarray:
    """A numpy array or tensor as uint8 H x W (x C) for Pillow: channels last; floats in [0, 1] scaled to 0-255."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
    if not isinstance(array, np.ndarray):
        raise ExplanationError(f"image {name}: expected a file path, a Pillow image, a numpy array or a tensor, got "
                               f"{type(image).__name__}")
    if isinstance(image, torch.Tensor) and array.ndim == 3:
        array = array.transpose(1, 2, 0)  # tensors are [C, H, W]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ExplanationError(f"image {name}: expected H x W or H x W x 3 (a tensor: [3, H, W]), got shape "
                               f"{array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all() or array.min() < 0 \
                or array.max() > 1:
            raise ExplanationError(f"image {name}: expected uint8 pixels or floats in [0, 1], got {array.dtype} "
                                   f"in [{array.min()}, {array.max()}]")
        array = np.round(array * 255).astype(np.uint8)
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array


@dataclass
class MemorySample:
    position: int  # in the memory pool (the reduced training subset)
    source: str  # where the training image came from: a folder dataset's file path, or "CIFAR10 data_batch_3 #1234"
    label: str  # its class (the training label)
    predicted: str  # what the model predicts for it
    weight: float  # its content weight, averaged over the memory sets
    kind: str  # example (predicted in the input's predicted class) or counterfactual
    decisive: bool = False  # left out of the memory alone, the prediction changes
    file_sha256: Optional[str] = None  # a folder dataset's file's sha256


@dataclass
class Explained:
    image: str
    predicted: str
    probability: float
    probabilities: Dict[str, float]
    memory: List[MemorySample] = field(default_factory=list)  # positive weight, highest first
    draws: int = 1  # memory sets the prediction averages over
    memory_policy: Optional[str] = None  # which memory it read (core/memory_policies.py); None: no memory head
    support: Optional[float] = None  # how much the memory pool resembles the input (core/support.py)
    supported: Optional[bool] = None  # the support at or above the model's threshold (95 % of in-distribution)
    heatmap: Optional[np.ndarray] = field(default=None, repr=False)  # Integrated Gradients [3, H, W], when asked

    @property
    def example(self) -> Optional[MemorySample]:
        return next((sample for sample in self.memory if sample.kind == "example"), None)

    @property
    def counterfactual(self) -> Optional[MemorySample]:
        return next((sample for sample in self.memory if sample.kind == "counterfactual"), None)

    @property
    def decisive(self) -> List[MemorySample]:
        return [sample for sample in self.memory if sample.decisive]

    def to_json(self) -> dict:
        out = {"image": self.image, "predicted": self.predicted, "probability": round(self.probability, 6),
               "probabilities": {name: round(p, 6) for name, p in self.probabilities.items()}, "draws": self.draws}
        if self.support is not None:
            # unrounded: `supported` is support >= the model's threshold, which a rounded support could contradict
            out.update(support=self.support, supported=self.supported)
        if self.memory_policy is not None:
            out.update(memory_policy=self.memory_policy,
                       example=asdict(self.example) if self.example else None,
                       counterfactual=asdict(self.counterfactual) if self.counterfactual else None,
                       decisive=[sample.position for sample in self.decisive],
                       memory=[asdict(sample) for sample in self.memory])
        return out

    def line(self) -> str:
        """One line for a terminal."""
        text = f"{self.image}: {self.predicted} ({100 * self.probability:.1f}%)"
        if self.memory_policy is None:
            return text
        for name, sample in (("example", self.example), ("counterfactual", self.counterfactual)):
            text += (f" | top {name}: {sample.source} ({sample.label}, weight {sample.weight:.3f})" if sample
                     else f" | no {name}")
        decisive = self.decisive
        text += (f" | decisive: {', '.join(sample.source for sample in decisive)}" if decisive else
                 " | no single memory image decides it")
        return text + (" | unsupported: no training image resembles it" if self.supported is False else "")


@dataclass
class MemoryChoice:
    """What a prediction reads from the memory pool: a policy (core/memory_policies.py) over the kept positions."""
    policy: str = "draws"
    kept: Optional[torch.Tensor] = None  # positions in the pool it may draw from (None: all of them)


@torch.no_grad()
def explain(model: Classifier, cache: FeatureCache, classes: Sequence[str], names: Sequence[str],
            sources: Optional[Sequence[str]] = None, files: Optional[Sequence[str]] = None,
            choice: Optional[MemoryChoice] = None, decisive: bool = True,
            threshold: Optional[dict] = None) -> List[Explained]:
    """Every cached test image explained (``cache`` holds the new images as its test set, in one batch), with the
    memory ``choice`` (default: the evaluation's draws); ``sources`` / ``files`` name the pool's images. A memory
    sample is decisive when leaving it alone out of the memory sets that gave it weight changes the prediction
    (``decisive=False``: not computed). ``threshold`` (core/support.py's record): each image's support from the
    whole pool, and whether it reaches the threshold."""
    model.eval()
    if not model.uses_memory:
        probabilities = torch.softmax(model.classify(cache.test_features).float(), 1)
        return [_explained(name, probabilities[row], classes) for row, name in enumerate(names)]
    choice = choice or MemoryChoice()
    generator, auxiliary = cache.generators()
    pool = len(cache.memory_labels)
    kept = torch.arange(pool) if choice.kept is None else choice.kept
    sets = memory_sets(choice.policy, cache.memory_labels.cpu(), kept, cache.mem_examples, cache.draws, generator,
                       cache.protocol.flip)
    rows = len(names)
    weights = torch.zeros(rows, pool)
    best = torch.zeros(rows, pool)  # the highest weight a sample had in one set, and its prediction then
    predictions = torch.full((rows, pool), -1, dtype=torch.long)
    per_set = []  # (features, labels, positions, probabilities [rows, C], weights [rows, M]) of every memory set
    for positions, flips in sets:
        memory = cache.features_at(positions, flips)
        labels = cache.memory_labels[positions.to(cache.memory_labels.device)]
        logits, drawn = model.classify(cache.test_features, memory, labels, return_weights=True)
        other = cache.draw(auxiliary)  # the memory the memory samples are classified with (the paper's protocol)
        own = model.classify(memory, other.features, other.labels).argmax(1).cpu()
        drawn = drawn.float().cpu()
        per_set.append((memory, labels, positions, torch.softmax(logits.float(), 1).cpu(), drawn))
        index = positions.expand(rows, -1)
        weights.scatter_add_(1, index, drawn / len(sets))
        better = drawn > best.gather(1, index)
        best.scatter_(1, index, torch.where(better, drawn, best.gather(1, index)))
        predictions.scatter_(1, index, torch.where(better, own.expand(rows, -1), predictions.gather(1, index)))
    probabilities = sum(item[3] for item in per_set) / len(sets)
    pool_labels = cache.memory_labels.cpu()
    scores = (support(model, cache.test_features, cache.memory_features, cache.memory_labels, threshold["score"])
              if threshold else None)
    explained = []
    for row, name in enumerate(names):
        item = _explained(name, probabilities[row], classes, len(sets), choice.policy)
        if scores is not None:
            item.support, item.supported = float(scores[row]), bool(scores[row] >= threshold["threshold"])
        predicted = int(probabilities[row].argmax())
        order = torch.sort(weights[row], descending=True, stable=True).indices.tolist()  # ties: pool order
        for position in [p for p in order if weights[row, p] > 0]:
            own = int(predictions[row, position])
            item.memory.append(MemorySample(
                position, sources[position] if sources is not None else f"memory pool #{position}",
                classes[int(pool_labels[position])], classes[own], round(float(weights[row, position]), 6),
                "example" if own == predicted else "counterfactual",
                decisive and _decides(model, cache.test_features[row:row + 1], per_set, probabilities[row], row,
                                      position),
                files[position] if files is not None else None))
        explained.append(item)
    return explained


def first_memory_set(cache: FeatureCache, choice: Optional[MemoryChoice] = None):
    """(positions, flips) of the first memory set ``explain`` reads with ``choice``."""
    choice = choice or MemoryChoice()
    kept = torch.arange(len(cache.memory_labels)) if choice.kept is None else choice.kept
    return memory_sets(choice.policy, cache.memory_labels.cpu(), kept, cache.mem_examples, 1, cache.generators()[0],
                       cache.protocol.flip)[0]


def _decides(model: Classifier, features: torch.Tensor, per_set: list, probabilities: torch.Tensor, row: int,
             position: int) -> bool:
    """Whether leaving pool ``position`` out of every memory set that gave it weight for this image changes the
    prediction (the mean of the sets' probabilities): leave-one-out on cached features."""
    changed = probabilities.clone()
    for memory, labels, positions, set_probabilities, set_weights in per_set:
        where = (positions == position).nonzero().flatten()
        if not len(where) or set_weights[row, where[0]] <= 0:
            continue  # outside the sparse support: leaving it out changes nothing
        keep = torch.ones(len(positions), dtype=torch.bool)
        keep[where] = False
        logits = model.classify(features, memory[keep.to(memory.device)], labels[keep.to(labels.device)])
        changed += (torch.softmax(logits.float(), 1)[0].cpu() - set_probabilities[row]) / len(per_set)
    return int(changed.argmax()) != int(probabilities.argmax())


def _explained(name: str, probabilities: torch.Tensor, classes: Sequence[str], draws: int = 1,
               policy: Optional[str] = None) -> Explained:
    predicted = int(probabilities.argmax())
    return Explained(str(name), classes[predicted], float(probabilities[predicted]),
                     {name: float(p) for name, p in zip(classes, probabilities.tolist())}, draws=draws,
                     memory_policy=policy)


def input_attribution(model: Classifier, image: torch.Tensor, memory_features: Optional[torch.Tensor],
                      memory_labels: Optional[torch.Tensor], target: int, spec: datasets.DatasetSpec,
                      n_steps: int = 40, baseline: str = "white"):
    """Integrated Gradients (captum) of ``target`` for one input image, the memory set's features held fixed: the
    input moves from its baseline (attribution.baseline_images) to itself. Returns (attribution [3, H, W], |delta|,
    output difference)."""
    from captum.attr import IntegratedGradients

    from .attribution import baseline_images

    def forward(inputs):
        features = model.encode(inputs)
        if memory_features is None:
            return model.classify(features)
        return model.classify(features, memory_features, memory_labels)

    model.eval()
    inputs = image[None]
    base = baseline_images(baseline, inputs.shape, spec, image.device)
    with torch.enable_grad():
        attribution, delta = IntegratedGradients(forward).attribute(inputs, baselines=base, target=target,
                                                                    n_steps=n_steps, internal_batch_size=n_steps,
                                                                    return_convergence_delta=True)
    with torch.no_grad():
        difference = (forward(inputs) - forward(base))[0, target].item()
    return attribution[0], float(delta.abs().item()), difference


def prediction_figure(path: Path, model: Classifier, data: datasets.ExperimentData, cache: FeatureCache, row: int,
                      explained: Explained, max_samples: int = 8, n_steps: int = 40, sign: str = "positive",
                      choice: Optional[MemoryChoice] = None) -> float:
    """One PNG for one explained image: the input and its Integrated Gradients heatmap (the first memory set of
    ``explain`` held fixed), then its memory samples with positive weight, highest first, at most ``max_samples``
    with the top counterfactual among them (green: example, red: counterfactual; each named by its source). Returns
    the IG convergence delta."""
    plt = pyplot()
    image = data.test_batch(torch.tensor([row]))[0][0]
    memory_features = memory_labels = None
    if model.uses_memory:
        positions, flips = first_memory_set(cache, choice)
        memory_features, memory_labels = cache.features_at(positions, flips), cache.memory_labels[positions]
    target = data.classes.index(explained.predicted)
    attribution, delta, _ = input_attribution(model, image, memory_features, memory_labels, target, data.spec, n_steps)
    samples = explained.memory[:max_samples]
    top = explained.counterfactual  # shown even where examples outweigh it
    if top is not None and top not in samples:
        samples[-1] = top
    columns = 2 + len(samples)
    figure = plt.figure(figsize=(1.8 * columns + 0.6, 2.9), dpi=FIGURE_DPI)
    grid = figure.add_gridspec(1, columns + 1, width_ratios=[1, 1, 0.15] + [1] * len(samples), left=0.01,
                               right=0.99, bottom=0.17, top=0.74, wspace=0.12)
    show_image(figure.add_subplot(grid[0, 0]), image, data.spec,
               f"{Path(explained.image).name}\npredicted {explained.predicted}\n{100 * explained.probability:.1f}%")
    show_attribution(figure, figure.add_subplot(grid[0, 1]), attribution, image, data.spec,
                     "Integrated Gradients\n(of the prediction)", sign)
    pool = data.memory_pool
    for column, sample in enumerate(samples, start=3):
        memory_image = data.memory_batch(pool[sample.position:sample.position + 1])[0]
        show_image(figure.add_subplot(grid[0, column]), memory_image, data.spec,
                   f"{short_source(sample.source)}\nw={sample.weight:.3f}{', decisive' if sample.decisive else ''}\n"
                   f"{sample.label}, predicted {sample.predicted}\n{sample.kind}",
                   color="green" if sample.kind == "example" else "red")
    more = len(explained.memory) - len(samples)
    if model.uses_memory:
        figure.suptitle(f"memory samples with positive weight ({explained.memory_policy} memory, mean of "
                        f"{explained.draws} sets): {len(explained.memory)}" + (f" ({more} more not shown)" if more else ""),
                        fontsize=8, x=0.99, ha="right", y=0.98)
    save_figure(figure, path)
    plt.close(figure)
    return delta
