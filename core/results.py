"""What a run and an experiment report: mean and std over runs, the paper's table lines."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


CHANCE_MARGIN = 5.0  # points of accuracy above chance under which a model is said to explain nothing


def chance(num_classes: int) -> float:
    """The accuracy (%) of guessing among ``num_classes`` classes."""
    return 100.0 / max(int(num_classes or 2), 2)


def at_chance(accuracy, num_classes: int) -> bool:
    """Whether an accuracy (%) is within ``CHANCE_MARGIN`` points of chance: the model's explanations carry no
    information (explanations/records.py says why per model)."""
    return accuracy is not None and accuracy <= chance(num_classes) + CHANCE_MARGIN


def mean_std(values) -> Tuple[float, float]:
    """Mean and population standard deviation (numpy's default, as the paper's tables); None if no values."""
    values = list(values)
    return (float(np.mean(values)), float(np.std(values))) if values else (None, None)


def run_line(run: int, loss: float, acc: float, accuracies: List[float], train_minutes: float, eval_minutes: float) -> str:
    """The paper's per-run line."""
    mean, std = mean_std(accuracies)
    return (f"Run:{run} | Loss:{loss:.4f} | Accuracy {acc:.2f} | Mean Accuracy:{mean:.2f} | "
            f"Std Dev Accuracy:{std:.2f}\tT:{train_minutes:.2f}min\tE:{eval_minutes:.2f}min")


def summary_line(config, modality: str, accuracies: List[float]) -> str:
    """The paper's Summary line of an experiment ("" without runs): train.py prints it once, at the end."""
    if not accuracies:
        return ""
    mean, std = mean_std(accuracies)
    return (f"Summary | {config.dataset_name} | {modality} | {config.model} | train_examples {config.train_examples} | "
            f"runs {len(accuracies)} | Mean Accuracy:{mean:.2f} | Std Dev Accuracy:{std:.2f}")
