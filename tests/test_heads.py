"""The related methods' heads and the SimpleSelfAttention encoder option: shapes, gradients, the property that
defines each, and a 1-epoch train.py + eval.py round trip per modality on DIGITS."""
import json
import re

import pytest
import torch
from torch.nn import functional as F

from architectures import build_model, head_entry
from architectures.deepncm import DeepNCM
from architectures.matching import MatchingHead
from architectures.metric_guidance import DistortionLoss, RankLoss, hierarchical_log_probs
from architectures.prototypes import LearntPrototypes, hyperspherical_prototypes, largest_cosines
from architectures.protonet import PrototypicalHead, class_prototypes
from architectures.self_attention import SimpleSelfAttention
from core.class_metric import cifar10_tree
from core.config import ConfigError, load_config
from helpers import SMALL_MLP, TINY, TINY_DRAWS, accuracy_in, run_script, write_config

NEW_HEADS = ["protonet", "matching", "prototypes", "hyperspherical", "deepncm"]


def forward(model, images, memory, labels):
    return model(images, memory, labels) if model.uses_memory else model(images)


@pytest.mark.parametrize("modality", NEW_HEADS)
def test_shapes_and_gradients_reach_the_encoder(modality):
    torch.manual_seed(0)
    model = build_model("shufflenet", modality, 10).train()
    images, memory, memory_labels = torch.randn(4, 3, 32, 32), torch.randn(12, 3, 32, 32), torch.arange(12) % 10
    outputs = model(images, memory, memory_labels, labels=torch.arange(4)) if model.uses_memory else \
        model(images, labels=torch.arange(4))
    assert outputs.shape == (4, 10) and outputs.isfinite().all()
    loss = model.loss(outputs, torch.arange(4)) + model.regularization()
    loss.backward()
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    if model.uses_memory:
        _, weights = model.eval()(images, memory, memory_labels, return_weights=True)
        assert weights.shape == (4, 12) and torch.allclose(weights.sum(1), torch.ones(4), atol=1e-5)


def test_protonet_prototypes_are_the_class_means_of_the_memory_and_absent_classes_are_finite():
    torch.manual_seed(0)
    memory, labels = torch.randn(9, 5), torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1])
    prototypes, counts = class_prototypes(memory, labels, 4)
    for c in range(3):
        assert torch.allclose(prototypes[c], memory[labels == c].mean(0))
    assert counts.tolist() == [3, 4, 2, 0]
    head = PrototypicalHead(5, 4)
    features = torch.randn(6, 5)
    logits, weights = head(features, memory, labels, return_weights=True)
    assert logits.isfinite().all() and (logits[:, 3] == -2.0).all(), "class 3 is absent: the largest distance"
    expected = 1 - F.normalize(features, dim=1) @ F.normalize(prototypes[:3], dim=1).T
    assert torch.allclose(-logits[:, :3], expected, atol=1e-5)
    members = labels[None, :] == logits.argmax(1)[:, None]
    assert ((weights > 0) <= members).all(), "only members of the winning prototype explain"


def test_matching_predictions_are_probability_vectors():
    torch.manual_seed(0)
    head = MatchingHead(16, 5, matching_steps=3)
    outputs, attention = head(torch.randn(7, 16), torch.randn(11, 16), torch.arange(11) % 5, return_weights=True)
    probabilities = outputs.exp()
    assert torch.allclose(probabilities.sum(1), torch.ones(7), atol=1e-4) and (probabilities >= 0).all()
    assert torch.allclose(attention.sum(1), torch.ones(7), atol=1e-5)
    assert torch.equal(outputs.argmax(1), (attention @ F.one_hot(torch.arange(11) % 5, 5).float()).argmax(1))


def test_deepncm_means_are_the_class_means_of_the_features_seen():
    torch.manual_seed(0)
    head = DeepNCM(4, 3)
    batches = [(torch.randn(5, 4), torch.tensor([0, 0, 1, 2, 2])), (torch.randn(3, 4), torch.tensor([0, 1, 1]))]
    for features, labels in batches:
        head.update(features, labels)
    features = torch.cat([f for f, _ in batches])
    labels = torch.cat([y for _, y in batches])
    for c in range(3):
        assert torch.allclose(head.means[c], features[labels == c].mean(0), atol=1e-6)
    assert head.counts.tolist() == [3, 3, 2]
    query = torch.randn(2, 4)
    assert torch.allclose(head(query), -torch.cdist(query, head.means).pow(2), atol=1e-5)


def test_hyperspherical_prototypes_are_unit_vectors_spread_apart():
    prototypes = hyperspherical_prototypes(10, 12, seed=0)
    assert torch.allclose(prototypes.norm(dim=1), torch.ones(10), atol=1e-5)
    random = F.normalize(torch.randn(10, 12, generator=torch.Generator().manual_seed(1)), dim=1)
    assert largest_cosines(prototypes).max() < largest_cosines(random).max()
    assert largest_cosines(prototypes).max() < -1 / 9 + 1e-3, "10 vectors in 12 dimensions spread as a simplex"
    assert torch.equal(prototypes, hyperspherical_prototypes(10, 12, seed=0)), "seeded"


def test_distortion_is_zero_for_prototypes_at_distances_proportional_to_the_metric():
    costs, _ = cifar10_tree()
    loss = DistortionLoss(torch.tensor(costs))
    # four points on a line at 0, 1, 3, 6: their distances are the metric, up to scale 2.5
    line = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    metric = torch.cdist(line, line)
    assert DistortionLoss(metric)(2.5 * line).item() == pytest.approx(0.0, abs=1e-6)
    assert DistortionLoss(metric)(line ** 2).item() > 0.01
    assert loss(torch.randn(10, 8)).item() > 0
    assert RankLoss(metric, triplets=20)(line).item() < RankLoss(metric, triplets=20)(-line ** 2).item() + 1.0


def test_hierarchical_inference_multiplies_conditional_probabilities_along_the_tree():
    _, parents = cifar10_tree()
    scores = torch.randn(3, 12)
    log_probs = hierarchical_log_probs(scores, parents, 10)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(3), atol=1e-5)
    vehicles = [0, 1, 8, 9]
    p_vehicles = torch.softmax(scores[:, 10:12], dim=1)[:, 0]
    p_airplane_given_vehicle = torch.softmax(scores[:, vehicles], dim=1)[:, 0]
    assert torch.allclose(log_probs[:, 0].exp(), p_vehicles * p_airplane_given_vehicle, atol=1e-5)
    head = LearntPrototypes(6, 10, class_costs=cifar10_tree()[0], class_parents=parents, hierarchical_inference=True,
                            soft_labels=True)
    assert head.prototypes.shape == (12, 6) and torch.allclose(head(torch.randn(2, 6)).exp().sum(1), torch.ones(2))
    assert head.regularization().item() > 0


def test_self_attention_starts_as_the_identity_and_sym_uses_a_symmetric_weight():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4)
    block = SimpleSelfAttention(8)
    assert torch.equal(block(x), x), "gamma = 0: the identity"
    block.gamma.data.fill_(0.5)
    assert not torch.allclose(block(x), x)
    symmetric = SimpleSelfAttention(8, sym=True).eval()  # eval: spectral norm's power iteration stands still
    symmetric.gamma.data.fill_(1.0)
    got = symmetric(x)
    normalised = symmetric.conv.weight.detach()[:, :, 0]  # W / sigma(W), as spectral norm computed it for this forward
    assert not torch.allclose(normalised, normalised.T)
    weight = (normalised + normalised.T) / 2
    flat = x.flatten(2)
    expected = torch.bmm(torch.bmm(flat, flat.transpose(1, 2)), F.conv1d(flat, weight[:, :, None])) + flat
    assert torch.allclose(got, expected.view_as(x), atol=1e-4)
    symmetric.train()
    for _ in range(30):  # spectral norm: one power iteration per training forward, towards sigma(W)
        symmetric(x)
    normalised = symmetric.conv.weight.detach()[:, :, 0]
    assert torch.linalg.matrix_norm(normalised, ord=2) == pytest.approx(1.0, abs=1e-2), "spectrally normalised"


@pytest.mark.parametrize("network", ["mobilenet", "resnet18", "efficientnet", "googlenet", "shufflenet", "densenet"])
def test_self_attention_in_every_network_keeps_the_paper_counts_without_it(network):
    plain = build_model(network, "encoder_memory", 10)
    with_block = build_model(network, "encoder_memory", 10, self_attention="last_stage")
    channels = with_block.encoder.self_attention.conv.in_channels
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(with_block) == count(plain) + channels * channels + 1  # spectral norm's u and v are buffers
    with torch.no_grad():  # gamma = 0: the same outputs as without the block
        with_block.load_state_dict({**plain.state_dict(), **{k: v for k, v in with_block.state_dict().items()
                                                            if "self_attention" in k}})
        images, memory = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
        assert torch.allclose(with_block.eval()(images, memory), plain.eval()(images, memory), atol=1e-5)


@pytest.mark.parametrize("extra,expected", [
    ("heads: {hierarchy: cifar10, hierarchical_inference: true}\ndataset_name: CIFAR10\n"
     "CIFAR10: {num_classes: 10, num_epochs: 1, mem_examples: 20}\n", None),
    ("heads: {hierarchy: cifar10}\n", "'cifar10' is the tree of CIFAR-10's classes (vehicles and animals), which are "
                                       "not DIGITS's: use it with CIFAR10 or CINIC10"),
    ("heads: {hierarchy: " + "{csv}" + "}\n", "the class metric must be symmetric"),
    ("heads: {hierarchical_inference: true}\n", "hierarchical_inference needs a class tree"),
    ("heads: {prototype_distance: manhattan}\n", "prototype_distance: 'manhattan' is not one of"),
])
def test_bad_class_metrics_are_config_errors(tmp_path, extra, expected):
    csv = tmp_path / "D.csv"
    csv.write_text("\n".join(",".join("1" if j > i else "0" for j in range(10)) for i in range(10)))
    path = write_config(tmp_path, "\n" + extra.replace("{csv}", str(csv)))
    if expected is None:
        assert load_config(path).model_options()["class_parents"][:2] == [10, 10]
    else:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_config(path)


def test_mlp_hidden_sets_the_memory_heads_hidden_layer_and_null_keeps_the_papers():
    for modality, inputs, paper in (("encoder_memory", 2 * 1024, 4 * 1024), ("memory", 1024, 2 * 1024)):
        for setting, hidden in (([], paper), (["heads.mlp_hidden=64"], 64)):
            options = load_config(TINY, {}, setting).model_options()
            mlp = build_model("shufflenet", modality, 10, **options).head.classifier
            assert (mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features) == (inputs, hidden, 10)
    for bad in ("0", "70000", "1.5"):
        with pytest.raises(ConfigError, match="heads.mlp_hidden: "):
            load_config(TINY, {}, [f"heads.mlp_hidden={bad}"])


def test_a_bad_metric_is_refused_by_train_py_before_any_data_are_read(tmp_path):
    (tmp_path / "D.csv").write_text("0,1\n1,0\n")
    result = run_script("train.py", "--modality=prototypes", f"--config={TINY}", f"--output_dir={tmp_path}",
                        f"--set=heads.hierarchy={tmp_path / 'D.csv'}", check=False)
    assert result.returncode != 0 and "the class metric is 2 x 2 but the dataset has 10 classes" in result.stderr
    assert "Device:" not in result.stdout and "Traceback" not in result.stderr


CIFAR_LIKE = ("--dataset=CIFAR10", "--set=download=false", "--set=dataset_dir={data}",
              "--set=CIFAR10={num_classes: 10, num_epochs: 1, mem_examples: 20, val_examples: 40}")


@pytest.mark.parametrize("modality,flags", [(m, ()) for m in NEW_HEADS] + [
    ("encoder_memory", ("--set=self_attention=last_stage",)),
    ("encoder_memory", ("--set=self_attention=reference",)),
    ("prototypes", ("--set=heads.hierarchy=cifar10", "--set=heads.hierarchical_inference=true", *CIFAR_LIKE)),
])
def test_train_then_eval_round_trip(tmp_path, modality, flags):
    from test_datasets import write_cifar_folder

    if "--dataset=CIFAR10" in flags:  # CIFAR-10's class tree needs CIFAR-10's classes: 200 generated images
        write_cifar_folder(tmp_path / "data", n=40)
    flags = [flag.replace("{data}", str(tmp_path / "data")) for flag in flags]
    small = [SMALL_MLP] if modality in ("memory", "encoder_memory") else []
    out = run_script("train.py", f"--modality={modality}", f"--config={TINY}", f"--output_dir={tmp_path}", *flags,
                     *small).stdout
    dataset = "CIFAR10" if "--dataset=CIFAR10" in flags else "DIGITS"
    checkpoint = tmp_path / dataset / modality / "shufflenet" / "128" / "1.pt"
    record = json.loads((checkpoint.parent / "1.json").read_text())
    assert f"Accuracy {record['accuracy']:.2f}" in out and len(record["draw_accuracies"]) == (
        TINY_DRAWS if head_entry(modality).uses_memory else 1)
    evaluated = run_script("eval.py", f"--path_model={checkpoint}").stdout
    assert accuracy_in(evaluated) == pytest.approx(record["accuracy"], abs=0.005), "the checkpoint reloads the same"
