"""What the scripts share: config, seeding, devices, checkpoints, evaluation on cached features, tables.

Evaluation encodes each image once: in eval mode the encoder is a pure function of the image, so the
test set and the memory pool go through it once, and every memory draw, repetition, explanation metric
and majority-vote baseline is tensor work on the cached features (tests/test_eval.py proves it equals
the batch-by-batch ``model(images, memory_images)`` path).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import yaml

import datasets
from architectures import MODALITIES, Classifier, build_model, is_paper_state_dict, list_encoders, load_paper_state_dict

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "config" / "train.yaml"

# --- config ---------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem found."""


@dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float
    weight_decay: float
    momentum: float
    nesterov: bool


@dataclass(frozen=True)
class DatasetConfig:
    num_classes: int
    num_epochs: int
    opt_milestones: Tuple[int, ...]
    mem_examples: int
    scheduler: str = "multistep"  # multistep (SVHN, CIFAR10) | cosine (CINIC10)
    val_examples: int = 6000


@dataclass(frozen=True)
class Config:
    model: str
    save: bool
    train_examples: int
    runs: int
    batch_size_train: int
    batch_size_test: int
    optimizer: OptimizerConfig
    dataset_dir: str
    dataset_name: str
    datasets: Mapping[str, DatasetConfig]
    # keys beyond the paper's; their defaults reproduce the paper
    memory_source: str = "subset"  # subset (paper's text) | full (paper's CIFAR10 code)
    precision: str = "auto"  # auto: fp16 autocast + GradScaler on CUDA (as the paper), fp32 on CPU | fp32 | fp16 | bf16
    distance: str = "cosine"
    eval_draws: int = 5
    download: bool = True
    device: str = "auto"

    @property
    def dataset(self) -> DatasetConfig:
        return self.datasets[self.dataset_name]

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (for checkpoints and results.json)."""
        out = dataclasses.asdict(self)
        out["datasets"] = {name: dataclasses.asdict(section) for name, section in self.datasets.items()}
        for section in out["datasets"].values():
            section["opt_milestones"] = list(section["opt_milestones"])
        return out


_TOP_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_CHOICES = {"memory_source": ("subset", "full"), "precision": ("auto", "fp32", "fp16", "bf16"),
            "distance": ("cosine", "l2", "dot"), "device": ("auto", "cpu", "cuda"),
            "scheduler": ("multistep", "cosine")}


def _coerce(value, kind, where, problems):
    """Type check with the paper's YAML quirks: `1e-1` is a string to PyYAML, so numeric strings are floats."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    problems.append(f"{where}: expected {kind.__name__}, got {value!r}")
    return None


def _check_section(raw, cls, where, problems, required=None):
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {raw!r}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; allowed keys are {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                problems.append(f"{where}.{name}: missing")
            continue
        kind = {"Tuple[int, ...]": "milestones"}.get(str(f.type), f.type)
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
        if kind == "milestones":
            value = raw[name]
            if not isinstance(value, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in value):
                problems.append(f"{where}.{name}: expected a list of ints, got {value!r}")
                continue
            values[name] = tuple(value)
        else:
            coerced = _coerce(raw[name], kind, f"{where}.{name}", problems)
            if coerced is not None:
                values[name] = coerced
    return values


def _validate(raw: Dict[str, Any]) -> Config:
    problems: List[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a YAML mapping, got {type(raw).__name__}")
    dataset_keys = [k for k in raw if k in datasets.DATASETS]
    unknown = sorted(set(raw) - set(_TOP_FIELDS) - set(dataset_keys) - {"datasets"})
    if unknown:
        problems.append(f"unknown keys {unknown}; allowed keys are {sorted(set(_TOP_FIELDS) - {'datasets'})} "
                        f"and dataset sections {sorted(datasets.DATASETS)}")
    top = {}
    for name, f in _TOP_FIELDS.items():
        if name in ("optimizer", "datasets"):
            continue
        if name not in raw:
            if f.default is dataclasses.MISSING:
                problems.append(f"{name}: missing")
            continue
        kind = {"int": int, "float": float, "bool": bool, "str": str}[str(f.type)]
        value = _coerce(raw[name], kind, name, problems)
        if value is not None:
            top[name] = value
    optimizer = _check_section(raw.get("optimizer"), OptimizerConfig, "optimizer", problems) if "optimizer" in raw else None
    if "optimizer" not in raw:
        problems.append("optimizer: missing")
    sections = {}
    for name in dataset_keys:
        values = _check_section(raw[name], DatasetConfig, name, problems)
        if values is not None:
            sections[name] = values

    # values
    for name, choices in _CHOICES.items():
        if name in top and top[name] not in choices:
            problems.append(f"{name}: {top[name]!r} is not one of {list(choices)}")
    if "model" in top and top["model"] not in list_encoders():
        problems.append(f"model: unknown model {top['model']!r}; registered encoders are {list_encoders()}")
    dataset_name = top.get("dataset_name")
    if dataset_name is not None:
        if dataset_name not in datasets.DATASETS:
            problems.append(f"dataset_name: unknown dataset {dataset_name!r}; available datasets are "
                            f"{sorted(datasets.DATASETS)}")
        elif dataset_name not in raw:
            problems.append(f"dataset_name is {dataset_name!r} but the config has no {dataset_name}: section "
                            f"(num_classes, num_epochs, opt_milestones, mem_examples)")
    for name in ("train_examples", "runs", "batch_size_train", "batch_size_test", "eval_draws"):
        if name in top and top[name] <= 0:
            problems.append(f"{name}: must be > 0, got {top[name]}")
    if optimizer:
        if optimizer.get("learning_rate", 1) <= 0:
            problems.append(f"optimizer.learning_rate: must be > 0, got {optimizer['learning_rate']}")
        if optimizer.get("weight_decay", 0) < 0:
            problems.append(f"optimizer.weight_decay: must be >= 0, got {optimizer['weight_decay']}")
        if not 0 <= optimizer.get("momentum", 0) < 1:
            problems.append(f"optimizer.momentum: must be in [0, 1), got {optimizer['momentum']}")
        if optimizer.get("nesterov") and optimizer.get("momentum", 1) == 0:
            problems.append("optimizer.nesterov: Nesterov momentum needs momentum > 0")
    for name, values in sections.items():
        for key in ("num_classes", "num_epochs", "mem_examples"):
            if key in values and values[key] <= 0:
                problems.append(f"{name}.{key}: must be > 0, got {values[key]}")
        if values.get("num_classes", 2) < 2:
            problems.append(f"{name}.num_classes: must be >= 2")
        if values.get("val_examples", 0) < 0:
            problems.append(f"{name}.val_examples: must be >= 0, got {values['val_examples']}")
        milestones = values.get("opt_milestones", ())
        if any(m <= 0 for m in milestones) or list(milestones) != sorted(set(milestones)):
            problems.append(f"{name}.opt_milestones: must be positive and strictly increasing, got {list(milestones)}")
        if values.get("scheduler", "multistep") not in _CHOICES["scheduler"]:
            problems.append(f"{name}.scheduler: {values['scheduler']!r} is not one of {list(_CHOICES['scheduler'])}")
        if name in datasets.DATASETS and values.get("num_classes", datasets.DATASETS[name].num_classes) != datasets.DATASETS[name].num_classes:
            problems.append(f"{name}.num_classes: {name} has {datasets.DATASETS[name].num_classes} classes, "
                            f"got {values['num_classes']}")
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return Config(**top, optimizer=OptimizerConfig(**optimizer),
                  datasets={name: DatasetConfig(**values) for name, values in sections.items()})


# Flag name -> where it goes in the raw config. Dataset-section overrides apply to the chosen dataset.
TOP_OVERRIDES = {"dataset": "dataset_name", "model": "model", "train_examples": "train_examples", "runs": "runs",
                 "dataset_dir": "dataset_dir", "device": "device", "memory_source": "memory_source",
                 "precision": "precision"}
DATASET_OVERRIDES = {"epochs": "num_epochs", "mem_examples": "mem_examples", "val_examples": "val_examples"}


def load_config(path, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Read YAML, apply overrides (None values are ignored), validate everything once.

    ``epochs`` rescales ``opt_milestones`` proportionally (e.g. 300 epochs [150, 225] -> 15 epochs [8, 11]).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    raw = copy.deepcopy(raw)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(TOP_OVERRIDES) - set(DATASET_OVERRIDES))
    if unknown:
        raise ConfigError(f"unknown overrides {unknown}")
    if isinstance(raw, dict):
        for flag, key in TOP_OVERRIDES.items():
            if flag in overrides:
                raw[key] = overrides[flag]
        section = raw.get(raw.get("dataset_name"))
        if isinstance(section, dict):
            if "epochs" in overrides and isinstance(section.get("num_epochs"), int) and section["num_epochs"] > 0:
                old, new = section["num_epochs"], overrides["epochs"]
                milestones = section.get("opt_milestones")
                if isinstance(milestones, list) and all(isinstance(m, int) for m in milestones) and new > 0:
                    section["opt_milestones"] = sorted({max(1, round(m * new / old)) for m in milestones})
            for flag, key in DATASET_OVERRIDES.items():
                if flag in overrides:
                    section[key] = overrides[flag]
    try:
        return _validate(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# --- seeding and devices --------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """The paper's set_seed: torch, numpy, random, CUDA, deterministic cuDNN."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> Dict[str, Any]:
    """Global RNG states as plain data (loadable with weights_only=True)."""
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["random"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU (torch "
                          f"{torch.__version__}); use --device=cpu or install a CUDA build of torch")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of ['auto', 'cpu', 'cuda'], got {name!r}")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None means fp32. 'auto' is the paper's choice: fp16 autocast (with GradScaler) on CUDA, fp32 on CPU."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


# --- files ----------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_torch_save(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


class CheckpointError(ValueError):
    """A checkpoint is missing, unsafe, or inconsistent with what was asked for."""


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with clear errors: a file that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, which would run code "
            f"when unpickled. Only load checkpoints you trust; re-save it as a state dict with plain metadata. "
            f"({str(error).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({error})") from None


METADATA_KEYS = ("model_name", "modality", "dataset_name", "num_classes", "train_examples", "mem_examples", "run",
                 "seed", "accuracy", "config")


def describe_mismatch(model: torch.nn.Module, state_dict: Mapping[str, Any], error: Exception) -> str:
    """One line on why ``state_dict`` does not fit ``model`` (torch's own message lists every key)."""
    if not isinstance(state_dict, Mapping):
        return f"expected a state dict, found {type(state_dict).__name__}"
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        return (f"{len(missing)} missing keys (first: {missing[:2]}), {len(unexpected)} unexpected keys "
                f"(first: {unexpected[:2]})")
    wrong = [k for k, v in expected.items() if getattr(state_dict[k], "shape", None) != v.shape]
    if wrong:
        return f"{len(wrong)} keys with other shapes (first: {wrong[0]}: {tuple(state_dict[wrong[0]].shape)} here, " \
               f"{tuple(expected[wrong[0]].shape)} in the model)"
    return str(error).splitlines()[0]


@dataclass
class Checkpoint:
    path: Path
    state_dict: Dict[str, torch.Tensor]
    model_name: str
    modality: str
    dataset_name: str
    num_classes: int
    train_examples: int
    mem_examples: int
    seed: int
    config: Dict[str, Any] = field(default_factory=dict)
    accuracy: Optional[float] = None

    def autocast(self, device: torch.device) -> Optional[torch.dtype]:
        """The autocast train.py evaluated this run with, so that re-evaluation gives the same numbers
        (fp16 runs re-evaluated on a CPU fall back to fp32)."""
        precision = self.config.get("precision", "auto")
        if precision == "fp16" and device.type != "cuda":
            return None
        return autocast_dtype(precision, device)

    def build_model(self, device="cpu") -> Classifier:
        distance = self.config.get("distance", "cosine")
        model = build_model(self.model_name, self.modality, self.num_classes, distance=distance)
        try:
            if is_paper_state_dict(self.state_dict):
                load_paper_state_dict(model, self.state_dict)
            else:
                model.load_state_dict(self.state_dict, strict=True)
        except (RuntimeError, ValueError) as error:
            reason = str(error) if isinstance(error, ValueError) else describe_mismatch(model, self.state_dict, error)
            raise CheckpointError(f"{self.path}: the weights do not fit a {self.model_name} {self.modality} model "
                                  f"with {self.num_classes} classes: {reason}") from None
        return model.to(device).eval()


def save_checkpoint(path: Path, model: Classifier, metadata: Mapping[str, Any]) -> None:
    atomic_torch_save({"model_state_dict": model.state_dict(), **metadata}, path)


def load_checkpoint(path, model_name=None, modality=None, dataset_name=None, train_examples=None,
                    mem_examples=None, seed=None) -> Checkpoint:
    """Our checkpoints and the paper's (their key layout; metadata given by arguments where the file lacks it).

    An argument that contradicts the checkpoint's metadata is an error. The seed of a paper checkpoint
    ``<r+1>.pt`` is ``r``, as the paper's evaluation scripts assume.
    """
    path = Path(path)
    content = safe_torch_load(path)
    if isinstance(content, dict) and "model_state_dict" in content:
        state_dict, metadata = content["model_state_dict"], {k: content[k] for k in METADATA_KEYS if k in content}
    elif isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        state_dict, metadata = content, {}
    else:
        raise CheckpointError(f"{path} holds neither a state dict nor {{'model_state_dict': ..., metadata}}")
    given = {"model_name": model_name, "modality": modality, "dataset_name": dataset_name,
             "train_examples": train_examples, "mem_examples": mem_examples, "seed": seed}
    flag_names = {"model_name": "--model", "dataset_name": "--dataset"}
    for key, value in given.items():
        if value is None:
            continue
        if key in metadata and metadata[key] != value:
            raise CheckpointError(f"{path} was saved with {key}={metadata[key]!r} but {flag_names.get(key, '--' + key)}"
                                  f"={value!r} was given; drop the flag or pick the matching checkpoint")
        metadata[key] = value
    if "seed" not in metadata:
        stem = path.stem
        metadata["seed"] = int(stem) - 1 if stem.isdigit() and int(stem) >= 1 else 0
    if "dataset_name" in metadata and "num_classes" not in metadata and metadata["dataset_name"] in datasets.DATASETS:
        metadata["num_classes"] = datasets.DATASETS[metadata["dataset_name"]].num_classes
    missing = [key for key in ("model_name", "modality", "dataset_name", "train_examples") if key not in metadata]
    if missing:
        raise CheckpointError(f"{path} does not record {missing}: give them as flags "
                              f"({', '.join(flag_names.get(k, '--' + k) for k in missing)})")
    if metadata["modality"] not in MODALITIES:
        raise CheckpointError(f"{path}: unknown modality {metadata['modality']!r}")
    return Checkpoint(path=path, state_dict=state_dict, model_name=metadata["model_name"],
                      modality=metadata["modality"], dataset_name=metadata["dataset_name"],
                      num_classes=int(metadata["num_classes"]), train_examples=int(metadata["train_examples"]),
                      mem_examples=int(metadata.get("mem_examples", 100)), seed=int(metadata["seed"]),
                      config=dict(metadata.get("config") or {}), accuracy=metadata.get("accuracy"))


def checkpoint_data(checkpoint: Checkpoint, default_config: Optional[Config], dataset_dir=None,
                    loaded: Optional[Dict] = None, device="cpu") -> datasets.ExperimentData:
    """The data a checkpoint's run trained on: same dataset, subset, seed and memory source."""
    saved = checkpoint.config
    section = (saved.get("datasets") or {}).get(checkpoint.dataset_name, {})
    if not section and default_config is not None and checkpoint.dataset_name in default_config.datasets:
        section = dataclasses.asdict(default_config.datasets[checkpoint.dataset_name])
    val_examples = int(section.get("val_examples", 6000))
    dataset_dir = dataset_dir or saved.get("dataset_dir") or (default_config.dataset_dir if default_config else "datasets")
    key = (checkpoint.dataset_name, str(dataset_dir))
    loaded = {} if loaded is None else loaded
    if key not in loaded:
        loaded[key] = datasets.load_dataset(checkpoint.dataset_name, dataset_dir,
                                            download=saved.get("download", True))
    train, test = loaded[key]
    return datasets.ExperimentData.build(datasets.get_spec(checkpoint.dataset_name), train, test,
                                         checkpoint.train_examples, val_examples, seed=checkpoint.seed,
                                         memory_source=saved.get("memory_source", "subset"),
                                         mem_examples=checkpoint.mem_examples, device=device)


def define_evaluation_flags(draws: bool = True) -> None:
    """The flags every script that evaluates saved checkpoints takes (absl)."""
    from absl import flags

    flags.DEFINE_string("dataset_dir", None, "folder of the datasets (default: the one recorded at training)")
    flags.DEFINE_string("config", str(DEFAULT_CONFIG), "defaults for what a paper checkpoint does not record")
    flags.DEFINE_integer("batch_size_test", 500, "test batch size (each batch gets its own memory draw)")
    if draws:
        flags.DEFINE_integer("draws", 5, "memory draws to average over")
    flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "device")


@dataclass
class Evaluable:
    """A checkpoint ready for evaluation: its model (eval mode), its run's data, and the cached features."""
    checkpoint: "Checkpoint"
    model: Classifier
    data: datasets.ExperimentData
    cache: Optional["FeatureCache"]


def load_for_evaluation(path, config_path=DEFAULT_CONFIG, dataset_dir=None, device_name="auto", batch_size=500,
                        loaded: Optional[Dict] = None, test_count: Optional[int] = None, encode_now: bool = True,
                        **checkpoint_flags) -> Evaluable:
    """Load a checkpoint (flags fill in or check its metadata), rebuild the model and its run's data, and
    encode the test set and the memory pool once (``encode_now``). ``loaded`` shares datasets across calls.
    ``path`` may also be a Checkpoint already loaded."""
    checkpoint = path if isinstance(path, Checkpoint) else load_checkpoint(path, **checkpoint_flags)
    device = choose_device(device_name)
    model = checkpoint.build_model(device)
    data = checkpoint_data(checkpoint, load_config(config_path), dataset_dir, loaded, device)
    cache = FeatureCache.build(model, data, batch_size, checkpoint.autocast(device), test_count) if encode_now else None
    return Evaluable(checkpoint, model, data, cache)


# --- evaluation on cached features ----------------------------------------------------------------

EVAL_SEED_OFFSET = 10_000  # evaluation draws use their own stream: seed + offset
AUXILIARY_SEED_OFFSET = 20_000  # the memory of the memory samples (explanations, majority vote): another stream


def eval_generators(seed: int) -> Tuple[torch.Generator, torch.Generator]:
    """(memory draws, auxiliary draws): separate streams, so that the test accuracy of eval.py, eval_dir.py,
    explanation_accuracy.py and train.py is the same number for the same checkpoint."""
    return (torch.Generator().manual_seed(EVAL_SEED_OFFSET + seed),
            torch.Generator().manual_seed(AUXILIARY_SEED_OFFSET + seed))


@torch.no_grad()
def encode(model: Classifier, images_of, count: int, batch_size: int, autocast: Optional[torch.dtype] = None) -> torch.Tensor:
    """Features of ``count`` images, ``images_of(index_tensor)`` giving normalised images; eval mode, once each."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, count, batch_size):
        indices = torch.arange(start, min(start + batch_size, count))
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            chunks.append(model.encode(images_of(indices)).float())
    return torch.cat(chunks) if chunks else torch.zeros(0)


@dataclass
class FeatureCache:
    test_features: torch.Tensor  # [T, D]
    test_labels: torch.Tensor  # [T]
    memory_features: Optional[torch.Tensor]  # [P, D], the memory pool (None for std models)
    memory_labels: Optional[torch.Tensor]  # [P]

    @classmethod
    def build(cls, model: Classifier, data: datasets.ExperimentData, batch_size: int,
              autocast: Optional[torch.dtype] = None, test_count: Optional[int] = None) -> "FeatureCache":
        """Encode the test set (its first ``test_count`` images, if given) and the memory pool, once each."""
        test_count = len(data.test_labels) if test_count is None else min(test_count, len(data.test_labels))
        test_features = encode(model, lambda i: data.test_batch(i)[0], test_count, batch_size, autocast)
        memory_features = memory_labels = None
        if model.uses_memory:
            pool = data.memory_pool
            memory_features = encode(model, lambda i: data.memory_batch(pool[i]), len(pool), batch_size, autocast)
            memory_labels = data.train_labels[pool.to(data.device)]
        return cls(test_features, data.test_labels[:test_count], memory_features, memory_labels)


@dataclass
class MemoryPass:
    """One pass over the test set with fresh memory draws per batch (as the paper), on cached features."""
    logits: torch.Tensor  # [T, C]
    content_weights: torch.Tensor  # [T, M]
    memory_positions: torch.Tensor  # [T, M] positions in the memory pool
    memory_predictions: Optional[torch.Tensor] = None  # [T, M] the model's predictions for those memory samples

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)


@torch.no_grad()
def memory_pass(model: Classifier, cache: FeatureCache, mem_examples: int, batch_size: int,
                generator: torch.Generator, auxiliary: Optional[torch.Generator] = None) -> MemoryPass:
    """Test batches in order; each gets a fresh memory draw. With an ``auxiliary`` generator, a second
    draw per batch is the memory with which the memory samples themselves are classified (the paper's
    explanation protocol), giving ``memory_predictions``."""
    memory_predictions = auxiliary is not None
    model.eval()
    pool_size = len(cache.memory_features)
    logits, weights, positions, memory_preds = [], [], [], []
    for start in range(0, len(cache.test_labels), batch_size):
        features = cache.test_features[start:start + batch_size]
        drawn = datasets.draw_positions(pool_size, mem_examples, generator)
        memory = cache.memory_features[drawn.to(features.device)]
        batch_logits, batch_weights = model.classify(features, memory, return_weights=True)
        logits.append(batch_logits.float())
        weights.append(batch_weights.float())
        positions.append(drawn.expand(len(features), -1))
        if memory_predictions:
            auxiliary_memory = cache.memory_features[datasets.draw_positions(pool_size, mem_examples, auxiliary).to(features.device)]
            predicted = model.classify(memory, auxiliary_memory).argmax(1)
            memory_preds.append(predicted.expand(len(features), -1))
    return MemoryPass(torch.cat(logits), torch.cat(weights), torch.cat(positions),
                      torch.cat(memory_preds) if memory_predictions else None)


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (predictions.cpu() == labels.cpu()).float().mean().item()


@dataclass
class Evaluation:
    accuracy: float  # mean over draws
    accuracies: List[float]  # one per draw (one for std models)
    loss: float
    majority_vote_predictions: Optional[float] = None  # MVO, mean over draws
    majority_vote_labels: Optional[float] = None  # MVY


def majority_vote(values: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per row, the most frequent class among the memory samples with positive weight (ties: smallest class)."""
    votes = torch.nn.functional.one_hot(values.long(), num_classes).float() * (weights > 0).float().unsqueeze(-1)
    return votes.sum(1).argmax(1)


@torch.no_grad()
def evaluate(model: Classifier, cache: FeatureCache, mem_examples: int, batch_size: int, seed: int,
             draws: int = 5, majority: bool = False) -> Evaluation:
    """Test accuracy; memory models: mean over ``draws`` passes with fresh memory draws (the paper uses 5)."""
    model.eval()
    labels = cache.test_labels
    if not model.uses_memory:
        logits = torch.cat([model.classify(cache.test_features[i:i + batch_size]).float()
                            for i in range(0, len(labels), batch_size)])
        return Evaluation(accuracy(logits.argmax(1), labels), [accuracy(logits.argmax(1), labels)],
                          torch.nn.functional.cross_entropy(logits, labels).item())
    generator, auxiliary = eval_generators(seed)
    accuracies, losses, mvo, mvy = [], [], [], []
    for _ in range(draws):
        result = memory_pass(model, cache, mem_examples, batch_size, generator, auxiliary if majority else None)
        accuracies.append(accuracy(result.predictions, labels))
        losses.append(torch.nn.functional.cross_entropy(result.logits, labels).item())
        if majority:
            num_classes = result.logits.shape[1]
            mvo.append(accuracy(majority_vote(result.memory_predictions, result.content_weights, num_classes), labels))
            memory_labels = cache.memory_labels[result.memory_positions.to(cache.memory_labels.device)]
            mvy.append(accuracy(majority_vote(memory_labels, result.content_weights, num_classes), labels))
    return Evaluation(float(np.mean(accuracies)), accuracies, float(np.mean(losses)),
                      float(np.mean(mvo)) if majority else None, float(np.mean(mvy)) if majority else None)


# --- tables ---------------------------------------------------------------------------------------

def mean_std(values) -> Tuple[float, float]:
    """Mean and population standard deviation (numpy's default, as the paper's tables)."""
    return (float(np.mean(values)), float(np.std(values))) if len(values) else (float("nan"), float("nan"))


def run_line(run: int, loss: float, acc: float, accuracies: List[float], train_minutes: float, eval_minutes: float) -> str:
    """The paper's per-run line."""
    mean, std = mean_std(accuracies)
    return (f"Run:{run} | Loss:{loss:.4f} | Accuracy {acc:.2f} | Mean Accuracy:{mean:.2f} | "
            f"Std Dev Accuracy:{std:.2f}\tT:{train_minutes:.2f}min\tE:{eval_minutes:.2f}min")


def list_checkpoints(directory) -> List[Path]:
    """``*.pt`` files in a folder (resumable ``*.state.pt`` excluded), runs in numeric order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a folder")
    files = [p for p in directory.glob("*.pt") if not p.name.endswith(".state.pt")]
    if not files:
        raise CheckpointError(f"no *.pt checkpoints in {directory}")
    return sorted(files, key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))
