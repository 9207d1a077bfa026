"""training.py: the training loop's own guarantees."""
import dataclasses

import pytest
import torch

import datasets
from core import training
from core import runner
from architectures import build_model
from core.config import load_config
from core.runtime import Execution

FP32 = Execution(None, torch.contiguous_format)
from helpers import TINY


def test_nan_loss_stops_the_run_with_its_position():
    config = load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0, mem_examples=20)
    model = build_model("shufflenet", "std", 10)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(training.TrainingDiverged, match=r"loss became nan at run 3, epoch 1, step 1"):
        training.train_run(model, data, config, run=2, device=torch.device("cpu"), execution=FP32)


@pytest.mark.parametrize("limit,stops", [(5, False), (2, True)])
def test_fp16_skips_non_finite_steps_and_stops_after_too_many_in_a_row(monkeypatch, limit, stops):
    """Under fp16 + GradScaler (CPU autocast here, to test without a GPU) a non-finite loss skips its step, as
    the paper's GradScaler loop did; more than max_nonfinite_steps in a row stop the run, saying where."""
    fp16 = Execution(torch.float16, torch.contiguous_format)
    config = load_config(TINY, {"epochs": 2}, ["batch_size_train=4"])  # 2 steps an epoch: fp16 is slow on a CPU
    config = dataclasses.replace(config, max_nonfinite_steps=limit)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 8, 200, seed=0)
    model = build_model("shufflenet", "std", 10)
    calls = {"n": 0}
    real_loss = model.loss

    def loss_with_three_nans(outputs, labels, label_smoothing=0.0):
        calls["n"] += 1
        loss = real_loss(outputs, labels, label_smoothing)
        return loss * float("nan") if calls["n"] <= 3 else loss

    monkeypatch.setattr(model, "loss", loss_with_three_nans)
    if stops:
        with pytest.raises(training.TrainingDiverged, match=r"at run 1, epoch 2, step 1, after 3 non-finite steps in "
                                                            r"a row \(max_nonfinite_steps: 2\)"):
            training.train_run(model, data, config, run=0, device=torch.device("cpu"), execution=fp16)
    else:
        training.train_run(model, data, config, run=0, device=torch.device("cpu"), execution=fp16)
        assert calls["n"] == 4 and all(p.isfinite().all() for p in model.parameters())


def test_a_resumed_run_keeps_the_precision_and_memory_format_it_started_with(tmp_path):
    """'auto' may resolve otherwise on the machine that resumes (bf16 here, fp32 there): the run keeps its own."""
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 64, 200, seed=0)
    started = Execution(torch.bfloat16, torch.channels_last)
    state = tmp_path / "1.state.pt"
    one_epoch, two_epochs = load_config(TINY, {"epochs": 1}), load_config(TINY, {"epochs": 2})
    training.train_run(build_model("shufflenet", "std", 10), data, one_epoch, 0, torch.device("cpu"), started, state)
    assert torch.load(state, weights_only=True)["precision"] == "bf16"
    model = build_model("shufflenet", "std", 10)
    used = training.train_run(model, data, two_epochs, 0, torch.device("cpu"), FP32, state, resume=True)
    assert used == started and torch.load(state, weights_only=True)["epoch"] == 2
    assert next(model.parameters()).is_contiguous(), "the model ends contiguous, ready for fp32 evaluation"


def test_a_resumed_state_naming_layers_the_model_lacks_says_which_state_and_what_to_do(tmp_path):
    """A state whose fp32 depthwise layers the network no longer has (its code changed since): a CheckpointError
    naming the state file and the layers, and nothing written."""
    from core.checkpoints import CheckpointError

    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 64, 200, seed=0)
    state = tmp_path / "1.state.pt"
    one_epoch, two_epochs = load_config(TINY, {"epochs": 1}), load_config(TINY, {"epochs": 2})
    # the state of a run with a depthwise convolution in fp32 (computed in fp32 here: only what the state names matters)
    training.train_run(build_model("mobilenet", "std", 10), data, one_epoch, 0, torch.device("cpu"),
                       Execution(None, torch.channels_last, ("encoder.layers.1.conv2",)), state)
    saved = torch.load(state, weights_only=True)
    torch.save({**saved, "fp32_layers": ["encoder.layers.1.renamed"]}, state)
    before = state.read_bytes()
    with pytest.raises(CheckpointError, match=r"resumable state .*1\.state\.pt does not fit this run "
                                              r"\(\[.encoder\.layers\.1\.renamed.\] are not depthwise.*"
                                              r"delete it to restart run 1, or run without --continue_train"):
        training.train_run(build_model("mobilenet", "std", 10), data, two_epochs, 0, torch.device("cpu"), FP32,
                           state, resume=True)
    assert state.read_bytes() == before


def test_the_history_has_one_entry_per_epoch_and_validation_does_not_change_the_run(tmp_path):
    """Each epoch's mean loss, training accuracy, learning rate, seconds and non-finite steps; with eval_every the
    validation accuracy every N epochs, computed without touching the run's numbers (same weights as without)."""
    from core.history import EpochLog

    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 64, 100, seed=0, mem_examples=20)
    config = dataclasses.replace(load_config(TINY, {"epochs": 3}), eval_every=2)
    weights = []
    for validate in (None, runner.validation_accuracy(config, data, 0)):
        torch.manual_seed(0)
        model, log = build_model("shufflenet", "encoder_memory", 10), EpochLog(1, console=False)
        training.train_run(model, data, config, 0, torch.device("cpu"), Execution(None, torch.channels_last),
                           epoch_log=log, validate=validate)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert [e["epoch"] for e in log.entries] == [1, 2, 3]
        assert all(e["lr"] == 0.05 and e["nonfinite_steps"] == 0 and e["seconds"] > 0 for e in log.entries)
        assert all(0 <= e["train_accuracy"] <= 100 and e["train_loss"] > 0 for e in log.entries)
        assert [("val_accuracy" in e) for e in log.entries] == [False, validate is not None, validate is not None]
    assert torch.equal(weights[0], weights[1])
    assert 0 <= log.entries[1]["val_accuracy"] <= 100


def test_tensorboard_without_the_package_is_refused_in_one_line(monkeypatch):
    import builtins

    from core.history import EpochLog, TensorBoardMissing

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(TensorBoardMissing, match=r"tensorboard: true needs the tensorboard package .*pip install "
                                                  r"tensorboard"):
        EpochLog(1, tensorboard_dir="tb")


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_multi_tensor_optimizer_step_gives_the_single_tensor_numbers(name):
    settings = ["optimizer={learning_rate: 0.1, weight_decay: 5e-4, name: adam}"] if name == "adam" else []
    config = load_config(TINY, {}, settings).optimizer
    weights = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = build_model("shufflenet", "std", 10)
        optimizer = training.make_optimizer(model, config)
        assert optimizer.defaults["foreach"] is True, "torch takes single-tensor updates on a CPU unless asked"
        if not foreach:
            optimizer = type(optimizer)(model.parameters(), **{**optimizer.defaults, "foreach": False})
        images, labels = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
