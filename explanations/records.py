"""What the explanation scripts write, and whether a model's explanations mean anything.

    content, notes = merge_parts(path, content, parts=["input"], settings={"paper_code": False, "draws": 5})
    problem = uninformative(model, cache, checkpoint)      # "run 1: accuracy 10.2 %, chance 10.0 %: ..." or None

A file holds parts (explanation_examples.json: one per metric); each part records the settings it was computed with.
A script that computes some parts updates them and keeps the file's others, where they describe the same models;
a part computed anew replaces the old one whatever its settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from architectures import Classifier
from core.checkpoints import Checkpoint
from core.evaluation import FeatureCache, evaluate
from core.results import at_chance, chance

ONE_CLASS_SHARE = 0.9  # ... or when it predicts one class for this share of the test images


def _identity(row: Dict[str, Any]) -> Tuple[str, Any]:
    return str(row.get("checkpoint")), row.get("seed")


def merge_parts(path: Path, content: Dict[str, Any], parts: Sequence[str], settings: Dict[str, Any]
                ) -> Tuple[Dict[str, Any], List[str]]:
    """``content`` (its ``models`` rows hold ``parts``) merged with the file at ``path``: every other part the file
    holds for the very same models (checkpoint and seed) is kept with its own settings. Returns the merged content
    (``settings``: part -> the settings it was computed with) and one note per kept part."""
    merged = dict(content)
    merged["settings"] = {part: dict(settings) for part in parts}
    notes: List[str] = []
    try:
        old = json.loads(Path(path).read_text()) if Path(path).is_file() else None
    except (ValueError, UnicodeDecodeError):
        old = None  # a damaged file is replaced
    if not isinstance(old, dict) or not isinstance(old.get("models"), list):
        return merged, notes
    old_rows = {_identity(row): row for row in old["models"] if isinstance(row, dict)}
    if set(old_rows) != {_identity(row) for row in content["models"]}:
        return merged, notes  # other models: nothing of the old file describes these
    old_settings = old.get("settings") or {}
    for part in sorted({key for row in old_rows.values() for key in row} - set(parts)):
        if part not in old_settings and part not in (old.get("summary") or {}):
            continue  # a row's own bookkeeping (images, skipped...), not a part
        for row in merged["models"]:
            row[part] = old_rows[_identity(row)].get(part)
        recorded = old_settings.get(part, {"paper_code": old.get("paper_code")})
        merged["settings"][part] = recorded
        notes.append(f"kept {part} from {Path(path).name} (computed with {describe(recorded)})")
    return merged, notes


def describe(settings: Dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items()) or "unrecorded settings"


SAMPLE = 100  # test images a cache must hold for its own accuracy and predicted classes to be judged


def uninformative(model: Classifier, cache: Optional[FeatureCache], checkpoint: Checkpoint) -> Optional[str]:
    """One line when a model's explanations carry no information: its test accuracy within
    ``core.results.CHANCE_MARGIN`` points of chance, or one class predicted for at least ``ONE_CLASS_SHARE`` of the test images; else None. A cache
    of fewer than ``SAMPLE`` test images (a few figures), or none, is judged by the accuracy the run recorded."""
    name = f"run {checkpoint.run or checkpoint.seed + 1}"
    judged = cache is not None and len(cache.test_labels) >= SAMPLE
    accuracy = evaluate(model, cache).accuracy if judged else checkpoint.accuracy
    if at_chance(accuracy, checkpoint.num_classes):
        return (f"{name}: accuracy {accuracy:.1f} %, chance {chance(checkpoint.num_classes):.1f} %: its explanations "
                f"carry no information")
    if judged:
        predictions = _predictions(model, cache)
        share = float(torch.bincount(predictions).max()) / len(predictions)
        if share >= ONE_CLASS_SHARE:
            return (f"{name}: it predicts one class for {100 * share:.0f} % of the test images: its explanations "
                    f"carry no information")
    return None


def check_models(loaded, strict: bool, error) -> Optional[str]:
    """``uninformative`` for a loaded run, printed as one line; with ``strict`` an ``error`` (the script's
    ExplanationError) instead. Returns the line, for the script's JSON."""
    problem = uninformative(loaded.model, loaded.cache, loaded.checkpoint)
    if problem and strict:
        raise error(f"{problem}; --strict refuses to explain it (drop --strict to compute and flag it)")
    if problem:
        print(f"Warning: {problem}", flush=True)
    return problem


@torch.no_grad()
def _predictions(model: Classifier, cache: FeatureCache) -> torch.Tensor:
    from core.evaluation import memory_pass

    if not model.uses_memory:
        return model.classify(cache.test_features).argmax(1).cpu()
    generator, _ = cache.generators()
    return memory_pass(model, cache, generator).predictions.cpu()
