"""The configuration, one module per concern; this file only hands their names on (``from core import config``).

    choices.py     the choice lists (devices, precisions, schedulers...): flags, checks and tables read them
    schema.py      Config and its sections: frozen dataclasses that check themselves; parse, to_dict / from_dict
    reading.py     files and flags into plain data: YAML (no aliases), train.py's overrides, --set, load_config
    comparison.py  whether a saved config computes the same runs as the current one
    reference.py   the README's table of config choices
"""
from .choices import (AUGMENTATIONS, DEPTHWISE_FP32, DEVICES, DISTANCE_NAMES, MAX_DRAWS, MAX_EPOCHS,  # noqa: F401
                      MAX_IMAGES, MAX_ITERATIONS, MAX_RUNS, MAX_STEPS, MEMORY_FORMATS, MEMORY_SOURCES, OPTIMIZERS,
                      PRECISIONS, SCHEDULERS, dataset_names, modalities)
from .comparison import resolved_levers, setting_differences  # noqa: F401
from .reading import (Override, apply_overrides, apply_settings, load_config, load_yaml_text, overrides,  # noqa: F401
                      read_yaml)
from .reference import choices_table  # noqa: F401
from .schema import (BEFORE_KEY_EXISTED, HEAD_SETTINGS, NOT_RESULT_SHAPING, PAPER_CODE_EVALUATION,  # noqa: F401
                     PAPER_MEMORY_FLIP, PAPER_SCHEDULER, Config, ConfigError, DatasetConfig, HeadConfig, OptimizerConfig,
                     as_computed, check_modality, prototypes_file_problems, shown,
                     uses_weights_preprocessing)
