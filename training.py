"""One run of the paper's training: SGD + MultiStepLR (cosine for CINIC10), a fresh memory set every step,
a resumable state written atomically after every epoch, and a stop on a NaN/inf loss."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

import datasets
from architectures import Classifier, build_model
from core import evaluation, results, runtime
from core.checkpoints import Checkpoint, RunMetadata, restore_training_state, save_training_state
from core.config import Config, ConfigError, DatasetConfig, OptimizerConfig
from base.errors import UserError
from base.files import atomic_write_json


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(model: torch.nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, config: DatasetConfig):
    """Stepped once per epoch, as the paper."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.num_epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.opt_milestones))


def train_run(model: Classifier, data: datasets.ExperimentData, config: Config, run: int,
              device: torch.device, state_path: Optional[Path] = None, resume: bool = False,
              log_interval: int = 100) -> Classifier:
    """Train ``model`` for ``config.dataset.num_epochs`` epochs of run ``run`` (0-based; seed = run).

    With ``state_path``, the resumable state (model, optimizer, scheduler, grad scaler, data generator,
    global RNGs) is written there after every epoch; with ``resume``, training continues after the last
    epoch saved there. On CPU a resumed run ends with exactly the weights of an uninterrupted one.
    """
    dataset_config = config.dataset
    optimizer = make_optimizer(model, config.optimizer)
    scheduler = make_scheduler(optimizer, dataset_config)
    amp_dtype = runtime.autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    generator = torch.Generator().manual_seed(run)  # batches, flips and memory draws
    first_epoch = 1

    if resume and state_path is not None and state_path.is_file():
        last_epoch = restore_training_state(state_path, run, model, optimizer, scheduler, scaler, generator)
        first_epoch = last_epoch + 1
        print(f"Run {run + 1}: resuming after epoch {last_epoch}", flush=True)

    steps = data.steps_per_epoch(config.batch_size_train)
    progress = tqdm(total=dataset_config.num_epochs * steps, initial=(first_epoch - 1) * steps,
                    desc=f"run {run + 1}", unit="step", disable=None, file=sys.stdout, leave=False)
    model.train()
    for epoch in range(first_epoch, dataset_config.num_epochs + 1):
        running_loss = 0.0
        for step, (images, labels) in enumerate(data.batches(config.batch_size_train, generator), start=1):
            memory_images = memory_labels = None
            if model.uses_memory:
                memory = data.memory_set(generator)
                memory_images, memory_labels = memory.images, memory.labels
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images, memory_images, memory_labels, labels=labels)
                loss = model.loss(outputs, labels) + model.regularization()
            loss_value = loss.item()
            if not torch.isfinite(loss):
                progress.close()
                raise TrainingDiverged(
                    f"the loss became {loss_value} at run {run + 1}, epoch {epoch}, step {step}: training stopped. "
                    f"Lower optimizer.learning_rate, or try precision: fp32")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running_loss += loss_value
            progress.update(1)
            if step % log_interval == 0 or step == steps:
                progress.set_postfix(epoch=epoch, loss=f"{running_loss / step:.4f}")
        scheduler.step()
        if state_path is not None:
            save_training_state(state_path, epoch, model, optimizer, scheduler, scaler, generator)
    progress.close()
    return model


def run_experiment(config: Config, modality: str, output_dir: Path, continue_train: bool = False,
                   log_interval: int = 100) -> dict:
    """All runs of one experiment; returns (and writes) results.json's content."""
    device = runtime.choose_device(config.device)
    amp_dtype = runtime.autocast_dtype(config.precision, device)  # validates precision against the device early
    print(f"Device:{device} | Model:{config.model} | Modality:{modality} | Dataset:{config.dataset_name} | "
          f"SizeTrain:{config.train_examples} | Epochs:{config.dataset.num_epochs} | Precision:"
          f"{runtime.precision_name(amp_dtype)}", flush=True)
    train, test = datasets.load_dataset(config.dataset_name, config.dataset_dir, download=config.download)
    results_path = output_dir / "results.json"
    summary = {"dataset_name": config.dataset_name, "modality": modality, "model": config.model,
               "train_examples": config.train_examples, "config": config.to_dict(), "runs": []}
    if continue_train and results_path.is_file():
        previous = json.loads(results_path.read_text())
        for key in ("num_epochs", "mem_examples", "opt_milestones", "val_examples"):
            old = previous["config"]["datasets"][config.dataset_name][key]
            new = summary["config"]["datasets"][config.dataset_name][key]
            if old != new:
                raise ConfigError(f"--continue_train: {results_path} was made with {key}={old}, "
                                  f"the config now says {new}; use the same settings or start afresh")
        summary["runs"] = previous["runs"]
        print(f"Restarting training process after run {len(summary['runs'])}", flush=True)
    elif not continue_train:
        for stale in output_dir.glob("*.state.pt"):
            stale.unlink()
        if config.save and list(output_dir.glob("*.pt")):
            print(f"Note: {output_dir} holds checkpoints of an earlier experiment; runs 1..{config.runs} overwrite "
                  f"theirs (use --continue_train to resume instead)", flush=True)

    accuracies = [r["accuracy"] for r in summary["runs"]]
    for run in range(len(summary["runs"]), config.runs):
        start = time.time()
        runtime.seed_everything(run)
        model = build_model(config.model, modality, config.dataset.num_classes, distance=config.distance).to(device)
        data = datasets.ExperimentData.build(datasets.get_spec(config.dataset_name), train, test,
                                             config.train_examples, config.dataset.val_examples, seed=run,
                                             memory_source=config.memory_source,
                                             mem_examples=config.dataset.mem_examples, device=device)
        state_path = output_dir / f"{run + 1}.state.pt" if config.save else None
        train_run(model, data, config, run, device, state_path, resume=continue_train, log_interval=log_interval)
        train_seconds = time.time() - start

        start = time.time()
        cache = evaluation.FeatureCache.build(model, data, config.batch_size_test, seed=run, draws=config.eval_draws,
                                              autocast=amp_dtype)
        result = evaluation.evaluate(model, cache, config.batch_size_test)
        eval_seconds = time.time() - start
        accuracies.append(result.accuracy)
        mean, std = results.mean_std(accuracies)
        summary["runs"].append({"run": run + 1, "seed": run, "accuracy": result.accuracy,
                                "draw_accuracies": result.accuracies, "loss": result.loss,
                                "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2)})
        summary.update(mean=mean, std=std)
        if config.save:
            metadata = RunMetadata(model_name=config.model, modality=modality, dataset_name=config.dataset_name,
                                   num_classes=config.dataset.num_classes, train_examples=config.train_examples,
                                   mem_examples=config.dataset.mem_examples, run=run + 1, seed=run,
                                   accuracy=result.accuracy, config=config.to_dict())
            Checkpoint.save(output_dir / f"{run + 1}.pt", model, metadata)
            atomic_write_json(summary, results_path)
            if state_path is not None and state_path.exists():
                state_path.unlink()
        print(results.run_line(run + 1, result.loss, result.accuracy, accuracies, train_seconds / 60,
                               eval_seconds / 60), flush=True)
    mean, std = results.mean_std(accuracies)
    print(f"Summary | {config.dataset_name} | {modality} | {config.model} | train_examples {config.train_examples} | "
          f"runs {len(accuracies)} | Mean Accuracy:{mean:.2f} | Std Dev Accuracy:{std:.2f}", flush=True)
    return summary
