"""Checkpoints are data, not code: a state dict plus plain metadata, written atomically, loaded safely.

    RunMetadata      the schema of a checkpoint's metadata, written flat beside ``model_state_dict`` (as the
                     paper's files: ``checkpoint["modality"]``) and read back with ``RunMetadata.from_dict``
    Checkpoint       a loaded checkpoint: ``Checkpoint.load(path, **flags)``, ``.build_model()``, ``.run_data()``
    save_training_state / restore_training_state
                     the resumable state of an unfinished run (``<run>.state.pt``), one pair of functions
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

import datasets
from architectures import (Classifier, build_model, describe_mismatch, encoder_problem, head_entry,
                           is_paper_state_dict, list_heads)
from architectures import load_paper_state_dict

from .config import PAPER_CODE_EVALUATION, PAPER_MEMORY_FLIP, Config, ConfigError
from base.errors import UserError
from base.files import atomic_torch_save
from readers import from_png
from readers.folders import resized
from .runtime import rng_state, set_rng_state

ENCODER = "encoder."  # the encoder's keys in a Classifier's state dict


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unsafe, or inconsistent with what was asked for."""


def safe_torch_load(path) -> Any:
    """``torch.load(weights_only=True)`` with clear errors: a file that would run code is refused, a file that
    is no checkpoint is called so, a folder is named a folder."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: give one *.pt file, or evaluate every "
                              f"model in the folder with eval_dir.py --path={path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's notes on a plain pickle come before our one line: kept out
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):  # not a forbidden object: the bytes are no pickle torch can read
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (its content is not a saved state dict)") from None
        reason = next((line for line in str(error).splitlines() if "GLOBAL" in line), "").strip()
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, which would run code "
            f"when unpickled. Only load checkpoints you trust; re-save it as a state dict with plain metadata. "
            f"({reason})") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None


@dataclass
class RunMetadata:
    """What a checkpoint records about its run (the paper's keys first)."""
    model_name: str
    modality: str
    dataset_name: str
    num_classes: int
    train_examples: int
    mem_examples: int = 100
    run: Optional[int] = None  # 1-based
    seed: int = 0  # the paper: run - 1
    accuracy: Optional[float] = None  # test accuracy at the end of training
    config: Dict[str, Any] = field(default_factory=dict)  # Config.to_dict() of the run
    train_size: Optional[int] = None  # images in the training subset (train_examples 100000 = all of them)
    training: Optional[Dict[str, Any]] = None  # how the run computed: {"precision", "memory_format", "fp32_layers"}
    classes: Optional[List[str]] = None  # the class names (checkpoints before this key: the dataset's own)
    normalization: Optional[Dict[str, List[float]]] = None  # {"mean", "std"} of the images the model was fed
    pretrained: Optional[Dict[str, Any]] = None  # where the encoder's pretrained weights came from, when it had them
    # the memory pool, position by position (ExperimentData.pool_record): sources, labels, pixel hashes (and a folder
    # dataset's file hashes); checkpoints before this key record none
    memory_pool: Optional[Dict[str, list]] = None
    support: Optional[Dict[str, Any]] = None  # a memory model's support threshold (core/support.py), when recorded

    KEYS = ("model_name", "modality", "dataset_name", "num_classes", "train_examples", "mem_examples", "run", "seed",
            "accuracy", "config", "train_size", "training", "classes", "normalization", "pretrained", "memory_pool",
            "support")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "RunMetadata":
        """A checkpoint's metadata from its run's record (one source: the record carries the run's numbers and
        config; the checkpoint keeps what evaluating and explaining it needs without the folder around it)."""
        config = record["config"]
        section = config["datasets"][config["dataset_name"]]
        return cls(model_name=config["model"], modality=record["modality"], dataset_name=config["dataset_name"],
                   num_classes=section["num_classes"], train_examples=config["train_examples"],
                   mem_examples=section["mem_examples"], run=record["run"], seed=record["seed"],
                   accuracy=record["accuracy"], config=config, train_size=record["train_size"],
                   training={key: record[key] for key in ("precision", "memory_format", "fp32_layers")},
                   classes=record.get("classes"), normalization=record.get("normalization"),
                   pretrained=record.get("pretrained"), support=record.get("support"))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunMetadata":
        return cls(**{key: values[key] for key in cls.KEYS if key in values})


FLAG_NAMES = {"model_name": "--model", "dataset_name": "--dataset"}
EXPORT_FORMAT = "memory-wrap model"  # export.py's files: a checkpoint with its memory pool (core/export.py)


@dataclass
class Checkpoint:
    path: Path
    state_dict: Dict[str, torch.Tensor]
    metadata: RunMetadata
    memory_pool: Optional[datasets.ImageSet] = None  # an exported model's own memory pool (uint8 images, labels)

    def __getattr__(self, name):  # checkpoint.modality, checkpoint.seed, ... read the metadata
        if name in RunMetadata.KEYS:
            return getattr(self.metadata, name)
        raise AttributeError(name)

    @property
    def saved_config(self) -> Optional[Config]:
        """The run's Config, when the checkpoint recorded one (ours do; the paper's do not)."""
        if not self.metadata.config:
            return None
        try:
            return Config.from_saved(self.metadata.config)
        except ConfigError as error:
            reason = " ".join(str(error).split())  # one line
            raise CheckpointError(f"{self.path}: the config it recorded is not valid for this version ({reason})"
                                  ) from None

    @staticmethod
    def save(path, model: Classifier, metadata: RunMetadata) -> None:
        atomic_torch_save({"model_state_dict": model.state_dict(), **metadata.to_dict()}, path)

    @classmethod
    def load(cls, path, model_name=None, modality=None, dataset_name=None, train_examples=None,
             mem_examples=None, seed=None) -> "Checkpoint":
        """Our checkpoints and the paper's (their key layout; metadata given by arguments where the file lacks it).

        An argument that contradicts the checkpoint's metadata is an error. The seed of a paper checkpoint
        ``<r+1>.pt`` is ``r``, as the paper's evaluation scripts assume.
        """
        path = Path(path)
        content = safe_torch_load(path)
        if isinstance(content, dict) and "model_state_dict" in content:
            state_dict, recorded = content["model_state_dict"], {k: content[k] for k in RunMetadata.KEYS if k in content}
        elif isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
            state_dict, recorded = content, {}
        else:
            raise CheckpointError(f"{path} holds neither a state dict nor {{'model_state_dict': ..., metadata}}")
        given = {"model_name": model_name, "modality": modality, "dataset_name": dataset_name,
                 "train_examples": train_examples, "mem_examples": mem_examples, "seed": seed}
        for key, value in given.items():
            if value is None:
                continue
            if key in recorded and recorded[key] != value:
                raise CheckpointError(f"{path} was saved with {key}={recorded[key]!r} but "
                                      f"{FLAG_NAMES.get(key, '--' + key)}={value!r} was given; drop the flag or pick "
                                      f"the matching checkpoint")
            recorded[key] = value
        if "seed" not in recorded:
            stem = path.stem
            recorded["seed"] = int(stem) - 1 if stem.isdigit() and int(stem) >= 1 else 0
        if "dataset_name" in recorded and "num_classes" not in recorded and recorded["dataset_name"] in datasets.DATASETS:
            recorded["num_classes"] = datasets.DATASETS[recorded["dataset_name"]].num_classes
            if recorded["num_classes"] is None:  # a folder dataset's: every checkpoint train.py wrote records it
                raise CheckpointError(f"{path} records no number of classes: it is no checkpoint train.py or export.py "
                                      f"wrote for a {recorded['dataset_name']} dataset (those record their classes); "
                                      f"give such a file")
        missing = [key for key in ("model_name", "modality", "dataset_name", "train_examples") if key not in recorded]
        if missing:
            raise CheckpointError(f"{path} does not record {missing}: give them as flags "
                                  f"({', '.join(FLAG_NAMES.get(k, '--' + k) for k in missing)})")
        if recorded["modality"] not in list_heads():
            raise CheckpointError(f"{path}: unknown modality {recorded['modality']!r}")
        if encoder_problem(recorded["model_name"]):
            raise CheckpointError(f"{path} holds a {recorded['model_name']!r} model, which this version cannot build "
                                  f"({encoder_problem(recorded['model_name'])}); use the version of the code that "
                                  f"trained it")
        metadata = RunMetadata.from_dict(recorded)
        metadata.config = dict(metadata.config or {})
        return cls(path, state_dict, metadata, _memory_pool(path, content, metadata))

    def own_data(self, device="cpu") -> datasets.ExperimentData:
        """An exported model's data (its memory pool, with the normalisation it was trained with): no dataset folder
        needed; no test set (``ExperimentData.with_test_images``)."""
        if self.memory_pool is None:
            raise CheckpointError(f"{self.path} carries no memory pool: it is a training checkpoint, which needs its "
                                  f"dataset (--dataset_dir); export.py writes a file that does not")
        saved = self.saved_config
        spec = saved.dataset_spec() if saved is not None else datasets.get_spec(self.dataset_name)
        if self.normalization:
            spec = spec.normalized_with(self.normalization["mean"], self.normalization["std"])
        uses_memory = head_entry(self.modality).uses_memory
        return datasets.ExperimentData.from_pool(spec, self.memory_pool, self.mem_examples if uses_memory else 0,
                                                 device, image_size=saved.image_size if saved is not None else None)

    def autocast(self, device: torch.device) -> Optional[torch.dtype]:
        """The autocast train.py evaluated this run with, so that re-evaluation gives the same numbers: fp32
        unless the run set ``eval_autocast``, then its training precision (checkpoints older than that key were
        evaluated under their training precision); fp16 re-evaluated on a CPU falls back to fp32."""
        config = self.metadata.config
        if not config.get("eval_autocast", "eval_autocast" not in config):
            return None
        precision = (self.metadata.training or {}).get("precision") or config.get("precision", "auto")
        if precision == "fp16" and device.type != "cuda":
            return None
        if precision == "auto":  # an old checkpoint: 'auto' meant fp32 on CPU then
            return torch.float16 if device.type == "cuda" else None
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    def build_model(self, device="cpu") -> Classifier:
        saved = self.saved_config
        options = saved.model_options() if saved is not None else {}
        try:
            model = build_model(self.model_name, self.modality, self.num_classes, **options)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{self.path}: a {self.model_name} {self.modality} model with {self.num_classes} "
                                  f"classes cannot be built ({error})") from None
        try:
            if is_paper_state_dict(self.state_dict):
                load_paper_state_dict(model, self.state_dict)
            else:
                model.load_state_dict(self.state_dict, strict=True)
        except (RuntimeError, ValueError) as error:
            reason = str(error) if isinstance(error, ValueError) else (describe_mismatch(model, self.state_dict)
                                                                       or str(error).splitlines()[0])
            raise CheckpointError(f"{self.path}: the weights do not fit a {self.model_name} {self.modality} model "
                                  f"with {self.num_classes} classes: {reason}") from None
        return model.to(device).eval()

    def run_data(self, default_config: Optional[Config], dataset_dir=None, dataset_cache: Optional[Dict] = None,
                 device="cpu", memory_source: Optional[str] = None, val_examples: Optional[int] = None
                 ) -> datasets.ExperimentData:
        """The data this checkpoint's run trained on: same dataset, subset, seed, memory source and size.

        Our checkpoints record these settings (a flag that contradicts them is an error). The paper's
        checkpoints do not: the flags decide, else the paper's code (``PAPER_CODE_EVALUATION``: CIFAR10
        memory from the whole training set, a 10-image CINIC10 validation split). ``dataset_cache``
        ((name, folder) -> (train, test)) shares loaded datasets between checkpoints.
        """
        saved = self.saved_config
        if saved is not None:
            for flag, value, recorded in (("memory_source", memory_source, saved.memory_source),
                                          ("val_examples", val_examples, saved.dataset.val_examples)):
                if value is not None and value != recorded:
                    raise CheckpointError(f"{self.path} was trained with {flag}={recorded!r} but --{flag}={value!r} "
                                          f"was given; drop the flag")
            val, source, flip = saved.dataset.val_examples, saved.memory_source, saved.memory_flip
            download, dataset_dir = saved.download, dataset_dir or saved.dataset_dir
            spec, image_size = saved.dataset_spec(), saved.image_size
            if self.normalization:  # the statistics the model was fed (a folder dataset's: of its run's subset)
                spec = spec.normalized_with(self.normalization["mean"], self.normalization["std"])
        else:
            image_size = 32
            paper = PAPER_CODE_EVALUATION.get(self.dataset_name, {})
            val = val_examples if val_examples is not None else paper.get("val_examples", 6000)
            source = memory_source or paper.get("memory_source", "subset")
            flip, download = PAPER_MEMORY_FLIP.get(self.dataset_name, False), True
            dataset_dir = dataset_dir or (default_config.dataset_dir if default_config else "datasets")
            spec = datasets.get_spec(self.dataset_name)
            spec = spec.for_vit() if self.model_name == "vit" else spec
        key = (self.dataset_name, str(dataset_dir), image_size)
        dataset_cache = {} if dataset_cache is None else dataset_cache
        if key not in dataset_cache:
            dataset_cache[key] = datasets.load_dataset(self.dataset_name, dataset_dir, download=download,
                                                       image_size=image_size)
        train, test = dataset_cache[key]
        if self.classes and list(train.classes) != list(self.classes):
            raise CheckpointError(f"{self.path} was trained on the classes {', '.join(self.classes)}, but "
                                  f"{dataset_dir} now holds {', '.join(train.classes)}: evaluate it on the data it "
                                  f"was trained on (--dataset_dir)")
        uses_memory = head_entry(self.modality).uses_memory
        data = datasets.ExperimentData.build(spec, train, test, self.train_examples,
                                             val, seed=self.seed, memory_source=source,
                                             mem_examples=self.mem_examples if uses_memory else 0, device=device,
                                             memory_flip=flip and uses_memory, image_size=image_size)
        self.check_pool(data, dataset_dir)
        return data

    def check_pool(self, data: datasets.ExperimentData, dataset_dir) -> None:
        """Refuse data whose memory pool is not the one the model was trained with (its checkpoint's record: each
        image's source, label and pixels), naming the first difference; checkpoints without a record pass."""
        recorded = self.metadata.memory_pool
        if not recorded:
            return
        now = data.pool_record()
        way_out = (f"evaluate it on the data it was trained on (restore {dataset_dir}), or export the model where they "
                   f"are as they were: export.py writes a file that carries its pool")
        if len(now["sources"]) != len(recorded["sources"]):
            raise CheckpointError(f"{self.path} was trained with a memory pool of {len(recorded['sources'])} images, "
                                  f"{dataset_dir} gives {len(now['sources'])} now: {way_out}")
        for position, (source, label, pixels) in enumerate(zip(recorded["sources"], recorded["labels"],
                                                                recorded["pixels"])):
            here = (now["sources"][position], now["labels"][position], now["pixels"][position])
            if here == (source, label, pixels):
                continue
            classes = self.classes or data.classes
            what = (f"{source} has other pixels" if here[0] == source and here[1] == label else
                    f"was {source} ({classes[label]}), is {here[0]} ({classes[here[1]]}) now")
            raise CheckpointError(f"{self.path}: {dataset_dir} no longer holds the memory pool the model was trained "
                                  f"with: position {position} {what}; {way_out}")


def _memory_pool(path: Path, content: Mapping[str, Any], metadata: RunMetadata) -> Optional[datasets.ImageSet]:
    """The memory pool an exported model carries (None for a training checkpoint), checked: PNG bytes (export
    version 2; version 3: an image stored at its file's own size resized to ``memory_size`` as in training), each
    of which must have the pixels its record hashed), or uint8 images (version 1)."""
    if not isinstance(content, dict) or not ("memory_png" in content or "memory_images" in content):
        return None
    damaged = f"{path}: its memory pool is damaged"
    labels, classes, record = content.get("memory_labels"), metadata.classes or [], metadata.memory_pool or {}
    if not (isinstance(labels, torch.Tensor) and classes):
        raise CheckpointError(f"{path}: an exported model needs memory_labels and classes; export it again with "
                              f"export.py")
    if "memory_png" in content:
        encoded = content["memory_png"]
        if not isinstance(encoded, list) or not all(isinstance(item, torch.Tensor) for item in encoded):
            raise CheckpointError(f"{damaged} (memory_png is no list of byte tensors); export it again with export.py")
        try:
            images = [from_png(item.numpy().tobytes()) for item in encoded]
        except ValueError as error:
            raise CheckpointError(f"{damaged} ({error}); export it again with export.py") from None
        size = content.get("memory_size")  # version 3: an image stored at its file's own size is resized to it
        if size is not None:
            if not (isinstance(size, list) and len(size) == 2 and size[0] == size[1] and isinstance(size[0], int)
                    and size[0] > 0):
                raise CheckpointError(f"{damaged} (memory_size {size!r} is no image size); export it again with "
                                      f"export.py")
            images = [image if list(image.shape[1:]) == size else
                      resized(image.permute(1, 2, 0).contiguous().numpy(), size[0]) for image in images]
        if not images or len({tuple(image.shape) for image in images}) != 1:
            raise CheckpointError(f"{damaged} (its images differ in size); export it again with export.py")
        images = torch.stack(images)
        wrong = [i for i, (image, expected) in enumerate(zip(images, record.get("pixels") or []))
                 if datasets.pixels_sha256(image) != expected]
        if wrong:
            raise CheckpointError(f"{damaged}: image {wrong[0]} ({record['sources'][wrong[0]]}) decodes to other "
                                  f"pixels than the model was trained on; export it again with export.py")
    else:
        images = content["memory_images"]
        if not isinstance(images, torch.Tensor):
            raise CheckpointError(f"{damaged} (memory_images is no tensor); export it again with export.py")
    try:
        return datasets.ImageSet(images, labels, tuple(classes), _column(record, "sources", len(labels)),
                                 _column(record, "files", len(labels)))
    except datasets.DatasetError as error:
        raise CheckpointError(f"{damaged} ({error}); export it again with export.py") from None


def _column(record: Mapping[str, list], key: str, count: int) -> Optional[tuple]:
    values = record.get(key)
    return tuple(values) if isinstance(values, list) and len(values) == count else None


def list_checkpoints(directory) -> List[Path]:
    """The checkpoints of one experiment folder, runs in numeric order: the runs results.json lists when it is
    there (resumable ``*.state.pt`` are never models). Refuses a folder whose checkpoints mix experiments."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a folder" + (" (it is a file: evaluate it with eval.py "
                                                                 f"--path_model={directory})" if directory.is_file() else ""))
    files = [p for p in directory.glob("*.pt") if not p.name.endswith(".state.pt")]
    listed = _runs_listed(directory / "results.json")
    if listed is not None:
        files = [p for p in files if p.stem.isdigit() and int(p.stem) in listed]
        missing = sorted(run for run in listed if not (directory / f"{run}.pt").is_file())
        if missing:
            raise CheckpointError(f"{directory / 'results.json'} lists runs {missing} whose checkpoints are missing: "
                                  f"restore them, or delete their records (<run>.json) and train them again with --continue_train")
    if not files:
        raise CheckpointError(f"no *.pt checkpoints in {directory}" + (" of the runs results.json lists"
                                                                       if listed is not None else ""))
    return sorted(files, key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))


def _refuse(constant: str):
    raise ValueError(f"{constant} is not a number JSON allows")


def _runs_listed(results_path: Path) -> Optional[set]:
    if not results_path.is_file():
        return None
    try:
        return {int(run["run"]) for run in json.loads(results_path.read_text(), parse_constant=_refuse).get("runs", [])}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{results_path} is not a valid results file ({error}); restore it, or delete it to "
                              f"evaluate every checkpoint of the folder") from None


def check_one_experiment(checkpoints: List["Checkpoint"]) -> None:
    """Refuse checkpoints of different experiments (modality, dataset, model, training size) taken together."""
    for key in ("modality", "dataset_name", "model_name", "train_examples"):
        values = sorted({str(getattr(c, key)) for c in checkpoints})
        if len(values) > 1:
            examples = ", ".join(f"{c.path.name}: {getattr(c, key)}" for c in checkpoints[:6])
            raise CheckpointError(f"{checkpoints[0].path.parent} mixes experiments: {key} is {values} ({examples}). "
                                  f"Put each experiment in a folder of its own")


# --- the resumable state of an unfinished run ---------------------------------------------------------

def save_training_state(path, epoch: int, model, optimizer, scheduler, scaler, generator: torch.Generator,
                        extra: Optional[Mapping[str, Any]] = None, frozen_encoder: Optional[str] = None) -> None:
    """Everything needed to continue after ``epoch`` exactly as if never interrupted, written atomically;
    ``extra`` (plain data: the config and modality the run was started with) is stored beside it.

    ``frozen_encoder`` (``encoder_fingerprint`` of a frozen encoder): the encoder's tensors never change, so they
    are not written again every epoch (a frozen EfficientNet-Lite0 is 13.7 MB an epoch, most of a linear head's
    training on its feature table): the state holds the rest of the model and the fingerprint, and a resume takes
    the encoder the run builds again (its pretrained weights) once the fingerprint says it is the same."""
    weights = model.state_dict()
    if frozen_encoder is not None:
        weights = {name: tensor for name, tensor in weights.items() if not name.startswith(ENCODER)}
    atomic_torch_save({"model": weights, "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                       "generator": generator.get_state(), "rng": rng_state(), "epoch": epoch,
                       **({"frozen_encoder": frozen_encoder} if frozen_encoder is not None else {}),
                       **(extra or {})}, path)


def encoder_fingerprint(model) -> str:
    """sha256 of a model's encoder: its tensors' names, dtypes, shapes and values, whatever their memory layout."""
    digest = hashlib.sha256()
    for name, tensor in model.encoder.state_dict().items():
        if not isinstance(tensor, torch.Tensor):  # a module's extra state (get_extra_state)
            digest.update(f"{name} {tensor!r};".encode())
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_training_state(path) -> Dict[str, Any]:
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"the resumable state {path} is not a training state; delete it to restart its run")
    return state


def restore_training_state(state: Mapping[str, Any], path, run: int, model, optimizer, scheduler, scaler,
                           generator: torch.Generator, frozen_encoder: Optional[str] = None) -> int:
    """Load what ``save_training_state`` wrote (``state``, read from ``path``) into the given objects; returns the
    last finished epoch. ``frozen_encoder``: the fingerprint of this run's frozen encoder (None: not frozen), which a
    state written without its encoder must have been trained on."""
    if "frozen_encoder" in state and state["frozen_encoder"] != frozen_encoder:
        raise state_misfit(path, run, "it was trained with freeze_encoder: true" if frozen_encoder is None else
                           "it was trained on a frozen encoder with other weights: the pretrained weights or the "
                           "encoder changed since")
    try:
        weights = state["model"]
        if "frozen_encoder" in state:  # written without the encoder: this run's own, which the fingerprint matched
            weights = {**{ENCODER + name: tensor for name, tensor in model.encoder.state_dict().items()}, **weights}
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        return int(state["epoch"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        reason = (f"no entry {error}" if isinstance(error, KeyError)
                  else describe_mismatch(model, weights) or str(error).splitlines()[0])
        raise state_misfit(path, run, reason) from None


def state_misfit(path, run: int, reason: str) -> CheckpointError:
    """The error of a resumable state that does not fit run ``run`` (0-based), and what to do."""
    return CheckpointError(f"the resumable state {path} does not fit this run ({reason}); delete it to restart run "
                           f"{run + 1}, or run without --continue_train")
