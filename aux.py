"""What the scripts share: flag definitions, the one error guard, loading a saved run for evaluation.

The library lives in core/ (config, runtime, checkpoints, evaluation, results), training.py,
explanations.py, datasets.py and architectures/. (On Windows, AUX is a reserved file name: clone into
WSL, or rename this file and its imports; the name is kept because the paper's users know it.)
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import datasets
from architectures import Classifier
from core import config, runtime
from core.checkpoints import Checkpoint
from base.errors import UserError
from core.evaluation import FeatureCache

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "config" / "train.yaml"


def exit_on_user_errors(main):
    """Wrap a script's ``main``: a UserError, an OSError or an unreadable JSON file ends the script with one
    line, ``error: <message>``, and exit status 1, instead of a traceback."""
    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            raise SystemExit(f"error: {error}") from None
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: a JSON file is not valid JSON ({error}); restore or delete it") from None
        except OSError as error:
            where = f" ({error.filename})" if error.filename else ""
            raise SystemExit(f"error: {error.strerror or error}{where}") from None
    return guarded


def define_override_flags() -> None:
    """train.py's flags that override config keys, from the one list in core/config.py."""
    from absl import flags

    for override in config.overrides():
        if override.choices:
            flags.DEFINE_enum(override.flag, None, list(override.choices), f"override {override.help}")
        elif override.kind is int:
            flags.DEFINE_integer(override.flag, None, f"override {override.help}")
        else:
            flags.DEFINE_string(override.flag, None, f"override {override.help}")


def override_values(flag_values) -> Dict[str, object]:
    return {override.flag: flag_values[override.flag].value for override in config.overrides()}


def define_evaluation_flags(draws: bool = True) -> None:
    """The flags every script that evaluates saved checkpoints takes (absl)."""
    from absl import flags

    flags.DEFINE_string("dataset_dir", None, "folder of the datasets (default: the one recorded at training)")
    flags.DEFINE_string("config", str(DEFAULT_CONFIG), "defaults for what a paper checkpoint does not record")
    flags.DEFINE_integer("batch_size_test", 500, "test batch size (each batch gets its own memory draw)")
    if draws:
        flags.DEFINE_integer("draws", 5, "memory draws to average over")
    flags.DEFINE_enum("device", "auto", list(config.DEVICES), "device")


@dataclass
class LoadedRun:
    """A saved run ready for evaluation: its checkpoint, its model (eval mode), its data, and the cached features."""
    checkpoint: Checkpoint
    model: Classifier
    data: datasets.ExperimentData
    cache: Optional[FeatureCache]


def load_for_evaluation(path, config_path=DEFAULT_CONFIG, dataset_dir=None, device_name="auto", batch_size=500,
                        dataset_cache: Optional[Dict] = None, test_count: Optional[int] = None, draws: int = 5,
                        encode_now: bool = True, **checkpoint_flags) -> LoadedRun:
    """Load a checkpoint (flags fill in or check its metadata), rebuild the model and its run's data, and
    encode the test set and the memory pool once (``encode_now``). ``dataset_cache`` shares datasets across
    calls. ``path`` may also be a Checkpoint already loaded."""
    checkpoint = path if isinstance(path, Checkpoint) else Checkpoint.load(path, **checkpoint_flags)
    device = runtime.choose_device(device_name)
    model = checkpoint.build_model(device)
    data = checkpoint.run_data(config.load_config(config_path), dataset_dir, dataset_cache, device)
    cache = (FeatureCache.build(model, data, batch_size, checkpoint.seed, draws, checkpoint.autocast(device),
                                test_count) if encode_now else None)
    return LoadedRun(checkpoint, model, data, cache)


def load_for_explanation(path_model, output_root, config_path=DEFAULT_CONFIG, dataset_dir=None, device_name="auto",
                         batch_size=500, test_count=None, encode_now=True):
    """What both generate_* scripts start with: a memory model ready for evaluation, and its output folder
    ``<output_root>/<DATASET>/<MODALITY>/<MODEL>``. Refuses models without memory and an output folder that
    cannot be written, before any data are read."""
    from base.files import writable_folder
    from explanations import require_memory_model

    checkpoint = Checkpoint.load(path_model)
    require_memory_model(checkpoint)
    folder = writable_folder(Path(output_root) / checkpoint.dataset_name / checkpoint.modality / checkpoint.model_name)
    loaded = load_for_evaluation(checkpoint, config_path, dataset_dir, device_name, batch_size,
                                 test_count=test_count, encode_now=encode_now)
    return loaded, folder
