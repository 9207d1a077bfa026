"""core/checkpoints.py: safe loading, the paper's layout, clear errors, the resumable state."""
import os
import re

import pytest
import torch

import datasets
from core import training
from architectures import build_model, to_paper_state_dict
from core.checkpoints import Checkpoint, CheckpointError, RunMetadata, list_checkpoints
from core.config import load_config
from core.runtime import Execution

FP32 = Execution(None, torch.contiguous_format)
from conftest import REPO
from helpers import TINY, run_script


def test_malicious_checkpoint_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "1.pt"
    torch.save({"model_state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load .* would run code"):
        Checkpoint.load(path)
    result = run_script("eval.py", f"--path_model={path}", check=False)
    assert result.returncode != 0 and "refusing to load" in result.stderr
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint.load(tmp_path / "missing.pt")


def test_paper_checkpoints_load(tmp_path):
    torch.manual_seed(0)
    model = build_model("shufflenet", "memory", 10).eval()
    paper_format = {"model_state_dict": to_paper_state_dict(model), "train_examples": 128, "mem_examples": 20,
                    "model_name": "shufflenet", "num_classes": 10, "modality": "memory", "dataset_name": "DIGITS"}
    torch.save(paper_format, tmp_path / "3.pt")
    checkpoint = Checkpoint.load(tmp_path / "3.pt")
    assert checkpoint.seed == 2  # <r+1>.pt -> seed r, as the paper's scripts
    loaded = checkpoint.build_model()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    torch.save(to_paper_state_dict(model), tmp_path / "1.pt")  # a bare state dict: metadata from flags
    with pytest.raises(CheckpointError, match=r"does not record \['model_name', 'modality', 'dataset_name', "
                                                  r"'train_examples'\]: give them as flags \(--model, --modality"):
        Checkpoint.load(tmp_path / "1.pt")
    checkpoint = Checkpoint.load(tmp_path / "1.pt", model_name="shufflenet", modality="memory",
                                     dataset_name="DIGITS", train_examples=128)
    assert checkpoint.num_classes == 10 and checkpoint.build_model().modality == "memory"


def test_checkpoint_folder_and_content_errors(tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        list_checkpoints(tmp_path / "nowhere")
    (tmp_path / "1.state.pt").write_bytes(b"")  # resumable states are not models
    with pytest.raises(CheckpointError, match=r"no \*.pt checkpoints in"):
        list_checkpoints(tmp_path)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds neither a state dict nor"):
        Checkpoint.load(tmp_path / "list.pt")
    Checkpoint.save(tmp_path / "2.pt", build_model("densenet", "std", 10),
                    RunMetadata(model_name="shufflenet", modality="std", dataset_name="DIGITS", num_classes=10,
                                train_examples=128))
    with pytest.raises(CheckpointError, match=r"the weights do not fit a shufflenet std model with 10 classes: "
                                                  r"\d+ missing keys") as error:
        Checkpoint.load(tmp_path / "2.pt").build_model()
    assert len(str(error.value)) < 600


def test_checkpoint_evaluates_with_the_precision_it_was_evaluated_with(tmp_path):
    cpu = torch.device("cpu")
    # checkpoints without the eval_autocast key were evaluated under their training precision
    for precision, expected in (("auto", None), ("fp32", None), ("bf16", torch.bfloat16), ("fp16", None)):
        checkpoint = Checkpoint(tmp_path, {}, RunMetadata("shufflenet", "std", "DIGITS", 10, 128, 20, seed=0,
                                                          config={"precision": precision}))
        assert checkpoint.autocast(cpu) == expected, precision
    # since: fp32, as the paper, unless eval_autocast asks for the training autocast
    for eval_autocast, expected in ((False, None), (True, torch.bfloat16)):
        config = {"precision": "bf16", "eval_autocast": eval_autocast}
        checkpoint = Checkpoint(tmp_path, {}, RunMetadata("shufflenet", "std", "DIGITS", 10, 128, 20, config=config))
        assert checkpoint.autocast(cpu) == expected, eval_autocast


def test_resumable_state_that_does_not_fit_is_a_clear_error(tmp_path):
    config = load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0, mem_examples=20)
    state = tmp_path / "1.state.pt"
    torch.save({"model": build_model("densenet", "std", 10).state_dict()}, state)
    with pytest.raises(CheckpointError) as error:
        training.train_run(build_model("shufflenet", "std", 10), data, config, 0, torch.device("cpu"), FP32, state,
                           resume=True)
    message = str(error.value)
    assert re.search(r"1.state.pt does not fit this run \(\d+ missing keys .*\d+ unexpected keys .*\); delete it to "
                     r"restart run 1", message), message
    assert len(message) < 600 and "\n" not in message, "one readable line, not torch's list of every key"


def test_paper_checkpoints_get_the_paper_codes_evaluation_protocol(tmp_path):
    """Without a recorded config: CINIC10 memory flipped and a 10-image validation split; CIFAR10 memory
    from the whole training set; flags override; our checkpoints refuse contradicting flags."""
    from test_datasets import write_cifar_folder, write_png_tree

    write_png_tree(tmp_path, per_class=5)
    model = build_model("shufflenet", "memory", 10)
    torch.save(to_paper_state_dict(model), tmp_path / "1.pt")
    checkpoint = Checkpoint.load(tmp_path / "1.pt", model_name="shufflenet", modality="memory",
                                 dataset_name="CINIC10", train_examples=20, mem_examples=10)
    data = checkpoint.run_data(None, tmp_path)
    assert len(data.validation) == 10 and len(data.subset) == 20 and data.memory_flip
    assert len(checkpoint.run_data(None, tmp_path, val_examples=15).validation) == 15
    data = checkpoint.run_data(None, tmp_path, memory_source="full")
    assert len(data.memory_pool) == 50
    write_cifar_folder(tmp_path, n=40)  # 200 training images
    cifar = Checkpoint.load(tmp_path / "1.pt", model_name="shufflenet", modality="memory", dataset_name="CIFAR10",
                            train_examples=20, mem_examples=10)
    data = cifar.run_data(None, tmp_path, val_examples=30)
    assert len(data.memory_pool) == 200 and len(data.subset) == 20 and not data.memory_flip
    assert len(cifar.run_data(None, tmp_path, val_examples=30, memory_source="subset").memory_pool) == 20
    ours = Checkpoint(tmp_path / "2.pt", {}, RunMetadata("shufflenet", "memory", "CINIC10", 10, 20, 10,
                                                         config=load_config(REPO / "config" / "train.yaml",
                                                                            {"dataset": "CINIC10"}).to_dict()))
    with pytest.raises(CheckpointError, match=r"trained with val_examples=6000 but --val_examples=10"):
        ours.run_data(None, tmp_path, val_examples=10)
