"""core/experiment.py through train.py and eval_dir.py: one configuration per folder, one process per run,
runs sharded over processes equal one sequential job."""
import json
import os
import subprocess
import sys

import pytest
import torch

from core.config import load_config
from helpers import TINY, run_script, start_scripts

FOLDER = ("DIGITS", "std", "shufflenet", "128")


def train(output, *flags, check=True):
    return run_script("train.py", "--modality=std", f"--config={TINY}", f"--output_dir={output}", *flags, check=check)


def results(output):
    return json.loads(output.joinpath(*FOLDER, "results.json").read_text())


@pytest.mark.slow
def test_shards_in_parallel_processes_equal_one_sequential_job(tmp_path):
    train(tmp_path / "sequential", "--runs=3")
    sharded = f"--output_dir={tmp_path / 'sharded'}"
    start_scripts(*(("train.py", "--modality=std", f"--config={TINY}", "--runs=3", sharded, *flags)  # at once
                    for flags in (["--runs_from=1", "--runs_to=2"], ["--run=3"])))
    sequential, sharded = results(tmp_path / "sequential"), results(tmp_path / "sharded")
    assert [r["run"] for r in sharded["runs"]] == [1, 2, 3] and sharded["complete"]
    for key in ("accuracy", "loss", "draw_accuracies"):
        assert [r[key] for r in sharded["runs"]] == [r[key] for r in sequential["runs"]]
    assert (sharded["mean"], sharded["std"]) == (sequential["mean"], sequential["std"])
    # a shard that is already done is skipped with --continue_train, and the summary covers every run
    again = train(tmp_path / "sharded", "--runs=3", "--run=3", "--continue_train").stdout
    assert "Run:3" not in again and f"runs 3 | Mean Accuracy:{sequential['mean']:.2f}" in again


def test_a_run_held_by_a_live_process_is_refused_and_a_stale_lock_taken_over(tmp_path):
    folder = tmp_path.joinpath(*FOLDER)
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / "1.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "since": 0}))
        refused = train(tmp_path, check=False)
        assert refused.returncode != 0 and f"being trained by another process (pid {holder.pid}" in refused.stderr
        assert "Traceback" not in refused.stderr and not (folder / "1.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    taken = train(tmp_path).stdout  # the holder is gone: its lock is stale
    assert f"lock was left by pid {holder.pid}, which is gone" in taken and (folder / "1.pt").exists()
    assert not (folder / "1.lock").exists()


def test_fresh_start_moves_extra_runs_and_other_settings_aside(tmp_path):
    train(tmp_path, "--runs=2")
    folder = tmp_path.joinpath(*FOLDER)
    out = train(tmp_path, "--runs=1").stdout
    assert "runs [2] are beyond runs: 1" in out
    assert [r["run"] for r in results(tmp_path)["runs"]] == [1] and not (folder / "2.pt").exists()
    aside = [p for p in folder.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and {"2.pt", "2.json"} <= {p.name for p in aside[0].iterdir()}
    out = train(tmp_path, "--runs=1", "--epochs=2").stdout  # other settings: the old runs go aside
    assert "the folder held runs made with other settings" in out
    assert results(tmp_path)["config"]["datasets"]["DIGITS"]["num_epochs"] == 2


def test_resume_of_an_interrupted_first_run_checks_its_settings(tmp_path):
    """Only <run>.state.pt exists (run 1 was interrupted): --continue_train compares the settings it carries."""
    folder = tmp_path.joinpath(*FOLDER)
    folder.mkdir(parents=True)
    state = {"epoch": 1, "config": load_config(TINY, {"epochs": 3}).to_dict(), "modality": "std"}
    torch.save(state, folder / "1.state.pt")
    refused = train(tmp_path, "--continue_train", check=False)
    assert refused.returncode != 0
    assert "DIGITS.num_epochs was 3, now 1" in refused.stderr and "(in 1.state.pt)" in refused.stderr
    torch.save({**state, "modality": "memory"}, folder / "1.state.pt")
    refused = train(tmp_path, "--continue_train", "--epochs=3", check=False)
    assert "modality was 'memory', now 'std'" in refused.stderr


def test_eval_dir_evaluates_the_runs_results_json_lists_and_refuses_mixed_folders(tmp_path):
    train(tmp_path, "--runs=2")
    folder = tmp_path.joinpath(*FOLDER)
    listed = results(tmp_path)
    listed["runs"] = listed["runs"][:1]
    (folder / "results.json").write_text(json.dumps(listed))
    out = run_script("eval_dir.py", f"--path={folder}").stdout
    assert "Models:1" in out and "Run:1 " in out and "Run:2 " not in out
    other = tmp_path / "other"
    train(other)
    checkpoint = torch.load(other.joinpath(*FOLDER, "1.pt"), weights_only=True)
    torch.save({**checkpoint, "model_name": "shufflenet", "train_examples": 256}, folder / "2.pt")
    (folder / "results.json").unlink()
    mixed = run_script("eval_dir.py", f"--path={folder}", check=False)
    assert mixed.returncode != 0 and "mixes experiments: train_examples is ['128', '256']" in mixed.stderr


def test_output_folder_that_cannot_be_written_is_refused_before_training(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the output folder should be")
    result = train(blocker, check=False)
    assert result.returncode != 0 and "cannot create the output folder" in result.stderr
    assert "Device:" not in result.stdout and "Traceback" not in result.stderr


def test_std_models_never_need_mem_examples(tmp_path):
    out = train(tmp_path, "--mem_examples=100000").stdout
    assert "Memory:" not in out and "Run:1" in out
