"""train.py, eval.py, eval_dir.py end to end on DIGITS; resume; config errors; NaN stop; checkpoint safety;
cached-feature evaluation against the batch-by-batch path."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import aux
import datasets
import training
from architectures import build_model, to_paper_state_dict
from conftest import REPO

TINY = REPO / "tests" / "tiny_digits.yaml"


def run_script(*args, timeout=240, check=True):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def accuracy_in(text, label="Accuracy:"):
    return float(re.search(re.escape(label) + r"\s*([0-9.]+)", text).group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 1-epoch training per modality, shared by the tests below."""
    root = tmp_path_factory.mktemp("models")
    outputs = {}
    for modality in ("std", "memory", "encoder_memory"):
        outputs[modality] = run_script("train.py", f"--modality={modality}", f"--config={TINY}", f"--output_dir={root}").stdout
    return root, outputs


@pytest.mark.parametrize("modality", ["std", "memory", "encoder_memory"])
def test_train_then_eval_reproduces_the_accuracy(trained, modality):
    root, outputs = trained
    folder = root / "DIGITS" / modality / "shufflenet" / "128"
    assert sorted(p.name for p in folder.iterdir()) == ["1.pt", "results.json"]
    results = json.loads((folder / "results.json").read_text())
    run = results["runs"][0]
    assert run["seed"] == 0 and 0 <= run["accuracy"] <= 100 and run["train_seconds"] > 0
    assert results["mean"] == run["accuracy"] and results["std"] == 0
    assert len(run["draw_accuracies"]) == (1 if modality == "std" else 5)
    assert f"Accuracy {run['accuracy']:.2f} | Mean Accuracy:{run['accuracy']:.2f} | Std Dev Accuracy:0.00" in outputs[modality]
    checkpoint = torch.load(folder / "1.pt", weights_only=True)
    for key in aux.METADATA_KEYS:
        assert key in checkpoint, key
    assert checkpoint["modality"] == modality and checkpoint["config"]["datasets"]["DIGITS"]["mem_examples"] == 20
    evaluated = run_script("eval.py", f"--path_model={folder / '1.pt'}").stdout
    assert accuracy_in(evaluated) == pytest.approx(run["accuracy"], abs=0.005)
    # the paper's form of the command, with flags that agree with the checkpoint
    evaluated = run_script("eval.py", f"--path_model={folder / '1.pt'}", "--dataset=DIGITS", f"--modality={modality}").stdout
    assert accuracy_in(evaluated) == pytest.approx(run["accuracy"], abs=0.005)


def test_eval_dir_with_majority_vote(trained, tmp_path):
    root, _ = trained
    folder = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    out = run_script("eval_dir.py", f"--path={folder}", f"--output_json={tmp_path / 'e.json'}").stdout
    numbers = json.loads((tmp_path / "e.json").read_text())
    assert numbers["mean"] == pytest.approx(json.loads((folder / "results.json").read_text())["mean"])
    for key in ("mvo_mean", "mvy_mean"):
        assert 0 <= numbers[key] <= 100
    assert "MVO Accuracy:" in out and "MVY Accuracy:" in out
    std_out = run_script("eval_dir.py", f"--path={root / 'DIGITS' / 'std' / 'shufflenet' / '128'}").stdout
    assert "MVO" not in std_out and "Models:1" in std_out


def test_eval_refuses_contradicting_flags(trained):
    root, _ = trained
    path = root / "DIGITS" / "memory" / "shufflenet" / "128" / "1.pt"
    result = run_script("eval.py", f"--path_model={path}", "--modality=std", check=False)
    assert result.returncode != 0 and "saved with modality='memory' but --modality='std'" in result.stderr


def test_resume_after_kill_gives_the_same_accuracies(tmp_path):
    args = ["train.py", "--modality=encoder_memory", f"--config={TINY}", "--runs=2", "--epochs=2"]
    reference = tmp_path / "reference"
    run_script(*args, f"--output_dir={reference}")
    interrupted = tmp_path / "interrupted"
    folder = interrupted / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    process = subprocess.Popen([sys.executable, *args, f"--output_dir={interrupted}"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (folder / "2.state.pt").exists():  # run 2 has finished an epoch
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(json.loads((folder / "results.json").read_text())["runs"]) == 1
    resumed = run_script(*args, f"--output_dir={interrupted}", "--continue_train").stdout
    assert "Restarting training process after run 1" in resumed and "Run 2: resuming after epoch" in resumed
    expected = json.loads((reference / "DIGITS/encoder_memory/shufflenet/128/results.json").read_text())
    got = json.loads((folder / "results.json").read_text())
    assert [r["accuracy"] for r in got["runs"]] == [r["accuracy"] for r in expected["runs"]]
    assert [r["loss"] for r in got["runs"]] == [r["loss"] for r in expected["runs"]]
    assert not list(folder.glob("*.state.pt")), "resumable states are removed once a run is finished"
    changed = run_script(*args[:-1], "--epochs=3", f"--output_dir={interrupted}", "--continue_train", check=False)
    assert changed.returncode != 0 and "was made with num_epochs=2, the config now says 3" in changed.stderr


def write_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(TINY.read_text() + text)
    return path


def test_config_errors_listed_together(tmp_path):
    path = write_config(tmp_path, "\nbatch_size_train: 0\nmodell: mobilenet\nprecision: fp8\nruns: two\n")
    with pytest.raises(aux.ConfigError) as error:
        aux.load_config(path)
    message = str(error.value)
    for expected in ("unknown keys ['modell']", "batch_size_train: must be > 0", "precision: 'fp8' is not one of",
                     "runs: expected int, got 'two'"):
        assert expected in message


@pytest.mark.parametrize("extra,expected", [
    ("\ndataset_name: CIFAR10\n", "no CIFAR10: section"),
    ("\nDIGITS: {num_classes: 10, num_epochs: 0, opt_milestones: [3, 2], mem_examples: 20}\n",
     "DIGITS.num_epochs: must be > 0"),
    ("\nDIGITS: {num_classes: 10, num_epochs: 5, opt_milestones: [3, 2], mem_examples: 20}\n",
     "strictly increasing"),
    ("\nDIGITS: {num_classes: 10, num_epochs: 5, opt_milestones: [3], mem_examples: 20, lr: 1}\n",
     "DIGITS: unknown keys ['lr']"),
    ("\nmodel: vgg\n", "unknown model 'vgg'"),
    ("\noptimizer: {learning_rate: fast, weight_decay: 0, momentum: 0.9, nesterov: True}\n",
     "optimizer.learning_rate: expected float, got 'fast'"),
    ("\noptimizer: {learning_rate: 0.1, weight_decay: 0, momentum: 0.9}\n", "optimizer.nesterov: missing"),
])
def test_config_errors(tmp_path, extra, expected):
    with pytest.raises(aux.ConfigError, match=re.escape(expected)):
        aux.load_config(write_config(tmp_path, extra))


def test_paper_yaml_and_overrides():
    config = aux.load_config(REPO / "config" / "train.yaml")
    assert config.optimizer.learning_rate == 0.1 and config.optimizer.weight_decay == 5e-4  # "1e-1" strings
    assert config.dataset_name == "SVHN" and config.dataset.num_epochs == 40 and config.dataset.opt_milestones == (20, 30)
    assert config.datasets["CINIC10"].scheduler == "cosine" and config.memory_source == "subset"
    short = aux.load_config(REPO / "config" / "train.yaml", {"dataset": "CIFAR10", "epochs": 15, "runs": 2, "model": None})
    assert short.dataset.num_epochs == 15 and short.dataset.opt_milestones == (8, 11) and short.runs == 2
    assert short.model == "mobilenet"


def test_train_script_reports_config_error_before_reading_data(tmp_path):
    path = write_config(tmp_path, "\ndataset_name: CIFAR10\ndataset_dir: /nonexistent/never-created\n")
    result = run_script("train.py", "--modality=std", f"--config={path}", f"--output_dir={tmp_path}", check=False)
    assert result.returncode != 0 and "no CIFAR10: section" in result.stderr
    assert not os.path.exists("/nonexistent/never-created")


def test_nan_loss_stops_the_run_with_its_position():
    config = aux.load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0, mem_examples=20)
    model = build_model("shufflenet", "std", 10)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(training.TrainingDiverged, match=r"loss became nan at run 3, epoch 1, step 1"):
        training.train_run(model, data, config, run=2, device=torch.device("cpu"))


def test_malicious_checkpoint_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "1.pt"
    torch.save({"model_state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(aux.CheckpointError, match="refusing to load .* would run code"):
        aux.load_checkpoint(path)
    result = run_script("eval.py", f"--path_model={path}", check=False)
    assert result.returncode != 0 and "refusing to load" in result.stderr
    assert not marker.exists()
    with pytest.raises(aux.CheckpointError, match="does not exist"):
        aux.load_checkpoint(tmp_path / "missing.pt")


def test_paper_checkpoints_load(tmp_path):
    torch.manual_seed(0)
    model = build_model("shufflenet", "memory", 10).eval()
    paper_format = {"model_state_dict": to_paper_state_dict(model), "train_examples": 128, "mem_examples": 20,
                    "model_name": "shufflenet", "num_classes": 10, "modality": "memory", "dataset_name": "DIGITS"}
    torch.save(paper_format, tmp_path / "3.pt")
    checkpoint = aux.load_checkpoint(tmp_path / "3.pt")
    assert checkpoint.seed == 2  # <r+1>.pt -> seed r, as the paper's scripts
    loaded = checkpoint.build_model()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    torch.save(to_paper_state_dict(model), tmp_path / "1.pt")  # a bare state dict: metadata from flags
    with pytest.raises(aux.CheckpointError, match=r"does not record \['model_name', 'modality', 'dataset_name', "
                                                  r"'train_examples'\]: give them as flags \(--model, --modality"):
        aux.load_checkpoint(tmp_path / "1.pt")
    checkpoint = aux.load_checkpoint(tmp_path / "1.pt", model_name="shufflenet", modality="memory",
                                     dataset_name="DIGITS", train_examples=128)
    assert checkpoint.num_classes == 10 and checkpoint.build_model().modality == "memory"


@pytest.mark.parametrize("modality", ["memory", "encoder_memory"])
def test_cached_feature_evaluation_equals_direct_path(modality):
    torch.manual_seed(0)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 300, 200, seed=1, mem_examples=30)
    model = build_model("shufflenet", modality, 10)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.train()
        model(data.test_batch(torch.arange(64))[0], data.memory_batch(data.subset[:30]))
    model.eval()
    cache = aux.FeatureCache.build(model, data, batch_size=100)
    cached = aux.memory_pass(model, cache, 30, 125, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    direct_logits, direct_weights = [], []
    with torch.no_grad():
        for start in range(0, len(data.test_labels), 125):
            images, _ = data.test_batch(torch.arange(start, min(start + 125, len(data.test_labels))))
            memory = data.memory_batch(data.draw_memory(30, generator))
            logits, weights = model(images, memory, return_weights=True)
            direct_logits.append(logits)
            direct_weights.append(weights)
    assert torch.equal(cached.predictions, torch.cat(direct_logits).argmax(1))
    torch.testing.assert_close(cached.logits, torch.cat(direct_logits), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached.content_weights, torch.cat(direct_weights), atol=1e-5, rtol=1e-4)


def test_majority_vote():
    values = torch.tensor([[2, 1, 2, 1, 3], [3, 0, 0, 3, 3]])
    weights = torch.tensor([[0.3, 0.3, 0.2, 0.2, 0.0], [0.5, 0.2, 0.3, 0.0, 0.0]])
    # row 0: 1 and 2 tie (3 has no weight) -> the smallest class; row 1: zero-weight votes do not count
    assert aux.majority_vote(values, weights, 4).tolist() == [1, 0]


def test_device_precision_and_config_file_errors(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(aux.ConfigError, match="device 'cuda' was asked for but torch sees no CUDA GPU"):
            aux.choose_device("cuda")
    with pytest.raises(aux.ConfigError, match="precision 'fp16' needs a CUDA device"):
        aux.autocast_dtype("fp16", torch.device("cpu"))
    with pytest.raises(aux.ConfigError, match="does not exist"):
        aux.load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(aux.ConfigError, match="is not valid YAML"):
        aux.load_config(tmp_path / "bad.yaml")


def test_checkpoint_folder_and_content_errors(tmp_path):
    with pytest.raises(aux.CheckpointError, match="is not a folder"):
        aux.list_checkpoints(tmp_path / "nowhere")
    (tmp_path / "1.state.pt").write_bytes(b"")  # resumable states are not models
    with pytest.raises(aux.CheckpointError, match=r"no \*.pt checkpoints in"):
        aux.list_checkpoints(tmp_path)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(aux.CheckpointError, match="holds neither a state dict nor"):
        aux.load_checkpoint(tmp_path / "list.pt")
    aux.save_checkpoint(tmp_path / "2.pt", build_model("densenet", "std", 10),
                        {"model_name": "shufflenet", "modality": "std", "dataset_name": "DIGITS", "num_classes": 10,
                         "train_examples": 128})
    with pytest.raises(aux.CheckpointError, match=r"the weights do not fit a shufflenet std model with 10 classes: "
                                                  r"\d+ missing keys") as error:
        aux.load_checkpoint(tmp_path / "2.pt").build_model()
    assert len(str(error.value)) < 600


def test_checkpoint_evaluates_with_the_precision_it_was_trained_with(tmp_path):
    cpu = torch.device("cpu")
    for precision, expected in (("auto", None), ("fp32", None), ("bf16", torch.bfloat16), ("fp16", None)):
        checkpoint = aux.Checkpoint(tmp_path, {}, "shufflenet", "std", "DIGITS", 10, 128, 20, 0,
                                    config={"precision": precision})
        assert checkpoint.autocast(cpu) == expected, precision


def test_resumable_state_that_does_not_fit_is_a_clear_error(tmp_path):
    config = aux.load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0, mem_examples=20)
    state = tmp_path / "1.state.pt"
    torch.save({"model": build_model("densenet", "std", 10).state_dict()}, state)
    with pytest.raises(aux.CheckpointError) as error:
        training.train_run(build_model("shufflenet", "std", 10), data, config, 0, torch.device("cpu"), state, resume=True)
    message = str(error.value)
    assert re.search(r"1.state.pt does not fit this run \(\d+ missing keys .*\d+ unexpected keys .*\); delete it to "
                     r"restart run 1", message), message
    assert len(message) < 600 and "\n" not in message, "one readable line, not torch's list of every key"


def test_cache_of_the_first_test_images_gives_the_same_first_results():
    torch.manual_seed(0)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 300, 200, seed=1, mem_examples=30)
    model = build_model("shufflenet", "encoder_memory", 10).eval()
    full = aux.FeatureCache.build(model, data, batch_size=250)
    first = aux.FeatureCache.build(model, data, batch_size=250, test_count=7)
    assert len(first.test_features) == len(first.test_labels) == 7
    full_pass = aux.memory_pass(model, full, 30, 250, torch.Generator().manual_seed(2), torch.Generator().manual_seed(3))
    first_pass = aux.memory_pass(model, first, 30, 250, torch.Generator().manual_seed(2), torch.Generator().manual_seed(3))
    assert torch.equal(first_pass.memory_positions, full_pass.memory_positions[:7])
    assert torch.equal(first_pass.memory_predictions, full_pass.memory_predictions[:7])
    torch.testing.assert_close(first_pass.logits, full_pass.logits[:7])
