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

import aux
import datasets
from architectures import Classifier, build_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(model: torch.nn.Module, config: aux.OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, config: aux.DatasetConfig):
    """Stepped once per epoch, as the paper."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.num_epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.opt_milestones))


def train_run(model: Classifier, data: datasets.ExperimentData, config: aux.Config, run: int,
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
    amp_dtype = aux.autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    generator = torch.Generator().manual_seed(run)  # batches, flips and memory draws
    loss_function = torch.nn.CrossEntropyLoss()
    first_epoch = 1

    if resume and state_path is not None and state_path.is_file():
        state = aux.safe_torch_load(state_path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            generator.set_state(state["generator"])
            aux.set_rng_state(state["rng"])
            first_epoch = state["epoch"] + 1
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            reason = (f"no entry {error}" if isinstance(error, KeyError)
                      else aux.describe_mismatch(model, state.get("model"), error))
            raise aux.CheckpointError(f"the resumable state {state_path} does not fit this run ({reason}); delete it "
                                      f"to restart run {run + 1}, or run without --continue_train") from None
        print(f"Run {run + 1}: resuming after epoch {state['epoch']}", flush=True)

    steps = data.steps_per_epoch(config.batch_size_train)
    progress = tqdm(total=dataset_config.num_epochs * steps, initial=(first_epoch - 1) * steps,
                    desc=f"run {run + 1}", unit="step", disable=None, file=sys.stdout, leave=False)
    model.train()
    for epoch in range(first_epoch, dataset_config.num_epochs + 1):
        running_loss = 0.0
        for step, batch in enumerate(data.train_batches(config.batch_size_train, generator), start=1):
            images, labels = data.train_batch(batch, generator)
            memory = data.memory_batch(data.draw_memory(dataset_config.mem_examples, generator)) if model.uses_memory else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_function(model(images, memory), labels)
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
            aux.atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                   "generator": generator.get_state(), "rng": aux.rng_state(), "epoch": epoch},
                                  state_path)
    progress.close()
    return model


def run_experiment(config: aux.Config, modality: str, output_dir: Path, continue_train: bool = False,
                   log_interval: int = 100) -> dict:
    """All runs of one experiment; returns (and writes) results.json's content."""
    device = aux.choose_device(config.device)
    amp_dtype = aux.autocast_dtype(config.precision, device)  # validates precision against the device early
    print(f"Device:{device} | Model:{config.model} | Modality:{modality} | Dataset:{config.dataset_name} | "
          f"SizeTrain:{config.train_examples} | Epochs:{config.dataset.num_epochs} | Precision:"
          f"{'fp32' if amp_dtype is None else str(amp_dtype).replace('torch.', '')}", flush=True)
    train, test = datasets.load_dataset(config.dataset_name, config.dataset_dir, download=config.download)
    results_path = output_dir / "results.json"
    results = {"dataset_name": config.dataset_name, "modality": modality, "model": config.model,
               "train_examples": config.train_examples, "config": config.to_dict(), "runs": []}
    if continue_train and results_path.is_file():
        previous = json.loads(results_path.read_text())
        for key in ("num_epochs", "mem_examples", "opt_milestones", "val_examples"):
            old = previous["config"]["datasets"][config.dataset_name][key]
            new = results["config"]["datasets"][config.dataset_name][key]
            if old != new:
                raise aux.ConfigError(f"--continue_train: {results_path} was made with {key}={old}, "
                                      f"the config now says {new}; use the same settings or start afresh")
        results["runs"] = previous["runs"]
        print(f"Restarting training process after run {len(results['runs'])}", flush=True)
    elif not continue_train:
        for stale in output_dir.glob("*.state.pt"):
            stale.unlink()
        if config.save and list(output_dir.glob("*.pt")):
            print(f"Note: {output_dir} holds checkpoints of an earlier experiment; runs 1..{config.runs} overwrite "
                  f"theirs (use --continue_train to resume instead)", flush=True)

    accuracies = [r["accuracy"] for r in results["runs"]]
    for run in range(len(results["runs"]), config.runs):
        start = time.time()
        aux.seed_everything(run)
        model = build_model(config.model, modality, config.dataset.num_classes, distance=config.distance).to(device)
        data = datasets.ExperimentData.build(datasets.get_spec(config.dataset_name), train, test,
                                             config.train_examples, config.dataset.val_examples, seed=run,
                                             memory_source=config.memory_source,
                                             mem_examples=config.dataset.mem_examples, device=device)
        state_path = output_dir / f"{run + 1}.state.pt" if config.save else None
        train_run(model, data, config, run, device, state_path, resume=continue_train, log_interval=log_interval)
        train_seconds = time.time() - start

        start = time.time()
        cache = aux.FeatureCache.build(model, data, config.batch_size_test, amp_dtype)
        evaluation = aux.evaluate(model, cache, config.dataset.mem_examples, config.batch_size_test, seed=run,
                                  draws=config.eval_draws)
        eval_seconds = time.time() - start
        accuracies.append(evaluation.accuracy)
        mean, std = aux.mean_std(accuracies)
        results["runs"].append({"run": run + 1, "seed": run, "accuracy": evaluation.accuracy,
                                "draw_accuracies": evaluation.accuracies, "loss": evaluation.loss,
                                "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2)})
        results.update(mean=mean, std=std)
        if config.save:
            metadata = {"model_name": config.model, "modality": modality, "dataset_name": config.dataset_name,
                        "num_classes": config.dataset.num_classes, "train_examples": config.train_examples,
                        "mem_examples": config.dataset.mem_examples, "run": run + 1, "seed": run,
                        "accuracy": evaluation.accuracy, "config": config.to_dict()}
            aux.save_checkpoint(output_dir / f"{run + 1}.pt", model, metadata)
            aux.atomic_write_json(results, results_path)
            if state_path is not None and state_path.exists():
                state_path.unlink()
        print(aux.run_line(run + 1, evaluation.loss, evaluation.accuracy, accuracies, train_seconds / 60,
                           eval_seconds / 60), flush=True)
    mean, std = aux.mean_std(accuracies)
    print(f"Summary | {config.dataset_name} | {modality} | {config.model} | train_examples {config.train_examples} | "
          f"runs {len(accuracies)} | Mean Accuracy:{mean:.2f} | Std Dev Accuracy:{std:.2f}", flush=True)
    return results
