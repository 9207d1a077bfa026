"""Which training images are mislabeled? The memory as an auditor: every training image of a run's subset is predicted
out of sample, by a model trained without its fold and reading a memory of its training folds only, and scored by
how strongly that memory disagrees with the image's label.

    folds = stratified_folds(labels, 5, seed)                      # the fold of each subset position
    models = train_folds(config, "encoder_memory", data, folds, seed, device)
    found = out_of_fold(models, data, folds)                       # per subset image: the memory's verdict
    score = found.scores["other_weight"]                           # high: the memory argues for another class

Scores (``SCORES``; the audit's default, ``DEFAULT_SCORE``, was chosen on validation data: docs/audit.md):
- ``other_weight``: the content weight that memory samples of other classes than the image's label carry, with the
  whole pool of the training folds as the memory (sparsemax over all of them: deterministic).
- ``one_minus_probability``: one minus the model's probability of the image's label, with that memory.
The memory supports the class its samples' weights add up to most; the evidence is that class's highest-weight
samples. A frozen encoder encodes the subset once for every fold (core/frozen.py); others encode it with each fold's
model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

import datasets
from architectures import Classifier
from base.errors import UserError

from . import frozen, runtime, training
from .config import Config
from .evaluation import encode
from .execution import make_model

SCORES = ("other_weight", "one_minus_probability")
DEFAULT_SCORE = "other_weight"
EVIDENCE = 3  # memory samples kept as the evidence of each image's verdict
FOLD_SEED_OFFSET = 50_000  # the folds' own stream: the run's seed + offset


class AuditError(UserError, ValueError):
    """An audit that cannot be made (too few images of a class for the folds, missing fold models...)."""


def stratified_folds(labels: torch.Tensor, folds: int, seed: int, classes: Sequence[str] = ()) -> torch.Tensor:
    """The fold (0..folds-1) of each position of ``labels``: each class's images shuffled (seeded) and dealt to the
    folds in turn, so that every fold holds every class. A class with fewer images than folds is refused."""
    labels = labels.cpu()
    counts = torch.bincount(labels, minlength=len(classes))
    few = [int(label) for label in counts.nonzero().flatten() if counts[label] < folds]
    if few:
        names = [classes[label] if classes else str(label) for label in few]
        raise AuditError(f"class {names[0]} has {int(counts[few[0]])} training images, fewer than the {folds} folds: "
                         f"every fold needs one of each; lower --folds or add images of {', '.join(names)}")
    generator = torch.Generator().manual_seed(FOLD_SEED_OFFSET + seed)
    assignment = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for label in counts.nonzero().flatten().tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        assignment[members] = (torch.arange(len(members)) + offset) % folds
        offset += len(members)  # the next class starts where this one stopped: the folds stay balanced
    return assignment


def train_model(config: Config, modality: str, data: datasets.ExperimentData, seed: int, device: torch.device,
                encoder_state: Optional[dict] = None, table: Optional[frozen.FeatureTable] = None) -> Classifier:
    """One model trained as a run of ``config`` is, with seed ``seed``, on ``data`` (on a frozen encoder's feature
    table ``table`` of it, where given), in eval mode; the config's pinned levers (auto: fp32, channels_last)."""
    runtime.seed_everything(seed)
    model = make_model(config, modality)
    if encoder_state is not None:
        model.encoder.load_state_dict(encoder_state)
    model = model.to(device)
    execution = runtime.Execution(None, torch.contiguous_format) if table is not None else runtime.Execution.resolve(
        config.precision if config.precision != "auto" else "fp32",
        config.memory_format if config.memory_format != "auto" else "channels_last", device, config.model)
    training.train_run(model, data, config, seed, device, execution, features=table)
    return model.eval()


def train_folds(config: Config, modality: str, data: datasets.ExperimentData, folds: torch.Tensor, seed: int,
                device: torch.device, encoder_state: Optional[dict] = None,
                table: Optional[frozen.FeatureTable] = None) -> List[Classifier]:
    """One model per fold, trained as the run was (its config and seed) on the subset less that fold, its memory pool
    the subset less that fold: it never sees its fold. ``table``: a frozen encoder's features of ``data`` (every
    fold's table is cut from it)."""
    models = []
    for fold in range(int(folds.max()) + 1):
        keep = (folds != fold).nonzero().flatten()
        fold_data = data.restricted(keep)
        models.append(train_model(config, modality, fold_data, seed, device, encoder_state,
                                  table.restricted(fold_data, keep) if table is not None else None))
    return models


@dataclass
class OutOfFold:
    """Every subset image predicted out of sample (by its fold's model, with the memory of its training folds)."""
    probabilities: torch.Tensor  # [S, C]
    class_weights: Optional[torch.Tensor]  # [S, C] the memory's content weight by class (None: no memory head)
    evidence: List[List[int]]  # per image: subset positions of the supported class's highest-weight memory samples
    folds: torch.Tensor  # [S]
    labels: torch.Tensor  # [S] the labels given

    @property
    def supported(self) -> torch.Tensor:
        """The class the memory supports (the model's prediction where there is no memory)."""
        return (self.class_weights if self.class_weights is not None else self.probabilities).argmax(1)

    @property
    def scores(self) -> Dict[str, torch.Tensor]:
        rows = torch.arange(len(self.labels))
        found = {"one_minus_probability": 1 - self.probabilities[rows, self.labels]}
        if self.class_weights is not None:
            found["other_weight"] = 1 - self.class_weights[rows, self.labels]
        return found


@torch.no_grad()
def out_of_fold(models: Sequence[Classifier], data: datasets.ExperimentData, folds: torch.Tensor,
                batch_size: int = 250) -> OutOfFold:
    """Each subset image through its fold's model, the memory being the whole pool of the training folds. Models
    sharing one frozen encoder encode the subset once."""
    subset = data.subset
    labels = data.train_labels[subset.to(data.device)].cpu()
    classes = data.num_classes
    probabilities = torch.zeros(len(subset), classes)
    class_weights = torch.zeros(len(subset), classes) if models[0].uses_memory else None
    evidence: List[List[int]] = [[] for _ in range(len(subset))]
    shared = None
    for fold, model in enumerate(models):
        if shared is None or not _same_encoder(model, models[0]):
            features = encode(model, lambda i: data.memory_batch(subset[i]), len(subset), batch_size)
            shared = features if _same_encoder(model, models[0]) else None
        else:
            features = shared
        held, kept = (folds == fold).nonzero().flatten(), (folds != fold).nonzero().flatten()
        memory, memory_labels = features[kept], data.train_labels[subset[kept].to(data.device)]
        for start in range(0, len(held), batch_size):
            rows = held[start:start + batch_size]
            if model.uses_memory:
                logits, weights = model.classify(features[rows], memory, memory_labels, return_weights=True)
                weights = weights.float().cpu()
                by_class = torch.zeros(len(rows), classes).index_add_(1, memory_labels.cpu(), weights)
                class_weights[rows] = by_class
                supported = by_class.argmax(1)
                for row, image in enumerate(rows.tolist()):
                    mine = torch.where(memory_labels.cpu() == supported[row], weights[row], torch.zeros(()))
                    top = mine.argsort(descending=True)[:EVIDENCE]
                    evidence[image] = [int(kept[i]) for i in top.tolist() if mine[i] > 0]
            else:
                logits = model.classify(features[rows])
            probabilities[rows] = torch.softmax(logits.float(), 1).cpu()
    return OutOfFold(probabilities, class_weights, evidence, folds, labels)


def _same_encoder(model: Classifier, other: Classifier) -> bool:
    """Whether two fold models share their encoder's weights (a frozen pretrained backbone)."""
    if model is other:
        return True
    mine, theirs = model.encoder.state_dict(), other.encoder.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def training_loss(model: Classifier, data: datasets.ExperimentData, batch_size: int = 250) -> torch.Tensor:
    """The baseline: each subset image's cross-entropy under a model trained on all of them (a std model: in-sample
    loss; high: suspect)."""
    features = encode(model, lambda i: data.memory_batch(data.subset[i]), len(data.subset), batch_size)
    labels = data.train_labels[data.subset.to(data.device)]
    with torch.no_grad():
        logits = torch.cat([model.classify(features[i:i + batch_size]) for i in range(0, len(features), batch_size)])
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none").cpu()


def flip_labels(labels: torch.Tensor, positions: torch.Tensor, fraction: float, classes: int, seed: int
                ) -> (torch.Tensor, torch.Tensor):
    """A noise study's labels: ``fraction`` of ``positions`` (indices into ``labels``) chosen uniformly at random
    (seeded) and given another class, uniformly among the others. Returns (the noisy labels, the flipped
    indices)."""
    generator = torch.Generator().manual_seed(seed)
    count = round(fraction * len(positions))
    flipped = positions[torch.randperm(len(positions), generator=generator)[:count]]
    noisy = labels.clone()
    shift = torch.randint(1, classes, (count,), generator=generator)
    noisy[flipped] = (labels[flipped] + shift) % classes
    return noisy, flipped


# --- a run's audit on disk ---------------------------------------------------------------------------

def fold_paths(folder, run: int, folds: int) -> List:
    """Where a run's fold models live: <folder>/run_<r>/folds_<K>/fold_<k>.pt (the audit's own folder)."""
    from pathlib import Path

    return [Path(folder) / f"run_{run}" / f"folds_{folds}" / f"fold_{k + 1}.pt" for k in range(folds)]


def save_fold_models(models: Sequence[Classifier], checkpoint, assignment: torch.Tensor, paths: Sequence) -> None:
    """Each fold model as a checkpoint of the run's metadata, with the fold and the assignment it was trained
    without (``audit``)."""
    from base.files import atomic_torch_save

    metadata = checkpoint.metadata.to_dict()
    metadata.pop("memory_pool", None)
    for fold, (model, path) in enumerate(zip(models, paths)):
        atomic_torch_save({"model_state_dict": model.state_dict(), **metadata,
                           "audit": {"fold": fold, "folds": len(paths), "assignment": assignment.tolist(),
                                     "source": str(checkpoint.path)}}, path)


def load_fold_models(paths: Sequence, assignment: torch.Tensor, command: str, device) -> List[Classifier]:
    """The fold models of ``paths``, each checked to have been trained without the fold ``assignment`` gives it; an
    AuditError names the command that makes missing or other ones."""
    from .checkpoints import Checkpoint, safe_torch_load

    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise AuditError(f"the {len(paths)}-fold models of this run are missing ({missing[0]}): {command} trains them "
                         f"(each like the run, without one fold)")
    models = []
    for fold, path in enumerate(paths):
        recorded = (safe_torch_load(path) or {}).get("audit") or {}
        if recorded.get("fold") != fold or recorded.get("assignment") != assignment.tolist():
            raise AuditError(f"{path} was trained on other folds than this run's data give now: {command} trains "
                             f"them again")
        models.append(Checkpoint.load(path).build_model(device))
    return models


@dataclass
class Suspect:
    position: int  # in the run's training subset
    source: str  # where the image came from
    file_sha256: Optional[str]
    score: float
    given: str  # its label
    supported: str  # the label the memory supports
    evidence: List[str]  # sources of the memory samples that argue for it
    fold: int


def ranking(found: OutOfFold, data: datasets.ExperimentData, score: str = DEFAULT_SCORE) -> List[Suspect]:
    """Every subset image, most suspect first (ties: subset order)."""
    if score not in found.scores:
        raise AuditError(f"score {score!r} needs a memory head; this model's scores are {sorted(found.scores)}")
    values = found.scores[score]
    order = torch.sort(values, descending=True, stable=True).indices.tolist()
    sources, files = data.train_set, data.train_set.file_sha256
    subset = data.subset.tolist()
    classes, supported = data.classes, found.supported
    return [Suspect(position, sources.source(subset[position]), files[subset[position]] if files else None,
                    float(values[position]), classes[int(found.labels[position])], classes[int(supported[position])],
                    [sources.source(subset[i]) for i in found.evidence[position]], int(found.folds[position]))
            for position in order]
