"""Integrated Gradients (captum) of a prediction for the input and the memory samples shown, the other memory
samples held fixed; the baselines, and the completeness check."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

import datasets
from architectures import Classifier
from base.plots import pyplot


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


HEATMAP_COLUMNS = ("input", "attribution", "top example", "attribution", "top counterfactual", "attribution")


def heatmap_figure(path, model: Classifier, data: datasets.ExperimentData, images: torch.Tensor, labels: torch.Tensor,
                   memory: datasets.MemorySet, other: datasets.MemorySet, n_steps: int = 40, internal_batch_size: int = 25,
                   baseline: str = "white", sign: str = "positive", first_index: int = 0, progress=None
                   ) -> List[Tuple[float, float]]:
    """One figure for a batch of inputs and their memory set (``other``: the memory the memory samples are
    classified with): a row per input with the input and its IG attribution, the top explanation by example and
    its attribution, the top counterfactual and its attribution (a missing kind leaves its cells empty). Returns
    each row's (IG convergence delta, output difference)."""
    from .figures import FIGURE_DPI, save_figure, short_source, show_attribution, show_image

    plt = pyplot()
    classes, checks = data.classes, []
    with torch.no_grad():  # every image is encoded once here; IG encodes only what it attributes to
        memory_features = model.encode(memory.images)
        logits, weights = model.classify(model.encode(images), memory_features, memory.labels, return_weights=True)
        memory_predictions = model.classify(memory_features, model.encode(other.images), other.labels).argmax(1)
    predictions = logits.argmax(1)
    figure, axes = plt.subplots(len(images), len(HEATMAP_COLUMNS), figsize=(2 * len(HEATMAP_COLUMNS), 2.3 * len(images)),
                                dpi=FIGURE_DPI, squeeze=False)
    for row in range(len(images)):
        prediction = int(predictions[row])
        tops = {}  # "example" / "counterfactual" -> index of the highest-weight memory sample of that kind
        for name, same_class in (("example", True), ("counterfactual", False)):
            candidates = (weights[row] > 0) & ((memory_predictions == prediction) == same_class)
            if candidates.any():
                tops[name] = int(torch.where(candidates, weights[row], torch.full_like(weights[row], -1)).argmax())
        selected = list(tops.values())
        input_attribution, memory_attribution, delta, difference = integrated_gradients(
            model, images[row], memory.images, memory_features, selected, prediction, data.spec, n_steps,
            internal_batch_size, baseline, memory.labels)
        checks.append((delta, difference))
        show_image(axes[row, 0], images[row], data.spec, f"image {first_index + row}: label "
                   f"{classes[int(labels[row])]}, predicted {classes[prediction]}")
        show_attribution(figure, axes[row, 1], input_attribution, images[row], data.spec, f"IG, delta {delta:.3f}", sign)
        for column, name in ((2, "example"), (4, "counterfactual")):
            axes[row, column].axis("off")
            axes[row, column + 1].axis("off")
            if name in tops:
                top = tops[name]
                show_image(axes[row, column], memory.images[top], data.spec, f"top {name}: "
                           f"{short_source(data.source(int(memory.indices[top])))}\nw={weights[row, top]:.3f}, "
                           f"predicted {classes[int(memory_predictions[top])]}",
                           color="green" if name == "example" else "red")
                show_attribution(figure, axes[row, column + 1], memory_attribution[selected.index(top)],
                                 memory.images[top], data.spec, "IG", sign)
        if progress is not None:
            progress.update(1)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return checks
