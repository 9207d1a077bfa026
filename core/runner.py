"""The runs of one experiment: checks, data, how to compute, then per run train (training.py), evaluate and save.

    summary = run_experiment(config, "encoder_memory", Path("models/DIGITS/encoder_memory/shufflenet/1000"))

One run, in order: everything that can be refused is checked before anything is written (the config against the
head, the device, the autotune cache, the model's options on one probe model, a resume against the folder, the
data and their sizes); then the folder is prepared (runs of other settings moved aside), the levers chosen on
copies of the probe, and each run trained under its lock from a model seeded by its run, evaluated on features
encoded once (core/evaluation.py), and saved: its checkpoint (core/checkpoints.py) and its record, from which
results.json is rebuilt (core/experiment.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

import datasets
from architectures import Classifier, head_entry
from architectures.timm_backbone import load_pretrained, preprocessing
from base.files import writable_folder

from . import autotune, evaluation, frozen, results, runtime, support, training
from .checkpoints import Checkpoint, RunMetadata
from .config import Config, ConfigError, check_modality, uses_weights_preprocessing
from .distributed import Distributed
from .execution import check_depthwise_fp32, choose_execution, make_model
from .experiment import ExperimentFolder
from .history import EpochLog, summary_writer_class

UNBALANCED = 3.0  # a subset whose largest class has this many times the images of its smallest gets a warning


def with_dataset_classes(config: Config) -> Config:
    """A folder dataset's config with the number of classes its folders hold (the layout is checked here, before
    anything else); the config as given for the paper's datasets."""
    if not datasets.get_spec(config.dataset_name).resizes:
        return config
    classes = datasets.folder_classes(Path(config.dataset_dir))
    if config.dataset.num_classes not in (None, len(classes)):
        raise ConfigError(f"{config.dataset_name}.num_classes is {config.dataset.num_classes} but "
                          f"{config.dataset_dir}/train has {len(classes)} class folders ({', '.join(classes)}); "
                          f"drop num_classes (the folders say it)")
    return config.with_num_classes(len(classes))


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
    check_modality(config, modality)
    config = with_dataset_classes(config)
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
    table = frozen.cached(config, distributed)  # the head trains on a frozen encoder's features, encoded once
    if table and config.precision in ("fp16", "bf16"):
        raise ConfigError(f"precision: {config.precision} has no effect with freeze_encoder: true (the frozen "
                          f"encoder's features are encoded once, in fp32 as evaluation encodes them, and the head "
                          f"trains on them): drop it")
    if not table:
        autotune.check_cache(config, device)  # a cache that cannot be written, or impossible levers: before any work
    if config.tensorboard and config.save:
        summary_writer_class()  # tensorboard: true without the package is refused before any work
    if device.type == "cpu":
        runtime.keep_freed_memory()
    probe = make_model(config, modality)  # options a model cannot be built with fail here, before any data are read
    check_depthwise_fp32(config, modality, probe)
    pretrained, encoder_state = pretrained_weights(config, probe)
    folder = ExperimentFolder(output_dir)
    if config.save and main and continue_train:
        check_resume(folder, config, modality)

    train, test = datasets.load_dataset(config.dataset_name, config.dataset_dir, download=config.download,
                                        image_size=config.image_size)
    for note in dict.fromkeys(train.notes + test.notes):  # what the reader skipped, a cache it could not write
        print(f"Note: {note}", flush=True)
    uses_memory = head_entry(modality).uses_memory
    mem_examples = config.dataset.mem_examples if uses_memory else 0

    def run_data(run: int) -> datasets.ExperimentData:
        return datasets.ExperimentData.build(config.dataset_spec(), train, test, config.train_examples,
                                             config.dataset.val_examples, seed=run - 1,
                                             memory_source=config.memory_source, mem_examples=mem_examples,
                                             device=device, memory_flip=config.memory_flip and uses_memory,
                                             augment=config.augment, autoaugment_per_image=config.autoaugment_per_image,
                                             image_size=config.image_size)

    first = run_data(runs[0])  # every seed gives the same sizes; impossible sizes fail here, before anything is written
    if config.save and main:
        writable_folder(output_dir, "output folder")
        prepare_folder(folder, config, modality, continue_train, runs)
    if distributed is not None:
        distributed.barrier()
    if table:  # nothing to measure: features are encoded as evaluation encodes, the head is tensor work
        execution, tuning = runtime.Execution(None, torch.contiguous_format), {"source": "frozen"}
    elif any(not (config.save and continue_train and folder.record(run) is not None) for run in runs):
        execution, tuning = choose_execution(config, modality, device, min(config.batch_size_train, len(first.subset)),
                                             mem_examples, distributed, probe=probe)
    else:  # every run is finished: nothing is trained, nothing measured
        execution, tuning = runtime.Execution.resolve(config.precision, config.memory_format, device, config.model), \
            {"source": "set"}
    del probe
    print(header(config, modality, device, first, execution, tuning, runs, distributed), flush=True)
    warning = balance_warning(first) if datasets.get_spec(config.dataset_name).resizes else None
    if warning:
        print(warning, flush=True)

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
                                        log_interval, distributed, tuning, pretrained, encoder_state, table)
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
    line = results.summary_line(config, modality, [accuracies[r] for r in sorted(accuracies)])
    if line:
        print(line, flush=True)
    return summary


def header(config: Config, modality: str, device: torch.device, data: datasets.ExperimentData,
           execution: runtime.Execution, tuning: dict, runs: Sequence[int],
           distributed: Optional[Distributed] = None) -> str:
    """The run's header line: what is trained, on what, how it computes; a folder dataset's images per class."""
    memory = (f"Memory:{data.mem_examples} of {len(data.memory_pool)} ({config.memory_source}) | "
              if data.mem_examples else "")
    per_class = ""
    if datasets.get_spec(config.dataset_name).resizes:
        per_class = " | PerClass:" + ", ".join(f"{name}={count}" for name, count in data.class_counts().items())
    levers = ("fp32, features encoded once (frozen encoder)" if tuning.get("source") == "frozen" else
              f"{execution.describe()} | MemoryFormat:{execution.names()['memory_format']} "
              f"({autotune.describe(tuning)})")
    return (f"Device:{device} | Model:{config.model} | Modality:{modality} | Dataset:{config.dataset_name} | "
            f"SizeTrain:{len(data.subset)} | SizeVal:{len(data.validation)} | {memory}"
            f"Epochs:{config.dataset.num_epochs} | {describe_encoder(config)} | Precision:{levers} | "
            f"CPU:{runtime.cpu_capability()} | Runs:{runs[0]}..{runs[-1]} of {config.runs}"
            + (f" | Ranks:{distributed.world_size}" if distributed else "") + per_class)


def describe_encoder(config: Config) -> str:
    """For the header: the encoder's weights, whether it learns, and the images it is fed (size and normalisation,
    and whether they are the pretrained weights' own, timm's pretrained_cfg)."""
    weights = ("timm's pretrained" if config.pretrained else f"from {config.pretrained_path}"
               if config.pretrained_path else "random init")
    state = "frozen" if config.freeze_encoder else "trained"
    spec = config.dataset_spec()
    normalization = (f"mean {', '.join(f'{m:g}' for m in spec.mean)} std {', '.join(f'{v:g}' for v in spec.std)}"
                     if spec.mean is not None else "of each run's subset")
    origin = ""
    if uses_weights_preprocessing(config.to_dict()):
        size, mean, std = preprocessing(config.model)
        own = [what for what, same in (("size", size == config.image_size),
                                       ("normalisation", (mean, std) == (spec.mean, spec.std))) if same]
        origin = f" ({' and '.join(own)} of the weights' pretrained_cfg)" if own else " (set by the config)"
    return f"Encoder:{weights}, {state} | Images:{config.image_size} px, {normalization}{origin}"


def balance_warning(data: datasets.ExperimentData) -> Optional[str]:
    """A line when the reduced training subset lacks a class or is strongly unbalanced (largest over smallest
    class above ``UNBALANCED``)."""
    counts = data.class_counts()
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        return (f"Warning: the training subset holds no image of {', '.join(empty)}: the model cannot learn "
                f"{'them' if len(empty) > 1 else 'it'}; raise train_examples or add images")
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    if counts[largest] > UNBALANCED * counts[smallest]:
        return (f"Warning: the training subset is strongly unbalanced: {largest} {counts[largest]} images, "
                f"{smallest} {counts[smallest]}; accuracy favours the large classes (per class: see the header)")
    return None


def pretrained_weights(config: Config, probe: Classifier) -> Tuple[Optional[dict], Optional[dict]]:
    """The encoder's pretrained weights (``pretrained: true`` or ``pretrained_path``) loaded into the probe once, so
    that weights that cannot be had or do not fit fail here, before any data are read: (where they came from, for
    the runs' records; the encoder's state dict, which every run's model starts from), or (None, None)."""
    if not (config.pretrained or config.pretrained_path):
        return None, None
    try:
        source = load_pretrained(probe.encoder, config.pretrained_path)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return source, {key: value.clone() for key, value in probe.encoder.state_dict().items()}


def check_resume(folder: ExperimentFolder, config: Config, modality: str) -> None:
    """``--continue_train`` must find the folder's settings (before any data are read)."""
    differences = folder.differences(config, modality)
    if differences:
        listed = "; ".join(dict.fromkeys(problem for problems in differences.values() for problem in problems))
        raise ConfigError(f"--continue_train: {folder.path} was made with other settings: {listed} (in "
                          f"{', '.join(differences)}). Use the same settings, or start afresh without "
                          f"--continue_train (the old runs are moved aside)")


def prepare_folder(folder: ExperimentFolder, config: Config, modality: str, continue_train: bool,
                   runs: Sequence[int] = ()) -> None:
    """Before a run is trained: a resume must match the folder's settings; a fresh start moves aside what belongs
    to other settings, runs beyond ``config.runs``, and the finished runs of ``runs`` it trains again, each with
    everything derived from it (core/experiment.py): a finished run is never destroyed."""
    if continue_train:
        check_resume(folder, config, modality)
    differences = folder.differences(config, modality)
    on_disk = folder.runs_on_disk()
    again = [] if continue_train else [run for run in runs if run in on_disk]
    busy = [run for run in folder.live_locks() if differences or run in again]
    if busy:
        raise ConfigError(f"runs {busy} of {folder.path} are being trained by another process; wait for it, or "
                          f"choose another --output_dir")
    if differences:
        folder.move_aside(on_disk, "the folder held runs made with other settings")
        return
    extra = [run for run in on_disk if run > config.runs]
    if extra:
        folder.move_aside(extra, f"runs {extra} are beyond runs: {config.runs}")
    if again:
        folder.move_aside(again, f"runs {again} are trained again (a fresh start, without --continue_train)")


def validation_accuracy(config: Config, data: datasets.ExperimentData, seed: int,
                        features: Optional[frozen.FeatureTable] = None) -> Optional[Callable[[Classifier], float]]:
    """With ``eval_every``: the model's accuracy on the held-out validation split, evaluated as the test set is
    (features encoded once, the run's evaluation memory draws; a frozen encoder's from its feature table), for the
    history; None without it."""
    if not config.eval_every:
        return None
    if not len(data.validation):
        raise ConfigError(f"eval_every: {config.eval_every} needs a validation split, but val_examples is 0")

    def validate(model: Classifier) -> float:
        cache = features.validation if features is not None else evaluation.FeatureCache.build(
            model, data, config.batch_size_test, seed=seed, draws=config.eval_draws, split="validation")
        return evaluation.evaluate(model, cache).accuracy
    return validate


def train_and_evaluate(config: Config, modality: str, run: int, data: datasets.ExperimentData, device: torch.device,
                       execution: runtime.Execution, folder: ExperimentFolder, continue_train: bool,
                       log_interval: int, distributed: Optional[Distributed] = None,
                       tuning: Optional[dict] = None, pretrained: Optional[dict] = None,
                       encoder_state: Optional[dict] = None, table: bool = False) -> Optional[dict]:
    """One run (1-based): train (resuming its state with ``continue_train``), evaluate, save; its record (None
    on the ranks other than 0 of a data-parallel run: they train, and wait while rank 0 evaluates and saves).
    ``encoder_state``: the pretrained encoder every run starts from; ``table``: a frozen encoder's features are
    encoded once (core/frozen.py) and the head trains on them."""
    start = time.time()
    runtime.seed_everything(run - 1)
    model = make_model(config, modality)
    if encoder_state is not None:
        model.encoder.load_state_dict(encoder_state)
    model = model.to(device)
    features = (frozen.FeatureTable.encode(model, data, config.batch_size_test, seed=run - 1, draws=config.eval_draws,
                                           validation=bool(config.eval_every)) if table else None)
    encode_seconds = time.time() - start
    state_path = folder.state(run) if config.save else None
    if state_path is not None and not continue_train and state_path.exists():
        state_path.unlink()  # a fresh start of this run
    settings = {"config": config.to_dict(), "modality": modality}
    main = distributed is None or distributed.is_main
    epoch_log = EpochLog(run, folder.tensorboard(run) if config.tensorboard and config.save and main else None)
    execution = training.train_run(model, data, config, run - 1, device, execution, state_path, resume=continue_train,
                                   log_interval=log_interval, state_extra=settings, distributed=distributed,
                                   epoch_log=epoch_log, validate=validation_accuracy(config, data, run - 1, features),
                                   features=features)
    epoch_log.close()
    train_seconds = time.time() - start
    if distributed is not None and not distributed.is_main:
        distributed.barrier()  # rank 0 evaluates and writes
        return None

    start = time.time()
    eval_autocast = execution.autocast if config.eval_autocast else None  # the paper evaluated in fp32
    cache = features.cache if features is not None else evaluation.FeatureCache.build(
        model, data, config.batch_size_test, seed=run - 1, draws=config.eval_draws, autocast=eval_autocast)
    result = evaluation.evaluate(model, cache)
    threshold = support_threshold(model, data, cache, config, features)
    eval_seconds = time.time() - start
    record = {"run": run, "seed": run - 1, "accuracy": result.accuracy, "draw_accuracies": result.accuracies,
              "loss": result.loss, "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
              "train_size": len(data.subset), "val_size": len(data.validation),
              "memory_pool_size": len(data.memory_pool) if model.uses_memory else None, **execution.names(),
              "eval_precision": runtime.precision_name(eval_autocast), "machine": runtime.describe_machine(device),
              "ranks": distributed.world_size if distributed else 1, "history": epoch_log.entries,
              "autotune": tuning or {"source": "set"}, "classes": list(data.classes),
              "normalization": {"mean": list(data.spec.mean), "std": list(data.spec.std)},
              **({"pretrained": pretrained} if pretrained else {}),
              **({"feature_table_seconds": round(encode_seconds, 2)} if features is not None else {}),
              **({"support": threshold} if threshold else {}), **settings}
    if config.save:
        metadata = RunMetadata.from_record(record)
        metadata.memory_pool = data.pool_record()  # provenance, and what later loads check the dataset against
        Checkpoint.save(folder.checkpoint(run), model, metadata)
        folder.write_record(run, record)
        if state_path is not None and state_path.exists():
            state_path.unlink()
    if distributed is not None:
        distributed.barrier()
    return record


def support_threshold(model: Classifier, data: datasets.ExperimentData, cache: evaluation.FeatureCache, config: Config,
                      features: Optional[frozen.FeatureTable] = None) -> Optional[dict]:
    """A memory model's support threshold (core/support.py), calibrated on the validation split where there is one
    (a frozen encoder's from its table), else on the memory pool; None for other heads."""
    if not model.uses_memory:
        return None
    validation = None
    if len(data.validation):
        checked = features.validation if features is not None and features.validation is not None else \
            evaluation.FeatureCache.build(model, data, config.batch_size_test, seed=0, draws=1, split="validation",
                                          pool_features=cache)
        validation = checked.test_features
    return support.pool_threshold(model, cache.memory_features, cache.memory_labels, validation)


def report_summary(folder: ExperimentFolder, config: Config, modality: str) -> dict:
    """results.json rebuilt from the folder's records, and its Summary line printed (train.py --parallel_runs)."""
    summary = folder.rebuild_results(config, modality)
    line = results.summary_line(config, modality, [r["accuracy"] for r in summary["runs"]])
    if line:
        print(line, flush=True)
    return summary

