"""Counterfactuals: Memory Wrap's own against prototype-guided ones (CFProto), scored with IM1 / IM2 (the paper's
run_counterfactuals.py and utils/counterfactuals_utils.py, a torch port of alibi's CounterfactualProto).

For every test image (batches of 64 with a memory draw each, as the paper), the memory counterfactual is the
memory sample with the highest content weight among those with positive weight that the model predicts in
another class (with a second memory draw, as for every explanation); its class is the target. An image without
one is skipped and counted. Generators (``GENERATORS``: a new one is a generate function and one entry):

    memory  that memory sample's image (intrinsic: it costs nothing)
    proto   CFProto (Van Looveren & Klaise, 2019) as the paper's port runs it: FISTA on
            beta * L1 + L2 + theta * |enc(x') - proto_t|^2 from the input, with the port's defaults (beta 0.1,
            theta 100, 1000 iterations, learning rate 0.1 with polynomial decay, gradients clipped at 1000, no
            prediction term: the port leaves alibi's attack loss out), where enc is the encoder of the autoencoder
            trained on the whole training subset and proto_t the mean code of the training images the model
            predicts in the target class. The result is the iterate closest to the input (L2 + beta L1) that the
            model predicts in the target class; none found: counted, not scored.

Scores of a counterfactual x' of predicted class t for an input of predicted class o, with AE_k the autoencoder
of class k and AE the one of the whole subset (the port's utils: Euclidean norms, not squared):

    IM1  = |x' - AE_t(x')| / (|x' - AE_o(x')| + 1e-8)      lower: x' is closer to the target class's data
    IIM1 = |x' - AE_o(x')| / (|x' - AE_t(x')| + 1e-8)      the paper's inverse of IM1
    IM2  = |AE_t(x') - AE(x')| / (|x'| + 1e-8)             lower: x' is closer to the data as a whole

and its sparsity: the L1 distance to the input and the fraction of the input's values it changes (L0).

The paper's code (``paper_code=True``) differs: it took every row's counterfactual at the row's position in the
FIRST row's weight order (a batch-level index used for every row), skipped a batch with a single candidate row,
scored each row's pair of autoencoders on the whole batch of counterfactuals, used the input's class's
autoencoder for IM2, picked one prototype for the whole batch, and scored CFProto's failures (an all-zero image).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import torch

import datasets
from architectures import Classifier
from architectures.autoencoder import AutoEncoder
from core.evaluation import FeatureCache, batch_draws, encode

PAPER_BATCH_SIZE = 64  # the paper's run_counterfactuals.py: batch_size_test=64, a memory draw per batch
PROTOTYPE_SEED_OFFSET = 40_000  # the memory draw with which the training images are predicted for the prototypes
EPSILON = 1e-8
CHANGED = 1e-6  # a value of the counterfactual differs from the input's (L0)


@dataclass(frozen=True)
class CFProtoSettings:
    """The paper's port's defaults (utils/counterfactuals_utils.attack; its c_steps=2 repeat one optimisation,
    since the port has no term that uses c, so it is run once)."""
    beta: float = 0.1
    theta: float = 100.0
    max_iterations: int = 1000
    learning_rate: float = 0.1
    clip: float = 1000.0
    kappa: float = 0.0


# --- the memory counterfactual ---------------------------------------------------------------------

def memory_counterfactuals(weights: torch.Tensor, memory_predictions: torch.Tensor, predictions: torch.Tensor,
                           paper_code: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(index in the memory set [B], whether the row has one [B]): the highest-weight memory sample with positive
    weight predicted in another class than the row's. ``paper_code``: the position found in each row's order is
    read in the first row's order, and a batch with a single such row has none (the paper's code)."""
    order = weights.argsort(dim=1, descending=True, stable=True)
    sorted_weights = weights.gather(1, order)
    candidate = (memory_predictions[order] != predictions[:, None]) & (sorted_weights > 0)
    found = candidate.any(dim=1)
    position = candidate.float().argmax(dim=1)  # the first candidate: the highest weight
    if paper_code:
        if int(found.sum()) <= 1:
            found = torch.zeros_like(found)
        return order[0, position], found
    return order.gather(1, position[:, None]).squeeze(1), found


# --- CFProto ---------------------------------------------------------------------------------------

def class_prototypes(codes: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, *code shape]: the mean code of the images predicted in each class (NaN for a class never predicted)."""
    return torch.stack([codes[predictions == k].mean(dim=0) for k in range(num_classes)])


def loss_terms(adv_s: torch.Tensor, original: torch.Tensor, encoder: torch.nn.Module, prototypes: torch.Tensor,
               settings: CFProtoSettings) -> Dict[str, torch.Tensor]:
    """The port's optimised loss, per row: beta * L1 + L2 of x' - x, and theta * |enc(x') - proto|^2."""
    delta = original - adv_s
    rows = tuple(range(1, delta.dim()))
    return {"l1": delta.abs().sum(dim=rows), "l2": delta.pow(2).sum(dim=rows),
            "proto": settings.theta * (encoder(adv_s) - prototypes).flatten(1).norm(dim=1).pow(2)}


def fista_step(adv: torch.Tensor, adv_s: torch.Tensor, original: torch.Tensor, gradient: torch.Tensor, step: int,
               feature_range: Tuple[float, float], settings: CFProtoSettings) -> Tuple[torch.Tensor, torch.Tensor]:
    """One update of the port (0-based ``step``): a gradient step on the slack variable at the polynomially decayed
    rate, the shrinkage-thresholding towards the input (threshold beta, within the feature range), then FISTA's
    momentum step; returns the new (adv, adv_s)."""
    low, high = feature_range
    rate = settings.learning_rate * (1.0 - min(step, settings.max_iterations) / settings.max_iterations) ** 0.5
    stepped = adv_s - gradient.clamp(-settings.clip, settings.clip) * rate
    shrunk = torch.where(stepped - original > settings.beta, (stepped - settings.beta).clamp(max=high),
                         torch.where(stepped - original < -settings.beta, (stepped + settings.beta).clamp(min=low),
                                     original))
    momentum = (step + 1) / (step + 1 + 3.0)
    return shrunk, (shrunk + momentum * (shrunk - adv)).clamp(low, high)


def cfproto(classify: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, predictions: torch.Tensor,
            targets: torch.Tensor, encoder: torch.nn.Module, prototypes: torch.Tensor,
            feature_range: Tuple[float, float], settings: CFProtoSettings = CFProtoSettings()
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """CFProto's FISTA, batched: (counterfactuals [B, ...], found [B]). ``classify(images)`` gives logits;
    ``prototypes`` [B, ...] is each row's target prototype in the encoder's code space."""
    original = images.detach()
    adv = original.clone()
    adv_s = original.clone().requires_grad_(True)
    best = torch.zeros_like(original)
    best_distance = torch.full((len(images),), float("inf"))
    found = torch.zeros(len(images), dtype=torch.bool)
    rows = tuple(range(1, original.dim()))
    for step in range(settings.max_iterations):
        terms = loss_terms(adv_s, original, encoder, prototypes, settings)
        loss = (settings.beta * terms["l1"] + terms["l2"] + terms["proto"]).sum()
        gradient, = torch.autograd.grad(loss, adv_s)
        with torch.no_grad():
            logits = classify(adv).float()
            if settings.kappa:
                logits = logits + settings.kappa * torch.nn.functional.one_hot(predictions, logits.shape[1])
            adv_class = logits.argmax(dim=1)
            delta = original - adv
            distance = (delta.pow(2).sum(dim=rows) + settings.beta * delta.abs().sum(dim=rows)).cpu()
            better = ((distance < best_distance) & (adv_class != predictions).cpu() & (adv_class == targets).cpu())
            best[better.to(best.device)] = adv[better.to(best.device)]
            best_distance = torch.where(better, distance, best_distance)
            found |= better
            adv, adv_s = fista_step(adv, adv_s.detach(), original, gradient, step, feature_range, settings)
        adv_s.requires_grad_(True)
    return best, found


# --- scores ----------------------------------------------------------------------------------------

def im_scores(counterfactuals: torch.Tensor, original_classes: torch.Tensor, counterfactual_classes: torch.Tensor,
              autoencoders: Dict[str, AutoEncoder], paper_code: bool = False) -> Dict[str, torch.Tensor]:
    """IM1, IIM1, IM2 per counterfactual (see the module's docstring). ``paper_code``: each row's norms are taken
    over the whole batch of counterfactuals, and IM2 uses the input's class's autoencoder (the paper's code)."""
    full = autoencoders["full"](counterfactuals)
    by_class = {k: autoencoders[f"class_{k}"](counterfactuals)
                for k in set(original_classes.tolist()) | set(counterfactual_classes.tolist())}
    out = {"im1": [], "iim1": [], "im2": []}
    for row, (o, t) in enumerate(zip(original_classes.tolist(), counterfactual_classes.tolist())):
        pick = slice(None) if paper_code else slice(row, row + 1)
        x = counterfactuals[pick]
        error_target = (x - by_class[t][pick]).norm()
        error_original = (x - by_class[o][pick]).norm()
        out["im1"].append(error_target / (error_original + EPSILON))
        out["iim1"].append(error_original / (error_target + EPSILON))
        second = by_class[o if paper_code else t][pick]
        out["im2"].append((second - full[pick]).norm() / (x.norm() + EPSILON))
    return {name: torch.stack(values) if values else torch.zeros(0) for name, values in out.items()}


# --- the experiment --------------------------------------------------------------------------------

SCORES = ("im1", "iim1", "im2", "l1", "l0", "seconds")


@dataclass
class Targets:
    """What a generator gets for one test batch: the rows that have a target class, their inputs, predictions and
    targets, the memory sample each one's memory counterfactual is (``index`` into the draw), and the model with
    the batch's memory set held fixed (``classify``)."""
    inputs: torch.Tensor  # [R, 3, H, W] normalised
    predictions: torch.Tensor  # [R]
    targets: torch.Tensor  # [R]
    index: torch.Tensor  # [R] positions in the batch's memory draw
    draw: object  # core.evaluation.BatchDraw
    classify: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CounterfactualGenerator:
    """A counterfactual method: ``prepare(model, cache, data, encoder)`` once per model (what it needs beyond one
    batch), then ``generate(targets, prepared, data, encoder, settings, paper_code)``: (counterfactual images,
    which reached their target class)."""
    generate: Callable[..., Tuple[torch.Tensor, torch.Tensor]]
    prepare: Callable[..., object] = lambda model, cache, data, encoder: None  # noqa: E731


def memory_sample_images(targets: Targets, prepared, data: datasets.ExperimentData, encoder, settings, paper_code):
    """Memory Wrap's own: the memory sample's image (flipped as the draw flipped it); intrinsic, always reached."""
    pool_positions = targets.draw.positions[targets.index]
    counterfactuals = data.memory_batch(data.memory_pool[pool_positions.cpu()])
    if targets.draw.flips is not None:
        flipped = targets.draw.flips[targets.index.cpu()].to(counterfactuals.device)
        counterfactuals = torch.where(flipped[:, None, None, None], counterfactuals.flip(-1), counterfactuals)
    return counterfactuals, torch.ones(len(targets.index), dtype=torch.bool)


def prepare_cfproto(model: Classifier, cache: FeatureCache, data: datasets.ExperimentData, encoder):
    """CFProto's class prototypes and the data's value range, once per model."""
    return subset_prototypes(model, cache, data, encoder, cache.batch_size), feature_range(data)


def cfproto_images(targets: Targets, prepared, data: datasets.ExperimentData, encoder, settings, paper_code):
    prototypes, value_range = prepared
    inputs = targets.inputs
    chosen = prototypes[targets.targets.cpu()].to(inputs.device)
    if paper_code:  # one prototype for the batch: the target class's nearest to the batch as a whole
        codes = encoder(inputs)
        classes = sorted(set(targets.targets.tolist()))
        nearest = min(classes, key=lambda k: (codes - prototypes[k].to(codes.device)).norm().item())
        chosen = prototypes[nearest].to(inputs.device).expand_as(chosen)
    usable = ~torch.isnan(chosen.flatten(1)).any(dim=1).cpu()  # a class the subset never predicts: no prototype
    counterfactuals, reached = cfproto(targets.classify, inputs, targets.predictions, targets.targets, encoder,
                                       torch.nan_to_num(chosen), value_range, settings)
    return counterfactuals, reached & usable


GENERATORS: Dict[str, CounterfactualGenerator] = {  # a new method: one generate function and one line here
    "memory": CounterfactualGenerator(memory_sample_images),
    "proto": CounterfactualGenerator(cfproto_images, prepare_cfproto),
}


@dataclass
class RunCounterfactuals:
    """One model's counterfactuals: score -> mean over its counterfactuals."""
    scores: Dict[str, float]
    counterfactuals: int  # scored
    images: int  # test images seen
    skipped: int  # images whose memory held no counterfactual (no target class)
    not_found: int = 0  # proto: optimisations that never reached the target class
    per_counterfactual: Dict[str, List[float]] = field(default_factory=dict)
    images_scored: List[int] = field(default_factory=list)  # the test image of each, in per_counterfactual's order


def feature_range(data: datasets.ExperimentData) -> Tuple[float, float]:
    """The smallest and largest value of the normalised training subset (the port's feature_range)."""
    low, high = float("inf"), float("-inf")
    for start in range(0, len(data.subset), 500):
        images = data.memory_batch(data.subset[start:start + 500])
        low, high = min(low, images.min().item()), max(high, images.max().item())
    return low, high


@torch.no_grad()
def subset_prototypes(model: Classifier, cache: FeatureCache, data: datasets.ExperimentData,
                      encoder: torch.nn.Module, batch_size: int) -> torch.Tensor:
    """CFProto's class prototypes: the mean code (``encoder``) of the training subset's images, by the class the
    model predicts for them with one memory draw (its own stream)."""
    features = encode(model, lambda i: data.memory_batch(data.subset[i]), len(data.subset), batch_size)
    memory = cache.draw(torch.Generator().manual_seed(PROTOTYPE_SEED_OFFSET + cache.seed))
    predictions = model.classify(features, memory.features, memory.labels).argmax(1)
    codes = torch.cat([encoder(data.memory_batch(data.subset[start:start + batch_size]))
                       for start in range(0, len(data.subset), batch_size)])
    return class_prototypes(codes, predictions.to(codes.device), data.num_classes)


def run_counterfactuals(model: Classifier, cache: FeatureCache, data: datasets.ExperimentData, algo: str,
                        autoencoders: Dict[str, AutoEncoder], settings: CFProtoSettings = CFProtoSettings(),
                        paper_code: bool = False, progress=None) -> RunCounterfactuals:
    """One pass over the cached test images (one memory draw per batch of ``cache.batch_size``, as the paper)."""
    if algo not in GENERATORS:
        raise ValueError(f"unknown counterfactual generator {algo!r}; allowed are {list(GENERATORS)}")
    method = GENERATORS[algo]
    model.eval()
    for autoencoder in autoencoders.values():
        autoencoder.requires_grad_(False)
    encoder = autoencoders["full"].encoder
    prepared = method.prepare(model, cache, data, encoder)
    generator, auxiliary = cache.generators()
    collected: Dict[str, List[float]] = {name: [] for name in SCORES}
    images = skipped = not_found = 0
    indices: List[int] = []  # the test image of each scored counterfactual
    for draw in batch_draws(cache, generator, auxiliary):
        with torch.no_grad():
            logits, weights = model.classify(draw.features, draw.memory, draw.memory_labels, return_weights=True)
            memory_predictions = model.classify(draw.memory, draw.other, draw.other_labels).argmax(1)
        predictions = logits.argmax(1)
        index, has = memory_counterfactuals(weights.float(), memory_predictions, predictions, paper_code)
        images += len(predictions)
        skipped += int((~has).sum())
        if progress is not None:
            progress.update(len(predictions))
        if not has.any():
            continue
        rows = torch.nonzero(has).flatten()
        targets = memory_predictions[index[rows]]
        inputs = data.test_batch(torch.arange(draw.rows.start, draw.rows.stop)[rows.cpu()])[0]

        def classify(batch: torch.Tensor) -> torch.Tensor:  # the model with the batch's memory set, held fixed
            return model.classify(model.encode(batch), draw.memory, draw.memory_labels)

        started = time.time()
        counterfactuals, reached = method.generate(Targets(inputs, predictions[rows], targets, index[rows], draw,
                                                           classify), prepared, data, encoder, settings, paper_code)
        seconds = (time.time() - started) / len(rows)
        keep = torch.ones_like(reached) if paper_code else reached
        not_found += int((~reached).sum())
        if not keep.any():
            continue
        counterfactuals, inputs = counterfactuals[keep.to(counterfactuals.device)], inputs[keep.to(inputs.device)]
        with torch.no_grad():
            classes = model.classify(model.encode(counterfactuals), draw.other, draw.other_labels).argmax(1)
            scores = im_scores(counterfactuals, predictions[rows][keep.to(predictions.device)], classes, autoencoders,
                               paper_code)
        difference = (counterfactuals - inputs).flatten(1)
        scores["l1"] = difference.abs().sum(dim=1)
        scores["l0"] = (difference.abs() > CHANGED).float().mean(dim=1)
        scores["seconds"] = torch.full((len(counterfactuals),), seconds)
        for name in SCORES:
            collected[name] += scores[name].tolist()
        indices += (draw.rows.start + rows.cpu()[keep.cpu()]).tolist()
    count = len(collected["im1"])
    means = {name: (sum(values) / count if count else float("nan")) for name, values in collected.items()}
    return RunCounterfactuals(means, count, images, skipped, not_found, collected, indices)
