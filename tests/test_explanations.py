"""explanation_accuracy.py, generate_memory_images.py, generate_heatmaps.py on a DIGITS model trained 1 epoch here;
Integrated Gradients completeness on a small model."""
import json
import re

import pytest
import torch
from PIL import Image

import datasets
import explanations
from architectures import build_model
from core.checkpoints import Checkpoint, RunMetadata
from core.evaluation import MemoryPass
from helpers import TINY, TINY_DRAWS, run_script

pytestmark = pytest.mark.xdist_group("trained")  # conftest's trained models: made once, in one worker


@pytest.fixture(scope="module")
def checkpoint_dir(trained):
    root, _ = trained
    folder = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    # a std checkpoint to be refused, saved as train.py saves
    std = build_model("shufflenet", "std", 10)
    Checkpoint.save(root / "std" / "1.pt", std, RunMetadata(model_name="shufflenet", modality="std",
                                                            dataset_name="DIGITS", num_classes=10,
                                                            train_examples=128, mem_examples=20, seed=0))
    return root, folder


def test_explanation_accuracy(checkpoint_dir, tmp_path):
    _, folder = checkpoint_dir
    out = run_script("explanation_accuracy.py", f"--path_models={folder}", f"--output_json={tmp_path / 'x.json'}").stdout
    numbers = json.loads((tmp_path / "x.json").read_text())
    model_row = numbers["models"][0]
    assert len(model_row["draws"]) == TINY_DRAWS
    for draw in model_row["draws"]:
        assert draw["examples"] + draw["counterfactuals"] == 500  # every test image is one or the other
        assert 0 <= draw["explanation_accuracy"] <= 100
        assert draw["explanation_accuracy"] == pytest.approx(100 * draw["examples"] / 500)
        for key in ("counterfactual_accuracy", "example_accuracy"):
            assert draw[key] is None or 0 <= draw[key] <= 100
    line = re.search(r"Explanation accuracy \(mean\):(\S+)\t\(std_dev\):(\S+)\t  counterfactual acc mean:(\S+)\t  "
                     r"counterfactual std:(\S+)\t  example acc mean:(\S+)\t  example std:(\S+)", out)
    assert line, out
    for printed, key in zip(line.groups(), ("explanation_mean", "explanation_std", "counterfactual_mean",
                                            "counterfactual_std", "example_mean", "example_std")):
        assert printed == ("n/a" if numbers[key] is None else f"{numbers[key]:.2f}")


def test_empty_category_is_reported_not_divided_by_zero():
    result = MemoryPass(logits=torch.tensor([[2.0, 0.0], [0.0, 2.0]]), content_weights=torch.tensor([[1.0, 0.0]] * 2),
                            memory_positions=torch.zeros(2, 2, dtype=torch.long),
                            memory_predictions=torch.tensor([[0, 1], [1, 0]]))
    scores = explanations.top_sample_scores(result, torch.tensor([0, 0]))
    assert scores.counterfactuals == 0 and scores.counterfactual_accuracy is None
    assert scores.examples == 2 and scores.example_accuracy == 50.0 and scores.explanation_accuracy == 100.0


def test_std_models_and_unwritable_output_refused(checkpoint_dir, tmp_path):
    root, folder = checkpoint_dir
    for script, flag in (("explanation_accuracy.py", f"--path_models={root / 'std'}"),
                         ("generate_memory_images.py", f"--path_model={root / 'std' / '1.pt'}"),
                         ("generate_heatmaps.py", f"--path_model={root / 'std' / '1.pt'}")):
        result = run_script(script, flag, check=False)
        assert result.returncode != 0 and "is a std model: it has no memory, so" in result.stderr, script
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_script("generate_memory_images.py", f"--path_model={folder / '1.pt'}", f"--output_dir={blocker}",
                        check=False)
    assert result.returncode != 0 and "cannot create the output folder" in result.stderr
    result = run_script("generate_heatmaps.py", f"--path_model={tmp_path / 'none.pt'}", check=False)
    assert result.returncode != 0 and "does not exist" in result.stderr


def test_memory_images(checkpoint_dir, tmp_path):
    _, folder = checkpoint_dir
    run_script("generate_memory_images.py", f"--path_model={folder / '1.pt'}", "--num_images=3", f"--output_dir={tmp_path}")
    pngs = sorted((tmp_path / "DIGITS" / "encoder_memory" / "shufflenet").glob("*.png"))
    assert [p.name for p in pngs] == ["0.png", "1.png", "2.png"]
    for png in pngs:
        with Image.open(png) as image:
            width, height = image.size
        columns = round(width / (explanations.MEMORY_FIGURE_COLUMN_INCHES * explanations.FIGURE_DPI), 6)
        assert columns == int(columns) and columns >= 2  # the input plus at least one memory sample
        assert height == round(explanations.MEMORY_FIGURE_HEIGHT_INCHES * explanations.FIGURE_DPI)


def test_heatmaps(checkpoint_dir, tmp_path):
    _, folder = checkpoint_dir
    out = run_script("generate_heatmaps.py", f"--path_model={folder / '1.pt'}", "--batch_size_test=2", "--n_steps=8",
                     f"--output_dir={tmp_path}").stdout
    assert len(re.findall(r"IG convergence delta [0-9.]+", out)) == 2
    png = tmp_path / "DIGITS" / "encoder_memory" / "shufflenet" / "batch_0.png"
    with Image.open(png) as image:
        assert image.size == (2 * 6 * explanations.FIGURE_DPI, round(2.3 * 2 * explanations.FIGURE_DPI))


def test_integrated_gradients_completeness():
    torch.manual_seed(0)
    model = build_model("shufflenet", "encoder_memory", 10).eval()
    spec = datasets.get_spec("DIGITS")
    image, memory = torch.randn(3, 32, 32), torch.randn(6, 3, 32, 32)
    target = 3
    attr_input, attr_memory, delta, difference = explanations.integrated_gradients(
        model, image, memory, model.encode(memory), [1, 4], target, spec, n_steps=64, internal_batch_size=64)
    assert attr_input.shape == (3, 32, 32) and attr_memory.shape == (2, 3, 32, 32)
    white = explanations.white_baseline(memory.shape, spec, "cpu")
    baseline_memory = memory.clone()
    baseline_memory[[1, 4]] = white[[1, 4]]
    with torch.no_grad():
        expected = (model(image[None], memory) - model(white[:1], baseline_memory))[0, target].item()
    assert difference == pytest.approx(expected, abs=1e-4)
    total = (attr_input.sum() + attr_memory.sum()).item()
    assert total == pytest.approx(expected, abs=max(0.05 * abs(expected), 0.02)), (total, expected, delta)
    assert delta == pytest.approx(abs(total - expected), abs=1e-3)


def test_integrated_gradients_with_the_paper_codes_baseline_is_complete():
    torch.manual_seed(0)
    model = build_model("shufflenet", "encoder_memory", 10).eval()
    spec = datasets.get_spec("DIGITS")
    image, memory = torch.randn(3, 32, 32), torch.randn(6, 3, 32, 32)
    attr_input, attr_memory, delta, difference = explanations.integrated_gradients(
        model, image, memory, model.encode(memory), [2], 1, spec, n_steps=64, internal_batch_size=64, baseline="paper")
    baseline_memory = memory.clone()
    baseline_memory[2] = 1.0  # the paper's code: a tensor of ones in normalised space
    with torch.no_grad():
        expected = (model(image[None], memory) - model(torch.ones(1, 3, 32, 32), baseline_memory))[0, 1].item()
    assert difference == pytest.approx(expected, abs=1e-4)
    assert (attr_input.sum() + attr_memory.sum()).item() == pytest.approx(expected, abs=max(0.05 * abs(expected), 0.02))
    assert not torch.equal(explanations.baseline_images("paper", (3, 32, 32), spec, "cpu"),
                           explanations.baseline_images("white", (3, 32, 32), spec, "cpu"))


def test_the_paper_codes_explanation_memory_pool():
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 300, 200, seed=3, mem_examples=20)
    pool = explanations.paper_memory_pool(data)
    expected, _ = datasets.split_indices(1297, datasets.ALL_TRAIN_EXAMPLES, 200, seed=42)
    assert torch.equal(pool, expected) and len(pool) == 1097 and not set(pool.tolist()) <= set(data.subset.tolist())
    cifar = datasets.ExperimentData.build(datasets.get_spec("CIFAR10"), train, test, 300, 200, seed=3)
    assert torch.equal(explanations.paper_memory_pool(cifar), torch.arange(1297))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """Untrained checkpoints of the related methods' heads, saved as train.py saves them."""
    from core.config import load_config

    root = tmp_path_factory.mktemp("heads")
    config = load_config(TINY)
    paths = {}
    for modality in ("protonet", "matching", "prototypes", "deepncm", "hyperspherical"):
        torch.manual_seed(0)
        model = build_model("shufflenet", modality, 10, **config.model_options())
        folder = root / modality
        Checkpoint.save(folder / "1.pt", model, RunMetadata("shufflenet", modality, "DIGITS", 10, 128, 20, run=1,
                                                            config=config.to_dict()))
        paths[modality] = folder
    return paths


@pytest.mark.parametrize("modality", ["protonet", "matching"])
def test_memory_heads_of_the_related_methods_are_explained(untrained, modality, tmp_path):
    folder = untrained[modality]
    out = run_script("explanation_accuracy.py", f"--path_models={folder}", f"--output_json={tmp_path / 'x.json'}",
                     "--draws=2").stdout
    draws = json.loads((tmp_path / "x.json").read_text())["models"][0]["draws"]
    assert len(draws) == 2 and all(d["examples"] + d["counterfactuals"] == 500 for d in draws), out
    run_script("generate_memory_images.py", f"--path_model={folder / '1.pt'}", "--num_images=2", "--max_samples=4",
               f"--output_dir={tmp_path}")
    pngs = sorted(tmp_path.rglob("*.png"))
    assert [p.name for p in pngs] == ["0.png", "1.png"]
    with Image.open(pngs[0]) as image:  # matching weighs every sample: at most --max_samples are shown
        assert image.size[0] <= 5 * explanations.MEMORY_FIGURE_COLUMN_INCHES * explanations.FIGURE_DPI
    out = run_script("generate_heatmaps.py", f"--path_model={folder / '1.pt'}", "--batch_size_test=1", "--n_steps=4",
                     f"--output_dir={tmp_path / 'heat'}").stdout
    assert "image 0: IG convergence delta" in out and len(list((tmp_path / "heat").rglob("*.png"))) == 1


@pytest.mark.parametrize("modality", ["prototypes", "deepncm", "hyperspherical"])
def test_prototype_heads_get_prototype_figures_and_clear_refusals(untrained, modality, tmp_path):
    folder = untrained[modality]
    out = run_script("generate_memory_images.py", f"--path_model={folder / '1.pt'}", "--num_images=2",
                     f"--output_dir={tmp_path}").stdout
    assert "prototypes.png and 2 distance figures" in out
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["0.png", "1.png", "prototypes.png"]
    if modality != "deepncm":
        return  # the refusal below is one code path for every head without memory
    for script, flag in (("explanation_accuracy.py", f"--path_models={folder}"),
                         ("generate_heatmaps.py", f"--path_model={folder / '1.pt'}")):
        result = run_script(script, flag, check=False)
        assert result.returncode != 0 and f"is a {modality} model: it has no memory, so {script} cannot explain it; " \
                                          f"{script} serves the modalities ['memory', 'encoder_memory', 'protonet', " \
                                          f"'matching']" in result.stderr, result.stderr
