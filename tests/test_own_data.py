"""Memory Wrap on your own images: a folder dataset (reading, caching, errors, fidelity to the CIFAR10 reader),
explaining new images (predict.py), a model file to hand over (export.py), and timm backbones."""
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from conftest import CIFAR_SUBSET, REPO
from core import runner
from core.config import ConfigError, load_config
from helpers import TINY, TINY_DRAWS, TINY_SIZE, run_script

CLASSES = ("cat", "dog", "owl")


def write_folders(root, per_class=6, test_per_class=2, size=(20, 14), suffixes=(".png", ".jpg", ".bmp", ".webp")):
    """A tiny folder dataset: every class an image of its own colour, in several formats, sizes and modes."""
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour = [0, 0, 0]
                colour[label] = 60 + 30 * i
                image = Image.new("RGB", size, tuple(colour))
                mode = ("RGB", "L", "RGBA", "P")[i % 4]
                image = image.convert(mode) if mode != "P" else image.quantize(8)
                suffix = suffixes[i % len(suffixes)]
                if suffix in (".jpg", ".bmp") and mode in ("RGBA", "P"):
                    image = image.convert("RGB")
                image.save(folder / f"{name}_{i:02d}{suffix}")
    return root


def folder_config(tmp_path, root, extra=""):
    path = tmp_path / "folder.yaml"
    text = TINY.read_text().replace("dataset_name: DIGITS", "dataset_name: folder").replace(
        "DIGITS: {num_classes: 10, num_epochs: 1, opt_milestones: [1], mem_examples: 20, val_examples: 200}",
        "folder: {num_epochs: 1, opt_milestones: [1], mem_examples: 4, val_examples: 0}")
    path.write_text(text.replace("dataset_dir: datasets", f"dataset_dir: {root}").replace("train_examples: 128",
                                                                                         "train_examples: 12") + extra)
    return path


def test_a_folder_dataset_is_read_in_any_format_size_and_mode_resized_and_cached(tmp_path, monkeypatch):
    root = write_folders(tmp_path / "data")
    (root / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    train, test = datasets.load_dataset("folder", root, image_size=16)
    assert train.classes == CLASSES and tuple(train.images.shape) == (18, 3, 16, 16) and len(test) == 6
    names = sorted(p.name for c in CLASSES for p in (root / "train" / c).iterdir() if p.suffix != ".txt")
    assert [CLASSES[label] for label in train.labels.tolist()] == [name.split("_")[0] for name in names]
    first = train.images[train.labels == 1][0]  # dog_00.png: green, RGB, resized
    assert first[1].float().mean() == pytest.approx(60, abs=1) and first[0].max() == 0
    assert (root / "train.16.npz").is_file() and (root / "test.16.npz").is_file()
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded again"))
    again, _ = datasets.load_dataset("folder", root, image_size=16)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    monkeypatch.undo()
    changed = root / "train" / "owl" / "owl_00.png"
    Image.new("RGB", (20, 14), (255, 255, 255)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10 ** 9))
    rebuilt, _ = datasets.load_dataset("folder", root, image_size=16)
    assert rebuilt.images[rebuilt.labels == 2][0].min() == 255, "a changed file must rebuild the cache"


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "train" / "dog" / "dog_03.webp").write_bytes(b"RIFF not an image"),
     r"train/dog/dog_03.webp is not a readable image .*replace or delete it"),
    (lambda root: (root / "train" / "empty").mkdir(), r"train/empty has no images .*add images or remove the folder"),
    (lambda root: (root / "test" / "zebra").mkdir() or Image.new("RGB", (4, 4)).save(root / "test" / "zebra" / "z.png"),
     r"test/zebra: class 'zebra' is not in .*train \(its classes: cat, dog, owl\)"),
    (lambda root: [os.rename(root / "train" / c, root / f"gone_{c}") for c in ("dog", "owl")],
     r"train has 1 class folder \(cat\): a classifier needs at least 2"),
    (lambda root: os.rename(root / "test", root / "elsewhere"), r"has no test/ folder; expected .*/train/<class>/"),
])
def test_bad_folders_end_in_one_line_naming_the_file_and_nothing_is_written(tmp_path, breakage, message):
    root = write_folders(tmp_path / "data")
    breakage(root)
    result = run_script("train.py", f"--config={folder_config(tmp_path, root)}", "--modality=encoder_memory",
                        f"--output_dir={tmp_path / 'models'}", check=False)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert __import__("re").search(message, result.stderr), result.stderr
    assert not (tmp_path / "models").exists() and not list(root.glob("*.npz"))


@pytest.mark.parametrize("flag, message", [
    ("--train_examples=19", r"train_examples=19 is more than the 18 training images"),
    ("--mem_examples=13", r"mem_examples=13 is larger than the subset memory pool \(12 images\)"),
])
def test_sizes_a_folder_cannot_give_are_refused_before_anything_is_written(tmp_path, flag, message):
    root = write_folders(tmp_path / "data")
    result = run_script("train.py", f"--config={folder_config(tmp_path, root)}", "--modality=encoder_memory",
                        f"--output_dir={tmp_path / 'models'}", flag, check=False)
    assert result.returncode == 1 and __import__("re").search(message, result.stderr), result.stderr
    assert not (tmp_path / "models").exists()


def test_a_folder_run_says_its_images_per_class_warns_on_unbalance_and_saves_its_statistics(tmp_path):
    root = write_folders(tmp_path / "data", per_class=6)
    for extra in range(6, 30):  # owl: 30 images against 6 of the others
        Image.new("RGB", (8, 8), (0, 0, 200)).save(root / "train" / "owl" / f"owl_{extra:02d}.png")
    result = run_script("train.py", f"--config={folder_config(tmp_path, root)}", "--modality=encoder_memory",
                        f"--output_dir={tmp_path / 'models'}", "--train_examples=all")
    header = next(line for line in result.stdout.splitlines() if line.startswith("Device:"))
    assert "Dataset:folder" in header and "SizeTrain:42" in header and "PerClass:cat=6, dog=6, owl=30" in header
    assert "Warning: the training subset is strongly unbalanced: owl 30 images, cat 6" in result.stdout
    folder = tmp_path / "models" / "folder" / "encoder_memory" / "shufflenet" / "100000"
    checkpoint = torch.load(folder / "1.pt", weights_only=True)
    train, _ = datasets.load_dataset("folder", root, image_size=TINY_SIZE)
    mean, std = datasets.statistics(train.images)
    assert checkpoint["normalization"] == {"mean": list(mean), "std": list(std)}
    assert checkpoint["classes"] == list(CLASSES) and checkpoint["num_classes"] == 3
    assert json.loads((folder / "1.json").read_text())["normalization"]["mean"] == list(mean)


def _write_cifar_as_folders(root, count=4000):
    """The shared CIFAR-10 subset as PNG folders, each image named by its index (the folder reader orders by name)."""
    from readers.cifar10 import CIFAR10_CLASSES, _read_cifar_batch

    batches = sorted((CIFAR_SUBSET / "cifar-10-batches-py").glob("data_batch_*")) + \
        [CIFAR_SUBSET / "cifar-10-batches-py" / "test_batch"]
    index = {"train": 0, "test": 0}
    for path in batches:
        split = "test" if path.name == "test_batch" else "train"
        images, labels = _read_cifar_batch(path)
        for image, label in zip(images, labels):
            folder = root / split / CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index[split]:05d}.png")
            index[split] += 1


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR_SUBSET / "cifar-10-batches-py").is_dir(), reason="the shared CIFAR-10 subset is absent")
def test_the_cifar_subset_as_png_folders_gives_the_cifar10_readers_tensors_and_run(tmp_path):
    root = tmp_path / "cifar_folders"
    _write_cifar_as_folders(root)
    cifar_train, cifar_test = datasets.load_dataset("CIFAR10", CIFAR_SUBSET, download=False)
    train, test = datasets.load_dataset("folder", root)
    for ours, theirs in ((train, cifar_train), (test, cifar_test)):
        assert ours.classes == theirs.classes
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.labels, theirs.labels)
    spec = datasets.get_spec("CIFAR10")
    statistics = f"folder: {{num_epochs: 1, opt_milestones: [1], mem_examples: 10, val_examples: 200, " \
                 f"mean: {list(spec.mean)}, std: {list(spec.std)}}}\nmodel: shufflenet\n"
    records = {}
    for name, text in (("CIFAR10", "CIFAR10: {num_classes: 10, num_epochs: 1, opt_milestones: [1], mem_examples: 10, "
                                   "val_examples: 200}\n"), ("folder", statistics)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"save: True\ntrain_examples: 64\nruns: 1\nbatch_size_train: 32\nbatch_size_test: 330\n"
                        f"optimizer: {{learning_rate: 0.05, weight_decay: 5e-4, momentum: 0.9, nesterov: True}}\n"
                        f"dataset_dir: {root if name == 'folder' else CIFAR_SUBSET}\ndataset_name: {name}\n"
                        f"download: False\nprecision: fp32\nmemory_format: channels_last\neval_draws: 1\n"
                        f"heads: {{mlp_hidden: 64}}\n"
                        + ("model: shufflenet\n" if name == "CIFAR10" else "") + text)
        summary = runner.run_experiment(load_config(path), "encoder_memory", tmp_path / "models" / name)
        records[name] = summary["runs"][0]
    assert records["folder"]["accuracy"] == records["CIFAR10"]["accuracy"]
    assert records["folder"]["loss"] == records["CIFAR10"]["loss"]


@pytest.mark.xdist_group("trained")
def test_predict_explains_new_images_and_an_exported_model_needs_no_dataset(trained, tmp_path):
    root, _ = trained
    checkpoint = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128" / "1.pt"
    train, test = datasets.load_dataset("DIGITS", None)
    images = tmp_path / "new"
    images.mkdir()
    for i in range(3):
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(images / f"digit_{i}.png")
    result = run_script("predict.py", f"--path_model={checkpoint}", str(images), "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path_name(line["image"]) for line in lines] == ["digit_0.png", "digit_1.png", "digit_2.png"]
    for line in lines:
        assert line["predicted"] in [str(d) for d in range(10)] and line["draws"] == TINY_DRAWS
        assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert line["probability"] == max(line["probabilities"].values())
        assert line["memory"] and all(sample["weight"] > 0 for sample in line["memory"])
        assert [s["weight"] for s in line["memory"]] == sorted((s["weight"] for s in line["memory"]), reverse=True)
        kinds = {s["kind"] for s in line["memory"]}
        assert (line["example"] is not None) == ("example" in kinds)
        assert all((s["kind"] == "example") == (s["predicted"] == line["predicted"]) for s in line["memory"])
    # the memory weights average the evaluation's draws: they sum to 1 over the pool
    assert sum(s["weight"] for s in lines[0]["memory"]) == pytest.approx(1, abs=1e-3)

    exported = tmp_path / "model.pt"
    said = run_script("export.py", f"--path_model={checkpoint}", f"--output={exported}").stdout
    assert "memory pool of 128 images" in said and "MiB" in said
    content = torch.load(exported, weights_only=True)
    from core.checkpoints import Checkpoint
    from readers import from_png

    assert len(content["memory_png"]) == 128 and "memory_images" not in content, "the pool travels as PNG bytes"
    pool = Checkpoint.load(checkpoint).run_data(None).memory_pool
    assert all(torch.equal(from_png(data.numpy().tobytes()), train.images[index])
               for data, index in zip(content["memory_png"], pool.tolist())), "lossless"
    assert content["memory_pool"]["sources"] == [train.sources[index] for index in pool.tolist()]
    assert content["memory_pool"]["sources"][0].startswith("DIGITS load_digits #")
    assert content["classes"] == [str(d) for d in range(10)]
    assert content["config"]["image_size"] == TINY_SIZE, "the pool is stored at 32 px, the model reads TINY's size"
    again = run_script("predict.py", f"--path_model={exported}", str(images), "--json",
                       f"--output={tmp_path / 'figures'}").stdout
    assert [json.loads(line) for line in again.splitlines()] == lines, "the exported model explains alike"
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["0_digit_0.png", "1_digit_1.png",
                                                                        "2_digit_2.png"]
    with Image.open(tmp_path / "figures" / "0_digit_0.png") as figure:
        assert figure.size[0] > 800
    refused = run_script("export.py", f"--path_model={checkpoint}", f"--output={checkpoint.parent / '2.pt'}",
                         check=False)
    assert refused.returncode == 1 and "named as a run's checkpoint" in refused.stderr
    refused = run_script("export.py", f"--path_model={checkpoint}", f"--output={checkpoint.parent / '1.json'}",
                         check=False)
    assert refused.returncode == 1 and "exists and is not an exported model" in refused.stderr
    for bad, message in ((tmp_path / "missing.png", "does not exist"), (tmp_path, "holds no images")):
        result = run_script("predict.py", f"--path_model={exported}", str(bad), check=False)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    result = run_script("predict.py", f"--path_model={exported}", str(tmp_path / "broken.png"), check=False)
    assert result.returncode == 1 and "broken.png is not a readable image" in result.stderr



def test_an_exported_pool_keeps_each_image_at_its_files_own_size_where_that_is_smaller(tmp_path):
    """export.py stores a pool image at its file's own size when that PNG is smaller and resizing it as the folder
    reader did gives the pixels the model saw; otherwise (a larger file, a file changed since, no folder) at the
    model's size. Either way the loaded pool has the very pixels of training."""
    from core.export import pool_png
    from readers import from_png
    from readers.folders import resized

    rng = np.random.default_rng(0)
    root = tmp_path / "DIR"
    kinds = (("RGB", (16, 16), ".png"), ("L", (12, 20), ".jpg"), ("P", (16, 16), ".png"), ("I;16", (16, 16), ".png"),
             ("RGB", (80, 80), ".png"))
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i, (mode, (width, height), suffix) in enumerate(kinds):
                if mode == "I;16":
                    image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
                else:
                    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                    image = image.quantize(16) if mode == "P" else image.convert(mode)
                image.save(root / split / name / f"{name}_{i}{suffix}")
    train, test = datasets.load_dataset("folder", root, image_size=24)
    data = datasets.ExperimentData.build(datasets.get_spec("folder"), train, test, len(train), 0, seed=1)
    for index in range(len(train)):
        stored = from_png(pool_png(data, index, root))
        large = train.sources[index].endswith("_4.png")
        assert stored.shape[-1] == (24 if large else Image.open(root / train.sources[index]).size[0]), \
            train.sources[index]
        assert torch.equal(resized(stored.permute(1, 2, 0).numpy(), 24), train.images[index]), train.sources[index]
        assert torch.equal(from_png(pool_png(data, index, None)), train.images[index]), "no folder: as the model saw it"
    changed = root / train.sources[0]
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(changed)
    assert torch.equal(from_png(pool_png(data, 0, root)), train.images[0]), "a file changed since: as the model saw it"

def Path_name(path):
    return os.path.basename(path)


def test_a_std_model_predicts_without_memory_samples(trained, tmp_path):
    root, _ = trained
    checkpoint = root / "DIGITS" / "std" / "shufflenet" / "128" / "1.pt"
    image = tmp_path / "seven.png"
    Image.new("L", (50, 40), 255).save(image)
    line = json.loads(run_script("predict.py", f"--path_model={checkpoint}", str(image), "--json").stdout)
    assert "memory" not in line and line["draws"] == 1
    assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4)


TIMM_MODEL = "test_efficientnet"  # timm's own test network: 99k parameters


def test_a_timm_backbone_loads_local_weights_trains_its_head_frozen_and_is_explained(tmp_path):
    from safetensors.torch import save_file

    from architectures.timm_backbone import TimmEncoder, import_timm, load_pretrained

    timm = import_timm()
    source = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=7)  # with a classifier, as published
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "weights.pth")
    for file in (weights, tmp_path / "weights.pth"):
        encoder = TimmEncoder(f"timm/{TIMM_MODEL}")
        assert load_pretrained(encoder, file)["sha256"] == __import__("hashlib").sha256(file.read_bytes()).hexdigest()
        expected = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
        assert encoder.model.state_dict().keys() == expected.keys()
        assert all(torch.equal(encoder.model.state_dict()[k], v) for k, v in expected.items())
    config = TINY.read_text().replace("model: shufflenet", f"model: timm/{TIMM_MODEL}")
    path = tmp_path / "timm.yaml"
    path.write_text(config + f"pretrained_path: {weights}\nfreeze_encoder: true\n")
    summary = runner.run_experiment(load_config(path), "encoder_memory", tmp_path / "models")
    record = summary["runs"][0]
    assert record["pretrained"]["sha256"] == __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    checkpoint = tmp_path / "models" / "1.pt"
    saved = torch.load(checkpoint, weights_only=True)
    trained_encoder = {k[len("encoder.model."):]: v for k, v in saved["model_state_dict"].items()
                       if k.startswith("encoder.model.")}
    assert all(torch.equal(trained_encoder[k], v) for k, v in expected.items()), "freeze_encoder: the encoder is fixed"
    assert saved["pretrained"]["sha256"] == record["pretrained"]["sha256"]
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (90, 10, 200)).save(image)
    line = json.loads(run_script("predict.py", f"--path_model={checkpoint}", str(image), "--json").stdout)
    assert line["memory"] and sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def test_an_unknown_timm_name_is_refused_in_one_line_with_close_names(tmp_path):
    result = run_script("train.py", f"--config={TINY}", "--modality=std", "--model=timm/resnet181",
                        f"--output_dir={tmp_path}", check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) <= 2
    assert "timm has no model 'resnet181'; close names: timm/resnet18" in result.stderr
    result = run_script("train.py", f"--config={TINY}", "--modality=std", f"--model=timm/{TIMM_MODEL}",
                        f"--output_dir={tmp_path}", f"--set=pretrained_path={tmp_path / 'nothing.pth'}", check=False)
    assert result.returncode == 1 and "nothing.pth is not a file" in result.stderr
    assert not any(tmp_path.iterdir())


def test_freeze_encoder_needs_weights():
    with pytest.raises(Exception, match="freeze_encoder: true keeps the encoder as initialised"):
        load_config(TINY, {}, ["freeze_encoder=true"])


def test_a_grid_takes_folder_datasets(tmp_path):
    from core.grid import Grid

    root = write_folders(tmp_path / "data")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"config: {folder_config(tmp_path, root)}\noutput_dir: {tmp_path / 'models'}\nruns: 2\n"
                    f"networks: [shufflenet]\ndatasets: [folder]\ntrain_examples: [12]\nmodalities: [std, "
                    f"encoder_memory]\n")
    cells = Grid.load(grid).cells
    assert [(cell.dataset, cell.modality) for cell in cells] == [("folder", "std"), ("folder", "encoder_memory")]
    assert "folder/encoder_memory/shufflenet/12" in str(cells[1].folder.path)


def test_image_size_applies_to_every_dataset_and_the_paper_networks_pool_any_size(tmp_path):
    """A folder dataset's images are decoded at image_size; the paper's 32x32 ones are resized batch by batch (the
    bilinear resize of the normalised image), training batches and memory images alike."""
    config = load_config(TINY, {}, ["image_size=40"])
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(config.dataset_spec(), train, test, 64, 200, seed=0, image_size=40)
    native = datasets.ExperimentData.build(config.dataset_spec(), train, test, 64, 200, seed=0)
    images, labels = next(data.batches(16, torch.Generator().manual_seed(0)))
    small, same_labels = next(native.batches(16, torch.Generator().manual_seed(0)))
    assert images.shape == (16, 3, 40, 40) and torch.equal(labels, same_labels)
    expected = torch.nn.functional.interpolate(small, size=(40, 40), mode="bilinear", align_corners=False)
    assert torch.allclose(images, expected, atol=1e-5)
    assert data.memory_batch(torch.arange(3)).shape[-2:] == (40, 40)
    root = write_folders(tmp_path / "data")
    summary = runner.run_experiment(load_config(folder_config(tmp_path, root, "image_size: 48\n")), "encoder_memory",
                                    tmp_path / "models")
    assert summary["config"]["image_size"] == 48 and 0 <= summary["runs"][0]["accuracy"] <= 100


def _readme_block(heading):
    """The bash block under a README heading, one command a line (continuations joined)."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).replace("\\\n", " ")
    return [line.split("#")[0].split() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readmes_three_commands_go_from_a_folder_to_an_explained_new_image(tmp_path):
    """README "Your own images", as printed: train on a folder (config/folder.yaml), export, predict a new image."""
    train, test = datasets.load_dataset("DIGITS", None)
    data = tmp_path / "DIR"
    for split, source, count in (("train", train, 40), ("test", test, 4)):
        for digit in (0, 1, 7):  # 120 training images: config/folder.yaml's memory set takes 100
            folder = data / split / f"digit_{digit}"
            folder.mkdir(parents=True)
            for i, image in enumerate(source.images[source.labels == digit][:count]):
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    Image.fromarray(test.images[test.labels == 7][10].permute(1, 2, 0).numpy()).save(tmp_path / "new_image.jpg")
    (tmp_path / "config").symlink_to(REPO / "config")  # the commands name config/folder.yaml from their folder
    commands = _readme_block("Your own images")
    assert [command[:2] for command in commands] == [["python", "convert_weights.py"], ["python", "train.py"],
                                                     ["python", "export.py"], ["python", "predict.py"]]
    # as printed, at 64 px instead of the weights' 224 and for 5 epochs instead of 30: the tests never train on the
    # real weights at 224 px (what is read, converted, trained, exported and explained is the same at any size;
    # tests/test_pretrained.py checks that the weights' own size is the default)
    commands[1] = commands[1] + ["--set=image_size=64", "--epochs=5"]
    outputs = []
    for command in commands:
        args = [arg.replace("=DIR", f"={data}") for arg in command[2:]]
        result = run_script(REPO / command[1], *args, cwd=tmp_path, check=False)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        outputs.append(result.stdout)
    assert "PerClass:digit_0=40, digit_1=40, digit_7=40" in outputs[1] and "Epoch 5 " in outputs[1], outputs[1]
    assert "Encoder:from weights/tf_efficientnet_lite0.safetensors, frozen | Images:64 px" in outputs[1]
    assert "memory pool of 120 images" in outputs[2], outputs[2]
    content = torch.load(tmp_path / "model.pt", weights_only=True)
    assert content["memory_size"] == [64, 64] and {
        Image.open(io.BytesIO(item.numpy().tobytes())).size for item in content["memory_png"]} == {(32, 32)}, \
        "the pool's 32 px files stored at their own size, not the model's 64 px"
    from core.checkpoints import Checkpoint, CheckpointError
    assert Checkpoint.load(tmp_path / "model.pt").memory_pool.images.shape[-2:] == (64, 64), "the record's pixels"
    # a damaged pool is refused in one line: a size that resizes to other pixels, an image swapped for another, a
    # memory_size that is no size
    swapped = lambda c: c["memory_png"].__setitem__(0, c["memory_png"][1])  # noqa: E731
    for damage, message in ((lambda c: c.update(memory_size=[48, 48]), "decodes to other pixels"),
                            (swapped, "image 0 .* decodes to other"),
                            (lambda c: c.update(memory_size="64"), "memory_size '64' is no image size")):
        damaged = torch.load(tmp_path / "model.pt", weights_only=True)
        damage(damaged)
        torch.save(damaged, tmp_path / "damaged.pt")
        with pytest.raises(CheckpointError, match=f"damaged.pt: its memory pool is damaged.*({message})"):
            Checkpoint.load(tmp_path / "damaged.pt")
    line = outputs[3].splitlines()[0]
    assert line.startswith("new_image.jpg: digit_") and "top example: train/digit_" in line, result.stdout
    assert (tmp_path / "explained" / "0_new_image.png").is_file() and (tmp_path / "model.pt").is_file()


def test_the_papers_config_takes_a_folder_dataset_and_a_config_without_one_says_where_to_look(tmp_path):
    """`train.py --dataset=folder --dataset_dir=DIR` works with the default config/train.yaml (its folder: section)."""
    config = load_config(REPO / "config" / "train.yaml", {"dataset": "folder", "dataset_dir": str(tmp_path)})
    assert config.dataset_name == "folder" and config.dataset.num_epochs == 40
    digits_only = tmp_path / "digits_only.yaml"
    digits_only.write_text((REPO / "config" / "digits.yaml").read_text())
    with pytest.raises(ConfigError, match=r"has no folder: section .*config/folder.yaml has one"):
        load_config(digits_only, {"dataset": "folder"})
