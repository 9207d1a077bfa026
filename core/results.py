"""What a run and an experiment report: mean and std over runs, the paper's table lines."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


def mean_std(values) -> Tuple[float, float]:
    """Mean and population standard deviation (numpy's default, as the paper's tables); None if no values."""
    values = list(values)
    return (float(np.mean(values)), float(np.std(values))) if values else (None, None)


def run_line(run: int, loss: float, acc: float, accuracies: List[float], train_minutes: float, eval_minutes: float) -> str:
    """The paper's per-run line."""
    mean, std = mean_std(accuracies)
    return (f"Run:{run} | Loss:{loss:.4f} | Accuracy {acc:.2f} | Mean Accuracy:{mean:.2f} | "
            f"Std Dev Accuracy:{std:.2f}\tT:{train_minutes:.2f}min\tE:{eval_minutes:.2f}min")
