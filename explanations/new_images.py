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
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

import datasets
from architectures import Classifier
from base.plots import pyplot
from core.evaluation import FeatureCache, memory_pass
from readers.folders import IMAGE_SUFFIXES, decode

from .accuracy import ExplanationError
from .figures import FIGURE_DPI, save_figure, show_attribution, show_image


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


def read_images(paths: Sequence[Path], image_size: int, classes: Sequence[str]) -> datasets.ImageSet:
    """The images decoded as a folder dataset's are (RGB, resized to ``image_size``), uint8 [N, 3, S, S]."""
    arrays = [decode(path, image_size) for path in paths]
    images = torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))
    return datasets.ImageSet(images, torch.zeros(len(arrays), dtype=torch.long), tuple(classes))


@dataclass
class MemorySample:
    position: int  # in the memory pool (the reduced training subset)
    label: str  # its class (the training label)
    predicted: str  # what the model predicts for it
    weight: float  # its content weight, averaged over the draws
    kind: str  # example (predicted in the input's predicted class) or counterfactual


@dataclass
class Explained:
    image: str
    predicted: str
    probability: float
    probabilities: Dict[str, float]
    memory: List[MemorySample] = field(default_factory=list)  # positive weight, highest first
    draws: int = 1

    @property
    def example(self) -> Optional[MemorySample]:
        return next((sample for sample in self.memory if sample.kind == "example"), None)

    @property
    def counterfactual(self) -> Optional[MemorySample]:
        return next((sample for sample in self.memory if sample.kind == "counterfactual"), None)

    def to_json(self) -> dict:
        out = {"image": self.image, "predicted": self.predicted, "probability": round(self.probability, 6),
               "probabilities": {name: round(p, 6) for name, p in self.probabilities.items()}, "draws": self.draws}
        if self.memory or self.draws > 1:
            out.update(example=asdict(self.example) if self.example else None,
                       counterfactual=asdict(self.counterfactual) if self.counterfactual else None,
                       memory=[asdict(sample) for sample in self.memory])
        return out

    def line(self) -> str:
        """One line for a terminal."""
        text = f"{self.image}: {self.predicted} ({100 * self.probability:.1f}%)"
        for name, sample in (("example", self.example), ("counterfactual", self.counterfactual)):
            if self.memory:
                text += (f" | top {name}: training image {sample.position} ({sample.label}, weight {sample.weight:.3f})"
                         if sample else f" | no {name}")
        return text


@torch.no_grad()
def explain(model: Classifier, cache: FeatureCache, classes: Sequence[str], paths: Sequence[Path]) -> List[Explained]:
    """Every cached test image explained (``cache`` holds the new images as its test set, in one batch)."""
    model.eval()
    if not model.uses_memory:
        probabilities = torch.softmax(model.classify(cache.test_features).float(), 1)
        return [_explained(path, probabilities[row], classes) for row, path in enumerate(paths)]
    generator, auxiliary = cache.generators()
    pool = len(cache.memory_labels)
    weights = torch.zeros(len(paths), pool)
    best = torch.zeros(len(paths), pool)  # the highest weight a sample had in one draw, and its prediction then
    predictions = torch.full((len(paths), pool), -1, dtype=torch.long)
    probabilities = torch.zeros(len(paths), len(classes))
    for _ in range(cache.draws):
        result = memory_pass(model, cache, generator, auxiliary)
        probabilities += torch.softmax(result.logits.float().cpu(), 1) / cache.draws
        positions, drawn = result.memory_positions.cpu(), result.content_weights.float().cpu()
        weights.scatter_add_(1, positions, drawn / cache.draws)
        better = drawn > best.gather(1, positions)
        best.scatter_(1, positions, torch.where(better, drawn, best.gather(1, positions)))
        predictions.scatter_(1, positions, torch.where(better, result.memory_predictions.cpu(),
                                                      predictions.gather(1, positions)))
    labels = cache.memory_labels.cpu()
    explained = []
    for row, path in enumerate(paths):
        item = _explained(path, probabilities[row], classes, cache.draws)
        predicted = int(probabilities[row].argmax())
        order = torch.sort(weights[row], descending=True, stable=True).indices.tolist()  # ties: pool order
        for position in [p for p in order if weights[row, p] > 0]:
            own = int(predictions[row, position])
            item.memory.append(MemorySample(position, classes[int(labels[position])], classes[own],
                                            round(float(weights[row, position]), 6),
                                            "example" if own == predicted else "counterfactual"))
        explained.append(item)
    return explained


def _explained(path: Path, probabilities: torch.Tensor, classes: Sequence[str], draws: int = 1) -> Explained:
    predicted = int(probabilities.argmax())
    return Explained(str(path), classes[predicted], float(probabilities[predicted]),
                     {name: float(p) for name, p in zip(classes, probabilities.tolist())}, draws=draws)


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
                      explained: Explained, max_samples: int = 8, n_steps: int = 40, sign: str = "positive") -> float:
    """One PNG for one explained image: the input and its Integrated Gradients heatmap (the memory of the first
    draw held fixed), then its memory samples with positive weight, highest first, at most ``max_samples`` with the
    top counterfactual among them (green: example, red: counterfactual). Returns the IG convergence delta."""
    plt = pyplot()
    image = data.test_batch(torch.tensor([row]))[0][0]
    memory_features = memory_labels = None
    if model.uses_memory:
        positions, flips = cache.protocol.draw(cache.generators()[0])  # the first draw of explain's passes
        memory_features, memory_labels = cache.memory_features[positions], cache.memory_labels[positions]
        if flips is not None:
            memory_features = torch.where(flips[:, None], cache.flipped_memory_features[positions], memory_features)
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
                   f"w={sample.weight:.3f}\n{sample.label}, predicted {sample.predicted}\n{sample.kind}",
                   color="green" if sample.kind == "example" else "red")
    more = len(explained.memory) - len(samples)
    if model.uses_memory:
        figure.suptitle(f"memory samples with positive weight, mean of {explained.draws} draws: {len(explained.memory)}"
                        + (f" ({more} more not shown)" if more else ""), fontsize=8, x=0.99, ha="right", y=0.98)
    save_figure(figure, path)
    plt.close(figure)
    return delta
