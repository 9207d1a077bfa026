"""Nothing lost on a rerun, one line on Ctrl-C, no meaningless number from a model at chance, bounded sizes."""
import json
import os
import signal
import time

import pytest
import torch

from conftest import REPO
from helpers import SMALL_MLP, TINY, TINY_DRAWS, run_script, start_script


def _derived(folder, name, runs):
    (folder / name).write_text(json.dumps({"models": [{"checkpoint": str(folder / f"{run}.pt"), "seed": run - 1}
                                                      for run in runs]}))


def test_training_a_finished_run_again_moves_it_and_everything_derived_from_it_aside(tmp_path):
    output = tmp_path / "models"
    run_script("train.py", f"--config={TINY}", "--modality=encoder_memory", "--runs=2", f"--output_dir={output}",
               "--set=tensorboard=true", SMALL_MLP)
    folder = output / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    (folder / "autoencoders" / "1").mkdir(parents=True)
    (folder / "autoencoders" / "1" / "full.pt").write_bytes(b"an autoencoder of run 1")
    (folder / "autoencoders" / "2").mkdir(parents=True)
    for name, runs in (("explanation_accuracy.json", [1, 2]), ("explanation_accuracy_full.json", [1]),
                       ("explanation_examples.json", [1, 2]), ("counterfactuals_memory.json", [2]),
                       ("counterfactuals_proto.json", [1])):
        _derived(folder, name, runs)
    old = {name: (folder / name).read_bytes() for name in ("1.pt", "1.json", "2.pt")}
    said = run_script("train.py", f"--config={TINY}", "--modality=encoder_memory", "--runs=2", "--run=1",
                      f"--output_dir={output}", SMALL_MLP).stdout
    notes = [line for line in said.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and "runs [1] are trained again" in notes[0], said
    [replaced] = folder.glob("replaced-*")
    assert sorted(p.name for p in replaced.iterdir()) == sorted(
        ["1.pt", "1.json", "results.json", "tb", "autoencoders", "explanation_accuracy.json",
         "explanation_accuracy_full.json", "explanation_examples.json", "counterfactuals_proto.json"])
    assert (replaced / "1.pt").read_bytes() == old["1.pt"] and (replaced / "1.json").read_bytes() == old["1.json"]
    assert (replaced / "autoencoders" / "1" / "full.pt").is_file() and (replaced / "tb" / "run_1").is_dir()
    assert (folder / "2.pt").read_bytes() == old["2.pt"] and (folder / "autoencoders" / "2").is_dir()
    assert (folder / "counterfactuals_memory.json").is_file(), "a file that describes run 2 alone stays"
    assert (folder / "1.pt").is_file() and [r["run"] for r in json.loads((folder / "results.json").read_text())["runs"]] \
        == [1, 2]


@pytest.mark.xdist_group("trained")
def test_a_script_that_computes_one_part_of_a_file_keeps_the_others(trained, tmp_path):
    root, _ = trained
    folder = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    output = tmp_path / "examples.json"
    run_script("explanation_examples.py", f"--path_models={folder}", f"--output_json={output}", "--metric=both")
    both = json.loads(output.read_text())
    said = run_script("explanation_examples.py", f"--path_models={folder}", f"--output_json={output}",
                      "--metric=input", "--draws=1").stdout
    assert f"kept prediction from examples.json (computed with paper_code False, draws {TINY_DRAWS})" in said
    merged = json.loads(output.read_text())
    assert merged["settings"] == {"input": {"paper_code": False, "draws": 1},
                                  "prediction": {"paper_code": False, "draws": TINY_DRAWS}}
    assert [m["prediction"] for m in merged["models"]] == [m["prediction"] for m in both["models"]]
    assert merged["summary"]["prediction"] == both["summary"]["prediction"] and "input" in merged["summary"]


@pytest.mark.xdist_group("trained")
def test_a_model_at_chance_is_flagged_in_the_output_the_json_and_the_tables_and_strict_refuses_it(trained, tmp_path):
    root, _ = trained
    folder = root / "DIGITS" / "memory" / "shufflenet" / "128"
    checkpoint = torch.load(folder / "1.pt", weights_only=True)
    assert checkpoint["accuracy"] <= 15, "the session's 1-epoch models are at chance"
    copy = tmp_path / "models" / "DIGITS" / "memory" / "shufflenet" / "128"
    copy.mkdir(parents=True)
    for name in ("1.pt", "1.json", "results.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    said = run_script("explanation_accuracy.py", f"--path_models={copy}").stdout
    assert f"Warning: run 1: accuracy {checkpoint['accuracy']:.1f} %, chance 10.0 %: its explanations carry no " \
           f"information" in said
    row = json.loads((copy / "explanation_accuracy.json").read_text())["models"][0]
    assert row["uninformative"].startswith("run 1: accuracy")
    table = run_script("tables.py", f"--root={tmp_path / 'models'}", f"--output={tmp_path / 't'}").stdout
    assert "(1 uninformative)" in table and "their explanations carry no information" in table
    refused = run_script("explanation_accuracy.py", f"--path_models={copy}", "--strict",
                         f"--output_json={tmp_path / 'x.json'}", check=False)
    assert refused.returncode == 1 and "--strict refuses to explain it" in refused.stderr
    assert not (tmp_path / "x.json").exists()


def test_all_zero_attributions_say_so_instead_of_drawing_noise():
    import datasets
    from base.plots import pyplot
    from explanations.figures import show_attribution

    plt = pyplot()
    figure, axis = plt.subplots()
    spec = datasets.get_spec("DIGITS")
    show_attribution(figure, axis, torch.full((3, 8, 8), 1e-9), torch.zeros(3, 8, 8), spec, "attribution")
    assert any("all attributions" in text.get_text() for text in axis.texts)
    figure2, axis2 = plt.subplots()
    show_attribution(figure2, axis2, torch.rand(3, 8, 8), torch.zeros(3, 8, 8), spec, "attribution")
    assert not axis2.texts
    plt.close("all")


def _interrupt(command, ready, timeout=120):
    """Start ``command`` (a process of its own, forked from the script server, which gives it SIGINT's default
    handling: a terminal's foreground program), send it SIGINT once ``ready()`` holds; (exit status, stderr)."""
    process = start_script(*command, timeout=timeout)
    deadline = time.time() + timeout
    while not ready() and process.running() and time.time() < deadline:
        time.sleep(0.05)
    assert process.running(), "the script ended before it could be interrupted"
    os.kill(process.pid, signal.SIGINT)
    result = process.wait()
    return result.returncode, result.stderr


def test_ctrl_c_ends_training_in_one_line_that_says_how_to_go_on(tmp_path):
    folder = tmp_path / "models" / "DIGITS" / "std" / "shufflenet" / "128"
    status, stderr = _interrupt(["train.py", f"--config={TINY}", "--modality=std", "--epochs=200",
                                 f"--output_dir={tmp_path / 'models'}"], lambda: (folder / "1.state.pt").is_file())
    assert status == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: train.py: the finished runs are kept") and "--continue_train" in last
    assert "Traceback" not in stderr and not list(tmp_path.rglob("*.part"))
    assert (folder / "1.state.pt").is_file() and not (folder / "1.lock").exists()


@pytest.mark.xdist_group("trained")
def test_ctrl_c_ends_the_autoencoders_training_in_one_line(trained, tmp_path):
    root, _ = trained
    folder = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    saving = tmp_path / "aes"
    started = []

    def training():  # its folder exists, and a moment has passed for the first epochs
        if saving.is_dir() and not started:
            started.append(time.time())
        return bool(started) and time.time() - started[0] > 1.0
    status, stderr = _interrupt(["train_autoencoders.py", f"--path_models={folder}", "--epochs=500",
                                 f"--saving_path={saving}"], training)
    assert status == 130 and stderr.strip().splitlines()[-1].startswith(
        "interrupted: train_autoencoders.py: the autoencoders finished so far are kept"), stderr
    assert "Traceback" not in stderr and not list(saving.rglob("*.part"))


def test_every_script_ends_ctrl_c_in_one_line():
    """Every script's main is wrapped by the guard (the paper-named ones reuse a main that is)."""
    import ast

    for path in sorted(REPO.glob("*.py")):
        tree = ast.parse(path.read_text())
        mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        imports_main = any(isinstance(node, ast.ImportFrom) and any(a.name == "main" for a in node.names)
                           for node in tree.body)
        if path.name == "aux.py" or not (mains or imports_main):
            continue
        if mains:
            decorators = [ast.unparse(d) for d in mains[0].decorator_list]
            assert any("exit_on_user_errors" in d for d in decorators), path.name


@pytest.mark.parametrize("command, message", [
    (["train.py", "--modality=std", "--epochs=1000000000000"], "flag --epochs=1000000000000: 1000000000000 is not an "
                                                               "integer in the range [1, 10000]"),
    (["train.py", "--modality=std", "--runs=20000"], "in the range [1, 10000]"),
    (["counterfactuals.py", "--path_models=x", "--algo=proto", "--max_iterations=10000000"], "in the range [1, 1000000]"),
    (["generate_heatmaps.py", "--path_model=x", "--n_steps=1000000"], "in the range [1, 10000]"),
    (["eval.py", "--path_model=x", "--draws=5000"], "in the range [1, 1000]"),
    (["train_autoencoders.py", "--path_models=x", "--epochs=100000"], "in the range [1, 10000]"),
    (["generate_memory_images.py", "--path_model=x", "--num_images=100000000"], "in the range [1, 10000000]"),
])
def test_sizes_above_any_experiment_are_refused_at_once(command, message):
    result = run_script(*command, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_a_yaml_syntax_error_names_the_file_the_line_the_column_and_the_line(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("config: config/digits.yaml\nnetworks: [shufflenet\ndatasets: [DIGITS]\n")
    result = run_script("grid.py", f"--grid={grid}", "--status", check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"{grid}, line 3, column 9: not valid YAML (expected ',' or ']', but got ':'): 'datasets: [DIGITS]'" \
        in result.stderr
    config = tmp_path / "c.yaml"
    config.write_text(TINY.read_text() + "runs: 3\n  save: True\n")
    result = run_script("train.py", f"--config={config}", "--modality=std", check=False)
    assert result.returncode == 1 and ", column 7: not valid YAML (mapping values are not allowed here): 'save: True'" \
        in result.stderr and "\\n" not in result.stderr
