"""The library under the scripts, one module per concern.

    config.py       the YAML schema: dataclasses that check themselves, overrides, the choice lists
    runtime.py      seeds and RNG state, devices, precision and memory format, determinism
    checkpoints.py  the checkpoint schema (RunMetadata), the resumable TrainingState, safe loading
    evaluation.py   features encoded once (FeatureCache), memory passes, accuracy, majority votes
    results.py      per-run records, results.json, mean and std, the paper's table lines

Nothing is re-exported here: import the module you need (``from core import config``).
"""
