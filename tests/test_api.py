"""Explanations you can act on: every memory sample names its training image (provenance from training to a model
file whose dataset is gone), the memory chosen at prediction time (policies, --exclude, --classes), decisive samples,
and the one Python call (memory_wrap.load_model) that predict.py is a shell over."""
import hashlib
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import memory_wrap
from architectures import Classifier
from core.evaluation import FeatureCache
from core.memory_policies import memory_sets
from explanations.accuracy import ExplanationError
from explanations.new_images import MemoryChoice, explain
from helpers import SMALL_MLP, TINY, TINY_SIZE, memory_reading_head, run_script
from readers import read_cifar10

pytestmark = pytest.mark.xdist_group("trained")


def test_a_cifar10_source_names_the_batch_file_and_row_of_the_very_image(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    generator = np.random.default_rng(0)
    batches = {}
    for name, count in [(f"data_batch_{i}", 7 + i) for i in range(1, 6)] + [("test_batch", 5)]:
        batches[name] = generator.integers(0, 256, (count, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": batches[name], "labels": generator.integers(0, 10, count).tolist()}, f)
    train, test = read_cifar10(tmp_path, download=False)
    index = 8 + 9 + 3  # the fourth image of data_batch_3 (batches of 8, 9, 10, ... images)
    assert train.source(index) == "CIFAR10 data_batch_3 #3" and test.source(4) == "CIFAR10 test_batch #4"
    assert torch.equal(train.images[index], torch.from_numpy(batches["data_batch_3"][3].reshape(3, 32, 32)))


def test_memory_policies_draw_what_they_say():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    kept = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8])  # 3 and 9 left out
    generator = torch.Generator().manual_seed(0)
    [(pool, flips)] = memory_sets("pool", labels, kept, 4, 5, generator)
    assert torch.equal(pool, kept) and flips is None
    for positions, _ in memory_sets("draws", labels, kept, 4, 3, generator):
        assert len(positions) == 4 and set(positions.tolist()) <= set(kept.tolist())
    for positions, _ in memory_sets("balanced", labels, kept, 6, 3, generator):
        assert sorted(labels[positions].tolist()) == [0, 0, 1, 1, 2, 2]
    # with nothing left out, draws are evaluation's own draws, position for position
    protocol = datasets.MemoryProtocol(10, 4)
    expected = [protocol.draw(torch.Generator().manual_seed(3))[0] for _ in range(1)]
    [(drawn, _)] = memory_sets("draws", labels, torch.arange(10), 4, 1, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, expected[0])
    with pytest.raises(ValueError, match="unknown memory policy 'nearest'"):
        memory_sets("nearest", labels, kept, 4, 1, generator)


def crafted():
    """A memory-only head that predicts class 0 by how much of the memory vector lies on the first feature: pool A
    (class 0) on it, B and C (class 1) elsewhere; the input leans on A, so A alone decides its prediction."""
    model = Classifier(torch.nn.Identity(), memory_reading_head(4, 2, reads=2), "memory").eval()
    pool = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0.9, 0.1, 0]])
    cache = FeatureCache(torch.tensor([[1.0, 0.2, 0, 0]]), torch.tensor([0]), pool, torch.tensor([0, 1, 1]),
                         datasets.MemoryProtocol(3, 3), seed=0, draws=1, batch_size=1)
    return model, cache


def test_a_decisive_sample_once_left_out_changes_the_prediction():
    model, cache = crafted()
    names = ("A.png", "B.png", "C.png")
    [item] = explain(model, cache, ("zero", "one"), ["input"], names, choice=MemoryChoice("pool"))
    assert item.predicted == "zero" and [s.source for s in item.memory] == ["A.png", "B.png", "C.png"]
    assert [s.source for s in item.decisive] == ["A.png"], "only A's absence turns the prediction"
    [without] = explain(model, cache, ("zero", "one"), ["input"], names,
                        choice=MemoryChoice("pool", kept=torch.tensor([1, 2])))
    assert without.predicted == "one" and "A.png" not in [s.source for s in without.memory]
    [without_b] = explain(model, cache, ("zero", "one"), ["input"], names,
                          choice=MemoryChoice("pool", kept=torch.tensor([0, 2])))
    assert without_b.predicted == "zero", "B was not decisive: leaving it out keeps the prediction"


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    """A Memory Wrap model trained on a folder dataset of real digits, exported, its dataset folder then deleted."""
    root = tmp_path_factory.mktemp("provenance")
    data = root / "DIR"
    train, test = datasets.load_dataset("DIGITS", None)
    for split, source, count in (("train", train, 12), ("test", test, 3)):
        for digit in (0, 1, 7):
            folder = data / split / f"digit_{digit}"
            folder.mkdir(parents=True)
            for i, image in enumerate(source.images[source.labels == digit][:count]):
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{digit}_{i:03d}.png")
    hashes = {path.relative_to(data).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
              for path in (data / "train").rglob("*.png")}
    config = root / "folder.yaml"
    config.write_text(TINY.read_text().replace("dataset_name: DIGITS", "dataset_name: folder").replace(
        "DIGITS: {num_classes: 10, num_epochs: 1, opt_milestones: [1], mem_examples: 20, val_examples: 200}",
        "folder: {num_epochs: 4, opt_milestones: [3], mem_examples: 10, val_examples: 0}").replace(
        "train_examples: 128", "train_examples: all").replace("dataset_dir: datasets", f"dataset_dir: {data}"))
    run_script("train.py", f"--config={config}", "--modality=encoder_memory", f"--output_dir={root / 'models'}",
               SMALL_MLP)
    checkpoint = next((root / "models").rglob("1.pt"))
    run_script("export.py", f"--path_model={checkpoint}", f"--output={root / 'model.pt'}")
    new = root / "new"
    new.mkdir()
    for i in range(3):
        shutil.copy(next((data / "test" / f"digit_{(0, 1, 7)[i]}").iterdir()), new / f"new_{i}.png")
    shutil.rmtree(data)  # the model file carries its pool: the dataset is gone
    return root / "model.pt", new, hashes, checkpoint


def test_provenance_travels_from_a_folders_files_to_predict_through_a_model_file(folder_model):
    model_file, new, hashes, _ = folder_model
    lines = [json.loads(line) for line in
             run_script("predict.py", f"--path_model={model_file}", str(new), "--json").stdout.splitlines()]
    samples = [sample for line in lines for sample in line["memory"]]
    assert samples and all(sample["source"].startswith("train/digit_") for sample in samples)
    assert all(hashes[sample["source"]] == sample["file_sha256"] for sample in samples), "the file's own sha256"
    assert all(sample["source"].split("/")[1] == sample["label"] for sample in samples), "in its label's folder"
    said = run_script("predict.py", f"--path_model={model_file}", str(new / "new_0.png")).stdout
    assert "top example: train/digit_" in said


def test_load_model_explains_as_predict_json_does_and_takes_every_kind_of_image(folder_model):
    model_file, new, _, _ = folder_model
    paths = sorted(str(p) for p in new.iterdir())
    model = memory_wrap.load_model(model_file)
    assert model.classes == ["digit_0", "digit_1", "digit_7"]
    script = [json.loads(line) for line in
              run_script("predict.py", f"--path_model={model_file}", *paths, "--json").stdout.splitlines()]
    assert [item.to_json() for item in model.explain(paths)] == script
    pil = Image.open(paths[0])
    array = np.asarray(pil.convert("RGB"))
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    predictions = model.predict([paths[0], pil, array, tensor, tensor.float() / 255])
    assert len({p.predicted for p in predictions}) == 1 and predictions[0].probabilities == pytest.approx(
        predictions[3].probabilities, abs=1e-6), "the same image, however given"
    [explained] = model.explain(paths[0], memory="pool", heatmap=True)  # at the model's input size
    assert explained.heatmap.shape == (3, TINY_SIZE, TINY_SIZE)
    assert explained.draws == 1 and explained.memory_policy == "pool"
    with pytest.raises(ExplanationError, match="expected H x W or H x W x 3"):
        model.predict([np.zeros((2, 2, 2, 2), dtype=np.uint8)])


def test_exclude_removes_an_image_from_the_memory_and_classes_keep_it_to_some(folder_model, tmp_path):
    model_file, new, _, _ = folder_model
    image = str(new / "new_0.png")
    model = memory_wrap.load_model(model_file)
    [before] = model.explain(image, memory="pool")
    top = before.memory[0].source
    exclude = tmp_path / "distrusted.txt"
    exclude.write_text(f"# left out\n{top}\n")
    [line] = [json.loads(line) for line in run_script("predict.py", f"--path_model={model_file}", image, "--json",
                                                      "--memory=pool", f"--exclude={exclude}").stdout.splitlines()]
    assert top not in [sample["source"] for sample in line["memory"]], "never appears"
    assert line["probabilities"] != pytest.approx(before.probabilities, abs=1e-9), "the prediction is recomputed"
    [kept] = model.explain(image, memory="pool", classes=["digit_1"])
    assert {sample.label for sample in kept.memory} == {"digit_1"}
    for options, message in (({"exclude": ["train/nothing.png"]}, "is no image of the memory pool"),
                             ({"classes": ["digit_9"]}, r"\['digit_9'\] are not classes of the model"),
                             ({"memory": "nearest"}, "is not one of")):
        with pytest.raises(ExplanationError, match=message):
            model.explain(image, **options)
    result = run_script("predict.py", f"--path_model={model_file}", image, "--classes=digit_9", check=False)
    assert result.returncode == 1 and "are not classes of the model" in result.stderr


def test_a_policys_accuracy_with_the_evaluations_draws_is_the_evaluations_own():
    from architectures import build_model
    from core.evaluation import evaluate, policy_accuracy

    torch.manual_seed(0)
    model = build_model("shufflenet", "encoder_memory", 10).eval()
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 200, 200, seed=0, mem_examples=20)
    cache = FeatureCache.build(model, data, 60, seed=0, draws=2, test_count=180)
    assert policy_accuracy(model, cache, "draws") == evaluate(model, cache).accuracy
    assert 0 <= policy_accuracy(model, cache, "pool") <= 100 and 0 <= policy_accuracy(model, cache, "balanced") <= 100


def test_the_json_support_is_the_number_supported_was_decided_on():
    """Rounded to 6 digits, a support of 1.0000001 against a threshold of 1.0000001 read 1.0 while supported was
    true: the JSON keeps the number unrounded."""
    from explanations.new_images import Explained

    line = Explained("x.png", "0", 0.9, {"0": 0.9, "1": 0.1}, support=1.0000001192092896, supported=True).to_json()
    assert line["support"] == 1.0000001192092896 and line["supported"] is True
