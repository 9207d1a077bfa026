"""Nothing lost and nothing silent on the newer surface: a model file replaces only what the user meant, a dataset
folder that changed under a model is caught, every image decodes right or is refused, and what was mended to say one
clear line (issue 43's cases; report.py's own files: tests/test_report.py, SimpleSelfAttention: tests/test_autotune.py).
"""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from conftest import REPO
from core import runner
from core.config import load_config
from helpers import TINY, run_script
from readers import folders
from test_own_data import folder_config, write_folders


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A Memory Wrap model trained 1 epoch on a tiny folder dataset (kept), its std twin, and the dataset."""
    root = tmp_path_factory.mktemp("folder")
    data = write_folders(root / "data", per_class=8)
    for modality in ("encoder_memory", "std"):
        runner.run_experiment(load_config(folder_config(root, data)), modality, root / modality)
    return root, data


def test_an_export_replaces_only_an_export_of_the_same_model_unless_told(folder_run, tmp_path):
    root, _ = folder_run
    memory, std, output = root / "encoder_memory" / "1.pt", root / "std" / "1.pt", tmp_path / "model.pt"
    run_script("export.py", f"--path_model={memory}", f"--output={output}")
    before = output.read_bytes()
    refused = run_script("export.py", f"--path_model={std}", f"--output={output}", check=False)
    assert refused.returncode == 1 and "is an earlier export of" in refused.stderr and "--overwrite" in refused.stderr
    assert output.read_bytes() == before, "the other model's file is untouched"
    said = run_script("export.py", f"--path_model={memory}", f"--output={output}").stdout
    assert said.startswith(f"replaced an earlier export of {memory}")
    said = run_script("export.py", f"--path_model={std}", f"--output={output}", "--overwrite").stdout
    assert "replaced an earlier export of" in said and torch.load(output, weights_only=True)["modality"] == "std"


def test_a_dataset_folder_whose_memory_pool_changed_is_refused_naming_the_first_difference(folder_run, tmp_path):
    root, data = folder_run
    checkpoint, image = root / "encoder_memory" / "1.pt", tmp_path / "x.png"
    Image.new("RGB", (20, 14), (10, 200, 30)).save(image)
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    for i in range(5):  # five images more in one class: the seeded subset and the pool's positions shift
        Image.new("RGB", (20, 14), (0, 9 * i, 250)).save(copy / "train" / "owl" / f"added_{i}.png")
    result = run_script("predict.py", f"--path_model={checkpoint}", str(image), f"--dataset_dir={copy}", check=False)
    assert result.returncode == 1 and "no longer holds the memory pool the model was trained with: position" in \
        result.stderr and "export.py" in result.stderr, result.stderr
    other = tmp_path / "other"
    write_folders(other, per_class=8)
    for path in (other / "train").rglob("*.*"):  # the same names and classes, other pixels
        with Image.open(path) as picture:
            picture.convert("RGB").rotate(90).save(path)
    result = run_script("predict.py", f"--path_model={checkpoint}", str(image), f"--dataset_dir={other}", check=False)
    assert result.returncode == 1 and "has other pixels" in result.stderr, result.stderr
    run_script("predict.py", f"--path_model={checkpoint}", str(image), f"--dataset_dir={data}")  # unchanged: fine


def test_an_image_edited_in_place_with_its_size_and_time_kept_is_read_again(tmp_path):
    root = write_folders(tmp_path / "data", per_class=2, test_per_class=1, suffixes=(".bmp",))
    path = root / "train" / "cat" / "cat_00.bmp"
    train, _ = datasets.load_dataset("folder", root, image_size=8)
    stat = path.stat()
    Image.new("RGB", (20, 14), (255, 255, 255)).save(path)  # a BMP of the same size in bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    again, _ = datasets.load_dataset("folder", root, image_size=8)
    row = list(train.sources).index("train/cat/cat_00.bmp")
    assert not torch.equal(again.images[row], train.images[row]) and int(again.images[row].min()) == 255


def test_high_depth_images_decode_to_their_grey_levels_not_white(tmp_path):
    grey = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 .. 63000 of 65535
    Image.fromarray(grey).save(tmp_path / "sixteen.png")
    Image.fromarray(grey.astype(np.float32) / 65535).save(tmp_path / "float.tiff")
    for name in ("sixteen.png", "float.tiff"):
        decoded = folders.decode(tmp_path / name, None)
        expected = np.round(grey / 65535 * 255)
        assert np.abs(decoded[:, :, 0].astype(float) - expected).max() <= 1, name
        assert decoded.min() == 0 and decoded.max() < 255


def test_an_image_over_the_decompression_bomb_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    Image.new("L", (200, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40000 pixels: over twice the limit, as a bomb is
    with pytest.raises(datasets.DatasetError, match=r"bomb.png is too large to decode safely .*decompression bombs") \
            as error:
        folders.decode(tmp_path / "bomb.png", 32)
    assert "\n" not in str(error.value)


def test_what_a_class_folder_holds_and_is_not_read_is_counted_and_named(tmp_path):
    root = write_folders(tmp_path / "data", per_class=4, test_per_class=1)
    (root / "train" / "cat" / "sub").mkdir()
    Image.new("RGB", (9, 9)).save(root / "train" / "cat" / "sub" / "hidden_away.png")
    (root / "train" / "dog" / "notes.xyz").write_text("not an image")
    Image.new("RGB", (9, 9), (1, 2, 3)).save(root / "train" / "owl" / "scan.tif")
    output = run_script("train.py", f"--config={folder_config(tmp_path, root)}", "--modality=std",
                        f"--output_dir={tmp_path / 'models'}").stdout
    assert "Note: 1 folder inside class folders of" in output and "is not read (a class is one folder of images): " \
        "cat/sub" in output, output
    assert "Note: 1 file in class folders of" in output and "dog/notes.xyz" in output
    train, _ = datasets.load_dataset("folder", root, image_size=8)
    assert "train/owl/scan.tif" in train.sources, ".tif files are images"


def test_a_folder_that_cannot_hold_the_cache_is_said_once_with_its_cost(tmp_path, monkeypatch):
    root = write_folders(tmp_path / "data", per_class=2, test_per_class=1)

    def read_only(path, write):
        raise PermissionError(30, "Read-only file system")
    monkeypatch.setattr(folders, "atomic_write_bytes", read_only)
    train, _ = datasets.load_dataset("folder", root, image_size=8)
    assert len(train.notes) == 1 and "cannot hold the cache of its decoded images (Read-only file system): its 6 " \
        "train images are decoded on every run" in train.notes[0]


def test_tables_refuses_a_reference_row_that_does_not_exist(trained):
    root, _ = trained
    for versus in ("bogus", "std tuned"):
        result = run_script("tables.py", f"--root={root}", f"--versus={versus}", check=False)
        assert result.returncode == 1 and "matches no row of the table" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_predict_warns_that_a_model_at_chance_explains_nothing(trained, tmp_path):
    root, _ = trained  # one epoch on 128 images: at chance
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (128, 0, 0)).save(image)
    result = run_script("predict.py", f"--path_model={root / 'DIGITS' / 'encoder_memory' / 'shufflenet' / '128' / '1.pt'}",
                        str(image))
    assert "Warning:" in result.stderr and "its explanations carry no information" in result.stderr


def test_mended_messages(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "mine.pt")
    result = run_script("predict.py", f"--path_model={tmp_path / 'mine.pt'}", str(REPO / "docs" / "examples" / "digits"),
                        "--model=shufflenet", "--modality=std", "--dataset=folder", "--train_examples=10", check=False)
    assert result.returncode == 1 and "records no number of classes" in result.stderr and "Traceback" not in \
        result.stderr
    import pickle
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    result = run_script("predict.py", f"--path_model={tmp_path / 'plain.pt'}", str(tmp_path / "mine.pt"), check=False)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'plain.pt'} is not a PyTorch checkpoint (its content is not a saved state dict)"]
    result = run_script("train.py", f"--config={TINY}", "--modality=std", "--set=image_size=5", check=False)
    assert result.returncode == 1 and f"error: --set=image_size=5 (over {TINY}): invalid configuration" in result.stderr
    empty = write_folders(tmp_path / "empty_test", per_class=2, test_per_class=1)
    shutil.rmtree(empty / "test")
    (empty / "test").mkdir()
    with pytest.raises(datasets.DatasetError, match=r"test holds no images: put them in .*test/<class>/ \(classes cat"):
        datasets.load_dataset("folder", empty, image_size=8)
    with pytest.raises(datasets.DatasetError, match="is a file, not a folder"):
        datasets.folder_classes(tmp_path / "mine.pt")


def test_numeric_class_names_read_in_the_header_and_figures_sort_as_the_images(tmp_path):
    root = tmp_path / "data"
    for split, count in (("train", 3), ("test", 1)):
        for name in ("0", "1", "10"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (int(name) * 20, i * 40, 0)).save(root / split / name / f"{i}.png")
    output = run_script("train.py", f"--config={folder_config(tmp_path, root)}", "--modality=encoder_memory",
                        "--set=folder.mem_examples=3", "--train_examples=9", f"--output_dir={tmp_path / 'models'}")
    assert "PerClass:0=3, 1=3, 10=3" in output.stdout
    images = tmp_path / "new"
    images.mkdir()
    for i in range(11):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(images / f"im{i}.png")
    checkpoint = next((tmp_path / "models").rglob("1.pt"))
    run_script("predict.py", f"--path_model={checkpoint}", str(images), f"--output={tmp_path / 'figures'}",
               "--n_steps=2", "--max_samples=1")
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names[:3] == ["00_im0.png", "01_im1.png", "02_im10.png"] and len(names) == 11


def test_ctrl_c_in_predict_leaves_no_empty_output_folder(trained, tmp_path):
    root, _ = trained
    checkpoint = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128" / "1.pt"
    output = tmp_path / "figures"
    code = ("import sys; sys.argv = ['predict.py', '--path_model=%s', '%s', '--output=%s']\n"
            "from explanations import model\n"
            "def interrupted(*args, **kwargs): raise KeyboardInterrupt\n"
            "model.Model.run = interrupted\n"
            "import predict; from absl import app; app.run(predict.main)\n"
            % (checkpoint, REPO / "docs" / "examples" / "digits", output))
    (tmp_path / "interrupted.py").write_text(code)
    result = run_script(tmp_path / "interrupted.py", env={"PYTHONPATH": str(REPO)}, check=False)
    assert result.returncode == 130 and "interrupted: predict.py" in result.stderr, result.stderr
    assert not output.exists(), "nothing was written: no empty folder"
