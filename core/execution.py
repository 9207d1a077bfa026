"""How a run computes: precision, memory format and the depthwise convolutions kept in fp32, as the config sets them
or, for ``auto``, as measured on this machine (core/autotune.py, core/layer_precision.py) on copies of one probe
model, or as read from the autotune cache.

    probe = make_model(config, modality)
    check_depthwise_fp32(config, modality, probe)        # a list of layers must name the model's own
    execution, tuning = choose_execution(config, modality, device, batch_size, mem_examples, probe=probe)
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple

import torch

import datasets
from architectures import Classifier, build_model, head_entry

from . import autotune, layer_precision, runtime, training
from .config import Config, ConfigError
from .distributed import Distributed


def make_model(config: Config, modality: str) -> Classifier:
    """The run's model; options it cannot be built with (a self_attention position that is no feature map, given
    prototypes of the wrong shape, a timm name timm does not know, weights that do not fit...) are a ConfigError."""
    try:
        return build_model(config.model, modality, config.dataset.num_classes, **config.model_options())
    except (ValueError, TypeError, OSError, KeyError) as error:
        raise ConfigError(f"a {config.model} {modality} model cannot be built with this config: {error}") from None


def fresh_copy(probe: Classifier, config: Config, modality: str) -> Classifier:
    """A copy of the probe: a deep copy, or where a module refuses one (a spectrally normalised layer whose computed
    weight is no graph leaf once it has run: SimpleSelfAttention) a fresh build given the probe's state dict."""
    try:
        return copy.deepcopy(probe)
    except RuntimeError:
        model = make_model(config, modality)
        model.load_state_dict(probe.state_dict())
        return model


def check_depthwise_fp32(config: Config, modality: str, probe: Classifier) -> None:
    """A ``depthwise_fp32`` list must name depthwise convolutions of the model."""
    if not isinstance(config.depthwise_fp32, tuple):
        return
    names = list(layer_precision.depthwise(probe))
    unknown = [name for name in config.depthwise_fp32 if name not in names]
    if unknown:
        raise ConfigError(f"depthwise_fp32: {unknown} are not depthwise convolutions of the {config.model} "
                          f"{modality} model; it has {names} (a run's record lists those it computed in fp32 "
                          f"under fp32_layers)")


def choose_execution(config: Config, modality: str, device: torch.device, batch_size: int, mem_examples: int,
                     distributed: Optional[Distributed] = None, probe: Optional[Classifier] = None
                     ) -> Tuple[runtime.Execution, dict]:
    """(how the run computes, how that was chosen): ``precision`` / ``memory_format`` auto are measured on this
    machine or read from the autotune cache (core/autotune.py), each lever timed on a copy of ``probe`` (built here
    when not given). Under torchrun rank 0 decides and the other ranks read its answer."""
    probe = probe if probe is not None else make_model(config, modality)
    uses_memory = head_entry(modality).uses_memory
    size = config.image_size

    def synthetic(execution: runtime.Execution):
        """A copy of the probe computing as ``execution`` says, and a forward-backward step on random tensors of
        the run's shapes."""
        model = fresh_copy(probe, config, modality).to(device).to(memory_format=execution.memory_format).train()
        layer_precision.apply(model, execution.fp32_layers)
        optimizer = training.make_optimizer(model, config.optimizer)
        scaler = torch.amp.GradScaler(device.type, enabled=execution.autocast == torch.float16)
        images = torch.randn(batch_size, 3, size, size, device=device)
        labels = torch.randint(config.dataset.num_classes, (batch_size,), device=device)
        memory = datasets.MemorySet(torch.arange(mem_examples), torch.randn(mem_examples, 3, size, size, device=device),
                                    torch.randint(config.dataset.num_classes, (mem_examples,), device=device)
                                    ) if uses_memory else None
        step = lambda: training.training_step(model, optimizer, scaler, images, labels, memory,  # noqa: E731
                                              execution, device, config.label_smoothing)[0].item()
        forward = lambda: model(images.contiguous(memory_format=execution.memory_format),  # noqa: E731
                                memory.images.contiguous(memory_format=execution.memory_format) if memory else None,
                                memory.labels if memory else None, labels=labels)
        return model, step, forward

    def layers_for(execution: runtime.Execution) -> dict:
        """A bf16 lever's depthwise convolutions in fp32 (only called where a lever needs them: not on cache hits)."""
        if config.depthwise_fp32 == "all":
            return {"fp32": list(layer_precision.depthwise(probe))}
        if isinstance(config.depthwise_fp32, tuple):  # named by the config (check_depthwise_fp32 checked them)
            return {"fp32": list(config.depthwise_fp32)}
        model, _, forward = synthetic(runtime.Execution(execution.autocast, execution.memory_format))
        return layer_precision.measure(model, forward, execution.memory_format, execution.autocast)

    def resolve():
        return autotune.resolve(config, modality, device, batch_size, mem_examples, lambda lever: synthetic(lever)[1],
                                layers_for=None if config.depthwise_fp32 == "none" else layers_for,
                                layer_names=lambda: layer_precision.depthwise(probe))
    if distributed is None:
        return resolve()
    chosen = resolve() if distributed.is_main else None
    distributed.barrier()
    return chosen or resolve()


def depthwise_names(probe: Classifier) -> Sequence[str]:
    return tuple(layer_precision.depthwise(probe))
