"""Explanations by example, scored against post-hoc competitors (the paper's run_exp_by_examples.py).

For every test image, each method picks one example from the same memory set (the batch's memory draw): the
first memory sample, in the method's order of preference, that the model predicts in the image's predicted
class (a memory sample's own prediction uses a second memory draw, as the paper). The orders:

    memory_wrap   the memory samples by content weight, highest first (the paper's get_ebe_index)
    twin_chp      a twin system (CHP): 1-NN over contributions w[pred] * x, where x is what enters the head's
                  last linear layer (Memory Wrap's and the memory baseline's MLP hidden layer, after its ReLU)
                  and w[pred] that layer's weight row of the predicted class (of the memory sample's own
                  prediction for the memory samples)
    knn           DkNN-style: 1-NN over the same activations x, without the weights
    random        a random order (its own seeded stream)

Heads without a last linear layer (ProtoNet, Matching Networks) have no contributions: twin_chp is not
applicable, and x is the encoder's features. The scores, lower is better (``METRICS``):

    input non-representativeness       (1/C) sum_c |f_c(example) - f_c(input)|       (logits; torch's L1Loss)
    prediction non-representativeness  -log softmax(f(example))[predicted class of the input]   (cross-entropy)

Every image is scored once per memory draw (``cache.draws`` passes); a run's number is the mean over its images.
An image whose memory set holds no sample predicted in its class has no example: it is skipped and counted.
The paper's code instead took the first sample of the order for such an image (an example of another class),
and averaged per-batch means (a short last batch weighing as a full one): ``paper_code=True`` does both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from architectures import Classifier
from core.evaluation import FeatureCache, batch_draws

PICKER_SEED_OFFSET = 30_000  # the random method's stream: seed + offset (evaluation uses 10000 and 20000)
METRICS = {
    "input": "input non-representativeness: mean |logits(example) - logits(input)| over the classes",
    "prediction": "prediction non-representativeness: cross-entropy of the example's logits with the input's "
                  "predicted class",
}


@dataclass
class Batch:
    """What every method sees for one test batch and its memory draw."""
    logits: torch.Tensor  # [B, C] the inputs'
    weights: torch.Tensor  # [B, M] their content weights over the memory set
    activations: torch.Tensor  # [B, H] what enters the last linear layer (or the features)
    memory_logits: torch.Tensor  # [M, C] the memory samples' own (classified with the auxiliary draw)
    memory_activations: torch.Tensor  # [M, H]
    last_weight: Optional[torch.Tensor]  # [C, H] the last linear layer's weight (None: no such layer)
    generator: torch.Generator  # the random method's stream

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)

    @property
    def memory_predictions(self) -> torch.Tensor:
        return self.memory_logits.argmax(1)


def by_weight(batch: Batch) -> torch.Tensor:
    return batch.weights.argsort(dim=1, descending=True, stable=True)


def by_contribution(batch: Batch) -> torch.Tensor:
    inputs = batch.last_weight[batch.predictions] * batch.activations
    memory = batch.last_weight[batch.memory_predictions] * batch.memory_activations
    return torch.cdist(inputs, memory).argsort(dim=1, stable=True)


def by_activation(batch: Batch) -> torch.Tensor:
    return torch.cdist(batch.activations, batch.memory_activations).argsort(dim=1, stable=True)


def at_random(batch: Batch) -> torch.Tensor:
    # drawn on the CPU stream whatever the device (the same examples on a GPU), then moved to the batch's device
    return torch.rand(batch.weights.shape, generator=batch.generator).argsort(dim=1).to(batch.weights.device)


@dataclass(frozen=True)
class Picker:
    order: Callable[[Batch], torch.Tensor]  # [B, M] the memory samples in the method's order of preference
    needs_last_linear: bool = False


PICKERS: Dict[str, Picker] = {  # a new method: one function and one line here
    "memory_wrap": Picker(by_weight),
    "twin_chp": Picker(by_contribution, needs_last_linear=True),
    "knn": Picker(by_activation),
    "random": Picker(at_random),
}


def last_linear(model: Classifier) -> Optional[nn.Linear]:
    """The head's last linear layer, whose input the twin system reads (Memory Wrap's and the memory baseline's
    MLP ``fc2``), or None."""
    layer = getattr(getattr(model.head, "classifier", None), "fc2", None)
    return layer if isinstance(layer, nn.Linear) else None


def applicable(model: Classifier) -> List[str]:
    """The methods this model's head serves (twin_chp needs a last linear layer)."""
    return [name for name, picker in PICKERS.items() if last_linear(model) is not None or not picker.needs_last_linear]


@torch.no_grad()
def classify_with_activations(model: Classifier, features, memory, memory_labels, return_weights: bool = False):
    """``model.classify`` on cached features, with what enters the head's last linear layer (or the features)."""
    layer, captured = last_linear(model), {}
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0])) if layer else None
    try:
        output = model.classify(features, memory, memory_labels, return_weights=return_weights)
    finally:
        if handle is not None:
            handle.remove()
    return output, captured.get("x", features).float()


def first_in_class(order: torch.Tensor, memory_predictions: torch.Tensor, predictions: torch.Tensor,
                   paper_code: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(index of the example in the memory set [B], whether the row has one [B]): the first sample of ``order``
    whose prediction is the row's. ``paper_code``: a row without one takes the first sample (the paper's code)."""
    in_class = memory_predictions[order] == predictions[:, None]
    found = in_class.any(dim=1)
    first = in_class.float().argmax(dim=1)  # the first True; 0 when none
    index = order.gather(1, first[:, None]).squeeze(1)
    return index, found | paper_code


def scores(example_logits: torch.Tensor, logits: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per image, both non-representativeness metrics of its example (``METRICS``)."""
    return {"input": (example_logits - logits).abs().mean(dim=1),
            "prediction": F.cross_entropy(example_logits, logits.argmax(1), reduction="none")}


@dataclass
class RunScores:
    """One model's scores: metric -> method -> mean over its images (lower is better)."""
    scores: Dict[str, Dict[str, float]]
    images: int  # images scored per method (over every draw)
    skipped: int  # images whose memory set had no sample predicted in their class
    methods: List[str] = field(default_factory=list)
    # the first EXAMPLES_NAMED test images of the first pass: {"test": row, method: pool position of its example, or
    # None where it has none}, for naming them (explanation_examples.py writes their sources)
    picked: List[Dict[str, Optional[int]]] = field(default_factory=list)


EXAMPLES_NAMED = 10


@torch.no_grad()
def run_scores(model: Classifier, cache: FeatureCache, paper_code: bool = False) -> RunScores:
    """Every method on every test image of the cache, ``cache.draws`` passes of fresh memory draws."""
    model.eval()
    methods = applicable(model)
    layer = last_linear(model)
    generator, auxiliary = cache.generators()
    random_stream = torch.Generator().manual_seed(PICKER_SEED_OFFSET + cache.seed)
    values: Dict[str, Dict[str, List[torch.Tensor]]] = {metric: {m: [] for m in methods} for metric in METRICS}
    images = skipped = 0
    picked: List[Dict[str, Optional[int]]] = []
    for pass_number in range(cache.draws):
        for draw in batch_draws(cache, generator, auxiliary):
            (logits, weights), activations = classify_with_activations(model, draw.features, draw.memory,
                                                                       draw.memory_labels, return_weights=True)
            memory_logits, memory_activations = classify_with_activations(model, draw.memory, draw.other,
                                                                          draw.other_labels)
            batch = Batch(logits.float(), weights.float(), activations, memory_logits.float(), memory_activations,
                          layer.weight.float() if layer is not None else None, random_stream)
            for method in methods:
                index, found = first_in_class(PICKERS[method].order(batch), batch.memory_predictions,
                                              batch.predictions, paper_code)
                for metric, per_image in scores(batch.memory_logits[index], batch.logits).items():
                    kept = per_image[found]
                    values[metric][method].append(kept.mean()[None] if paper_code else kept)
                for row in range(draw.rows.start, min(draw.rows.stop, EXAMPLES_NAMED)) if pass_number == 0 else ():
                    if len(picked) <= row:
                        picked.append({"test": row})
                    offset = row - draw.rows.start
                    picked[row][method] = int(draw.positions[index[offset]]) if found[offset] else None
            images += int(found.sum())
            skipped += int((~found).sum())
    means = {metric: {m: torch.cat(v).mean().item() if sum(len(t) for t in v) else float("nan")
                      for m, v in by_method.items()} for metric, by_method in values.items()}
    return RunScores(means, images, skipped, methods, picked)
