"""One run of the paper's training: SGD + MultiStepLR (cosine for CINIC10), a fresh memory set every step,
a resumable state written atomically after every epoch, and a stop on a NaN/inf loss."""
from __future__ import annotations

import functools
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

import datasets
from architectures import Classifier, build_model, head_entry
from base.errors import UserError
from base.files import writable_folder
from core import autotune, evaluation, layer_precision, results, runtime
from core.checkpoints import (Checkpoint, RunMetadata, load_training_state, restore_training_state,
                              save_training_state, state_misfit)
from core import config as config_module
from core.config import Config, ConfigError, DatasetConfig, OptimizerConfig
from core.distributed import Distributed, unwrap
from core.experiment import ExperimentFolder
from core.history import EpochLog, summary_writer_class


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(model: torch.nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the paper's CNNs) or Adam with betas 0.9, 0.999 (its ViT). Multi-tensor
    (foreach) updates: torch picks them on GPUs only by default; on a CPU they halve the optimizer's time and give
    the same numbers bit for bit (tests/test_training.py)."""
    if config.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.999),
                                weight_decay=config.weight_decay, foreach=True)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov, foreach=True)


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
              validate: Optional[Callable[[Classifier], float]] = None) -> runtime.Execution:
    """Train ``model`` for ``config.dataset.num_epochs`` epochs of run ``run`` (0-based; seed = run), computing as
    ``execution`` says; returns how it computed (a resumed run keeps the precision and memory format it started
    with). The model ends in eval-ready form: fp32 weights, contiguous.

    With ``state_path``, the resumable state (model, optimizer, scheduler, grad scaler, data generator,
    global RNGs, how it computes, plus ``state_extra``: the config it was made with) is written there after every
    epoch; with ``resume``, training continues after the last epoch saved there. On CPU a resumed run ends with
    exactly the weights of an uninterrupted one. With ``distributed`` (torchrun), every rank trains its share of
    each batch (core/distributed.py) and rank 0 alone writes the state.

    ``epoch_log`` receives one entry per epoch (core/history.py); the resumable state carries the entries, so a
    resumed run continues its history. ``validate(model)`` (the validation accuracy, ``config.eval_every``) runs
    every ``eval_every`` epochs and after the last, on rank 0; it leaves the model as it found it and draws nothing from the training
    streams, so it does not change the run's numbers.
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
    network = distributed.wrap(model, device, config.sync_batchnorm) if distributed else model
    shard = (distributed.rank, distributed.world_size) if distributed else (0, 1)
    optimizer = make_optimizer(model, config.optimizer)
    scheduler = make_scheduler(optimizer, dataset_config)
    scaler = torch.amp.GradScaler(device.type, enabled=execution.autocast == torch.float16)
    generator = torch.Generator().manual_seed(run)  # batches, flips and memory draws (data-parallel: batches only)
    first_epoch = 1
    if state is not None:
        last_epoch = restore_training_state(state, state_path, run, model, optimizer, scheduler, scaler, generator)
        first_epoch = last_epoch + 1
        if epoch_log is not None:
            epoch_log.entries = [entry for entry in state.get("history", []) if entry["epoch"] <= last_epoch]
        print(f"Run {run + 1}: resuming after epoch {last_epoch} ({execution.names()['precision']}, "
              f"{execution.names()['memory_format']})", flush=True)

    steps = data.steps_per_epoch(config.batch_size_train)
    progress = tqdm(total=dataset_config.num_epochs * steps, initial=(first_epoch - 1) * steps,
                    desc=f"run {run + 1}", unit="step", disable=None if main else True, file=sys.stdout, leave=False)
    nonfinite = 0  # consecutive non-finite losses (skipped under fp16 + GradScaler)
    model.train()
    for epoch in range(first_epoch, dataset_config.num_epochs + 1):
        running_loss, finite_steps, epoch_nonfinite, started = 0.0, 0, 0, time.time()
        correct, seen = torch.zeros((), dtype=torch.long, device=device), 0
        learning_rate = optimizer.param_groups[0]["lr"]
        memory_generator = generator
        if distributed is not None:  # this rank's own memory sets and dropout masks, the same on a resume
            memory_generator = torch.Generator().manual_seed(distributed.seed(run, epoch))
            torch.manual_seed(distributed.seed(run, epoch) + 1)
        for step, (images, labels) in enumerate(data.batches(config.batch_size_train, generator, shard), start=1):
            memory = data.memory_set(memory_generator) if model.uses_memory else None
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
                       ", and check the settings that scale the loss (the run is fp32 already)"))
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
                model.to(memory_format=execution.memory_format).train()
            if main:
                progress.clear()
                epoch_log.add(entry)
        if state_path is not None and main:
            save_training_state(state_path, epoch, model, optimizer, scheduler, scaler, generator,
                                {**(state_extra or {}), **execution.names(),
                                 "history": epoch_log.entries if epoch_log is not None else []})
    progress.close()
    model.to(memory_format=torch.contiguous_format)
    layer_precision.apply(model, ())
    return execution


def run_experiment(config: Config, modality: str, output_dir: Path, continue_train: bool = False,
                   log_interval: int = 100, runs: Optional[Sequence[int]] = None,
                   distributed: Optional[Distributed] = None) -> Optional[dict]:
    """Train and evaluate the runs of one experiment (1-based ``runs``, default all ``config.runs``), and
    return results.json's content (``None`` without ``save``: nothing is written).

    The folder holds one configuration: ``continue_train`` refuses other result-shaping settings than
    the folder's; a fresh start moves the runs of other settings, and runs beyond ``config.runs``, aside.
    Each run is trained under its lock, so other processes may train other runs of the same folder. With
    ``distributed`` (torchrun), the ranks train every run together and rank 0 alone writes and evaluates.
    """
    config_module.check_modality(config, modality)
    runs = list(range(1, config.runs + 1)) if runs is None else list(runs)
    if not runs or any(not 1 <= run <= config.runs for run in runs):
        raise ConfigError(f"runs {[r for r in runs if not 1 <= r <= config.runs]} are outside 1..{config.runs} "
                          f"(runs: {config.runs}); raise --runs or pick runs in range")
    device = runtime.choose_device(config.device)
    if distributed is not None:
        device = distributed.device(device)
        if config.eval_every:
            raise ConfigError("eval_every does not combine with torchrun (the validation pass would change the "
                              "memory format of parameters that DistributedDataParallel holds): train without it, or "
                              "in one process")
        if config.sync_batchnorm and device.type != "cuda":
            raise ConfigError("sync_batchnorm needs CUDA GPUs (torch's SyncBatchNorm runs on GPUs only)")
    main = distributed is None or distributed.is_main
    execution = runtime.Execution.resolve(config.precision, config.memory_format, device, config.model)  # fails early
    autotune.check_cache(config, device)  # a cache path that cannot be written is refused before any work
    if config.tensorboard and config.save:
        summary_writer_class()  # tensorboard: true without the package is refused before any work
    if device.type == "cpu":
        runtime.keep_freed_memory()
    # options a model cannot be built with fail here, before any folder is made or data are read
    check_depthwise_fp32(config, modality, list(layer_precision.depthwise(make_model(config, modality))))
    folder = ExperimentFolder(output_dir)
    if config.save and main:
        writable_folder(output_dir, "output folder")
        prepare_folder(folder, config, modality, continue_train)
    if distributed is not None:
        distributed.barrier()

    train, test = datasets.load_dataset(config.dataset_name, config.dataset_dir, download=config.download)
    uses_memory = head_entry(modality).uses_memory
    mem_examples = config.dataset.mem_examples if uses_memory else 0
    spec = config.dataset_spec()

    def run_data(run: int) -> datasets.ExperimentData:
        return datasets.ExperimentData.build(spec, train, test, config.train_examples, config.dataset.val_examples,
                                             seed=run - 1, memory_source=config.memory_source,
                                             mem_examples=mem_examples, device=device,
                                             memory_flip=config.memory_flip and uses_memory, augment=config.augment,
                                             autoaugment_per_image=config.autoaugment_per_image)

    first = run_data(runs[0])  # every seed gives the same sizes; impossible sizes fail here, before training
    tuning = {"source": "set"}
    if any(not (config.save and continue_train and folder.record(run) is not None) for run in runs):
        execution, tuning = choose_execution(config, modality, device, min(config.batch_size_train, len(first.subset)),
                                             mem_examples, distributed)
    memory = f"Memory:{mem_examples} of {len(first.memory_pool)} ({config.memory_source}) | " if uses_memory else ""
    print(f"Device:{device} | Model:{config.model} | Modality:{modality} | Dataset:{config.dataset_name} | "
          f"SizeTrain:{len(first.subset)} | SizeVal:{len(first.validation)} | {memory}"
          f"Epochs:{config.dataset.num_epochs} | Precision:{execution.describe()} | "
          f"MemoryFormat:{execution.names()['memory_format']} ({autotune.describe(tuning)}) | "
          f"CPU:{runtime.cpu_capability()} | Runs:{runs[0]}..{runs[-1]} of {config.runs}"
          + (f" | Ranks:{distributed.world_size}" if distributed else ""), flush=True)

    if config.save and continue_train:
        finished = [run for run in runs if folder.record(run) is not None]
        if finished == list(range(1, len(finished) + 1)) and finished:
            print(f"Restarting training process after run {len(finished)}", flush=True)
        elif finished:
            print(f"Restarting training process: runs {finished} are finished", flush=True)
    accuracies, summary = {}, None  # run -> accuracy of the runs finished here (without save)
    for run in runs:
        if config.save and continue_train and folder.record(run) is not None:
            continue  # finished by an earlier job
        lock = folder.lock(run).acquire() if config.save and main else None
        try:
            if lock is not None and lock.stale_holder:
                print(f"Note: run {run}'s lock was left by pid {lock.stale_holder.get('pid')}, which is gone; "
                      f"taking it over", flush=True)
            data = first if run == runs[0] else run_data(run)
            record = train_and_evaluate(config, modality, run, data, device, execution, folder, continue_train,
                                        log_interval, distributed, tuning)
        finally:
            if lock is not None:
                lock.release()
        if record is None:  # a rank other than 0: rank 0 evaluates and reports
            continue
        accuracies[run] = record["accuracy"]
        if config.save:  # every finished run of the folder, also those of other processes
            summary = folder.rebuild_results(config, modality)
            accuracies = {r["run"]: r["accuracy"] for r in summary["runs"]}
        print(results.run_line(run, record["loss"], record["accuracy"], [accuracies[r] for r in sorted(accuracies)],
                               record["train_seconds"] / 60, record["eval_seconds"] / 60), flush=True)
    if not main:
        return None
    if config.save and summary is None:  # every selected run was already finished
        summary = folder.rebuild_results(config, modality)
        accuracies = {r["run"]: r["accuracy"] for r in summary["runs"]}
    values = [accuracies[r] for r in sorted(accuracies)]
    mean, std = results.mean_std(values)
    if values:
        print(f"Summary | {config.dataset_name} | {modality} | {config.model} | train_examples "
              f"{config.train_examples} | runs {len(values)} | Mean Accuracy:{mean:.2f} | Std Dev Accuracy:{std:.2f}",
              flush=True)
    return summary


def validation_accuracy(config: Config, data: datasets.ExperimentData, seed: int
                        ) -> Optional[Callable[[Classifier], float]]:
    """With ``eval_every``: the model's accuracy on the held-out validation split, evaluated as the test set is
    (features encoded once, the run's evaluation memory draws), for the history; None without it."""
    if not config.eval_every:
        return None
    if not len(data.validation):
        raise ConfigError(f"eval_every: {config.eval_every} needs a validation split, but val_examples is 0")

    def validate(model: Classifier) -> float:
        cache = evaluation.FeatureCache.build(model, data, config.batch_size_test, seed=seed,
                                              draws=config.eval_draws, split="validation")
        return evaluation.evaluate(model, cache).accuracy
    return validate


def choose_execution(config: Config, modality: str, device: torch.device, batch_size: int, mem_examples: int,
                     distributed: Optional[Distributed] = None):
    """(how the run computes, how that was chosen): ``precision`` / ``memory_format`` auto are measured on this
    machine or read from the autotune cache (core/autotune.py). Under torchrun rank 0 decides and the other ranks
    read its answer."""
    uses_memory = head_entry(modality).uses_memory

    def synthetic(execution: runtime.Execution):
        """A model computing as ``execution`` says, and a forward-backward step on random tensors of the run's
        shapes."""
        model = make_model(config, modality).to(device).to(memory_format=execution.memory_format).train()
        layer_precision.apply(model, execution.fp32_layers)
        optimizer, scaler = make_optimizer(model, config.optimizer), torch.amp.GradScaler(
            device.type, enabled=execution.autocast == torch.float16)
        images = torch.randn(batch_size, 3, 32, 32, device=device)
        labels = torch.randint(config.dataset.num_classes, (batch_size,), device=device)
        memory = datasets.MemorySet(torch.arange(mem_examples), torch.randn(mem_examples, 3, 32, 32, device=device),
                                    torch.randint(config.dataset.num_classes, (mem_examples,), device=device)
                                    ) if uses_memory else None
        step = lambda: training_step(model, optimizer, scaler, images, labels, memory, execution, device,  # noqa: E731
                                     config.label_smoothing)[0].item()
        forward = lambda: model(images.contiguous(memory_format=execution.memory_format),  # noqa: E731
                                memory.images.contiguous(memory_format=execution.memory_format) if memory else None,
                                memory.labels if memory else None, labels=labels)
        return model, step, forward

    def step_for(execution: runtime.Execution):
        return synthetic(execution)[1]

    @functools.cache
    def depthwise_names() -> Tuple[str, ...]:
        """The model's depthwise convolutions (a model is built once, and only where they are asked for)."""
        return tuple(layer_precision.depthwise(make_model(config, modality)))

    def layers_for(execution: runtime.Execution) -> dict:
        """A bf16 lever's depthwise convolutions in fp32 (only called where a lever needs them: not on cache hits)."""
        if config.depthwise_fp32 == "all":
            return {"fp32": list(depthwise_names())}
        if isinstance(config.depthwise_fp32, tuple):  # named by the config (run_experiment checks the names)
            return {"fp32": list(config.depthwise_fp32)}
        model, _, forward = synthetic(runtime.Execution(execution.autocast, execution.memory_format))
        return layer_precision.measure(model, forward, execution.memory_format, execution.autocast)

    def resolve():
        return autotune.resolve(config, modality, device, batch_size, mem_examples, step_for,
                                 layers_for=None if config.depthwise_fp32 == "none" else layers_for,
                                 layer_names=depthwise_names)
    if distributed is None:
        return resolve()
    chosen = resolve() if distributed.is_main else None
    distributed.barrier()
    return chosen or resolve()


def check_depthwise_fp32(config: Config, modality: str, names: Sequence[str]) -> None:
    """A ``depthwise_fp32`` list must name depthwise convolutions of the model (``names``)."""
    unknown = [name for name in config.depthwise_fp32 if name not in names] \
        if isinstance(config.depthwise_fp32, tuple) else []
    if unknown:
        raise ConfigError(f"depthwise_fp32: {unknown} are not depthwise convolutions of the {config.model} "
                          f"{modality} model; it has {list(names)} (a run's record lists those it computed in fp32 "
                          f"under fp32_layers)")


def make_model(config: Config, modality: str) -> Classifier:
    """The run's model; options it cannot be built with (a self_attention position that is no feature map, given
    prototypes of the wrong shape...) are a ConfigError."""
    try:
        return build_model(config.model, modality, config.dataset.num_classes, **config.model_options())
    except (ValueError, TypeError, OSError) as error:
        raise ConfigError(f"a {config.model} {modality} model cannot be built with this config: {error}") from None


def prepare_folder(folder: ExperimentFolder, config: Config, modality: str, continue_train: bool) -> None:
    """Before any data are read: a resume must match the folder's settings; a fresh start moves aside what
    belongs to other settings, and runs beyond ``config.runs``."""
    differences = folder.differences(config, modality)
    if differences and continue_train:
        listed = "; ".join(dict.fromkeys(problem for problems in differences.values() for problem in problems))
        raise ConfigError(f"--continue_train: {folder.path} was made with other settings: {listed} (in "
                          f"{', '.join(differences)}). Use the same settings, or start afresh without "
                          f"--continue_train (the old runs are moved aside)")
    on_disk = folder.runs_on_disk()
    if differences:
        busy = [run for run in folder.live_locks()]
        if busy:
            raise ConfigError(f"{folder.path} holds runs of other settings and runs {busy} are being trained by "
                              f"another process; wait for it, or choose another --output_dir")
        folder.move_aside(on_disk, "the folder held runs made with other settings")
    else:
        extra = [run for run in on_disk if run > config.runs]
        if extra:
            folder.move_aside(extra, f"runs {extra} are beyond runs: {config.runs}")


def train_and_evaluate(config: Config, modality: str, run: int, data: datasets.ExperimentData, device: torch.device,
                       execution: runtime.Execution, folder: ExperimentFolder, continue_train: bool,
                       log_interval: int, distributed: Optional[Distributed] = None,
                       tuning: Optional[dict] = None) -> Optional[dict]:
    """One run (1-based): train (resuming its state with ``continue_train``), evaluate, save; its record (None
    on the ranks other than 0 of a data-parallel run: they train, and wait while rank 0 evaluates and saves)."""
    start = time.time()
    runtime.seed_everything(run - 1)
    model = make_model(config, modality).to(device)
    state_path = folder.state(run) if config.save else None
    if state_path is not None and not continue_train and state_path.exists():
        state_path.unlink()  # a fresh start of this run
    settings = {"config": config.to_dict(), "modality": modality}
    main = distributed is None or distributed.is_main
    epoch_log = EpochLog(run, folder.tensorboard(run) if config.tensorboard and config.save and main else None)
    execution = train_run(model, data, config, run - 1, device, execution, state_path, resume=continue_train,
                          log_interval=log_interval, state_extra=settings, distributed=distributed,
                          epoch_log=epoch_log, validate=validation_accuracy(config, data, run - 1))
    epoch_log.close()
    train_seconds = time.time() - start
    if distributed is not None and not distributed.is_main:
        distributed.barrier()  # rank 0 evaluates and writes
        return None

    start = time.time()
    eval_autocast = execution.autocast if config.eval_autocast else None  # the paper evaluated in fp32
    cache = evaluation.FeatureCache.build(model, data, config.batch_size_test, seed=run - 1, draws=config.eval_draws,
                                          autocast=eval_autocast)
    result = evaluation.evaluate(model, cache)
    eval_seconds = time.time() - start
    record = {"run": run, "seed": run - 1, "accuracy": result.accuracy, "draw_accuracies": result.accuracies,
              "loss": result.loss, "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
              "train_size": len(data.subset), "val_size": len(data.validation),
              "memory_pool_size": len(data.memory_pool) if model.uses_memory else None, **execution.names(),
              "eval_precision": runtime.precision_name(eval_autocast), "machine": runtime.describe_machine(device),
              "ranks": distributed.world_size if distributed else 1, "history": epoch_log.entries,
              "autotune": tuning or {"source": "set"},
              **settings}
    if config.save:
        metadata = RunMetadata(model_name=config.model, modality=modality, dataset_name=config.dataset_name,
                               num_classes=config.dataset.num_classes, train_examples=config.train_examples,
                               mem_examples=config.dataset.mem_examples, run=run, seed=run - 1,
                               accuracy=result.accuracy, config=config.to_dict(), train_size=len(data.subset),
                               training=execution.names())
        Checkpoint.save(folder.checkpoint(run), model, metadata)
        folder.write_record(run, record)
        if state_path is not None and state_path.exists():
            state_path.unlink()
    if distributed is not None:
        distributed.barrier()
    return record
