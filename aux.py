"""What the scripts share: flag definitions, the one error guard, loading saved runs for evaluation. The library is
core/, training.py, explanations/, datasets.py, readers/ and architectures/ (docs/design.md). On Windows AUX is a
reserved file name: use WSL, or rename this file; the name is kept because the paper's users know it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import datasets
from architectures import Classifier
from base.errors import exit_on_user_errors  # noqa: F401 (the scripts' guard: @aux.exit_on_user_errors)
from core import config, runtime
from core.checkpoints import Checkpoint, check_one_experiment, list_checkpoints
from core.evaluation import FeatureCache

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "config" / "train.yaml"


def define_override_flags() -> None:
    """train.py's flags that override config keys, from the one list in core/config.py."""
    from absl import flags

    for override in config.overrides():
        if override.choices:
            flags.DEFINE_enum(override.flag, None, list(override.choices), f"override {override.help}")
        elif override.kind is int:
            flags.DEFINE_integer(override.flag, None, f"override {override.help}", lower_bound=override.lower_bound,
                                 upper_bound=override.upper_bound)
        else:
            flags.DEFINE_string(override.flag, None, f"override {override.help}")


def override_values(flag_values) -> Dict[str, object]:
    return {override.flag: flag_values[override.flag].value for override in config.overrides()}


def define_evaluation_flags(draws: bool = True, explains: bool = False) -> None:
    """The flags of every script that evaluates saved checkpoints (absl). What a checkpoint records is read
    from it; the flags fill in what a paper checkpoint lacks, and one that contradicts the checkpoint is an error.
    ``explains``: --strict, for the scripts that explain models (explanations/records.py checks them first)."""
    from absl import flags

    if explains:
        flags.DEFINE_bool("strict", False, "refuse a model whose explanations carry no information (test accuracy "
                          "near chance, or one class predicted for nearly every image) instead of flagging it")
    flags.DEFINE_string("dataset_dir", None, "folder of the datasets (default: the one recorded at training)")
    flags.DEFINE_alias("dir_dataset", "dataset_dir")  # the paper's spelling
    flags.DEFINE_string("config", str(DEFAULT_CONFIG), "defaults for what a paper checkpoint does not record")
    flags.DEFINE_integer("batch_size_test", None, "test images per memory draw (default: the run's batch_size_test; "
                         "paper checkpoints: 500)", lower_bound=1, upper_bound=config.MAX_IMAGES)
    if draws:
        flags.DEFINE_integer("draws", None, "memory draws to average over (default: the run's eval_draws, else 5)",
                             lower_bound=1, upper_bound=config.MAX_DRAWS)
    flags.DEFINE_enum("device", "auto", list(config.DEVICES), "device")
    flags.DEFINE_enum("dataset", None, list(config.dataset_names()), "dataset (read from the checkpoint)")
    flags.DEFINE_enum("modality", None, list(config.modalities()), "modality (read from the checkpoint)")
    flags.DEFINE_string("model", None, "network name (read from the checkpoint)")
    flags.DEFINE_integer("train_examples", None, "training subset size (read from the checkpoint)", lower_bound=1)
    flags.DEFINE_integer("mem_examples", None, "memory set size (read from the checkpoint)", lower_bound=1,
                         upper_bound=config.MAX_IMAGES)
    flags.DEFINE_integer("seed", None, "run seed (read from the checkpoint; for a paper checkpoint <r>.pt, r-1)",
                         lower_bound=0)
    flags.DEFINE_integer("val_examples", None, "validation split of the run (read from the checkpoint; paper "
                         "checkpoints: 6000, CINIC10 10 as the paper's code)", lower_bound=0)
    flags.DEFINE_enum("memory_source", None, list(config.MEMORY_SOURCES), "memory pool of the run (read from the "
                      "checkpoint; paper checkpoints: full for CIFAR10 as the paper's code, else subset)")


def load_checkpoint(path, flag_values) -> Checkpoint:
    """A checkpoint with the evaluation flags filling in (or checked against) its metadata."""
    return Checkpoint.load(path, model_name=flag_values.model, modality=flag_values.modality,
                           dataset_name=flag_values.dataset, train_examples=flag_values.train_examples,
                           mem_examples=flag_values.mem_examples, seed=flag_values.seed)


def load_experiment(folder, flag_values) -> List[Checkpoint]:
    """The checkpoints of one experiment folder (the runs results.json lists); a folder of several is refused."""
    checkpoints = [load_checkpoint(path, flag_values) for path in list_checkpoints(folder)]
    check_one_experiment(checkpoints)
    return checkpoints


@dataclass
class LoadedRun:
    """A saved run ready for evaluation: its checkpoint, its model (eval mode), its data, and the cached features."""
    checkpoint: Checkpoint
    model: Classifier
    data: datasets.ExperimentData
    cache: Optional[FeatureCache]


def load_for_evaluation(checkpoint: Checkpoint, flag_values, dataset_cache: Optional[Dict] = None,
                        test_count: Optional[int] = None, encode_now: bool = True,
                        memory_pool: Optional[Callable] = None, batch_size: Optional[int] = None,
                        test_images: Optional[datasets.ImageSet] = None) -> LoadedRun:
    """A checkpoint's model and its run's data (an exported model with ``test_images``: its own pool), the test set
    (its first ``test_count`` images, or ``test_images`` in one batch) and the memory pool encoded once
    (``encode_now``). ``dataset_cache`` shares datasets; ``memory_pool(data)`` replaces the pool (--memory_pool=full);
    ``batch_size``: test images per memory draw unless --batch_size_test says (default: the run's)."""
    device = runtime.choose_device(flag_values.device)
    model = checkpoint.build_model(device)
    if test_images is not None and checkpoint.memory_pool is not None and flag_values.dataset_dir is None:
        data = checkpoint.own_data(device)
    else:
        data = checkpoint.run_data(config.load_config(flag_values.config), flag_values.dataset_dir, dataset_cache,
                                   device, memory_source=flag_values.memory_source,
                                   val_examples=flag_values.val_examples)
    if test_images is not None:
        data, batch_size = data.with_test_images(test_images), len(test_images)
    if memory_pool is not None:
        data = data.with_memory_pool(memory_pool(data))
    saved = checkpoint.saved_config
    batch_size = batch_size if test_images is not None else (flag_values.batch_size_test or batch_size
                                                             or (saved.batch_size_test if saved else 500))
    draws = getattr(flag_values, "draws", None) or (saved.eval_draws if saved else 5)
    cache = (FeatureCache.build(model, data, batch_size, checkpoint.seed, draws, checkpoint.autocast(device),
                                test_count) if encode_now else None)
    return LoadedRun(checkpoint, model, data, cache)


def load_for_explanation(flag_values, output_root, test_count: Optional[int] = None, encode_now: bool = True,
                         modalities: Optional[List[str]] = None, what: str = "this script"):
    """What both generate_* scripts start with: ``--path_model``'s model ready for evaluation, and its output
    folder ``<output_root>/<DATASET>/<MODALITY>/<MODEL>``. Refuses a modality outside ``modalities`` (default:
    the memory heads) and an output folder that cannot be written, before any data are read."""
    from base.files import writable_folder
    from explanations import memory_modalities, require_explainable

    checkpoint = load_checkpoint(flag_values.path_model, flag_values)
    require_explainable(checkpoint, modalities or memory_modalities(), what)
    folder = writable_folder(Path(output_root) / checkpoint.dataset_name / checkpoint.modality / checkpoint.model_name)
    return load_for_evaluation(checkpoint, flag_values, test_count=test_count, encode_now=encode_now), folder
