"""The paper's explanation experiments: explanations by example against competitors, and counterfactuals (memory vs
CFProto) with IM1 / IM2; hand-computed cases, then the scripts as a user runs them."""
import json
import re

import pytest
import torch
from torch import nn

import datasets
from architectures import build_model
from core.checkpoints import Checkpoint, RunMetadata
from core.config import load_config
from explanations import autoencoders, by_example, counterfactuals
from helpers import TINY, run_script


def toy_batch(weights, memory_logits, activations, memory_activations, last_weight=None, logits=None):
    logits = torch.tensor([[5.0, 0.0]]) if logits is None else logits
    return by_example.Batch(logits, torch.tensor([weights]), torch.tensor([activations]), torch.tensor(memory_logits),
                            torch.tensor(memory_activations), last_weight, torch.Generator().manual_seed(0))


def test_each_method_picks_the_sample_a_hand_computation_picks():
    """The input (activations (1, 0), logits predicting class 0); memory samples 0..3 predicted in classes 1, 0, 0, 0
    with activations (1, 0.05), (0, 1), (0.9, 0), (3, 0) and content weights 0.5, 0.1, 0.4, 0.
    - Memory Wrap: by weight 0, 2, 1, 3; sample 0 is of class 1, so sample 2.
    - kNN: distances 0.05, 1.41, 0.1, 2: sample 0 (class 1), then sample 2.
    - twin CHP with last-layer rows w[0] = (0, 1), w[1] = (1, 0): contributions w[pred] * x are (0, 0) for the input,
      (1, 0), (0, 1), (0, 0), (0, 0) for the memory: distances 1, 1, 0, 0: samples 2 and 3 tie, the first is 2."""
    memory_logits = [[0.0, 3.0], [2.0, 0.0], [2.0, 1.0], [4.0, 0.0]]
    batch = toy_batch([0.5, 0.1, 0.4, 0.0], memory_logits, [1.0, 0.0], [[1.0, 0.05], [0.0, 1.0], [0.9, 0.0], [3.0, 0.0]],
                      last_weight=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    picks = {}
    for name, picker in by_example.PICKERS.items():
        index, found = by_example.first_in_class(picker.order(batch), batch.memory_predictions, batch.predictions)
        assert found.all()
        picks[name] = index.item()
    assert (picks["memory_wrap"], picks["knn"], picks["twin_chp"]) == (2, 2, 2)
    assert picks["random"] in (1, 2, 3), "random picks a sample of the predicted class"
    # where the contributions and the activations disagree: the input's activations (1, 0.9). kNN: distances
    # 0.85, 1.005, 0.906, 2.2 -> sample 0 (class 1), then 2. CHP: the input's contribution (0, 0.9), memory
    # (1, 0), (0, 1), (0, 0), (0, 0): distances 1.35, 0.1, 0.9, 0.9 -> sample 1.
    batch.activations = torch.tensor([[1.0, 0.9]])
    index, _ = by_example.first_in_class(by_example.by_contribution(batch), batch.memory_predictions, batch.predictions)
    assert index.item() == 1
    index, _ = by_example.first_in_class(by_example.by_activation(batch), batch.memory_predictions, batch.predictions)
    assert index.item() == 2
    # a row whose memory holds no sample of its class has no example; the paper's code took the first of the order
    order = torch.tensor([[3, 1, 2, 0]])
    index, found = by_example.first_in_class(order, torch.tensor([1, 1, 1, 1]), torch.tensor([0]))
    assert not found.any()
    index, found = by_example.first_in_class(order, torch.tensor([1, 1, 1, 1]), torch.tensor([0]), paper_code=True)
    assert found.all() and index.item() == 3


def test_every_method_orders_the_memory_on_the_batch_device():
    """On a GPU the random method's CPU stream once gave CPU indices to CUDA tensors (a crash found on an H200):
    the "meta" device stands in for a GPU here, where no tensor on another device may come back."""
    B, M, C, H = 3, 5, 4, 6
    batch = by_example.Batch(*(torch.randn(*shape, device="meta") for shape in ((B, C), (B, M), (B, H), (M, C), (M, H),
                                                                             (C, H))), torch.Generator().manual_seed(0))
    for name, picker in by_example.PICKERS.items():
        order = picker.order(batch)
        index, found = by_example.first_in_class(order, batch.memory_predictions, batch.predictions)
        assert (order.device.type, index.device.type, found.device.type) == ("meta",) * 3, name


def test_both_metrics_equal_hand_computed_values():
    example = torch.tensor([[1.0, 2.0, 0.0]])
    logits = torch.tensor([[0.0, 4.0, 1.0]])  # predicted class 1
    values = by_example.scores(example, logits)
    assert values["input"].item() == pytest.approx((1 + 2 + 1) / 3)
    expected = -(2.0 - torch.logsumexp(torch.tensor([1.0, 2.0, 0.0]), 0)).item()
    assert values["prediction"].item() == pytest.approx(expected)


class Scale(nn.Module):
    """A stand-in autoencoder whose reconstruction is known: x -> factor * x."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


def test_im_scores_equal_their_formulas_with_known_reconstructions():
    x = torch.tensor([[[[3.0, 4.0]]], [[[0.0, 2.0]]]])  # |x| = 5 and 2
    nets = {"class_0": Scale(1.0), "class_1": Scale(0.5), "class_2": Scale(0.0), "full": Scale(0.25)}
    got = counterfactuals.im_scores(x, original_classes=torch.tensor([0, 2]), counterfactual_classes=torch.tensor([1, 1]),
                                    autoencoders=nets)
    eps = counterfactuals.EPSILON
    # row 0: target AE_1 leaves 0.5 x (error 2.5), original AE_0 is exact (error 0); IM2 = |0.5x - 0.25x| / |x|
    assert got["im1"][0].item() == pytest.approx(2.5 / eps, rel=1e-5)
    assert got["iim1"][0].item() == pytest.approx(0.0, abs=1e-6)
    assert got["im2"][0].item() == pytest.approx(0.25 * 5 / 5, rel=1e-5)
    # row 1: AE_1 error 0.5 * 2 = 1, AE_2 error 2: IM1 = 1/2, IIM1 = 2
    assert got["im1"][1].item() == pytest.approx(0.5, rel=1e-5) and got["iim1"][1].item() == pytest.approx(2.0, rel=1e-5)
    # the paper's code: norms over the whole batch, IM2 with the input's class's autoencoder
    paper = counterfactuals.im_scores(x, torch.tensor([0, 2]), torch.tensor([1, 1]), nets, paper_code=True)
    whole = x.norm().item()  # sqrt(29)
    assert paper["im1"][1].item() == pytest.approx(0.5 * whole / whole, rel=1e-5)
    assert paper["im2"][1].item() == pytest.approx(0.25 * whole / whole, rel=1e-5)  # |0 - 0.25 x| / |x|


def test_the_memory_counterfactual_is_the_top_weighted_sample_of_another_class():
    weights = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.0, 0.2, 0.8, 0.0], [1.0, 0.0, 0.0, 0.0]])
    memory_predictions = torch.tensor([0, 1, 2, 3])
    predictions = torch.tensor([0, 1, 0])
    index, found = counterfactuals.memory_counterfactuals(weights, memory_predictions, predictions)
    assert found.tolist() == [True, True, False], "row 2: its only positive weight is its own class: skipped"
    assert index[:2].tolist() == [1, 2], "row 0: sample 1 (class 1, weight 0.3); row 1: sample 2 (class 2, 0.8)"
    # the paper's code read each row's position in the FIRST row's order: row 1's position 0 is sample 0 there
    index, found = counterfactuals.memory_counterfactuals(weights, memory_predictions, predictions, paper_code=True)
    assert index[:2].tolist() == [1, 0]
    # ... and skipped a batch in which a single row has a counterfactual
    _, found = counterfactuals.memory_counterfactuals(weights[:1], memory_predictions, predictions[:1], paper_code=True)
    assert not found.any()


def test_cfproto_flips_a_small_model_to_the_target_class():
    """Two classes on 2 x 2 images: class 1 where the mean pixel exceeds 0.5. CFProto with an identity encoder moves
    an image of class 0 towards class 1's prototype until the model predicts class 1, and keeps the closest such."""
    def classify(images):
        score = images.flatten(1).mean(1) - 0.5
        return torch.stack([-score, score], dim=1)

    images = torch.full((2, 1, 2, 2), 0.2)
    prototypes = torch.full((2, 1, 2, 2), 0.9)
    settings = counterfactuals.CFProtoSettings(max_iterations=100)  # the port's defaults, fewer iterations
    found_images, found = counterfactuals.cfproto(classify, images, torch.tensor([0, 0]), torch.tensor([1, 1]),
                                                  nn.Identity(), prototypes, (0.0, 1.0), settings)
    assert found.all()
    assert (classify(found_images).argmax(1) == 1).all(), "the counterfactual is predicted in the target class"
    assert (found_images.flatten(1).mean(1) < 0.6).all(), "the closest counterfactual found (0.52), not the prototype"


def test_the_autoencoders_resume_after_an_interruption(tmp_path):
    config = load_config(TINY)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 128, 200, seed=0)
    checkpoint = Checkpoint(tmp_path / "1.pt", {}, RunMetadata("shufflenet", "encoder_memory", "DIGITS", 10, 128, 20,
                                                               run=1, seed=0, config=config.to_dict()))

    class Interrupt(Exception):
        pass

    class StopAfter:
        def __init__(self, epochs):
            self.left = epochs

        def update(self, count):
            self.left -= count
            if self.left < 0:
                raise Interrupt

    reference = autoencoders.train_for_run(checkpoint, data, tmp_path / "reference", epochs=1)
    with pytest.raises(Interrupt):
        autoencoders.train_for_run(checkpoint, data, tmp_path / "resumed", epochs=1, progress=StopAfter(4))
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "resumed").glob("*.pt")}
    assert 3 <= len(first) < 11, "the finished autoencoders were written, the interrupted one was not"
    autoencoders.train_for_run(checkpoint, data, tmp_path / "resumed", epochs=1)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "resumed").glob("*.pt") if p.name in first} == first
    for path in reference:
        expected = torch.load(path, weights_only=True)["model_state_dict"]
        got = torch.load(tmp_path / "resumed" / path.name, weights_only=True)["model_state_dict"]
        assert all(torch.equal(expected[k], got[k]) for k in expected), path.name
    other = Checkpoint(tmp_path / "1.pt", {}, RunMetadata("shufflenet", "encoder_memory", "DIGITS", 10, 256, 20, run=1,
                                                          seed=0, config=config.to_dict()))
    with pytest.raises(autoencoders.AutoencoderError, match=r"trained for another experiment: train_examples 128 "
                                                            r"\(expected 256\)"):
        autoencoders.train_for_run(other, data, tmp_path / "resumed", epochs=1)


@pytest.mark.xdist_group("trained")  # conftest's trained models: made once, in one worker
def test_the_scripts_and_the_papers_command_names_run_and_refuse_bad_input(trained, tmp_path):
    root, _ = trained
    folder = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128"
    out = run_script("run_exp_by_examples.py", f"--dir_models={folder}/", "--dir_dataset=datasets/", "--metric=input",
                     f"--output_json={tmp_path / 'e.json'}").stdout
    assert "memory_wrap" in out and "knn" in out and "twin_chp" in out
    written = json.loads((tmp_path / "e.json").read_text())
    assert set(written["summary"]) == {"input"} and set(written["methods"]) == set(by_example.PICKERS)
    std = run_script("explanation_examples.py", f"--path_models={root / 'DIGITS' / 'std' / 'shufflenet' / '128'}",
                     f"--output_json={tmp_path / 's.json'}", check=False)
    assert std.returncode == 1 and std.stderr.strip().startswith("error:") and "is a std model" in std.stderr
    assert not (tmp_path / "s.json").exists()
    missing = run_script("counterfactuals.py", f"--path_models={folder}", "--algo=memory", f"--path_aes={tmp_path}/none",
                         f"--output_json={tmp_path / 'c.json'}", check=False)
    assert missing.returncode == 1 and "lacks the autoencoders" in missing.stderr and "train_autoencoders.py" in missing.stderr
    run_script("train_aes_svhn.py", f"--dir_models={folder}/", f"--saving_path={tmp_path / 'aes'}",
               "--dir_dataset=datasets/", "--epochs=1")
    assert sorted(p.name for p in (tmp_path / "aes" / "0").iterdir()) == sorted(f"{n}.pt" for n in autoencoders.names(10))
    out = run_script("run_counterfactuals.py", f"--path_models={folder}/", f"--path_aes={tmp_path / 'aes'}",
                     "--dir_dataset=datasets/", "--algo=proto", "--num_images=8", "--max_iterations=3",
                     f"--output_json={tmp_path / 'c.json'}").stdout
    assert "im1" in out and "im2" in out and json.loads((tmp_path / "c.json").read_text())["algo"] == "proto"
    unknown = run_script("counterfactuals.py", f"--path_models={folder}", "--algo=gradient", check=False)
    assert unknown.returncode == 1 and unknown.stderr.strip() == ("error: --algo=gradient: the counterfactual "
                                                                   "generators are ['memory', 'proto'] (memory: Memory "
                                                                   "Wrap's, proto: CFProto)")
    check = run_script("bench/autoencoder_check.py", f"--path_models={folder}", "--run=1",
                       f"--autoencoders={tmp_path / 'aes' / '0'}").stdout
    assert re.search(r"the own class's is the best for [0-9.]+% of the images \(chance 10\.0%\)", check), check
    no_run = run_script("bench/autoencoder_check.py", f"--path_models={folder}", "--run=9", check=False)
    assert no_run.returncode == 1 and no_run.stderr.strip().startswith("error:") and "9.pt" in no_run.stderr
    assert len(no_run.stderr.strip().splitlines()) == 1
    content = torch.load(tmp_path / "aes" / "0" / "full.pt", weights_only=True)
    content["trained_on"]["seed"] = 7
    torch.save(content, tmp_path / "aes" / "0" / "full.pt")
    other = run_script("counterfactuals.py", f"--path_models={folder}", "--algo=memory", f"--path_aes={tmp_path / 'aes'}",
                       f"--output_json={tmp_path / 'd.json'}", check=False)
    assert other.returncode == 1 and "trained for another experiment: seed 7 (expected 0)" in other.stderr
    assert not (tmp_path / "d.json").exists()
    empty = run_script("explanation_examples.py", f"--path_models={tmp_path}", check=False)
    assert empty.returncode == 1 and "no *.pt checkpoints" in empty.stderr
