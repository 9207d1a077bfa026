"""The six encoders and the one composition, against the paper's reference architectures."""
import json
import sys

import pytest
import torch
from torch import nn

from architectures import (Classifier, build_model, create_encoder, head_entry, list_encoders, list_heads,
                           load_paper_state_dict, register_encoder, to_paper_state_dict)
from architectures import registry
from conftest import PAPER_ARCHITECTURES, REPO

NETWORKS = ["mobilenet", "resnet18", "efficientnet", "googlenet", "shufflenet", "densenet"]
FEATURE_DIMS = {"mobilenet": 1280, "resnet18": 512, "efficientnet": 320, "googlenet": 1024, "shufflenet": 1024,
                "densenet": 384}
MODALITIES = ("std", "memory", "encoder_memory")  # the paper's
COMBINATIONS = [(n, m) for n in NETWORKS for m in MODALITIES]


@pytest.fixture(scope="module")
def reference():
    if not PAPER_ARCHITECTURES.exists():
        pytest.skip(f"{PAPER_ARCHITECTURES} is absent")
    return json.loads(PAPER_ARCHITECTURES.read_text())


def test_all_networks_registered():
    assert set(NETWORKS) <= set(list_encoders())


@pytest.mark.parametrize("name", NETWORKS)
def test_encoder_maps_images_to_features(name):
    encoder = create_encoder(name).eval()
    assert encoder.feature_dim == FEATURE_DIMS[name]
    with torch.no_grad():
        assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, FEATURE_DIMS[name])


@pytest.mark.parametrize("name,modality", COMBINATIONS)
def test_forward_backward(name, modality):
    torch.manual_seed(0)
    model = build_model(name, modality, num_classes=10)
    assert type(model) is Classifier  # one class for every modality
    images, memory = torch.randn(2, 3, 16, 16), torch.randn(4, 3, 16, 16)  # the paper's 32 px: the test above
    if modality == "std":
        logits = model(images)
    else:
        logits, weights = model(images, memory, return_weights=True)
        assert weights.shape == (2, 4)
        torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    # gradients reach the whole head and the encoder's first layer
    for parameter in model.head.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_shufflenet_s_channel_shuffle_keeps_channels_last_and_its_values():
    """The shuffle of a channels_last tensor stays channels_last (no layout round trip at the next convolution) and
    moves the values as the NCHW shuffle does; the whole model computes the same loss and gradients either way."""
    from architectures import shufflenet
    images = torch.randn(3, 8, 5, 4)
    stacked = torch.cat([images, images + 1], 1).contiguous(memory_format=torch.channels_last)[:, 2:14]  # a view
    for tensor in (images.contiguous(memory_format=torch.channels_last), stacked):
        shuffled = shufflenet.channel_shuffle(tensor)
        assert torch.equal(shuffled, shufflenet.channel_shuffle(tensor.contiguous()))
        assert torch.equal(shuffled[:, 1::2], tensor[:, tensor.size(1) // 2:]), "the second half lands in odd slots"
        if tensor.is_contiguous(memory_format=torch.channels_last):
            assert shuffled.is_contiguous(memory_format=torch.channels_last)
    results = []
    for keep in (True, False):
        torch.manual_seed(0)
        model = build_model("shufflenet", "std", 10).to(memory_format=torch.channels_last)
        if not keep:  # the plain reshape, which returns NCHW
            original = shufflenet.channel_shuffle
            shufflenet.channel_shuffle = lambda x, groups=2: x.view(x.size(0), groups, x.size(1) // groups,
                                                                    *x.shape[2:]).transpose(1, 2).reshape(x.shape)
        try:
            batch = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
            loss = nn.functional.cross_entropy(model(batch.contiguous(memory_format=torch.channels_last)),
                                               torch.arange(6))
            loss.backward()
        finally:
            if not keep:
                shufflenet.channel_shuffle = original
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_content_weights_have_exact_zeros_with_trained_like_features():
    model = build_model("shufflenet", "encoder_memory", 10).eval()
    features = torch.randn(8, 1024)
    memory_features = torch.cat([features[:2] + 0.01 * torch.randn(2, 1024), torch.randn(30, 1024)])
    _, weights = model.classify(features, memory_features, return_weights=True)
    torch.testing.assert_close(weights.sum(1), torch.ones(8))
    assert (weights == 0).any(1).all(), "every row must contain exact zeros"


def test_encoder_and_head_alone_equal_the_full_model():
    torch.manual_seed(0)
    model = build_model("densenet", "encoder_memory", 10).eval()
    images, memory = torch.randn(3, 3, 32, 32), torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        direct = model(images, memory)
        cached = model.classify(model.encode(images), model.encode(memory))
    torch.testing.assert_close(cached, direct)


@pytest.mark.parametrize("name,modality", COMBINATIONS)
def test_paper_parameter_count_and_checkpoint_layout(reference, name, modality):
    expected = reference[name][modality]
    model = build_model(name, modality, num_classes=expected["output_shape"][1])
    assert sum(p.numel() for p in model.parameters()) == expected["params"]
    # A state dict with the paper's exact keys and shapes (random values) loads, and the values land.
    generator = torch.Generator().manual_seed(1)
    paper_state = {key: (torch.randint(0, 100, shape, generator=generator) if key.endswith("num_batches_tracked")
                         else torch.randn(shape, generator=generator))
                   for key, shape in expected["state_dict"].items()}
    load_paper_state_dict(model, paper_state)
    exported = to_paper_state_dict(model)
    assert list(exported) == list(expected["state_dict"])
    for key, value in paper_state.items():
        assert torch.equal(exported[key], value.to(exported[key].dtype)), key


def test_paper_checkpoint_for_another_model_is_refused(reference):
    shapes = reference["resnet18"]["std"]["state_dict"]
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    with pytest.raises(ValueError, match="missing keys.*check --model and --modality"):
        load_paper_state_dict(build_model("mobilenet", "std", 10), state)
    state["linear.weight"] = torch.zeros(7, 512)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_paper_state_dict(build_model("resnet18", "std", 10), state)


def test_errors():
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; registered encoders are \["):
        build_model("vgg", "std", 10)
    with pytest.raises(ValueError, match=r"unknown modality 'mlp'"):
        build_model("shufflenet", "mlp", 10)
    model = build_model("shufflenet", "memory", 10)
    with pytest.raises(ValueError, match="needs a memory set"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="4-D batch"):
        model(torch.randn(3, 32, 32), torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match="a std model has no content weights"):
        build_model("shufflenet", "std", 10).classify(torch.randn(2, 1024), return_weights=True)
    with pytest.raises(ValueError, match="takes no memory set"):
        build_model("shufflenet", "std", 10).classify(torch.randn(2, 1024), torch.randn(3, 1024))


def test_registering_a_new_encoder_composes_with_every_head(monkeypatch):
    monkeypatch.setattr(registry, "_ENCODERS", dict(registry._ENCODERS))

    @register_encoder("tiny")
    class Tiny(nn.Module):
        feature_dim = 6

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    for modality in MODALITIES:
        model = build_model("tiny", modality, 3)
        out = model(torch.randn(2, 3, 32, 32)) if modality == "std" else model(torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32))
        assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("tiny")(Tiny)


def test_the_design_pages_example_head_is_one_file_that_composes_with_every_encoder(monkeypatch):
    """docs/design.md's example head, run as written: registration makes it a modality of build_model."""
    page = (REPO / "docs" / "design.md").read_text()
    block = page.split("<!-- example head: tests/test_models.py runs this block -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setattr(registry, "_HEADS", dict(registry._HEADS))
    namespace = {"__name__": "architectures.cosine_head", "__package__": "architectures"}
    exec(compile(block, "docs/design.md example head", "exec"), namespace)
    assert "cosine" in list_heads() and not head_entry("cosine").uses_memory
    for name in NETWORKS:
        model = build_model(name, "cosine", 4)
        logits = model(torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 4) and logits.abs().max() <= 10.0 + 1e-4
        logits.sum().backward()
        assert model.head.weight.grad is not None and next(model.encoder.parameters()).grad is not None
    with pytest.raises(ValueError, match="already registered"):
        exec(compile(block, "docs/design.md example head", "exec"), dict(namespace))


def test_the_docs_parameter_table_is_the_registry_s():
    sys.path.insert(0, str(REPO / "bench"))
    from parameters import parameter_table

    assert parameter_table() in (REPO / "docs" / "replicating.md").read_text(), \
        "docs/replicating.md's parameter table is stale: rerun python -m bench.parameters"
