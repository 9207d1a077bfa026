"""train.py, eval.py, eval_dir.py end to end on DIGITS, as a user runs them; kill and resume."""
import json
import os
import signal
import time

import pytest
import torch

from core.checkpoints import RunMetadata
from helpers import SMALL_MLP, TINY, TINY_DRAWS, accuracy_in, run_script, start_script, write_config

pytestmark = pytest.mark.xdist_group("trained")  # conftest's trained models: made once, in one worker


@pytest.mark.parametrize("modality", ["std", "memory", "encoder_memory"])
def test_train_then_eval_reproduces_the_accuracy(trained, modality):
    root, outputs = trained
    folder = root / "DIGITS" / modality / "shufflenet" / "128"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["1.json", "1.pt", "results.json"]
    results = json.loads((folder / "results.json").read_text())
    run = results["runs"][0]
    assert run["seed"] == 0 and 0 <= run["accuracy"] <= 100 and run["train_seconds"] > 0
    assert results["mean"] == run["accuracy"] and results["std"] == 0
    assert len(run["draw_accuracies"]) == (1 if modality == "std" else TINY_DRAWS)
    assert f"Accuracy {run['accuracy']:.2f} | Mean Accuracy:{run['accuracy']:.2f} | Std Dev Accuracy:0.00" in outputs[modality]
    checkpoint = torch.load(folder / "1.pt", weights_only=True)
    for key in RunMetadata.KEYS:
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


def test_resume_after_kill_gives_the_same_accuracies_and_history(tmp_path):
    args = ["train.py", "--modality=encoder_memory", f"--config={TINY}", "--runs=2", "--epochs=2", "--set=eval_every=1",
            "--train_examples=64", "--set=DIGITS.val_examples=100", SMALL_MLP, "--set=tensorboard=true"]
    reference = tmp_path / "reference"
    run_script(*args, f"--output_dir={reference}")
    interrupted = tmp_path / "interrupted"
    folder = interrupted / "DIGITS" / "encoder_memory" / "shufflenet" / "64"
    shard = ["--runs_from=1", "--runs_to=2"]  # a killed shard resumes as a killed job does
    process = start_script(*args, *shard, f"--output_dir={interrupted}")
    deadline = time.time() + 240
    while not (folder / "2.state.pt").exists():  # run 2 has finished an epoch
        assert process.running() and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait().returncode == -signal.SIGKILL
    assert len(json.loads((folder / "results.json").read_text())["runs"]) == 1
    resumed = run_script(*args, *shard, f"--output_dir={interrupted}", "--continue_train").stdout
    assert "Restarting training process after run 1" in resumed and "Run 2: resuming after epoch" in resumed
    expected = json.loads((reference / "DIGITS/encoder_memory/shufflenet/64/results.json").read_text())
    got = json.loads((folder / "results.json").read_text())
    assert [r["accuracy"] for r in got["runs"]] == [r["accuracy"] for r in expected["runs"]]
    assert [r["loss"] for r in got["runs"]] == [r["loss"] for r in expected["runs"]]
    without_seconds = lambda runs: [[{k: v for k, v in e.items() if k != "seconds"} for e in r["history"]]  # noqa
                                    for r in runs]
    assert without_seconds(got["runs"]) == without_seconds(expected["runs"])
    assert [e["epoch"] for e in got["runs"][1]["history"]] == [1, 2] and "val_accuracy" in got["runs"][1]["history"][1]
    assert "Run 2 | Epoch 2 | Loss:" in resumed, "one line per epoch when stdout is not a terminal"
    events = list((folder / "tb" / "run_2").glob("events.out.tfevents.*"))
    assert events, "tensorboard: true writes the scalars under <experiment>/tb/run_<r>/"
    assert not list(folder.glob("*.state.pt")), "resumable states are removed once a run is finished"
    changed = run_script(*args[:-1], "--epochs=3", f"--output_dir={interrupted}", "--continue_train", check=False)
    assert changed.returncode != 0 and "was made with other settings: DIGITS.num_epochs was 2, now 3" in changed.stderr


def test_train_script_reports_config_error_before_reading_data(tmp_path):
    path = write_config(tmp_path, "\ndataset_name: CIFAR10\ndataset_dir: /nonexistent/never-created\n")
    result = run_script("train.py", "--modality=std", f"--config={path}", f"--output_dir={tmp_path}", check=False)
    assert result.returncode != 0 and "no CIFAR10: section" in result.stderr
    assert not os.path.exists("/nonexistent/never-created")
