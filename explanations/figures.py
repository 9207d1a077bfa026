"""Figures of explanations: memory images (the input and its memory samples), attributions blended over their
image, and for prototype heads the training images nearest to each prototype and each input's distances."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch

import datasets
from base.files import atomic_write_bytes
from base.plots import pyplot


def save_figure(figure, path: Path) -> None:
    """A PNG written atomically (a crash leaves no half-written figure)."""
    atomic_write_bytes(path, lambda f: figure.savefig(f, format="png", dpi=FIGURE_DPI))


def show_image(axis, image: torch.Tensor, spec: datasets.DatasetSpec, title: str, color="black") -> None:
    picture = datasets.denormalize(image.detach().float().cpu(), spec.mean, spec.std).permute(1, 2, 0).numpy()
    axis.imshow(picture)
    axis.set_title(title, fontsize=8, color=color)
    axis.axis("off")


SIGNS = {"positive": "positive", "absolute": "absolute_value", "all": "all"}  # --sign -> captum's name
ZERO_ATTRIBUTION = 1e-6  # attributions all below this (in logits per normalised pixel) are zero: nothing to draw


def show_attribution(figure, axis, attribution: torch.Tensor, image: torch.Tensor, spec: datasets.DatasetSpec,
                     title: str, sign: str = "positive") -> None:
    """The attribution blended over its image, as the paper's figures (captum's blended heat map, plasma, the
    top 20% of attribution values clipped as outliers)."""
    from captum.attr import visualization

    picture = datasets.denormalize(image.detach().float().cpu(), spec.mean, spec.std).permute(1, 2, 0).numpy()
    heat = attribution.detach().float().cpu().permute(1, 2, 0).numpy()
    if abs(heat).max() < ZERO_ATTRIBUTION:  # captum would stretch rounding noise into a full colour scale
        axis.imshow(picture, alpha=0.35)
        axis.text(0.5, 0.5, "all attributions\nare zero: the\nprediction does\nnot depend on\nthis image",
                  transform=axis.transAxes, ha="center", va="center", fontsize=7, color="darkred")
    elif sign != "all" and not (heat > 0 if sign == "positive" else heat != 0).any():
        axis.imshow(picture)  # nothing to show for this sign: captum would divide by zero
    else:
        visualization.visualize_image_attr(heat, picture, method="blended_heat_map", sign=SIGNS[sign],
                                           plt_fig_axis=(figure, axis), use_pyplot=False, alpha_overlay=0.4,
                                           cmap="plasma" if sign != "all" else None, outlier_perc=20,
                                           show_colorbar=True)  # the scale of the attributions
    axis.set_title(title, fontsize=8)
    axis.axis("off")


MEMORY_FIGURE_COLUMN_INCHES = 1.6
MEMORY_FIGURE_HEIGHT_INCHES = 2.2
FIGURE_DPI = 100


def memory_figure(path: Path, image: torch.Tensor, label: str, prediction: str, memory_images: torch.Tensor,
                  weights: torch.Tensor, memory_predictions: List[str], is_example: List[bool],
                  spec: datasets.DatasetSpec, more: int = 0, sources: Optional[List[str]] = None) -> None:
    """One row: the input, a gap, then the memory samples with positive weight, sorted by weight (the caller may
    keep only the first ones: ``more`` says how many more had positive weight), each named by its ``sources``."""
    plt = pyplot()
    columns = 1 + len(memory_images)
    figure = plt.figure(figsize=(MEMORY_FIGURE_COLUMN_INCHES * columns, MEMORY_FIGURE_HEIGHT_INCHES), dpi=FIGURE_DPI)
    grid = figure.add_gridspec(1, columns + 1, width_ratios=[1, 0.15] + [1] * (columns - 1), left=0.01, right=0.99,
                               bottom=0.02, top=0.72, wspace=0.08)
    show_image(figure.add_subplot(grid[0, 0]), image, spec, f"input\nlabel {label}\npredicted {prediction}")
    for column, (memory, weight, predicted, example) in enumerate(zip(memory_images, weights, memory_predictions,
                                                                      is_example), start=2):
        kind = "example" if example else "counterfactual"
        named = f"{short_source(sources[column - 2])}\n" if sources is not None else ""
        show_image(figure.add_subplot(grid[0, column]), memory, spec,
                   f"{named}w={weight:.3f}\npredicted {predicted}\n{kind}", color="green" if example else "red")
    shown = len(memory_images)
    figure.suptitle(f"memory samples with positive weight: {shown + more}" + (f" ({more} more not shown)" if more else ""),
                    fontsize=8, x=0.99, ha="right", y=0.98)
    save_figure(figure, path)
    plt.close(figure)


def short_source(source: str, limit: int = 24) -> str:
    """A source for a figure caption: its last characters (a file's name, a batch's index)."""
    return source if len(source) <= limit else "..." + source[-(limit - 3):]


def memory_images(model, cache, data: datasets.ExperimentData, folder: Path, max_samples: int, progress=None
                  ) -> List[Path]:
    """One memory figure per cached test image (``memory_figure``), the memory draws of evaluation; the paths."""
    from core.evaluation import memory_pass

    generator, auxiliary = cache.generators()
    result = memory_pass(model, cache, generator, auxiliary)
    classes, paths = data.classes, []
    for index in range(len(cache.test_labels)):
        weights = result.content_weights[index]
        positive = [i for i in weights.argsort(descending=True).tolist() if weights[i] > 0]
        order = positive[:max_samples]
        prediction = int(result.predictions[index])
        memory_predictions = result.memory_predictions[index, order].tolist()
        image, label = data.test_batch(torch.tensor([index]))
        path = Path(folder) / f"{index}.png"
        shown = data.memory_pool[result.memory_positions[index, order]]
        memory_figure(path, image[0], classes[int(label)], classes[prediction], data.memory_batch(shown),
                      weights[order].tolist(), [classes[p] for p in memory_predictions],
                      [p == prediction for p in memory_predictions], data.spec, more=len(positive) - len(order),
                      sources=[data.source(i) for i in shown.tolist()])
        paths.append(path)
        if progress is not None:
            progress.update(1)
    return paths


NEAREST_PER_PROTOTYPE = 6


def node_name(classes, node: int) -> str:
    """A prototype's class name; with hierarchical inference the inner nodes of the class tree have prototypes
    too (nodes past the classes)."""
    return classes[node] if node < len(classes) else f"tree node {node}"


def prototype_figure(path: Path, images: torch.Tensor, distances: torch.Tensor, prototype_classes: torch.Tensor,
                     classes, spec: datasets.DatasetSpec) -> None:
    """A row per prototype: the training images nearest to it (``distances`` [N, P] of ``images``)."""
    plt = pyplot()
    count = min(NEAREST_PER_PROTOTYPE, len(images))
    rows = len(prototype_classes)
    figure, axes = plt.subplots(rows, count, figsize=(1.4 * count, 1.6 * rows), dpi=FIGURE_DPI, squeeze=False)
    for row, prototype_class in enumerate(prototype_classes.tolist()):
        nearest = distances[:, row].argsort()[:count]
        for column, index in enumerate(nearest.tolist()):
            title = f"prototype {row}: {node_name(classes, prototype_class)}\n" if column == 0 else "\n"
            show_image(axes[row, column], images[index], spec, f"{title}d={distances[index, row]:.3f}")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def distances_figure(path: Path, image: torch.Tensor, label: str, prediction: str, distances: torch.Tensor,
                     prototype_classes: torch.Tensor, classes, spec: datasets.DatasetSpec) -> None:
    """A test image and its distance to every prototype (the prototypes of the predicted class in green)."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(6.0, 2.5), dpi=FIGURE_DPI,
                                         gridspec_kw={"width_ratios": [1, 2]})
    show_image(left, image, spec, f"label {label}\npredicted {prediction}")
    names = [f"{i}: {node_name(classes, c)}" for i, c in enumerate(prototype_classes.tolist())]
    colours = ["green" if node_name(classes, c) == prediction else "grey" for c in prototype_classes.tolist()]
    right.barh(range(len(names)), distances.tolist(), color=colours)
    right.set_yticks(range(len(names)), names, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("distance to the prototype", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def audit_figure(path: Path, data: datasets.ExperimentData, suspects, score: str, evidence: int = 3) -> None:
    """A row per suspect (core/audit.py): the training image with its given label and score, then the memory
    samples that argue for the label the memory supports."""
    plt = pyplot()
    rows = max(len(suspects), 1)
    figure, axes = plt.subplots(rows, 1 + evidence, figsize=(1.9 * (1 + evidence), 2.1 * rows), dpi=FIGURE_DPI,
                                squeeze=False)
    where = {data.source(index): index for index in data.subset.tolist()}
    for row, suspect in enumerate(suspects):
        image = data.memory_batch(torch.tensor([where[suspect.source]]))[0]
        show_image(axes[row, 0], image, data.spec, f"{short_source(suspect.source)}\nlabelled {suspect.given}\n"
                   f"{score} {suspect.score:.3f}", color="red")
        for column in range(evidence):
            axes[row, 1 + column].axis("off")
            if column < len(suspect.evidence):
                source = suspect.evidence[column]
                show_image(axes[row, 1 + column], data.memory_batch(torch.tensor([where[source]]))[0], data.spec,
                           f"{short_source(source)}\n{suspect.supported}: evidence", color="green")
    figure.suptitle("most suspect training images (red: given label) and the memory samples that argue for another "
                    "(green)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.1 * rows)))  # room for the title
    save_figure(figure, path)
    plt.close(figure)
