"""What the scripts share: flag definitions, the one error guard, loading saved runs for evaluation with their flags
(core/loading.py loads them). The library is core/, explanations/, datasets.py, readers/ and architectures/
(docs/design.md). On Windows AUX is a
reserved file name: use WSL, or rename this file; the name is kept because the paper's users know it."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from base.errors import exit_on_user_errors  # noqa: F401 (the scripts' guard: @aux.exit_on_user_errors)
from core import config
from core.checkpoints import Checkpoint, check_one_experiment, list_checkpoints
from core.loading import LoadedRun, load_run

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


def load_for_evaluation(checkpoint: Checkpoint, flag_values, dataset_cache: Optional[Dict] = None,
                        **options) -> LoadedRun:
    """``core.loading.load_run`` with the evaluation flags: the dataset folder, the device, what a paper checkpoint
    does not record, and --batch_size_test / --draws over the run's own (``options``: load_run's)."""
    if options.get("test_images") is None and flag_values.batch_size_test:
        options["batch_size"] = flag_values.batch_size_test
    return load_run(checkpoint, default_config=config.load_config(flag_values.config),
                    dataset_dir=flag_values.dataset_dir, device=flag_values.device, dataset_cache=dataset_cache,
                    draws=getattr(flag_values, "draws", None), memory_source=flag_values.memory_source,
                    val_examples=flag_values.val_examples, **options)


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
