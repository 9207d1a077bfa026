"""Figures of explanations: memory images (the input and its memory samples), attributions blended over their
image, and for prototype heads the training images nearest to each prototype and each input's distances."""
from __future__ import annotations

from pathlib import Path
from typing import List

import torch

import datasets
from base.files import atomic_write_bytes


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


NEAREST_PER_PROTOTYPE = 6


def node_name(classes, node: int) -> str:
    """A prototype's class name; with hierarchical inference the inner nodes of the class tree have prototypes
    too (nodes past the classes)."""
    return classes[node] if node < len(classes) else f"tree node {node}"


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
            title = f"prototype {row}: {node_name(classes, prototype_class)}\n" if column == 0 else "\n"
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
    names = [f"{i}: {node_name(classes, c)}" for i, c in enumerate(prototype_classes.tolist())]
    colours = ["green" if node_name(classes, c) == prediction else "grey" for c in prototype_classes.tolist()]
    right.barh(range(len(names)), distances.tolist(), color=colours)
    right.set_yticks(range(len(names)), names, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("distance to the prototype", fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
