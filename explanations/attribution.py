"""Integrated Gradients (captum) of a prediction for the input and the memory samples shown, the other memory
samples held fixed; the baselines, and the completeness check."""
from __future__ import annotations

from typing import List, Optional

import torch

import datasets
from architectures import Classifier


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
