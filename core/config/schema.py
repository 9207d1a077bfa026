"""The schema of a configuration: the paper's YAML keys plus ours, as frozen dataclasses that check themselves, and
``parse``, which turns plain data (a YAML mapping, a saved config) into a Config with every problem reported at once.

Each dataclass checks its own values (``__post_init__`` calls its ``problems``), so a Config built in code is
checked as one read from a file (core/config/reading.py reads files and flags into plain data).
``Config.to_dict()`` / ``Config.from_dict()`` are the one schema of the config written into checkpoints, records and
results.json.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

import datasets
from architectures import encoder_problem
from architectures.timm_backbone import TIMM_PREFIX
from base.errors import UserError

from ..class_metric import class_metric
from .choices import (AUGMENTATIONS, DEPTHWISE_FP32, DEVICES, DISTANCE_NAMES, MAX_DRAWS, MAX_EPOCHS, MAX_IMAGE_SIZE,
                      MAX_IMAGES, MAX_MLP_HIDDEN, MAX_RUNS, MEMORY_FORMATS, MEMORY_SOURCES, MIN_IMAGE_SIZE, OPTIMIZERS,
                      PRECISIONS, SCHEDULERS, dataset_names)
from datasets import ALL_TRAIN_EXAMPLES


class ConfigError(UserError, ValueError):
    """The configuration is invalid; the message lists every problem found."""


# Keys that do not change a run's numbers: how many runs, whether to save, where the data are, the device.
NOT_RESULT_SHAPING = ("runs", "save", "dataset_dir", "download", "device", "eval_every", "tensorboard", "autotune_cache",
                      "autotune_budget")


# How runs saved before a result-shaping key existed computed: the value a saved config without it stands for.
BEFORE_KEY_EXISTED = {"depthwise_fp32": "none"}


def as_computed(saved: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved config (plain data) with the keys it was saved without, as its run computed (``BEFORE_KEY_EXISTED``);
    its own keys keep their order."""
    return {**saved, **{key: value for key, value in BEFORE_KEY_EXISTED.items() if key not in saved}}


# The paper's code chose the scheduler by dataset name: cosine annealing for CINIC10, MultiStepLR otherwise.
PAPER_SCHEDULER = {"CINIC10": "cosine"}
# The paper's code drew CINIC10 memory sets from the training stream, whose transform flips at random.
PAPER_MEMORY_FLIP = {"CINIC10": True}
# What the paper's evaluation code did, used for its checkpoints (which record no config): CIFAR10 memory from
# the whole training set, and a 10-image validation split for CINIC10 (which ships its own valid/ folder).
PAPER_CODE_EVALUATION = {"CIFAR10": {"memory_source": "full"}, "CINIC10": {"val_examples": 10}}


# Which heads (modalities) read each setting beyond the paper's; one set for another head has no effect and is
# refused (check_modality), rather than recorded and never used.
HEAD_SETTINGS = {
    "distance": ("memory", "encoder_memory"),
    "heads.mlp_hidden": ("memory", "encoder_memory"),
    **{f"heads.{key}": ("matching",) for key in ("matching_steps", "matching_lstm_layers")},
    **{f"heads.{key}": ("prototypes",) for key in ("prototypes_per_class", "prototype_distance", "prototypes_file",
                                                   "hierarchy", "metric_loss", "metric_loss_weight", "rank_triplets",
                                                   "soft_labels", "soft_labels_beta", "hierarchical_inference")},
    **{f"heads.{key}": ("hyperspherical",) for key in ("prototype_dim", "prototype_seed", "hyperspherical_reduction")},
}


def check_modality(config: "Config", modality: str) -> None:
    """Refuse settings that the chosen head never reads (e.g. heads.prototypes_file for deepncm), naming the
    modalities that use them; before any data are read."""
    defaults = {**{f"heads.{f.name}": f.default for f in dataclasses.fields(HeadConfig)},
                "distance": next(f.default for f in dataclasses.fields(Config) if f.name == "distance")}
    settings = config.result_settings()
    problems = [f"{key}: {shown(settings[key])} has no effect for the {modality} modality; it applies to "
                f"{' and '.join(owners)}: drop it" for key, owners in HEAD_SETTINGS.items()
                if modality not in owners and settings.get(key) != defaults[key]]
    _fail_on(problems)


def _cut(problem: str, limit: int = 400) -> str:
    """A problem's text cut to ``limit`` characters: an echoed value may be megabytes."""
    return problem if len(problem) <= limit else problem[:limit] + f"... ({len(problem)} characters)"


def _fail_on(problems: List[str]) -> None:
    if problems:
        raise ConfigError("; ".join(_cut(problem) for problem in problems))


@dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float  # the paper: 1e-1
    weight_decay: float  # the paper: 5e-4
    momentum: Optional[float] = None  # SGD: the paper's 0.9 (required for SGD)
    nesterov: Optional[bool] = None  # SGD: the paper's True (required for SGD)
    name: str = "sgd"  # sgd (the paper's CNNs) | adam (its ViT: betas 0.9, 0.999)

    @staticmethod
    def problems(values: Mapping[str, Any]) -> List[str]:
        found = []
        if values.get("name", "sgd") not in OPTIMIZERS:
            found.append(f"name: {values['name']!r} is not one of {list(OPTIMIZERS)}")
        elif values.get("name", "sgd") == "sgd":
            found += [f"{key}: missing (SGD needs it)" for key in ("momentum", "nesterov") if values.get(key) is None]
        if values.get("learning_rate", 1) <= 0:
            found.append(f"learning_rate: must be > 0, got {values['learning_rate']}")
        if values.get("weight_decay", 0) < 0:
            found.append(f"weight_decay: must be >= 0, got {values['weight_decay']}")
        if not 0 <= (values.get("momentum") or 0) < 1:
            found.append(f"momentum: must be in [0, 1), got {values['momentum']}")
        if values.get("nesterov") and values.get("momentum") == 0:
            found.append("nesterov: Nesterov momentum needs momentum > 0")
        if values.get("name") == "adam":
            found += [f"{key}: has no effect with name: adam (Adam has no such setting); drop it, or use name: sgd"
                      for key in ("momentum", "nesterov") if values.get(key) is not None]
        return found

    def __post_init__(self):
        _fail_on(self.problems(dataclasses.asdict(self)))


@dataclass(frozen=True)
class DatasetConfig:
    num_epochs: int
    mem_examples: int  # images per memory set (the paper: 100)
    num_classes: Optional[int] = None  # required for the paper's datasets; a folder dataset: its class folders
    opt_milestones: Tuple[int, ...] = ()  # multistep: epochs after which the learning rate is divided by 10
    # multistep (SVHN, CIFAR10) | cosine (CINIC10, as the paper's code) | warmup_cosine (the paper's ViT) |
    # warmup_cosine_code (the paper's ViT code's GradualWarmupScheduler, training/make_scheduler)
    scheduler: str = "multistep"
    warmup_epochs: int = 0  # warmup_cosine(_code): epochs of linear warm-up (the paper's ViT: 5)
    min_lr: float = 0.0  # cosine, warmup_cosine(_code): the learning rate at the end (the paper's ViT: 1e-5)
    val_examples: int = 6000  # held out of the training set before the subset is drawn
    memory_flip: Optional[bool] = None  # flip memory images at random; None: as the paper's code (CINIC10 only)
    # folder datasets: the normalisation (per channel, of images in [0, 1]); None: computed on each run's subset
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    @staticmethod
    def problems(values: Mapping[str, Any]) -> List[str]:
        found = []
        for key in ("num_classes", "num_epochs", "mem_examples"):
            if values.get(key) is not None and values[key] <= 0:
                found.append(f"{key}: must be > 0, got {values[key]}")
        if (values.get("num_classes") or 2) < 2:
            found.append("num_classes: must be >= 2")
        for key, limit in (("num_epochs", MAX_EPOCHS), ("mem_examples", MAX_IMAGES)):
            if (values.get(key) or 0) > limit:
                found.append(f"{key}: at most {limit} (more than any experiment uses), got {values[key]}")
        for key in ("mean", "std"):
            if values.get(key) is not None and len(values[key]) != 3:
                found.append(f"{key}: expected 3 numbers (red, green, blue), got {list(values[key])}")
        if values.get("std") is not None and min(values["std"]) <= 0:
            found.append(f"std: every channel's std must be > 0, got {list(values['std'])}")
        if (values.get("mean") is None) != (values.get("std") is None):
            found.append("mean and std: give both, or neither (computed on each run's subset)")
        if values.get("val_examples", 0) < 0:
            found.append(f"val_examples: must be >= 0, got {values['val_examples']}")
        milestones = list(values.get("opt_milestones", ()))
        if any(m <= 0 for m in milestones) or milestones != sorted(set(milestones)):
            found.append(f"opt_milestones: must be positive and strictly increasing, got {milestones}")
        if values.get("scheduler", "multistep") not in SCHEDULERS:
            found.append(f"scheduler: {values['scheduler']!r} is not one of {list(SCHEDULERS)}")
        warmup, epochs = values.get("warmup_epochs", 0), values.get("num_epochs", 1)
        if values.get("scheduler") in ("warmup_cosine", "warmup_cosine_code") and not 0 <= warmup < epochs:
            found.append(f"warmup_epochs: must be in [0, num_epochs), got {values['warmup_epochs']}")
        if values.get("min_lr", 0) < 0:
            found.append(f"min_lr: must be >= 0, got {values['min_lr']}")
        return found

    def __post_init__(self):
        _fail_on(self.problems(dataclasses.asdict(self)))


def prototypes_file_problems(path: str) -> List[str]:
    """What is wrong with a given prototypes file: missing, a folder, unreadable, not a 2-D tensor of finite numbers."""
    from architectures.prototypes import load_prototypes

    where = Path(path)
    if where.is_dir():
        return [f"prototypes_file: {path} is a directory; give a .pt, .npy or .csv file of prototypes"]
    if not where.is_file():
        return [f"prototypes_file: {path} does not exist"]
    try:
        prototypes = load_prototypes(where)
    except Exception as error:  # torch, numpy: any failure to read the file is the user's file's problem
        return [f"prototypes_file: {path} is not a tensor of prototypes ({type(error).__name__}: "
                f"{shown(str(error).splitlines()[0] if str(error) else '', 200)})"]
    if prototypes.dim() != 2 or not torch.isfinite(prototypes).all():
        return [f"prototypes_file: {path} must hold a 2-D tensor [classes x per class, features] of finite numbers, "
                f"got shape {tuple(prototypes.shape)}"]
    return []


@dataclass(frozen=True)
class HeadConfig:
    """Options of the heads beyond the paper's (the ``heads:`` section); each head reads the ones it needs."""
    # memory, encoder_memory: hidden units of the MLP classifier; null: the paper's (2D for memory, 4D for
    # encoder_memory: 4 x 1280 for EfficientNet-Lite0's features, 13.2 M parameters)
    mlp_hidden: Optional[int] = None
    matching_steps: int = 2  # matching: processing steps of the attention LSTM (the paper's script: 2)
    matching_lstm_layers: int = 1  # matching: layers of the bidirectional LSTM over the memory set
    prototypes_per_class: int = 1  # prototypes: learnt prototypes per class
    prototype_distance: str = "euclidean"  # prototypes: euclidean (torch_prototypes) | squared_euclidean | cosine
    prototypes_file: Optional[str] = None  # prototypes: fixed, given prototypes [C * k, D] (.pt, .npy or .csv)
    prototype_dim: Optional[int] = None  # hyperspherical: dimension of the prototypes (default: num_classes)
    prototype_seed: int = 0  # hyperspherical: seed of the prototypes' placement
    hyperspherical_reduction: str = "sum"  # hyperspherical: the loss summed over the batch (the reference) | mean
    hierarchy: Optional[str] = None  # prototypes: class metric, cifar10 (vehicles vs animals) or a CSV matrix
    metric_loss: str = "distortion"  # prototypes with a hierarchy: distortion | rank | none
    metric_loss_weight: float = 1.0  # weight of the metric-guidance term in the training loss
    rank_triplets: int = 50  # rank loss: random triplets per step
    soft_labels: bool = False  # prototypes with a hierarchy: train on soft labels softmax(-beta D[y] / max D)
    soft_labels_beta: float = 1.0
    hierarchical_inference: bool = False  # prototypes: YOLOv2-style inference along the tree (hierarchy: cifar10)

    @staticmethod
    def problems(values: Mapping[str, Any]) -> List[str]:
        from architectures.prototypes import HYPERSPHERICAL_REDUCTIONS, METRIC_LOSSES, PROTOTYPE_DISTANCES

        found = []
        for name, choices in (("prototype_distance", PROTOTYPE_DISTANCES), ("metric_loss", METRIC_LOSSES),
                              ("hyperspherical_reduction", HYPERSPHERICAL_REDUCTIONS)):
            if name in values and values[name] not in choices:
                found.append(f"{name}: {values[name]!r} is not one of {list(choices)}")
        for name in ("matching_steps", "matching_lstm_layers", "prototypes_per_class", "rank_triplets"):
            if values.get(name, 1) < 1:
                found.append(f"{name}: must be >= 1, got {values[name]}")
        if values.get("mlp_hidden") is not None and not 1 <= values["mlp_hidden"] <= MAX_MLP_HIDDEN:
            found.append(f"mlp_hidden: must be from 1 to {MAX_MLP_HIDDEN} (null: the paper's), "
                         f"got {values['mlp_hidden']}")
        if values.get("prototype_dim") is not None and values["prototype_dim"] < 2:
            found.append(f"prototype_dim: must be >= 2, got {values['prototype_dim']}")
        if values.get("metric_loss_weight", 0) < 0 or values.get("soft_labels_beta", 1) <= 0:
            found.append("metric_loss_weight must be >= 0 and soft_labels_beta > 0")
        if values.get("prototypes_file") is not None:
            found += prototypes_file_problems(values["prototypes_file"])
        if values.get("hierarchical_inference") and values.get("hierarchy") != "cifar10":
            found.append("hierarchical_inference needs a class tree: hierarchy: cifar10 (a CSV matrix has none)")
        if values.get("soft_labels") and values.get("hierarchy") is None:
            found.append("soft_labels need a class metric: set hierarchy (cifar10 or a CSV matrix)")
        return found

    def __post_init__(self):
        _fail_on(self.problems(dataclasses.asdict(self)))


@dataclass(frozen=True)
class Config:
    model: str  # a registered encoder: mobilenet, resnet18, efficientnet, googlenet, shufflenet, densenet, ...
    save: bool  # write checkpoints and results.json
    train_examples: int  # the reduced training subset: 1000, 2000, 5000; 100000 = the whole training set
    runs: int  # seeded runs; run r (1-based) uses seed r - 1
    batch_size_train: int
    batch_size_test: int  # each test batch gets its own memory draw
    optimizer: OptimizerConfig
    dataset_dir: str
    dataset_name: str
    datasets: Mapping[str, DatasetConfig]
    # keys beyond the paper's; their defaults reproduce the paper
    memory_source: str = "subset"  # subset (the paper's text) | full (the paper's CIFAR10 code)
    # auto: fp16 + GradScaler on CUDA (the paper); on a CPU measured at the run's start (core/autotune.py): fp32, or
    # bf16 where it is native and over 10% faster | fp32 | fp16 | bf16
    precision: str = "auto"
    # auto: channels_last on CUDA; on a CPU measured with the precision | channels_last | contiguous
    memory_format: str = "auto"
    # bf16 on a CPU: the depthwise convolutions whose bf16 kernels are slower compute in fp32 (auto: measured at the
    # run's shapes and cached like precision: auto) | all | none (every layer as autocast makes it) | a list of
    # their module names (as a run's record lists them under fp32_layers); no effect in fp32 or on CUDA
    # (core/layer_precision.py)
    depthwise_fp32: Union[str, Tuple[str, ...]] = "auto"
    distance: str = "cosine"  # of the memory heads: cosine (the paper) | l2 | dot
    eval_draws: int = 5  # memory models: test accuracy is the mean over this many memory draws (the paper: 5)
    download: bool = True  # download SVHN / CIFAR10 when missing
    device: str = "auto"  # auto | cpu | cuda
    eval_autocast: bool = False  # evaluate under the training autocast; the paper evaluated in fp32
    max_nonfinite_steps: int = 20  # fp16 + GradScaler: consecutive non-finite losses skipped before the run stops
    label_smoothing: float = 0.0  # of the cross-entropy (the paper's ViT text: 0.1; its code applied none)
    augment: str = "auto"  # training batches: auto (the paper: flip CIFAR10/CINIC10) | none | flip | autoaugment
    # a SimpleSelfAttention block in the encoder: reference (its published place), last_stage, or a module path
    self_attention: Optional[str] = None
    self_attention_ks: int = 1  # its 1-D convolution's kernel size (odd)
    self_attention_sym: bool = False  # its 1x1 convolution's weight used symmetrised
    self_attention_spectral_norm: bool = True  # its convolution spectrally normalised, as the reference
    vit_final_norm: bool = True  # vit: features after the final LayerNorm; false: without it (the paper's memory ViTs)
    vit_statistics: bool = True  # vit: normalise with the ViT code's per-dataset statistics; false: the CNNs'
    autoaugment_per_image: bool = True  # augment: autoaugment: a sub-policy per image (the ViT code); false: per batch
    heads: HeadConfig = HeadConfig()  # options of the heads beyond the paper's
    sync_batchnorm: bool = False  # torchrun on GPUs: BatchNorm statistics over the global batch
    autotune_cache: Optional[str] = None  # precision/memory_format auto: where measured choices are kept (default:
    # $XDG_CACHE_HOME/memory-wrap/autotune.json)
    autotune_budget: float = 15.0  # precision/memory_format auto: seconds the first run of a cell may spend measuring
    # (0: no limit, every candidate warmed up and timed; core/autotune.py)
    eval_every: int = 0  # the validation accuracy every N epochs and at the last, in the history (0: never, as the paper)
    tensorboard: bool = False  # write the history's scalars for TensorBoard under <experiment>/tb/run_<r>/
    # the images' size: a folder dataset's are resized to it when decoded, the paper's 32x32 ones upscaled per batch;
    # None: 32, or with pretrained weights of a timm/ model the size they were trained at (their pretrained_cfg)
    image_size: Optional[int] = None
    # timm/<name>: timm's published weights (the Hugging Face Hub, downloaded once, cached), unless pretrained_path
    # names a file (which then takes their place: pretrained is recorded false)
    pretrained: bool = False
    pretrained_path: Optional[str] = None  # the encoder's weights, a local .safetensors or .pth (timm/: its keys)
    freeze_encoder: bool = False  # train the head alone, the encoder fixed (eval mode); its features encoded once

    @property
    def dataset(self) -> DatasetConfig:
        return self.datasets[self.dataset_name]

    def dataset_spec(self) -> "datasets.DatasetSpec":
        """The dataset as this run normalises it: the ViT with the ViT code's statistics (vit_statistics); a folder
        dataset with its section's mean and std, or none yet (computed on each run's subset)."""
        spec = datasets.get_spec(self.dataset_name)
        if self.dataset.mean is not None:  # a folder dataset's given statistics (else: each run's subset's)
            return spec.normalized_with(self.dataset.mean, self.dataset.std)
        return spec.for_vit() if self.model == "vit" and self.vit_statistics else spec

    @property
    def stored_image_size(self) -> int:
        """The size the dataset's images are kept at: a folder dataset's are decoded at image_size, the paper's stay
        32x32 (and are resized to image_size batch by batch)."""
        return self.image_size if datasets.get_spec(self.dataset_name).resizes else 32

    def with_num_classes(self, num_classes: int) -> "Config":
        """This config with its dataset's section saying ``num_classes`` (a folder dataset: what its folders hold)."""
        section = dataclasses.replace(self.dataset, num_classes=num_classes)
        return dataclasses.replace(self, datasets={**self.datasets, self.dataset_name: section})

    @property
    def memory_flip(self) -> bool:
        """Whether memory images are flipped at random: the dataset's key, else the paper's code (CINIC10)."""
        flip = self.dataset.memory_flip
        return PAPER_MEMORY_FLIP.get(self.dataset_name, False) if flip is None else flip

    @staticmethod
    def problems(values: Mapping[str, Any]) -> List[str]:
        found = []
        for name, choices in (("memory_source", MEMORY_SOURCES), ("precision", PRECISIONS),
                              ("memory_format", MEMORY_FORMATS), ("distance", DISTANCE_NAMES), ("device", DEVICES),
                              ("augment", AUGMENTATIONS), ("depthwise_fp32", DEPTHWISE_FP32)):
            if name in values and isinstance(values[name], str) and values[name] not in choices:
                found.append(f"{name}: {values[name]!r} is not one of {list(choices)}"
                             + (" or a list of layer names" if name == "depthwise_fp32" else ""))
        layers = values.get("depthwise_fp32")
        if isinstance(layers, tuple) and len(set(layers)) != len(layers):
            found.append(f"depthwise_fp32: {sorted({n for n in layers if layers.count(n) > 1})} listed twice")
        if "model" in values and isinstance(values["model"], str) and encoder_problem(values["model"]):
            found.append(f"model: {encoder_problem(values['model'])}")
        for name, limit in (("runs", MAX_RUNS), ("train_examples", ALL_TRAIN_EXAMPLES), ("eval_draws", MAX_DRAWS),
                            ("batch_size_train", MAX_IMAGES), ("batch_size_test", MAX_IMAGES)):
            if (values.get(name) or 0) > limit:
                found.append(f"{name}: at most {limit}" + (" (= every image: all)" if name == "train_examples" else
                                                             " (more than any experiment uses)")
                             + f", got {values[name]}")
        for name in ("train_examples", "runs", "batch_size_train", "batch_size_test", "eval_draws",
                     "max_nonfinite_steps", "self_attention_ks"):
            if name in values and values[name] <= 0:
                found.append(f"{name}: must be > 0, got {values[name]}")
        dataset_name, sections = values.get("dataset_name"), values.get("datasets")
        if dataset_name is not None:
            if dataset_name not in datasets.DATASETS:
                found.append(f"dataset_name: unknown dataset {dataset_name!r}; available datasets are "
                             f"{list(dataset_names())}")
            elif sections is not None and dataset_name not in sections:
                found.append(f"dataset_name is {dataset_name!r} but the config has no {dataset_name}: section "
                             f"(num_classes, num_epochs, opt_milestones, mem_examples)" + (
                                 "; config/folder.yaml has one" if dataset_name == datasets.FOLDER else ""))
        for name in ("vit_final_norm", "vit_statistics"):
            if values.get(name) is False and values.get("model", "vit") != "vit":
                found.append(f"{name}: false applies to the vit encoder only, the model is {values['model']!r}")
        if values.get("autoaugment_per_image") is False and values.get("augment", "autoaugment") != "autoaugment":
            found.append(f"autoaugment_per_image: false has no effect without augment: autoaugment (augment is "
                         f"{values.get('augment')!r})")
        if values.get("self_attention_ks", 1) % 2 == 0:
            found.append(f"self_attention_ks: must be odd (the block pads ks // 2 on each side to keep the feature "
                         f"map's size), got {values['self_attention_ks']}")
        if values.get("self_attention") is None:
            changed = [name for name, default in (("self_attention_ks", 1), ("self_attention_sym", False),
                                                  ("self_attention_spectral_norm", True))
                       if values.get(name, default) != default]
            if changed:
                found.append(f"{', '.join(changed)}: no effect without self_attention (reference, last_stage or a "
                             f"module path); set self_attention, or drop them")
        if values.get("autotune_budget", 0) < 0:
            found.append(f"autotune_budget: must be >= 0 seconds (0: no limit), got {values['autotune_budget']}")
        if values.get("eval_every", 0) < 0:
            found.append(f"eval_every: must be >= 0 (0: never), got {values['eval_every']}")
        if not 0 <= values.get("label_smoothing", 0) < 1:
            found.append(f"label_smoothing: must be in [0, 1), got {values['label_smoothing']}")
        heads = values.get("heads")
        hierarchy = heads.hierarchy if isinstance(heads, HeadConfig) else (heads or {}).get("hierarchy")
        if hierarchy is not None and dataset_name in datasets.DATASETS:
            try:
                class_metric(hierarchy, datasets.DATASETS[dataset_name].num_classes, dataset_name)
            except ValueError as error:
                found.append(f"heads.hierarchy: {error}")
        for name, section in (sections or {}).items():
            expected = datasets.DATASETS[name].num_classes if name in datasets.DATASETS else None
            get = (lambda key: getattr(section, key)) if isinstance(section, DatasetConfig) else section.get
            if expected is not None and get("num_classes") is None:
                found.append(f"{name}.num_classes: missing")
            elif expected is not None and get("num_classes") != expected:
                found.append(f"{name}.num_classes: {name} has {expected} classes, got {get('num_classes')}")
        size = values.get("image_size")
        if size is not None and not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
            found.append(f"image_size: must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {size}")
        elif size not in (None, 32) and values.get("model") == "vit":
            found.append("image_size: the vit encoder takes 32x32 images (8 x 8 patches of 4x4 pixels); use 32, or a "
                         "timm/ model")
        model = values.get("model")
        if values.get("pretrained") and not values.get("pretrained_path") and isinstance(model, str) \
                and not model.startswith(TIMM_PREFIX):
            found.append(f"pretrained: true takes timm's published weights, for a timm/<name> model; {model!r} is "
                         f"this repository's network: give its weights as pretrained_path, or use e.g. "
                         f"timm/tf_efficientnet_lite0")
        if values.get("freeze_encoder") and not (values.get("pretrained_path") or values.get("pretrained")):
            found.append("freeze_encoder: true keeps the encoder as initialised (random weights) without "
                         "pretrained weights: set pretrained: true (timm/ models) or pretrained_path, or train the "
                         "encoder")
        return found

    def __post_init__(self):
        _fail_on(self.problems({**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}))

    def model_options(self) -> Dict[str, Any]:
        """The keyword arguments of ``build_model`` for this config: the encoder's options (self-attention, the
        ViT's final LayerNorm) and every head option (the class metric read from ``heads.hierarchy``)."""
        options = {"distance": self.distance, "self_attention": self.self_attention,
                   "self_attention_ks": self.self_attention_ks, "self_attention_sym": self.self_attention_sym,
                   "self_attention_spectral_norm": self.self_attention_spectral_norm,
                   "encoder_options": {} if self.vit_final_norm else {"final_norm": False},
                   **{k: v for k, v in dataclasses.asdict(self.heads).items() if k != "hierarchy"}}
        if self.heads.hierarchy is not None:
            costs, parents = class_metric(self.heads.hierarchy, self.dataset.num_classes)
            options.update(class_costs=costs.tolist(), class_parents=parents)
        return options

    def result_settings(self) -> Dict[str, Any]:
        """The settings that shape a run's numbers, flat (``optimizer.learning_rate``, ``CIFAR10.num_epochs``):
        every key but ``NOT_RESULT_SHAPING`` and the sections of the other datasets (and ``depthwise_fp32`` where
        the precision is fp32 or fp16: it changes bf16 runs alone)."""
        flat = {key: value for key, value in self.to_dict().items()
                if key not in NOT_RESULT_SHAPING + ("optimizer", "datasets", "heads")}
        if self.precision in ("fp32", "fp16"):
            del flat["depthwise_fp32"]
        flat.update({f"optimizer.{key}": value for key, value in dataclasses.asdict(self.optimizer).items()})
        flat.update({f"heads.{key}": value for key, value in dataclasses.asdict(self.heads).items()})
        flat.update({f"{self.dataset_name}.{key}": value for key, value in dataclasses.asdict(self.dataset).items()})
        flat[f"{self.dataset_name}.opt_milestones"] = list(self.dataset.opt_milestones)
        return flat

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (for checkpoints and results.json); ``Config.from_dict`` reads it back."""
        out = dataclasses.asdict(self)
        out["datasets"] = {name: dataclasses.asdict(section) for name, section in self.datasets.items()}
        for section in out["datasets"].values():
            section["opt_milestones"] = list(section["opt_milestones"])
        for section in out["datasets"].values():
            for key in ("mean", "std"):
                section[key] = list(section[key]) if section[key] is not None else None
        if isinstance(self.depthwise_fp32, tuple):
            out["depthwise_fp32"] = list(self.depthwise_fp32)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Config":
        """The inverse of ``to_dict`` (and the reader of YAML): dataset sections under ``datasets`` or at the top."""
        return parse(dict(raw))

    @classmethod
    def from_saved(cls, raw: Mapping[str, Any]) -> "Config":
        """A config saved by a run (checkpoint, state, record): keys it lacks were added after it was made, and it
        computed as ``BEFORE_KEY_EXISTED`` says."""
        return cls.from_dict(as_computed(raw))



def shown(value, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# --- plain data (a YAML mapping, a saved config) into a Config, every problem reported at once ------------

_UNSET = object()  # an Optional key given as null

def _coerce(value, kind, where, problems):
    """Type check with the paper's YAML quirks: `1e-1` is a string to PyYAML, so numeric strings are floats.
    A float must be finite (nan, .inf and 1e400 are refused)."""
    if typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind):  # Optional[X]: None, or X
        if value is None:
            return _UNSET
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind == Union[str, Tuple[str, ...]]:  # a name, or a list of names
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(name, str) and name for name in value):
            return tuple(value)
        problems.append(f"{where}: expected a name or a list of names, got {shown(value)}")
        return None
    if kind is float:
        number = _as_float(value)
        if number is not None and math.isfinite(number):
            return number
        problems.append(f"{where}: " + ("must be a finite number" if number is not None else "expected a number")
                        + f", got {shown(value)}")
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind == Tuple[int, ...]:
        if isinstance(value, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool) for m in value):
            return tuple(value)
        problems.append(f"{where}: expected a list of ints, got {shown(value)}")
        return None
    elif kind == Tuple[float, ...]:
        numbers = [_as_float(m) for m in value] if isinstance(value, (list, tuple)) else [None]
        if all(n is not None and math.isfinite(n) for n in numbers):
            return tuple(numbers)
        problems.append(f"{where}: expected a list of finite numbers, got {shown(value)}")
        return None
    problems.append(f"{where}: expected {getattr(kind, '__name__', kind)}, got {shown(value)}")
    return None


def _as_float(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            return float("inf")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _section(raw, cls, where: str, problems: List[str], skip=(), check=True) -> Optional[Dict[str, Any]]:
    """Check one mapping against a dataclass: unknown and missing keys, types, then the class's own checks."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {shown(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(raw) - set(fields))
    if unknown and where:
        problems.append(f"{where}: unknown keys {unknown}; allowed keys are {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                problems.append(f"{prefix}{name}: missing")
            continue
        value = _coerce(raw[name], hints[name], f"{prefix}{name}", problems)
        if value is _UNSET:
            values[name] = None
        elif value is not None:
            values[name] = value
    if check:
        problems.extend(prefix + problem for problem in cls.problems(values))
    return values


def parse(raw: Any) -> Config:
    """A Config from plain data (a YAML mapping, or a saved config), or a ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    heads_raw = raw.pop("heads", None)
    problems: List[str] = []
    nested = raw.pop("datasets", None) or {}
    if not isinstance(nested, dict):
        problems.append(f"datasets: expected a mapping of dataset sections, got {shown(nested)}")
        nested = {}
    sections_raw = dict(nested)
    for name in [name for name in list(raw) if name in datasets.DATASETS]:
        if name in sections_raw:
            problems.append(f"{name}: given both at the top level and under datasets:; keep one")
        sections_raw[name] = raw.pop(name)
    top_fields = {f.name for f in dataclasses.fields(Config)} - {"optimizer", "datasets", "heads"}
    unknown = sorted(set(raw) - top_fields - {"optimizer"})
    if unknown:
        problems.append(f"unknown keys {unknown}; allowed keys are {sorted(top_fields | {'optimizer', 'heads'})} "
                        f"and dataset sections {list(dataset_names())}")
    if isinstance(raw.get("train_examples"), str):  # all (every image), or a count from --train_examples
        text = raw["train_examples"].strip()
        raw["train_examples"] = (datasets.ALL_TRAIN_EXAMPLES if text == "all" else int(text) if text.isdigit()
                                 else raw["train_examples"])
    top = _section({k: v for k, v in raw.items() if k in top_fields}, Config, "", problems,
                   skip=("optimizer", "datasets", "heads"), check=False)
    heads = _section(heads_raw if heads_raw is not None else {}, HeadConfig, "heads", problems) or {}
    optimizer = None
    if "optimizer" not in raw:
        problems.append("optimizer: missing")
    else:
        optimizer = _section(raw["optimizer"], OptimizerConfig, "optimizer", problems)
    sections = {}
    for name, section_raw in sections_raw.items():
        if isinstance(section_raw, dict) and "scheduler" not in section_raw and name in PAPER_SCHEDULER:
            section_raw = {**section_raw, "scheduler": PAPER_SCHEDULER[name]}
        values = _section(section_raw, DatasetConfig, name, problems)
        if values is not None:
            sections[name] = values
    problems.extend(Config.problems({**top, "datasets": sections, "heads": heads}))
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(_cut(problem) for problem in problems))
    if top.get("pretrained_path"):  # a file of weights is the more specific: it takes the place of timm's own
        top["pretrained"] = False
    top.update(image_size=_with_weights_preprocessing(top, sections))
    return Config(**top, optimizer=OptimizerConfig(**optimizer), heads=HeadConfig(**heads),
                  datasets={name: DatasetConfig(**values) for name, values in sections.items()})


def uses_weights_preprocessing(values: Mapping[str, Any]) -> bool:
    """Whether a config's unset image size and normalisation come from its encoder's pretrained weights: a timm/
    model with pretrained: true or a pretrained_path."""
    model = values.get("model")
    return (isinstance(model, str) and model.startswith(TIMM_PREFIX)
            and bool(values.get("pretrained") or values.get("pretrained_path")))


def _with_weights_preprocessing(top: Dict[str, Any], sections: Dict[str, Dict[str, Any]]) -> int:
    """The image size a config trains at (its own, else the weights' or 32); the dataset section without mean and
    std gets the weights' (timm's pretrained_cfg), in place."""
    section = sections.get(top.get("dataset_name"))
    unset = top.get("image_size") is None or (section is not None and section.get("mean") is None)
    if not (uses_weights_preprocessing(top) and unset):
        return top.get("image_size") or 32
    from architectures.timm_backbone import WeightsUnavailable, preprocessing

    try:
        size, mean, std = preprocessing(top["model"])
    except WeightsUnavailable as error:
        raise ConfigError(f"model: {error}") from None
    if section is not None and section.get("mean") is None:
        section.update(mean=mean, std=std)
    return top.get("image_size") or size
