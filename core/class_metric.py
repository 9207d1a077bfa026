"""Class metrics for metric-guided prototype heads: a cost matrix D between classes, and a class tree.

    hierarchy: cifar10      the CIFAR-10 classes (and CINIC-10's, in the same order) under two super-classes,
                            vehicles and animals; D = the tree distance (2 within a super-class, 4 across)
    hierarchy: <file.csv>   any C x C matrix of costs (no tree: no hierarchical inference)

D must be square, num_classes x num_classes, symmetric, with a zero diagonal and no negative entry.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from readers import CIFAR10_CLASSES

CIFAR10_TREE = {"vehicles": ("airplane", "automobile", "ship", "truck"),
                "animals": ("bird", "cat", "deer", "dog", "frog", "horse")}
BUILT_IN_DATASETS = {"cifar10": ("CIFAR10", "CINIC10")}  # the datasets whose classes a built-in tree describes


def cifar10_tree() -> Tuple[np.ndarray, List[int]]:
    """(D [10, 10], parents [12]): leaves 0..9 in CIFAR-10's class order, then the nodes vehicles (10) and
    animals (11), children of the root (-1)."""
    groups = list(CIFAR10_TREE)
    group_of = {name: groups.index(group) for group, members in CIFAR10_TREE.items() for name in members}
    leaf_groups = np.array([group_of[name] for name in CIFAR10_CLASSES])
    costs = np.where(leaf_groups[:, None] == leaf_groups[None, :], 2.0, 4.0)
    np.fill_diagonal(costs, 0.0)
    parents = [len(CIFAR10_CLASSES) + g for g in leaf_groups.tolist()] + [-1] * len(groups)
    return costs, parents


def matrix_problems(costs: np.ndarray, num_classes: int) -> List[str]:
    """What is wrong with a cost matrix (nothing: an empty list)."""
    if costs.ndim != 2 or costs.shape[0] != costs.shape[1]:
        return [f"the class metric must be a square matrix, got shape {costs.shape}"]
    if costs.shape[0] != num_classes:
        return [f"the class metric is {costs.shape[0]} x {costs.shape[0]} but the dataset has {num_classes} classes"]
    problems = []
    if not np.isfinite(costs).all():
        problems.append("the class metric has entries that are not finite numbers")
    if not np.allclose(costs, costs.T):
        problems.append("the class metric must be symmetric")
    if np.any(np.diag(costs) != 0):
        problems.append("the class metric must have a zero diagonal")
    if np.any(costs < 0):
        problems.append("the class metric must not have negative entries")
    return problems


def read_matrix(path) -> np.ndarray:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"the class metric file {path} is a directory; give a CSV file (C x C costs)")
    if not path.exists():
        raise ValueError(f"the class metric file {path} does not exist")
    try:
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except OSError:
        raise ValueError(f"the class metric file {path} cannot be read (does it exist?)") from None
    except ValueError as error:
        raise ValueError(f"the class metric file {path} is not a CSV matrix of numbers ({error})") from None


def class_metric(hierarchy: str, num_classes: int, dataset_name: Optional[str] = None
                 ) -> Tuple[np.ndarray, Optional[List[int]]]:
    """(D, parents of the tree nodes or None) of a ``hierarchy`` setting; ValueError naming the problems. A
    built-in tree is refused for a ``dataset_name`` whose classes it does not describe."""
    if hierarchy in BUILT_IN_DATASETS and dataset_name is not None and dataset_name not in BUILT_IN_DATASETS[hierarchy]:
        raise ValueError(f"{hierarchy!r} is the tree of CIFAR-10's classes (vehicles and animals), which are not "
                         f"{dataset_name}'s: use it with {' or '.join(BUILT_IN_DATASETS[hierarchy])}, or give "
                         f"{dataset_name}'s own class metric as a CSV matrix")
    if hierarchy == "cifar10":
        costs, parents = cifar10_tree()
    else:
        costs, parents = read_matrix(hierarchy), None
    problems = matrix_problems(costs, num_classes)
    if problems:
        raise ValueError(f"hierarchy {hierarchy!r}: " + "; ".join(problems))
    return costs, parents
