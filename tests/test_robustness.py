"""Nothing lost, nothing silently wrong: one test per class of fault of the newer surface (outputs over managed
files, non-finite or ineffective settings, grids, tables, checkpoints, YAML), and a fuzz suite that keeps it so."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from base.errors import UserError
from conftest import REPO
from core.checkpoints import Checkpoint, CheckpointError, list_checkpoints
from core.config import ConfigError, check_modality, load_config, read_yaml
from core.grid import Grid
from core.collect import TableError, collect_accuracy
from helpers import TINY, run_script

TINY_RAW = yaml.safe_load(TINY.read_text())


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.xdist_group("trained")
def test_no_script_writes_over_a_runs_files(trained):
    root, _ = trained
    folder = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    before = digest(folder)
    for script, flag, target in (("eval_dir.py", "--path", "1.pt"), ("eval_dir.py", "--path", "1.json"),
                                 ("explanation_accuracy.py", "--path_models", "results.json"),
                                 ("explanation_examples.py", "--path_models", "1.pt"),
                                 ("counterfactuals.py", "--path_models", "results.json")):
        extra = ["--algo=memory"] if script == "counterfactuals.py" else []
        result = run_script(script, f"{flag}={folder}", f"--output_json={folder / target}", *extra, check=False)
        assert result.returncode == 1, (script, target)
        assert result.stderr.strip().startswith("error:") and "would overwrite" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert digest(folder) == before, "no file of the finished run changed"


@pytest.mark.parametrize("setting,expected", [
    ("optimizer.learning_rate=.nan", "optimizer.learning_rate: must be a finite number, got nan"),
    ("optimizer.learning_rate=1.0e+400", "optimizer.learning_rate: must be a finite number, got inf"),
    ("optimizer.weight_decay=.inf", "optimizer.weight_decay: must be a finite number"),
    ("heads.metric_loss_weight=.nan", "heads.metric_loss_weight: must be a finite number"),
    ("label_smoothing=-.inf", "label_smoothing: must be a finite number"),
    ("runs=100000000000", "runs: at most 10000"),
    ("self_attention_ks=2", "self_attention_ks: must be odd"),
    ("self_attention_sym=true", "self_attention_sym: no effect without self_attention"),
    ("optimizer={learning_rate: 0.1, weight_decay: 0, name: adam, momentum: 0.9}",
     "optimizer.momentum: has no effect with name: adam"),
    ("DIGITS.num_epochs=1e3", "DIGITS.num_epochs: expected int, got '1e3'"),
])
def test_every_number_is_checked_before_any_data_are_read(setting, expected):
    with pytest.raises(ConfigError, match=None) as error:
        load_config(TINY, {}, [setting])
    assert expected in str(error.value), str(error.value)


def test_every_set_takes_effect_or_is_refused(tmp_path):
    assert load_config(TINY, {}, ["datasets.DIGITS.num_epochs=2"]).dataset.num_epochs == 2
    assert load_config(TINY, {}, ["DIGITS.num_epochs=3"]).dataset.num_epochs == 3
    nested = tmp_path / "nested.yaml"
    raw = {k: v for k, v in TINY_RAW.items() if k != "DIGITS"}
    nested.write_text(yaml.safe_dump({**raw, "datasets": {"DIGITS": TINY_RAW["DIGITS"]}}))
    assert load_config(nested, {}, ["DIGITS.num_epochs=4"]).dataset.num_epochs == 4, "a saved config's form"
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(json.loads(json.dumps({**TINY_RAW, "datasets": {"DIGITS": TINY_RAW["DIGITS"]}}))))
    with pytest.raises(ConfigError, match="DIGITS: given both at the top level and under datasets:"):
        load_config(both)
    for setting in ("nosuchkey=1", "heads.nosuch=1", "optimizer=3"):
        with pytest.raises(ConfigError):
            load_config(TINY, {}, [setting])


@pytest.mark.parametrize("modality,setting,owner", [
    ("deepncm", "heads.prototypes_file={file}", "prototypes"),
    ("std", "distance=l2", "memory and encoder_memory"),
    ("deepncm", "heads.mlp_hidden=64", "memory and encoder_memory"),
    ("encoder_memory", "heads.matching_steps=3", "matching"),
    ("prototypes", "heads.prototype_dim=16", "hyperspherical"),
])
def test_a_setting_the_chosen_head_never_reads_is_refused(tmp_path, modality, setting, owner):
    torch.save(torch.zeros(10, 1024), tmp_path / "p.pt")
    config = load_config(TINY, {}, [setting.replace("{file}", str(tmp_path / "p.pt"))])
    with pytest.raises(ConfigError, match=f"has no effect for the {modality} modality; it applies to {owner}"):
        check_modality(config, modality)


def test_files_given_for_settings_are_checked_and_named(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "dict.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a tensor at all")
    torch.save(torch.full((10, 4), float("nan")), tmp_path / "nan.pt")
    for name, expected in (("dict.pt", "is not a tensor of prototypes"), ("garbage.pt", "is not a tensor of prototypes"),
                           ("nan.pt", "finite numbers"), ("", "is a directory")):
        with pytest.raises(ConfigError, match=expected):
            load_config(TINY, {}, [f"heads.prototypes_file={tmp_path / name}"])
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(TINY, {}, [f"heads.hierarchy={tmp_path}"])


def test_yaml_aliases_are_refused_and_long_values_cut(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                    'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n')
    started = time.time()
    with pytest.raises(ConfigError, match="aliases .* are not allowed"):
        read_yaml(bomb)
    assert time.time() - started < 2
    with pytest.raises(ConfigError) as error:
        load_config(TINY, {}, ["model=" + "x" * 5000])
    assert len(str(error.value)) < 1500 and "characters)" in str(error.value)


def grid_file(tmp_path, **changes):
    raw = {"config": str(TINY), "output_dir": str(tmp_path / "models"), "runs": 1, "networks": ["shufflenet"],
           "datasets": ["DIGITS"], "train_examples": [128], "modalities": ["std"], **changes}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes,expected", [
    ({"runs": 2.7}, "runs: expected a whole number from 1 to 10000, got 2.7"),
    ({"runs": "abc"}, "runs: expected a whole number"),
    ({"runs": "1e11"}, "runs: expected a whole number"),
    ({"runs": 0}, "runs: expected a whole number"),
    ({"train_examples": [64.9]}, "train_examples: [64.9] are not positive whole numbers"),
    ({"train_examples": ["sixty"]}, "train_examples: ['sixty'] are not positive whole numbers"),
    ({"cells": [3]}, "cells: expected a list of"),
    ({"cells": [{"where": {"network": "shufflenet"}, "settings": ["eval_every=1"]}]}, "cells: expected a list of"),
    ({"cells": [{"where": {"modality": "deepncm"}, "settings": ["eval_every=1"]}]}, "matches no cell of the grid"),
    ({"settings": "precision=fp32"}, "settings: expected a list of key=value strings"),
    ({"modalities": ["std", "std"]}, "modalities: ['std'] appear more than once"),
    ({"networks": ["nonet"]}, "networks: ['nonet'] are not among"),
    ({"variants": {"replaced-x": {"settings": ["precision=fp32"]}}}, "not starting with '.' or 'replaced-'"),
    ({"settings": ["optimizer.learning_rate=.nan"]}, "cell DIGITS shufflenet 128 std: "),
])
def test_a_bad_grid_is_refused_naming_the_grid_and_its_key(tmp_path, changes, expected):
    path = grid_file(tmp_path, **changes)
    with pytest.raises(ConfigError) as error:
        Grid.load(path)
    assert str(error.value).startswith(f"grid {path}") and expected in str(error.value), str(error.value)


def test_a_grid_finds_its_config_from_any_folder_and_shows_changed_runs(tmp_path, monkeypatch):
    path = grid_file(tmp_path, config="tests/tiny_digits.yaml", settings=["optimizer.learning_rate=0.05"])
    monkeypatch.chdir(tmp_path)
    grid = Grid.load(path)
    cell = grid.cells[0]
    assert cell.config == str(TINY)
    folder = cell.folder.path
    folder.mkdir(parents=True)
    record = {"run": 1, "accuracy": 50.0, "modality": "std", "config": cell.run_config.to_dict()}
    (folder / "1.json").write_text(json.dumps(record))
    assert cell.run_state(1) == "done"
    changed = Grid.load(grid_file(tmp_path, config="tests/tiny_digits.yaml", settings=["optimizer.learning_rate=0.01"]))
    assert changed.cells[0].run_state(1) == "changed", "a finished run with other settings is not done"


def test_the_printed_commands_survive_a_space_in_the_output_folder(tmp_path):
    path = grid_file(tmp_path, output_dir=str(tmp_path / "with space"))
    line = next(Grid.load(path).runs()).shell()
    shown = subprocess.run(["xargs", "-d", "\n", "-I{}", "sh", "-c", "printf '%s\\n' {}"], input=line + "\n",
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert f"--output_dir={tmp_path / 'with space'}" in shown, shown


def write_results(folder, content):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(content if isinstance(content, str) else json.dumps(content))


GOOD = {"dataset_name": "DIGITS", "model": "shufflenet", "modality": "std", "train_examples": 128, "config": {},
        "runs": [{"run": 1, "accuracy": 50.0}]}


@pytest.mark.parametrize("content,expected", [
    ({**GOOD, "runs": [{"run": 1, "accuracy": float("nan")}]}, "is not valid JSON (NaN is not a JSON number)"),
    ({**GOOD, "runs": [{"run": 1, "accuracy": "high"}]}, "run 1: accuracy 'high' is not a number in [0, 100]"),
    ([1, 2], "is not a results file (a JSON mapping), it holds a list"),
    ({k: v for k, v in GOOD.items() if k != "dataset_name"}, "dataset_name is missing"),
    ("{broken", "is not valid JSON"),
])
def test_tables_refuse_a_broken_results_file_naming_it(tmp_path, content, expected):
    folder = tmp_path / "root" / "DIGITS" / "std" / "shufflenet" / "128"
    write_results(folder, json.dumps(content).replace("NaN", "NaN") if not isinstance(content, str) else content)
    with pytest.raises(TableError) as error:
        collect_accuracy(tmp_path / "root")
    assert str(folder / "results.json") in str(error.value) and expected in str(error.value), str(error.value)


def test_tables_under_a_root_whose_path_says_replaced(tmp_path):
    root = tmp_path / "replaced-20260101" / "models"
    write_results(root / "DIGITS" / "std" / "shufflenet" / "128", GOOD)
    write_results(root / "DIGITS" / "std" / "shufflenet" / "128" / "replaced-1" / "x" / "y" / "z" / "w", GOOD)
    assert len(collect_accuracy(root)) == 1, "replaced- matters below the root only"


def test_results_that_list_a_lost_checkpoint_are_refused(tmp_path):
    write_results(tmp_path, {**GOOD, "runs": [{"run": 1, "accuracy": 50.0}, {"run": 2, "accuracy": 50.0}]})
    torch.save({"x": torch.zeros(1)}, tmp_path / "1.pt")
    with pytest.raises(CheckpointError, match=r"lists runs \[2\] whose checkpoints are missing"):
        list_checkpoints(tmp_path)


def test_a_checkpoint_of_a_network_this_version_lacks_is_named(tmp_path):
    torch.save({"model_state_dict": {}, "model_name": "nonet", "modality": "std", "dataset_name": "DIGITS",
                "train_examples": 128}, tmp_path / "1.pt")
    with pytest.raises(CheckpointError, match="holds a 'nonet' model, which this version cannot build"):
        Checkpoint.load(tmp_path / "1.pt")
    result = run_script("eval.py", f"--path_model={tmp_path / '1.pt'}", check=False)
    assert result.returncode == 1 and "holds a 'nonet' model" in result.stderr


def test_scripts_refuse_stray_arguments_and_bench_checks_its_own(tmp_path):
    result = run_script("train.py", "--modality=std", f"--config={TINY}", f"--output_dir={tmp_path}", "oops", check=False)
    assert result.returncode == 1 and "unexpected arguments ['oops']" in result.stderr and not list(tmp_path.iterdir())
    result = run_script("-m", "bench.parameters", "--networks=foo", check=False)
    assert result.returncode == 2 and "not registered encoders" in result.stderr
    result = run_script("-m", "bench.parameters", "--bogus", check=False)
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    result = run_script("-m", "bench.bench_training", "--batch=0", "--sections=autotune", check=False)
    assert result.returncode == 2 and "--batch and --memory must be > 0, got 0 and 100" in result.stderr


def test_a_nan_from_a_setting_is_not_blamed_on_the_precision():
    from core.runtime import Execution
    import datasets
    from core import training
    from architectures import build_model

    config = load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0, mem_examples=20)
    model = build_model("shufflenet", "encoder_memory", 10)
    with torch.no_grad():
        model.head.classifier.fc1.weight.fill_(float("nan"))
    with pytest.raises(training.TrainingDiverged) as error:
        training.train_run(model, data, config, 0, torch.device("cpu"), Execution(None, torch.contiguous_format))
    assert "precision: fp32" not in str(error.value) and "the run is fp32 already" in str(error.value)


@pytest.mark.slow
def test_sigterm_to_grid_workers_stops_their_runs_and_two_grids_share_one(tmp_path):
    path = grid_file(tmp_path, settings=["DIGITS.num_epochs=30"])
    grid = Grid.load(path)
    folder = grid.cells[0].folder
    process = subprocess.Popen([sys.executable, "grid.py", f"--grid={path}", "--workers=1"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while folder.lock(1).state() != "held":
        assert process.poll() is None and time.time() < deadline, process.stdout.read() if process.poll() else ""
        time.sleep(0.05)
    child = json.loads(folder.lock(1).path.read_text())["pid"]
    # a second grid.py meanwhile: the run is another process's, not a failure
    second = run_script("grid.py", f"--grid={path}", "--workers=1", timeout=120, check=False)
    assert second.returncode == 0 and "1 running elsewhere" in second.stdout, second.stdout + second.stderr
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    deadline = time.time() + 30
    while _alive(child):
        assert time.time() < deadline, "grid.py's worker outlived a SIGTERM to grid.py"
        time.sleep(0.05)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return "zombie" not in open(f"/proc/{pid}/status").read().lower()
    except OSError:
        return False


# --- fuzz: every mutation ends in a valid object or in the one kind of error a user can fix ---------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.lists(st.integers(-5, 5), max_size=3), st.just("1e-1"), st.just(".nan"))


def mutate(draw, raw):
    """raw with one key set to a random value, deleted, or added (top level or one section down)."""
    raw = json.loads(json.dumps(raw))
    sections = [raw] + [value for value in raw.values() if isinstance(value, dict)]
    target = draw(st.sampled_from(sections))
    key = draw(st.sampled_from(sorted(target) + ["extra_key"]))
    if draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = draw(SCALARS)
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_configs_end_in_a_config_or_a_config_error(data, tmp_path_factory):
    raw = mutate(data.draw, TINY_RAW)
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    setting = data.draw(st.sampled_from(["", "optimizer.learning_rate", "DIGITS.num_epochs", "heads.prototype_dim",
                                         "runs", "distance"]))
    value = data.draw(st.sampled_from(["0", "-1", ".nan", ".inf", "1e400", "[1]", "abc", "{a: 1}", "2"]))
    try:
        config = load_config(path, {}, [f"{setting}={value}"] if setting else [])
    except ConfigError as error:
        assert str(error) and len(str(error)) < 5000
        return
    for number in (config.optimizer.learning_rate, config.optimizer.weight_decay, config.label_smoothing):
        assert number == number and abs(number) != float("inf"), "a loaded config holds finite numbers only"
    assert config.runs >= 1 and config.dataset.num_epochs >= 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_grids_end_in_a_grid_or_a_config_error(data, tmp_path):
    raw = {"config": str(TINY), "output_dir": str(tmp_path / "m"), "runs": 1, "networks": ["shufflenet"],
           "datasets": ["DIGITS"], "train_examples": [128], "modalities": ["std"], "settings": ["eval_every=1"],
           "cells": [{"where": {"modality": "std"}, "settings": ["precision=fp32"]}], "variants": {"v": {"runs": 1}}}
    raw = mutate(data.draw, raw)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        grid = Grid.load(path)
    except ConfigError as error:
        assert str(error).startswith("grid ") or str(error).startswith("config file")
        return
    for run in grid.runs():
        assert isinstance(run.cell.train_examples, int) and run.cell.runs >= 1 and run.state() == "missing"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_results_end_in_rows_or_a_table_error(data, tmp_path):
    content = mutate(data.draw, {**GOOD, "runs": [{"run": 1, "accuracy": 50.0, "train_seconds": 3.0}]})
    folder = tmp_path / "r" / "DIGITS" / "std" / "shufflenet" / "128"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(content))
    try:
        rows = collect_accuracy(tmp_path / "r")
    except UserError as error:
        assert "results.json" in str(error)
        return
    assert all(0 <= v <= 100 for row in rows for v in row.values)


@pytest.mark.parametrize("mutation", ["optimizer.learning_rate=.nan", "runs=2.5", "heads.prototype_dim=1",
                                      "DIGITS.mem_examples=1e9", "precision=fp64"])
def test_fuzz_end_to_end_a_script_ends_in_one_error_line_and_writes_nothing(tmp_path, mutation):
    result = run_script("train.py", "--modality=hyperspherical", f"--config={TINY}", f"--output_dir={tmp_path}",
                        f"--set={mutation}", check=False)
    assert result.returncode == 1 and result.stderr.strip().startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_a_cell_whose_runs_differ_in_a_setting_is_an_error(tmp_path):
    folder = tmp_path / "root" / "DIGITS" / "std" / "shufflenet" / "128"
    config = load_config(TINY).to_dict()
    other = load_config(TINY, {"epochs": 3}).to_dict()
    write_results(folder, {**GOOD, "config": config, "runs": [{"run": 1, "accuracy": 50.0}, {"run": 2, "accuracy": 60.0}]})
    (folder / "1.json").write_text(json.dumps({"run": 1, "accuracy": 50.0, "config": config}))
    (folder / "2.json").write_text(json.dumps({"run": 2, "accuracy": 60.0, "config": other}))
    with pytest.raises(TableError, match=r"run 2 was made with other settings than the experiment's \(DIGITS.num_epochs "
                                         r"3, the experiment's 1"):
        collect_accuracy(tmp_path / "root")


def test_a_checkpoint_whose_saved_config_is_invalid_is_named(tmp_path):
    config = load_config(TINY).to_dict()
    config["optimizer"]["learning_rate"] = "fast"
    torch.save({"model_state_dict": {}, "model_name": "shufflenet", "modality": "std", "dataset_name": "DIGITS",
                "train_examples": 128, "config": config}, tmp_path / "1.pt")
    result = run_script("eval.py", f"--path_model={tmp_path / '1.pt'}", check=False)
    assert result.returncode == 1 and f"{tmp_path / '1.pt'}: the config it recorded is not valid" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")


@settings(max_examples=80, deadline=None)
@given(mode=st.sampled_from(MODES), width=st.integers(1, 70), height=st.integers(1, 70),
       size=st.sampled_from([None, 8, 33]), suffix=st.sampled_from([".png", ".tif", ".bmp", ".webp", ".gif"]),
       seed=st.integers(0, 2 ** 16))
def test_the_folder_reader_decodes_every_mode_and_size_to_rgb_of_the_asked_size(tmp_path_factory, mode, width, height,
                                                                                size, suffix, seed):
    """Whatever Pillow can write, the reader gives uint8 RGB of image_size (or its own size); grey stays grey (equal
    channels, no clipping to white); a format that cannot hold the mode is refused by Pillow at writing, not read."""
    from PIL import Image

    from readers import folders

    generator = np.random.default_rng(seed)
    if mode in ("I;16", "I"):
        array = generator.integers(0, 65536, (height, width)).astype(np.uint16 if mode == "I;16" else np.int32)
        image = Image.fromarray(array, mode=mode) if mode == "I" else Image.fromarray(array)
    elif mode == "F":
        image = Image.fromarray(generator.random((height, width)).astype(np.float32))
    else:
        image = Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path_factory.mktemp("modes") / f"image{suffix}"
    try:
        image.save(path)
    except (OSError, ValueError, KeyError):
        return  # this format cannot hold this mode
    decoded = folders.decode(path, size)
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    with Image.open(path) as written:
        grey = written.mode in ("1", "L", "LA", "I;16", "I;16B", "I", "F")
        deep = written.mode in ("I;16", "I;16B", "I", "F")  # the file kept its depth (a .webp, .gif cannot)
        assert decoded.shape[:2] == ((size, size) if size else (written.size[1], written.size[0]))
    if grey:
        assert (decoded[:, :, 0] == decoded[:, :, 1]).all() and (decoded[:, :, 1] == decoded[:, :, 2]).all()
    if deep and size is None and width * height >= 16:
        assert decoded.min() < 250, "high-depth grey is scaled, not clipped to white"
