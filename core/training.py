"""One run of the paper's training: SGD + MultiStepLR (cosine for CINIC10), a fresh memory set every step,
a resumable state written atomically after every epoch, and a stop on a NaN/inf loss.

    execution = train_run(model, data, config, run, device, execution, state_path)   # the model ends eval-ready

The runs of an experiment around it (data, levers, folder, records) are core/runner.py's.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
from tqdm import tqdm

import datasets
from architectures import Classifier
from base.errors import UserError
from . import layer_precision, runtime
from .checkpoints import (encoder_fingerprint, load_training_state, restore_training_state, save_training_state,
                          state_misfit)
from .config import Config, DatasetConfig, OptimizerConfig
from .distributed import Distributed, unwrap
from .frozen import FeatureTable, HeadOnly
from .history import EpochLog


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(model: torch.nn.Module, config: OptimizerConfig, fused: bool = False) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the paper's CNNs) or Adam with betas 0.9, 0.999 (its ViT). Multi-tensor
    (foreach) updates: torch picks them on GPUs only by default; on a CPU they halve the optimizer's time and give
    the same numbers bit for bit (tests/test_training.py). ``fused``: torch's fused kernel, one pass over every
    parameter (a frozen encoder's head on a CPU, where the update is a third of a step: 4.7x faster than foreach
    for Memory Wrap's 13M-parameter head on EfficientNet-Lite0's features), the same update up to rounding."""
    kind = {"fused": True} if fused else {"foreach": True}
    if config.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999),
                                weight_decay=config.weight_decay, **kind)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov, **kind)


def make_scheduler(optimizer: torch.optim.Optimizer, config: DatasetConfig):
    """Stepped once per epoch, as the paper: MultiStepLR (/10 at each milestone), cosine annealing to min_lr, or
    warmup_cosine: during epoch e (0-based) lr * (e + 1) / warmup for e < warmup, then cosine from lr down to min_lr
    at the end of the last epoch. warmup_cosine_code is what the paper's ViT code ran (warmup_scheduler's
    GradualWarmupScheduler, multiplier 1, over CosineAnnealingLR(T_max=num_epochs)): lr * e / warmup for
    e <= warmup (the first epoch trains at lr 0), then a cosine that starts again at lr at epoch warmup + 1 and
    runs num_epochs epochs, so it ends above min_lr. (That library under torch 2.13 gives these rates within
    0.7% of lr; the rest is torch's recursive form of the cosine.)"""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.num_epochs, eta_min=config.min_lr)
    if config.scheduler in ("warmup_cosine", "warmup_cosine_code"):
        base = optimizer.param_groups[0]["lr"]
        warmup, total, floor = config.warmup_epochs, config.num_epochs, config.min_lr / base
        cosine = lambda progress: floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))  # noqa: E731

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / warmup
            return cosine(min(1.0, (epoch - warmup) / max(1, total - warmup)))

        def code_factor(epoch: int) -> float:
            if epoch <= warmup:
                return epoch / warmup if warmup else 1.0
            return cosine((epoch - warmup - 1) / total)
        chosen = factor if config.scheduler == "warmup_cosine" else code_factor
        return torch.optim.lr_scheduler.LambdaLR(optimizer, chosen)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.opt_milestones))


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  images: torch.Tensor, labels: torch.Tensor, memory: Optional[datasets.MemorySet],
                  execution: runtime.Execution, device: torch.device, label_smoothing: float = 0.0
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch (and a memory set, for memory heads); returns the loss (a 0-d tensor) and how many
    images of the batch the model predicted right (a 0-d tensor). ``model`` is a Classifier, or one wrapped in
    DistributedDataParallel."""
    classifier = unwrap(model)
    images = images.contiguous(memory_format=execution.memory_format)
    memory_images = memory.images.contiguous(memory_format=execution.memory_format) if memory is not None else None
    with torch.autocast(device.type, dtype=execution.autocast, enabled=execution.autocast is not None):
        outputs = model(images, memory_images, memory.labels if memory is not None else None, labels=labels)
        loss = classifier.loss(outputs, labels, label_smoothing) + classifier.regularization()
    if scaler.is_enabled() or torch.isfinite(loss):  # fp32/bf16: a non-finite loss stops the run (train_run)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # under fp16, GradScaler skips a step whose gradients are not finite
        scaler.update()
    return loss.detach(), (outputs.detach().argmax(1) == labels).sum()


def train_run(model: Classifier, data: datasets.ExperimentData, config: Config, run: int, device: torch.device,
              execution: runtime.Execution, state_path: Optional[Path] = None, resume: bool = False,
              log_interval: int = 100, state_extra: Optional[dict] = None,
              distributed: Optional[Distributed] = None, epoch_log: Optional[EpochLog] = None,
              validate: Optional[Callable[[Classifier], float]] = None,
              features: Optional[FeatureTable] = None) -> runtime.Execution:
    """Train ``model`` for ``config.dataset.num_epochs`` epochs of run ``run`` (0-based; seed = run), computing as
    ``execution`` says; returns how it computed (a resumed run keeps the precision and memory format it started
    with). The model ends in eval-ready form: fp32 weights, contiguous.

    With ``state_path``, the resumable state (model, optimizer, scheduler, grad scaler, data generator,
    global RNGs, how it computes, plus ``state_extra``: the config it was made with; a frozen encoder by its
    fingerprint, not its tensors) is written there after every epoch; with ``resume``, training continues after the
    last epoch saved there. On CPU a resumed run ends with exactly the weights of an uninterrupted one. With
    ``distributed`` (torchrun), every rank trains its share of each batch (core/distributed.py) and rank 0 alone
    writes the state.

    ``epoch_log`` receives one entry per epoch (core/history.py); the resumable state carries the entries, so a
    resumed run continues its history. ``validate(model)`` (the validation accuracy, ``config.eval_every``) runs
    every ``eval_every`` epochs and after the last, on rank 0; it leaves the model as it found it and draws nothing from the training
    streams, so it does not change the run's numbers.

    ``features`` (a frozen encoder's feature table, core/frozen.py): the head trains on the cached features of the
    images the same draws pick, instead of encoding them every step.
    """
    dataset_config = config.dataset
    main = distributed is None or distributed.is_main
    state = load_training_state(state_path) if resume and state_path is not None and state_path.is_file() else None
    if state is not None and "precision" in state:
        execution = runtime.Execution.from_names(state)
    model.to(memory_format=execution.memory_format)
    try:
        layer_precision.apply(model, execution.fp32_layers)
    except ValueError as error:
        if state is None:
            raise
        raise state_misfit(state_path, run, str(error)) from None  # the network's code changed since the state
    if config.freeze_encoder:  # the head alone learns: no gradient through the encoder, its BatchNorm fixed
        model.encoder.requires_grad_(False)
    if features is not None:
        network = HeadOnly(model)
    else:
        network = distributed.wrap(model, device, config.sync_batchnorm) if distributed else model
    source = data if features is None else features  # training batches and memory sets: images, or features
    shard = (distributed.rank, distributed.world_size) if distributed else (0, 1)
    optimizer = make_optimizer(model, config.optimizer, fused=config.freeze_encoder and device.type == "cpu")
    scheduler = make_scheduler(optimizer, dataset_config)
    scaler = torch.amp.GradScaler(device.type, enabled=execution.autocast == torch.float16)
    generator = torch.Generator().manual_seed(run)  # batches, flips and memory draws (data-parallel: batches only)
    first_epoch = 1
    # a frozen encoder is not written into every epoch's state: the state names it by its fingerprint
    frozen_encoder = encoder_fingerprint(model) if config.freeze_encoder and state_path is not None else None
    if state is not None:
        last_epoch = restore_training_state(state, state_path, run, model, optimizer, scheduler, scaler, generator,
                                            frozen_encoder)
        first_epoch = last_epoch + 1
        if epoch_log is not None:
            epoch_log.entries = [entry for entry in state.get("history", []) if entry["epoch"] <= last_epoch]
        print(f"Run {run + 1}: resuming after epoch {last_epoch} ({execution.names()['precision']}, "
              f"{execution.names()['memory_format']})", flush=True)

    steps = source.steps_per_epoch(config.batch_size_train)
    progress = tqdm(total=dataset_config.num_epochs * steps, initial=(first_epoch - 1) * steps,
                    desc=f"run {run + 1}", unit="step", disable=None if main else True, file=sys.stdout, leave=False)
    nonfinite = 0  # consecutive non-finite losses (skipped under fp16 + GradScaler)
    train_mode(model, config)
    for epoch in range(first_epoch, dataset_config.num_epochs + 1):
        running_loss, finite_steps, epoch_nonfinite, started = 0.0, 0, 0, time.time()
        correct, seen = torch.zeros((), dtype=torch.long, device=device), 0
        learning_rate = optimizer.param_groups[0]["lr"]
        memory_generator = generator
        if distributed is not None:  # this rank's own memory sets and dropout masks, the same on a resume
            memory_generator = torch.Generator().manual_seed(distributed.seed(run, epoch))
            torch.manual_seed(distributed.seed(run, epoch) + 1)
        for step, (images, labels) in enumerate(source.batches(config.batch_size_train, generator, shard), start=1):
            memory = source.memory_set(memory_generator) if model.uses_memory else None
            loss, right = training_step(network, optimizer, scaler, images, labels, memory, execution, device,
                                        config.label_smoothing)
            correct += right
            seen += len(labels)
            if distributed is not None:  # every rank stops together on a non-finite loss
                torch.distributed.all_reduce(loss, torch.distributed.ReduceOp.AVG
                                             if device.type == "cuda" else torch.distributed.ReduceOp.SUM)
                loss = loss if device.type == "cuda" else loss / distributed.world_size
            loss_value = loss.item()
            finite = math.isfinite(loss_value)
            nonfinite = 0 if finite else nonfinite + 1
            if not finite and (not scaler.is_enabled() or nonfinite > config.max_nonfinite_steps):
                progress.close()
                raise TrainingDiverged(
                    f"the loss became {loss_value} at run {run + 1}, epoch {epoch}, step {step}"
                    + (f", after {nonfinite} non-finite steps in a row (max_nonfinite_steps: "
                       f"{config.max_nonfinite_steps})" if scaler.is_enabled() else "")
                    + ": training stopped. Lower optimizer.learning_rate"
                    + (", or try precision: fp32" if execution.autocast is not None else
                       ", and check the settings that scale the loss (the run is fp32 already)")
                    + (f"; self_attention: {config.self_attention} diverges where nothing normalises the block's "
                       f"output before the features (ResNet-18's and GoogLeNet's last stage at any rate tried): "
                       f"use reference, or a module followed by a BatchNorm (docs/replicating.md, Encoders)"
                       if config.self_attention is not None else ""))
            if finite:
                running_loss += loss_value
                finite_steps += 1
            else:
                epoch_nonfinite += 1
            progress.update(1)
            if step % log_interval == 0 or step == steps:
                progress.set_postfix(epoch=epoch, loss=f"{running_loss / max(finite_steps, 1):.4f}")
        scheduler.step()
        if epoch_log is not None:
            counts = torch.stack([correct, torch.tensor(seen, device=device)])
            if distributed is not None:  # every rank's share of the batches
                torch.distributed.all_reduce(counts)
            entry = {"epoch": epoch, "train_loss": running_loss / finite_steps if finite_steps else None,
                     "train_accuracy": 100.0 * counts[0].item() / max(counts[1].item(), 1), "lr": learning_rate,
                     "seconds": round(time.time() - started, 3), "nonfinite_steps": epoch_nonfinite}
            if validate is not None and main and (epoch % config.eval_every == 0 or epoch == dataset_config.num_epochs):
                entry["val_accuracy"] = validate(model)
                train_mode(model.to(memory_format=execution.memory_format), config)
            if main:
                progress.clear()
                epoch_log.add(entry)
        if state_path is not None and main:
            save_training_state(state_path, epoch, model, optimizer, scheduler, scaler, generator,
                                {**(state_extra or {}), **execution.names(),
                                 "history": epoch_log.entries if epoch_log is not None else []},
                                frozen_encoder)
    progress.close()
    model.to(memory_format=torch.contiguous_format)
    layer_precision.apply(model, ())
    model.requires_grad_(True)
    return execution


def train_mode(model: Classifier, config: Config) -> Classifier:
    """Training mode, with the encoder in eval mode where ``freeze_encoder`` keeps it fixed (BatchNorm statistics
    and dropout included)."""
    model.train()
    if config.freeze_encoder:
        model.encoder.eval()
    return model
