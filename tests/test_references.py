"""Our competitors against their reference implementations: the numbers of tests/reference/fixtures.json were
computed by the reference code itself (tests/reference/make_fixtures.py, from fetched copies), and ours must give
them. Where there is no reference to run, a hand computation."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import datasets
from architectures import build_model
from architectures.deepncm import DeepNCM
from architectures.matching import MatchingHead
from architectures.memory import pairwise_distance
from architectures.metric_guidance import soft_label_loss
from architectures.prototypes import HypersphericalPrototypes, LearntPrototypes, prototype_distances
from architectures.self_attention import SimpleSelfAttention
from architectures.vit import ViT
from explanations import counterfactuals

FIXTURES = json.loads((Path(__file__).parent / "reference" / "fixtures.json").read_text())


def tensors(mapping):
    return {key: torch.tensor(value) for key, value in mapping.items()}


def test_matching_networks_equal_the_papers_modules():
    ref = FIXTURES["matching"]
    dim = len(ref["queries"][0])
    head = MatchingHead(dim, ref["classes"], matching_steps=2)
    head.g.load_state_dict(tensors(ref["g"]))
    head.f.load_state_dict(tensors(ref["f"]))
    log_prediction, attention = head(torch.tensor(ref["queries"]), torch.tensor(ref["memory"]),
                                     torch.tensor(ref["memory_labels"]), return_weights=True)
    assert torch.allclose(log_prediction, torch.tensor(ref["log_prediction"]), atol=1e-6)
    assert torch.allclose(attention, torch.tensor(ref["attention"]), atol=1e-6)
    assert head.loss(log_prediction, torch.tensor(ref["labels"])).item() == pytest.approx(ref["loss"], abs=1e-6)


@pytest.mark.parametrize("form", ["plain", "sym"])
def test_simple_self_attention_equals_sdorias_block_spectral_norm_included(form):
    """The same weights (spectral norm's u and v included) give the same outputs, in training (one power iteration)
    and in evaluation. With sym, the reference's symmetrisation is overwritten by its spectral norm: its outputs
    equal the plain block's, which is why ours symmetrises on its own terms (tested in test_heads.py)."""
    ref = FIXTURES["simple_self_attention"][form]
    block = SimpleSelfAttention(4, ks=1, sym=False)
    block.load_state_dict(tensors(ref["state_dict"]))
    x = torch.tensor(ref["x"])
    assert torch.allclose(block.train()(x), torch.tensor(ref["train_output"]), atol=1e-5)
    assert torch.allclose(block.eval()(x), torch.tensor(ref["eval_output"]), atol=1e-5)
    plain = FIXTURES["simple_self_attention"]["plain"]
    assert torch.allclose(torch.tensor(ref["eval_output"]), torch.tensor(plain["eval_output"]), atol=1e-6)


def test_self_attention_reference_placement_is_in_the_residual_branch_of_the_first_stage():
    """ResNet-18: relu(sa(bn2(conv2(relu(bn1(conv1(x)))))) + x) in layer1's last block, as sdoria's XResNet."""
    torch.manual_seed(0)
    model = build_model("resnet18", "std", 10, self_attention="reference")
    encoder = model.encoder.eval()
    assert encoder.self_attention_position == "layer1.1.bn2"
    encoder.self_attention.gamma.data.fill_(0.3)
    block, x = encoder.layer1[1], torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        branch = block.bn2.forward(block.conv2(F.relu(block.bn1(block.conv1(x)))))  # forward(): no hook
        expected = F.relu(encoder.self_attention(branch) + x)
        assert torch.allclose(block(x), expected, atol=1e-5)
    for network, position in (("mobilenet", "layers.0.bn3"), ("wide-resnet", "layer1.3.residual"),
                              ("shufflenet", "layer1"), ("densenet", "dense1"), ("efficientnet", "layers.0"),
                              ("googlenet", "b3"), ("resnet34", "layer1.2.bn2")):
        built = build_model(network, "std", 10, self_attention="reference")
        assert built.encoder.self_attention_position == position, network


def test_vit_equals_omihub777s_with_mapped_weights():
    ref = FIXTURES["vit"]
    s = ref["settings"]
    state = tensors(ref["state_dict"])
    encoder = ViT(patches_per_side=s["patch"], width=s["hidden"], layers=s["num_layers"], heads=s["head"],
                  mlp_hidden=s["mlp_hidden"]).eval()
    ours = {k: v for k, v in state.items() if not k.startswith("fc.")}
    ours.update({"norm.weight": state["fc.0.weight"], "norm.bias": state["fc.0.bias"]})
    encoder.load_state_dict(ours)
    head = nn.Linear(s["hidden"], s["num_classes"])
    head.load_state_dict({"weight": state["fc.1.weight"], "bias": state["fc.1.bias"]})
    with torch.no_grad():
        logits = head(encoder(torch.tensor(ref["x"])))
    assert torch.allclose(logits, torch.tensor(ref["logits"]), atol=1e-5)


def test_hyperspherical_scores_and_loss_equal_a_hand_computation():
    head = HypersphericalPrototypes(2, 3, prototype_dim=2)
    with torch.no_grad():
        head.projection.weight.copy_(torch.eye(2))
        head.projection.bias.zero_()
        head.prototypes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    features = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    scores = head(features)
    cos = torch.tensor([[1.0, 0.0, -1.0], [2 ** -0.5, 2 ** -0.5, -(2 ** -0.5)]])
    assert torch.allclose(scores, -(1 - cos) ** 2, atol=1e-6)
    labels = torch.tensor([1, 0])  # (1 - 0)^2 + (1 - 1/sqrt 2)^2, summed over the batch as Mettes et al.
    expected = 1.0 + (1 - 2 ** -0.5) ** 2
    assert head.loss(scores, labels).item() == pytest.approx(expected, rel=1e-6)
    mean = HypersphericalPrototypes(2, 3, prototype_dim=2, hyperspherical_reduction="mean")
    assert mean.loss(scores, labels).item() == pytest.approx(expected / 2, rel=1e-6)


def test_soft_labels_equal_torch_prototypes():
    ref = FIXTURES["soft_labels"]
    costs, logits, labels = (torch.tensor(ref[k]) for k in ("costs", "logits", "labels"))
    targets = torch.softmax(-ref["beta"] * costs[labels] / costs.max(), dim=1)
    assert torch.allclose(targets, torch.tensor(ref["targets"]), atol=1e-6)
    assert soft_label_loss(logits, labels, costs, ref["beta"]).item() == pytest.approx(ref["loss"], abs=1e-6)


def test_cfproto_loss_terms_and_step_equal_the_papers_port():
    ref = FIXTURES["cfproto_step"]
    encoder = nn.Conv2d(3, 1, 3, padding=1)
    encoder.load_state_dict(tensors(ref["encoder"]))
    original, adv, prototype = (torch.tensor(ref[k]) for k in ("original", "adv", "prototype"))
    adv_s = torch.tensor(ref["adv_s"], requires_grad=True)
    settings = counterfactuals.CFProtoSettings()
    terms = counterfactuals.loss_terms(adv_s, original, encoder, prototype, settings)
    for name in ("l1", "l2", "proto"):
        assert torch.allclose(terms[name], torch.tensor(ref[name]), rtol=1e-5), name
    gradient, = torch.autograd.grad((settings.beta * terms["l1"] + terms["l2"] + terms["proto"]).sum(), adv_s)
    assert torch.allclose(gradient, torch.tensor(ref["gradient"]), rtol=1e-4, atol=1e-5)
    new_adv, new_adv_s = counterfactuals.fista_step(adv, adv_s.detach(), original, gradient, 0,
                                                    tuple(ref["feature_range"]), settings)
    assert torch.allclose(new_adv, torch.tensor(ref["new_adv"]), atol=1e-5)
    assert torch.allclose(new_adv_s, torch.tensor(ref["new_adv_s"]), atol=1e-5)


def test_autoaugment_draws_a_sub_policy_per_image_seeded():
    augment = datasets.AutoAugment("cifar10")
    torch.manual_seed(0)
    chosen = augment.sub_policies(64)
    assert len(chosen.unique()) > 10, "the images of one batch get different sub-policies"
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    first = augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(3))), "seeded by the run's generator"
    state = torch.get_rng_state()
    augment(images, torch.Generator().manual_seed(4))
    assert torch.equal(state, torch.get_rng_state()), "the global RNG is left as it was"
    per_batch = datasets.AutoAugment("cifar10", per_image=False)
    assert per_batch(images, torch.Generator().manual_seed(3)).shape == first.shape


def far_prototypes_fixture():
    """Prototypes far from the origin (as learnt ones and class means drift) and features next to their own:
    |x|^2 + |p|^2 - 2 x.p cancels catastrophically in bfloat16."""
    torch.manual_seed(0)
    prototypes = 60.0 + torch.randn(10, 64)
    features = prototypes + 0.05 * torch.randn(10, 64)
    return features, prototypes


def test_distances_under_bf16_autocast_keep_the_fp32_ranking():
    features, prototypes = far_prototypes_fixture()
    truth = torch.arange(10)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the fixture does flip the ranking in bf16 arithmetic
        naive = (features.pow(2).sum(1, keepdim=True) + prototypes.pow(2).sum(1)[None] - 2 * features @ prototypes.T)
    assert (naive.argmin(1) != truth).sum() >= 3, "the fixture must be one where bf16 flips the nearest prototype"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for distance in ("euclidean", "squared_euclidean", "cosine"):
            assert torch.equal(prototype_distances(features, prototypes, distance).argmin(1), truth), distance
        for distance in ("l2", "cosine"):
            assert torch.equal(pairwise_distance(features, prototypes, distance).argmin(1), truth), distance
        head = LearntPrototypes(64, 10)
        head.prototypes.data.copy_(prototypes)
        assert torch.equal(head(features.bfloat16()).argmax(1), truth)
        deepncm = DeepNCM(64, 10)
        deepncm.means.copy_(prototypes)
        assert torch.equal(deepncm(features.bfloat16()).argmax(1), truth)


def _deepncm_on_a_rank(rank, init_file, results):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        head = DeepNCM(2, 2)
        features = torch.tensor([[1.0, 0.0], [3.0, 0.0]]) if rank == 0 else torch.tensor([[0.0, 2.0], [0.0, 4.0]])
        head.update(features, torch.tensor([0, 0]) if rank == 0 else torch.tensor([0, 1]))
        results.put((rank, head.means.tolist(), head.counts.tolist()))
    finally:
        dist.destroy_process_group()


def test_deepncm_class_means_hold_every_ranks_share_of_the_batch(tmp_path):
    """Under torchrun each rank sees a share of the batch: the class means are folded from the sums and counts
    of every rank (class 0: (1, 0), (3, 0), (0, 2); class 1: (0, 4)), the same on both ranks."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_deepncm_on_a_rank, args=(str(tmp_path / "init"), results), nprocs=2, start_method="spawn")
    got = dict((rank, (means, counts)) for rank, means, counts in (results.get(timeout=60) for _ in range(2)))
    for means, counts in got.values():
        assert counts == [3.0, 1.0]
        assert torch.allclose(torch.tensor(means), torch.tensor([[4 / 3, 2 / 3], [0.0, 4.0]]))
