"""Depthwise convolutions in fp32 inside a bf16 run on a CPU, where their bf16 kernels are slow.

torch 2.13's CPU build (oneDNN 3.12) computes the input gradient of a bf16 depthwise convolution with a stride of 2
in a general strided kernel (``brgconv_strided``) that is 10-100x slower than its fp32 kernel: on an AMD EPYC with
native bf16, 2 threads, a batch of 128, one forward and backward of MobileNetV2's strided 192-channel 16x16 layer
takes 84 ms in bf16 and 9 ms in fp32 (``python -m bench.bench_training --sections=depthwise``). EfficientNet's 5x5
depthwise weight gradients and its layers on 2x2 maps are 3-4x slower in bf16 too. These few layers made bf16 as
slow as fp32 for MobileNetV2. Depthwise convolutions are cheap in fp32, so computing them there costs little where
their bf16 kernel is fine, and saves most of the step where it is not (``python -m bench.bench_training``).

    layers = depthwise(model)                        # {name: nn.Conv2d}: groups == in_channels > 1
    found = measure(model, forward, torch.channels_last)   # {"fp32": [names faster in fp32], "timings": ...}
    apply(model, found["fp32"])                      # those compute in fp32 under autocast; the others as autocast

Which layers: measured at the run's shapes (``depthwise_fp32: auto``), each layer's forward and backward in both
precisions, because which kernels are slow depends on the CPU and the kernel library; or all of them, none, or
those a list names (``all`` | ``none`` | ``[names]``: what a run's record lists under ``fp32_layers``). A layer in
fp32 takes its bf16 input, computes in fp32 and returns bf16, so the layers after it run as autocast makes them.
Outside autocast (evaluation, fp32 runs) it computes exactly as ``nn.Conv2d``, and its parameters and state-dict
keys are ``nn.Conv2d``'s.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List

import torch
from torch import nn

ROUNDS = 1  # timed calls of each precision per layer shape, after a warm-up call each


class Fp32Conv2d(nn.Conv2d):
    """``nn.Conv2d`` computed in fp32 under autocast, its result in its input's dtype."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        with torch.autocast(input.device.type, enabled=False):
            return super().forward(input.float()).to(input.dtype)


def depthwise(model: nn.Module) -> Dict[str, nn.Conv2d]:
    """The model's depthwise convolutions by module name (plain ``nn.Conv2d`` ones: a subclass keeps its own
    forward)."""
    return {name: module for name, module in model.named_modules()
            if type(module) in (nn.Conv2d, Fp32Conv2d) and module.groups > 1 and module.groups == module.in_channels}


def apply(model: nn.Module, names: Iterable[str]) -> None:
    """The depthwise convolutions in ``names`` compute in fp32 under autocast, the others as autocast makes them
    (``apply(model, ())`` gives every layer back its plain ``nn.Conv2d`` class)."""
    names, layers = set(names), depthwise(model)
    unknown = sorted(names - set(layers))
    if unknown:
        raise ValueError(f"{unknown} are not depthwise convolutions of this model (it has {sorted(layers)})")
    for name, layer in layers.items():
        layer.__class__ = Fp32Conv2d if name in names else nn.Conv2d


def input_shapes(model: nn.Module, forward: Callable[[], object], dtype: torch.dtype) -> Dict[str, List[tuple]]:
    """The input shape of every call of every depthwise convolution during ``forward()`` (under autocast, no
    gradients): a memory model's encoder runs on the batch and on the memory set."""
    layers = depthwise(model)
    calls: Dict[str, List[tuple]] = {name: [] for name in layers}
    hooks = [layer.register_forward_pre_hook(lambda module, args, name=name: calls[name].append(tuple(args[0].shape)))
             for name, layer in layers.items()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            forward()
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def _problem(layer: nn.Conv2d, shape: tuple) -> tuple:
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.groups, layer.bias is not None, layer.padding_mode, shape)


def time_problem(layer: nn.Conv2d, shape: tuple, memory_format: torch.memory_format, dtype: torch.dtype,
                 clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """Seconds of one forward and backward of a layer like ``layer`` on an input of ``shape`` under ``dtype``
    autocast, as autocast makes it ("bf16") and in fp32 ("fp32"): a warm-up call each (the kernel library creates
    its kernels), then ROUNDS timed calls each, interleaved; the fastest is kept. Constant tensors: the time of a
    convolution does not depend on the values."""
    device = layer.weight.device
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode,
                     device=device).to(memory_format=memory_format)
    images = torch.full(shape, 0.5, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    images.requires_grad_()
    classes = {"bf16": nn.Conv2d, "fp32": Fp32Conv2d}
    gradient = None

    def call(kind: str) -> float:
        nonlocal gradient
        conv.__class__ = classes[kind]
        began = clock()
        with torch.autocast(device.type, dtype=dtype):
            output = conv(images)
        if gradient is None:
            gradient = torch.full_like(output, 0.01)
        output.backward(gradient)
        conv.weight.grad = images.grad = None
        return clock() - began
    for kind in classes:
        call(kind)
    seconds = {kind: [] for kind in classes}
    for _ in range(ROUNDS):
        for kind in classes:
            seconds[kind].append(call(kind))
    return {kind: min(values) for kind, values in seconds.items()}


def measure(model: nn.Module, forward: Callable[[], object], memory_format: torch.memory_format,
            dtype: torch.dtype = torch.bfloat16, clock: Callable[[], float] = time.perf_counter) -> Dict:
    """Which depthwise convolutions of ``model`` are faster in fp32 than in ``dtype`` at the largest input
    ``forward()`` gives each (a memory model's encoder also runs on the smaller memory set):
    {"fp32": [names], "timings": {name: {"bf16": ms, "fp32": ms}}, "inputs": {name: shape timed}, "seconds": s}.
    Layers of the same configuration and input shape are timed once. Ties stay in bf16."""
    started = clock()
    layers = depthwise(model)
    if not layers:
        return {"fp32": [], "timings": {}, "inputs": {}, "seconds": 0.0}
    largest = {name: max(shapes) for name, shapes in input_shapes(model, forward, dtype).items() if shapes}
    times: Dict[tuple, Dict[str, float]] = {}
    for name, shape in largest.items():
        key = _problem(layers[name], shape)
        if key not in times:
            times[key] = time_problem(layers[name], shape, memory_format, dtype, clock)
    timings = {name: times[_problem(layers[name], shape)] for name, shape in largest.items()}
    return {"fp32": [name for name, seconds in timings.items() if seconds["fp32"] < seconds["bf16"]],
            "timings": {name: {kind: round(1000 * value, 3) for kind, value in seconds.items()}
                        for name, seconds in timings.items()},
            "inputs": largest, "seconds": round(clock() - started, 2)}
