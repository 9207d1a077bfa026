"""Explanations: explanation accuracy on cached features, memory images, IG heatmaps, prototype figures.

Memory heads (memory, encoder_memory, protonet, matching): the memory samples with positive weight explain a
prediction, by example when the model predicts them in the same class as the input, by counterfactual
otherwise. A memory sample's own prediction comes from the model with another memory draw, as the paper.
The weights are Memory Wrap's sparse content weights, Matching Networks' attention, and for ProtoNet each
member's share of the input's similarity to the winning prototype (architectures/protonet.py).

Prototype heads (prototypes, hyperspherical, deepncm): the training images nearest to each class prototype,
and each test image's distances to the prototypes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

import datasets
from architectures import Classifier, head_entry, list_heads
from core.checkpoints import Checkpoint
from core.config import PAPER_CODE_EVALUATION
from base.errors import UserError
from base.files import atomic_write_bytes
from core.evaluation import FeatureCache, MemoryPass, memory_pass


class ExplanationError(UserError, ValueError):
    """A request the explanation scripts cannot serve (a model without memory...)."""


MEMORY_POOLS = ("run", "full")  # explanation_accuracy.py --memory_pool
PAPER_SPLIT_SEED = 42  # the seed of the paper's data loaders when its scripts pass none


def paper_memory_pool(data: datasets.ExperimentData) -> torch.Tensor:
    """The pool the paper's explanation_accuracy.py drew memory sets from (``--memory_pool=full``): every
    training image for CIFAR10, else every image left after the paper loaders' validation split (seed 42;
    6000 images, 10 for CINIC10) -- not the run's reduced subset."""
    count = len(data.train_labels)
    if data.spec.name == "CIFAR10":
        return torch.arange(count)
    val_examples = PAPER_CODE_EVALUATION.get(data.spec.name, {}).get("val_examples", len(data.validation))
    return datasets.split_indices(count, datasets.ALL_TRAIN_EXAMPLES, val_examples, seed=PAPER_SPLIT_SEED)[0]


def memory_modalities() -> List[str]:
    """The heads whose predictions memory samples explain."""
    return [name for name in list_heads() if head_entry(name).uses_memory]


def prototype_modalities() -> List[str]:
    """The heads that classify by distances to class prototypes (they define ``distances``)."""
    return [name for name in list_heads() if hasattr(head_entry(name).factory, "distances")]


def require_explainable(checkpoint: Checkpoint, modalities: List[str], what: str) -> None:
    """One line naming the modalities ``what`` serves, for a checkpoint of another modality."""
    if checkpoint.modality not in modalities:
        reason = "it has no memory" if not head_entry(checkpoint.modality).uses_memory else "it is not supported"
        raise ExplanationError(f"{checkpoint.path} is a {checkpoint.modality} model: {reason}, so {what} cannot "
                               f"explain it; {what} serves the modalities {modalities}")


def require_memory_model(checkpoint: Checkpoint, what: str = "this script") -> None:
    require_explainable(checkpoint, memory_modalities(), what)


# --- explanation accuracy -------------------------------------------------------------------------

@dataclass
class ExplanationScores:
    explanation_accuracy: float  # % of test images whose top memory sample is predicted in the input's predicted class
    counterfactual_accuracy: Optional[float]  # accuracy on the images whose top sample is a counterfactual (None: none)
    example_accuracy: Optional[float]  # accuracy on the images whose top sample is an explanation by example
    counterfactuals: int
    examples: int


def top_sample_scores(result: MemoryPass, labels: torch.Tensor) -> ExplanationScores:
    top = result.content_weights.argmax(1)
    top_prediction = result.memory_predictions.gather(1, top[:, None]).squeeze(1)
    predictions = result.predictions
    by_example = (top_prediction == predictions).cpu()
    correct = (predictions == labels).cpu()
    examples, counterfactuals = int(by_example.sum()), int((~by_example).sum())
    return ExplanationScores(
        explanation_accuracy=100.0 * by_example.float().mean().item(),
        counterfactual_accuracy=100.0 * correct[~by_example].float().mean().item() if counterfactuals else None,
        example_accuracy=100.0 * correct[by_example].float().mean().item() if examples else None,
        counterfactuals=counterfactuals, examples=examples)


@torch.no_grad()
def explanation_scores(model: Classifier, cache: FeatureCache) -> List[ExplanationScores]:
    """One ExplanationScores per memory draw (``cache.draws``), on cached features (no image is encoded twice)."""
    generator, auxiliary = cache.generators()
    return [top_sample_scores(memory_pass(model, cache, generator, auxiliary), cache.test_labels)
            for _ in range(cache.draws)]


def mean_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# --- figures --------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, path: Path) -> None:
    """A PNG written atomically (a crash leaves no half-written figure)."""
    atomic_write_bytes(path, lambda f: figure.savefig(f, format="png", dpi=FIGURE_DPI))


def show_image(axis, image: torch.Tensor, spec: datasets.DatasetSpec, title: str, color="black") -> None:
    picture = datasets.denormalize(image.detach().float().cpu(), spec.mean, spec.std).permute(1, 2, 0).numpy()
    axis.imshow(picture)
    axis.set_title(title, fontsize=8, color=color)
    axis.axis("off")


SIGNS = {"positive": "positive", "absolute": "absolute_value", "all": "all"}  # --sign -> captum's name


def show_attribution(figure, axis, attribution: torch.Tensor, image: torch.Tensor, spec: datasets.DatasetSpec,
                     title: str, sign: str = "positive") -> None:
    """The attribution blended over its image, as the paper's figures (captum's blended heat map, plasma, the
    top 20% of attribution values clipped as outliers)."""
    from captum.attr import visualization

    picture = datasets.denormalize(image.detach().float().cpu(), spec.mean, spec.std).permute(1, 2, 0).numpy()
    heat = attribution.detach().float().cpu().permute(1, 2, 0).numpy()
    if sign != "all" and not (heat > 0 if sign == "positive" else heat != 0).any():
        axis.imshow(picture)  # nothing to show for this sign: captum would divide by zero
    else:
        visualization.visualize_image_attr(heat, picture, method="blended_heat_map", sign=SIGNS[sign],
                                           plt_fig_axis=(figure, axis), use_pyplot=False, alpha_overlay=0.4,
                                           cmap="plasma" if sign != "all" else None, outlier_perc=20,
                                           show_colorbar=False)
    axis.set_title(title, fontsize=8)
    axis.axis("off")


MEMORY_FIGURE_COLUMN_INCHES = 2.0
MEMORY_FIGURE_HEIGHT_INCHES = 2.5
FIGURE_DPI = 100


def memory_figure(path: Path, image: torch.Tensor, label: str, prediction: str, memory_images: torch.Tensor,
                  weights: torch.Tensor, memory_predictions: List[str], is_example: List[bool],
                  spec: datasets.DatasetSpec) -> None:
    """One row: the input, then the memory samples with positive weight, sorted by weight (the caller may keep
    only the first ones)."""
    plt = _pyplot()
    columns = 1 + len(memory_images)
    figure, axes = plt.subplots(1, columns, figsize=(MEMORY_FIGURE_COLUMN_INCHES * columns, MEMORY_FIGURE_HEIGHT_INCHES),
                                dpi=FIGURE_DPI, squeeze=False)
    show_image(axes[0, 0], image, spec, f"input\nlabel {label}\npredicted {prediction}")
    for axis, memory, weight, predicted, example in zip(axes[0, 1:], memory_images, weights, memory_predictions, is_example):
        kind = "example" if example else "counterfactual"
        show_image(axis, memory, spec, f"w={weight:.3f}\npredicted {predicted}\n{kind}",
                   color="green" if example else "red")
    save_figure(figure, path)
    plt.close(figure)


# --- Integrated Gradients -------------------------------------------------------------------------

def white_baseline(shape, spec: datasets.DatasetSpec, device) -> torch.Tensor:
    """A white image (all pixels 1.0) in normalised space."""
    mean = torch.tensor(spec.mean, device=device).view(-1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(-1, 1, 1)
    return ((1.0 - mean) / std).expand(shape).contiguous()


BASELINES = ("white", "paper")


def baseline_images(kind: str, shape, spec: datasets.DatasetSpec, device) -> torch.Tensor:
    """IG baselines: 'white' (the paper's text: a white image) or 'paper' (its code: a tensor of ones in
    normalised space, i.e. a light, slightly coloured image)."""
    if kind == "white":
        return white_baseline(shape, spec, device)
    if kind == "paper":
        return torch.ones(shape, device=device)
    raise ValueError(f"unknown baseline {kind!r}; allowed baselines are {list(BASELINES)}")


def integrated_gradients(model: Classifier, image: torch.Tensor, memory_images: torch.Tensor,
                         memory_features: torch.Tensor, selected: List[int], target: int, spec: datasets.DatasetSpec,
                         n_steps: int = 40, internal_batch_size: int = 25, baseline: str = "white",
                         memory_labels: Optional[torch.Tensor] = None):
    """IG attributions of ``target`` (captum) for one input image and the memory images ``selected``.

    Input and selected memory images move from their baselines (``baseline_images``) to themselves; the other memory samples
    stay as they are (``memory_features``, encoded once by the caller), so each IG step encodes
    1 + len(selected) images instead of 1 + M. Completeness: the attributions sum to f(input, memory) - f(white input, memory with
    the selected images white), up to the returned convergence delta.

    Returns (input attribution [3,H,W], selected memory attributions [K,3,H,W], |delta|, output difference).
    """
    from captum.attr import IntegratedGradients

    model.eval()
    selected = torch.as_tensor(selected, dtype=torch.long, device=image.device)
    fixed_memory_features = memory_features.detach()

    def forward(inputs, chosen):  # captum stacks interpolation steps on dim 0 of both
        steps, k = chosen.shape[:2]
        input_features = model.encode(inputs)
        chosen_features = model.encode(chosen.flatten(0, 1)).view(steps, k, -1)
        logits = []
        for step in range(steps):
            memory_features = fixed_memory_features.index_copy(0, selected, chosen_features[step])
            logits.append(model.classify(input_features[step:step + 1], memory_features, memory_labels))
        return torch.cat(logits)

    inputs, chosen = image[None], memory_images[selected][None]
    baselines = (baseline_images(baseline, inputs.shape, spec, image.device),
                 baseline_images(baseline, chosen.shape, spec, image.device))
    attributions, delta = IntegratedGradients(forward).attribute(
        (inputs, chosen), baselines=baselines, target=target, n_steps=n_steps,
        internal_batch_size=internal_batch_size, return_convergence_delta=True)
    with torch.no_grad():
        difference = (forward(inputs, chosen) - forward(*baselines))[0, target].item()
    return attributions[0][0], attributions[1][0], float(delta.abs().item()), difference


def not_converged(delta: float, difference: float, tolerance: float = 0.05) -> bool:
    """Completeness: attributions sum to f(x) - f(baseline) up to delta. Large: over 5% of the output
    difference, counted as at least 1 logit (so that a near-zero difference does not flag tiny deltas)."""
    return abs(delta) > tolerance * max(abs(difference), 1.0)


# --- prototype heads --------------------------------------------------------------------------------

NEAREST_PER_PROTOTYPE = 6


def prototype_figure(path: Path, images: torch.Tensor, distances: torch.Tensor, prototype_classes: torch.Tensor,
                     classes, spec: datasets.DatasetSpec) -> None:
    """A row per prototype: the training images nearest to it (``distances`` [N, P] of ``images``)."""
    plt = _pyplot()
    count = min(NEAREST_PER_PROTOTYPE, len(images))
    rows = len(prototype_classes)
    figure, axes = plt.subplots(rows, count, figsize=(1.4 * count, 1.6 * rows), dpi=FIGURE_DPI, squeeze=False)
    for row, prototype_class in enumerate(prototype_classes.tolist()):
        nearest = distances[:, row].argsort()[:count]
        for column, index in enumerate(nearest.tolist()):
            title = f"prototype {row}: {classes[prototype_class]}\n" if column == 0 else "\n"
            show_image(axes[row, column], images[index], spec, f"{title}d={distances[index, row]:.3f}")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def distances_figure(path: Path, image: torch.Tensor, label: str, prediction: str, distances: torch.Tensor,
                     prototype_classes: torch.Tensor, classes, spec: datasets.DatasetSpec) -> None:
    """A test image and its distance to every prototype (the prototypes of the predicted class in green)."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(6.0, 2.5), dpi=FIGURE_DPI,
                                         gridspec_kw={"width_ratios": [1, 2]})
    show_image(left, image, spec, f"label {label}\npredicted {prediction}")
    names = [f"{i}: {classes[c]}" for i, c in enumerate(prototype_classes.tolist())]
    colours = ["green" if classes[c] == prediction else "grey" for c in prototype_classes.tolist()]
    right.barh(range(len(names)), distances.tolist(), color=colours)
    right.set_yticks(range(len(names)), names, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("distance to the prototype", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
