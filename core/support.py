"""Is this input like anything the model knows? A memory model's support for a prediction, its threshold, and the
standard out-of-distribution scores it is measured against.

    scores = support(model, features, pool_features, pool_labels)       # per input: high = like the training images
    threshold = calibrate(support_of_validation_images)                  # keeps 95 % of in-distribution images
    auroc(in_scores, out_scores), fpr_at_95_tpr(in_scores, out_scores)

Support scores (``SUPPORT_SCORES``; the default ``DEFAULT_SUPPORT``: docs/audit.md says how it was chosen):
- ``nearest_similarity``: the cosine similarity of the input's features to the most similar image of the memory pool
  (the training image that resembles it most).
- ``top_weight``: the largest content weight with the whole pool as the memory (sparsemax is relative: a weight near
  1 means one training image stands out; spread weights, that none does).
Baselines, on the same model and features (higher = in-distribution): ``msp`` the maximum softmax probability
(Hendrycks & Gimpel, 2017), ``energy`` the negative free energy logsumexp of the logits (Liu et al., 2020),
``knn`` minus the distance to the k-th nearest training feature after L2 normalisation (Sun et al., 2022; k = 50).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from torch.nn import functional as F

from architectures import Classifier

SUPPORT_SCORES = ("nearest_similarity", "top_weight")
DEFAULT_SUPPORT = "nearest_similarity"
KEEP = 0.95  # the share of in-distribution images a threshold keeps
KNN_K = 50


@torch.no_grad()
def support(model: Classifier, features: torch.Tensor, pool_features: torch.Tensor, pool_labels: torch.Tensor,
            score: str = DEFAULT_SUPPORT, exclude_self: bool = False, batch_size: int = 250) -> torch.Tensor:
    """Each input's support from the memory pool (``score``); ``exclude_self``: the inputs are the pool itself, each
    compared with the others (leave-one-out)."""
    if score not in SUPPORT_SCORES:
        raise ValueError(f"unknown support score {score!r}; the scores are {list(SUPPORT_SCORES)}")
    found = []
    for start in range(0, len(features), batch_size):
        rows = features[start:start + batch_size]
        if score == "nearest_similarity":
            similarity = F.normalize(rows.float(), dim=1) @ F.normalize(pool_features.float(), dim=1).T
            if exclude_self:
                similarity[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = -2.0
            found.append(similarity.max(1).values)
        else:
            memory, labels = pool_features, pool_labels
            if exclude_self:  # one memory set per input: the pool without it
                weights = torch.stack([model.classify(rows[i:i + 1], _without(memory, start + i),
                                                      _without(labels, start + i), return_weights=True)[1][0].max()
                                       for i in range(len(rows))])
                found.append(weights.float())
                continue
            found.append(model.classify(rows, memory, labels, return_weights=True)[1].float().max(1).values)
    return torch.cat(found).cpu() if found else torch.zeros(0)


def _without(tensor: torch.Tensor, index: int) -> torch.Tensor:
    return torch.cat([tensor[:index], tensor[index + 1:]])


def calibrate(in_distribution: torch.Tensor, keep: float = KEEP) -> float:
    """The threshold that keeps ``keep`` of these in-distribution scores (at or above it): their (1 - keep)
    quantile, the lower of two neighbours (so that at least ``keep`` are kept)."""
    values = torch.sort(torch.as_tensor(in_distribution, dtype=torch.float64)).values
    if not len(values):
        raise ValueError("no scores to calibrate a threshold on")
    index = int(np.floor((1 - keep) * len(values)))
    return float(values[min(index, len(values) - 1)])


def msp(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), 1).max(1).values


def energy(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits.float(), 1)


def knn(features: torch.Tensor, train_features: torch.Tensor, k: int = KNN_K) -> torch.Tensor:
    """Minus the Euclidean distance of each (normalised) input to its k-th nearest (normalised) training feature."""
    k = min(k, len(train_features))
    distances = torch.cdist(F.normalize(features.float(), dim=1), F.normalize(train_features.float(), dim=1))
    return -distances.kthvalue(k, dim=1).values


def auroc(in_scores, out_scores) -> float:
    """The area under the ROC curve of telling in-distribution (positive, higher scores) from out-of-distribution."""
    from sklearn.metrics import roc_auc_score

    in_scores, out_scores = np.asarray(in_scores, dtype=float), np.asarray(out_scores, dtype=float)
    return float(roc_auc_score(np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))], np.r_[in_scores, out_scores]))


def fpr_at_95_tpr(in_scores, out_scores) -> float:
    """The share of out-of-distribution inputs kept by the threshold that keeps 95 % of the in-distribution ones."""
    threshold = calibrate(torch.as_tensor(np.asarray(in_scores, dtype=float)), KEEP)
    return float(np.mean(np.asarray(out_scores, dtype=float) >= threshold))


def record(score: str, threshold: float, calibrated_on: str, count: int) -> Dict:
    """What a checkpoint records of its support threshold."""
    return {"score": score, "threshold": threshold, "calibrated_on": calibrated_on, "images": count, "keep": KEEP}


def pool_threshold(model: Classifier, pool_features: torch.Tensor, pool_labels: torch.Tensor,
                   validation_features: Optional[torch.Tensor] = None, score: str = DEFAULT_SUPPORT) -> Dict:
    """The support threshold of a memory model: calibrated on the validation images where there are some, else on
    the memory pool itself, each image against the others (leave-one-out)."""
    if validation_features is not None and len(validation_features):
        scores = support(model, validation_features, pool_features, pool_labels, score)
        return record(score, calibrate(scores), "validation", len(scores))
    scores = support(model, pool_features, pool_features, pool_labels, score, exclude_self=True)
    return record(score, calibrate(scores), "memory pool, leave-one-out", len(scores))
