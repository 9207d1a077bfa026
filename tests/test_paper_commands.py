"""The commands of the paper's README, typed as written (paths aside), on DIGITS."""
import re

import pytest

from helpers import accuracy_in, run_script

pytestmark = pytest.mark.xdist_group("trained")  # conftest's trained models: made once, in one worker

ENCODER_MEMORY = ("DIGITS", "encoder_memory", "shufflenet", "128")


@pytest.fixture(scope="module")
def model(trained):
    """python3 train.py --modality=<MODALITY> --continue_train=False --log_interval=100 (conftest's ``trained``)"""
    root, outputs = trained
    return root.joinpath(*ENCODER_MEMORY), accuracy_in(outputs["encoder_memory"], "Accuracy ")


def test_eval_with_dataset_and_modality(model):
    folder, accuracy = model
    out = run_script("eval.py", f"--path_model={folder / '1.pt'}", "--dataset=DIGITS", "--modality=encoder_memory").stdout
    assert accuracy_in(out) == pytest.approx(accuracy, abs=0.005)


def test_eval_path_and_dir_dataset(model, tmp_path):
    """python eval.py --path=<PATH> --dir_dataset='datasets/' (a model, or a folder of models)"""
    folder, accuracy = model
    out = run_script("eval.py", f"--path={folder}", f"--dir_dataset={tmp_path}").stdout
    assert re.search(rf"Run:1 \| Accuracy {accuracy:.2f} \| Mean Accuracy:{accuracy:.2f} \| Std Dev:0.00", out), out
    out = run_script("eval.py", f"--path={folder / '1.pt'}", f"--dir_dataset={tmp_path}").stdout
    assert accuracy_in(out) == pytest.approx(accuracy, abs=0.005)


def test_eval_dir(model):
    folder, accuracy = model
    out = run_script("eval_dir.py", f"--path={folder}").stdout
    assert f"Mean Accuracy:{accuracy:.2f}" in out and "Models:1" in out


def test_explanation_accuracy_with_dataset_modality_and_dir_dataset(model, tmp_path):
    folder, _ = model
    out = run_script("explanation_accuracy.py", f"--path_models={folder}", "--dataset=DIGITS", "--modality=encoder_memory",
                     "--dir_dataset=datasets/", f"--output_json={tmp_path / 'x.json'}").stdout
    assert "Explanation accuracy (mean):" in out
    out = run_script("explanation_accuracy.py", f"--path_models={folder}", "--memory_pool=full",
                     f"--output_json={tmp_path / 'y.json'}").stdout
    assert "Explanation accuracy (mean):" in out


def test_generate_memory_images(model, tmp_path):
    folder, _ = model
    run_script("generate_memory_images.py", f"--path_model={folder / '1.pt'}", "--dataset=DIGITS",
               "--modality=encoder_memory", "--num_images=2", f"--output_dir={tmp_path}")
    assert len(list(tmp_path.rglob("*.png"))) == 2


def test_generate_heatmaps(model, tmp_path):
    folder, _ = model
    out = run_script("generate_heatmaps.py", f"--path_model={folder / '1.pt'}", "--dataset=DIGITS",
                     "--modality=encoder_memory", "--batch_size_test=3", "--dir_dataset=../datasets/",
                     f"--output_dir={tmp_path}").stdout
    assert len(re.findall(r"image \d+: IG convergence delta", out)) == 3 and len(list(tmp_path.rglob("*.png"))) == 1


def test_flags_that_contradict_the_checkpoint_are_errors(model):
    folder, _ = model
    for script, flag in (("eval.py", f"--path_model={folder / '1.pt'}"),
                         ("explanation_accuracy.py", f"--path_models={folder}"),
                         ("generate_memory_images.py", f"--path_model={folder / '1.pt'}")):
        result = run_script(script, flag, "--dataset=SVHN", check=False)
        assert result.returncode != 0 and "saved with dataset_name='DIGITS' but --dataset='SVHN'" in result.stderr
    result = run_script("eval.py", f"--path_model={folder / '1.pt'}", "--memory_source=full", check=False)
    assert result.returncode != 0 and "trained with memory_source='subset' but --memory_source='full'" in result.stderr
