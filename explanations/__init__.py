"""Explanations of memory and prototype heads, each a module of its own:

    accuracy.py         which models an explanation serves; explanation accuracy (the paper's Tables 5-6)
    by_example.py       explanations by example: Memory Wrap's against a twin system, kNN and random, and the
                        paper's non-representativeness metrics
    counterfactuals.py  counterfactuals: Memory Wrap's memory sample against CFProto (prototype-guided), IM1 / IM2
    autoencoders.py     the autoencoders IM1 / IM2 and CFProto need, trained per run
    figures.py          memory images, attributions over images, prototype figures, an audit's suspects
    attribution.py      Integrated Gradients of the input and the memory samples shown

Every method works on the features core/evaluation.py caches, with memory sets drawn by the one protocol of
datasets.py. This file only hands their names on.
"""
from .accuracy import (MEMORY_POOLS, PAPER_SPLIT_SEED, ExplanationError, ExplanationScores, explanation_scores,
                       mean_or_none, memory_modalities, paper_memory_pool, prototype_modalities, require_explainable,
                       require_memory_model, top_sample_scores)
from .attribution import (BASELINES, HEATMAP_COLUMNS, baseline_images, heatmap_figure, integrated_gradients,
                          not_converged, white_baseline)
from .figures import (FIGURE_DPI, MEMORY_FIGURE_COLUMN_INCHES, MEMORY_FIGURE_HEIGHT_INCHES, NEAREST_PER_PROTOTYPE, SIGNS,
                      audit_figure, distances_figure, memory_figure, memory_images, prototype_figure, save_figure,
                      show_attribution, show_image)
