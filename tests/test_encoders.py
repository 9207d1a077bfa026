"""The paper's other encoders and its Vision Transformer; the ViT recipe (Adam, warm-up cosine, label smoothing,
AutoAugment)."""
import json
import math
import sys

import pytest
import torch

import datasets
from architectures import Classifier, build_head, build_model, create_encoder, list_heads
from architectures.vit import ViT
from conftest import REPO
from core.config import load_config
from helpers import run_script
from core.training import make_optimizer, make_scheduler

NEW_ENCODERS = {"wide-resnet": 640, "resnet34": 512, "shufflenet1x": 1024, "densenet169": 1664, "vit": 384}
# std / memory / encoder_memory parameter counts of the paper's own definitions (its architectures/wide_resnet.py
# wrn28_10, memory_wrn28_10, encoder_wrn28_10; resnet.py ResNet34; shufflenet.py ShuffleNetV2(net_size=1)),
# counted by instantiating them; and of omihub777/ViT-CIFAR's ViT with the paper's settings.
PAPER_COUNTS = {"wide-resnet": {"std": 36_479_194, "memory": 37_306_074, "encoder_memory": 39_777_754},
                "resnet34": {"std": 21_282_122}, "shufflenet1x": {"std": 1_263_854}, "vit": {"std": 6_268_810}}


@pytest.mark.parametrize("name", NEW_ENCODERS)
def test_every_head_on_the_new_encoders(name):
    torch.manual_seed(0)
    size = 32 if name == "vit" else 16  # the CNNs take any size; 16 px costs a quarter of 32 (WRN-28-10: 5 GFLOPs)
    images, memory, labels = torch.randn(2, 3, size, size), torch.randn(3, 3, size, size), torch.tensor([0, 1, 2])
    encoder = create_encoder(name)  # built once (WRN-28-10 has 36 M parameters), each head put on it in turn
    assert encoder.feature_dim == NEW_ENCODERS[name]
    for modality in list_heads():
        model = Classifier(encoder, build_head(modality, encoder.feature_dim, 10), modality).eval()
        with torch.no_grad():
            outputs = model(images, memory, labels) if model.uses_memory else model(images)
        assert outputs.shape == (2, 10), (name, modality)


@pytest.mark.parametrize("name", PAPER_COUNTS)
def test_parameter_counts_equal_the_papers_code(name):
    for modality, expected in PAPER_COUNTS[name].items():
        assert sum(p.numel() for p in build_model(name, modality, 10).parameters()) == expected, modality


def test_vit_patches_are_an_explicit_cut_of_the_image():
    vit = ViT()
    image = torch.randn(2, 3, 32, 32)
    patches = vit.patches(image)
    expected = torch.stack([torch.stack([image[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(0, 2, 3, 1).flatten(1)
                                         for c in range(8)], dim=1) for r in range(8)], dim=1).flatten(1, 2)
    assert patches.shape == (2, 64, 48) and torch.equal(patches, expected)


def test_vit_keeps_the_reference_quirks():
    vit = ViT()
    assert vit.enc[0].msa.scale == 384 ** 0.5, "scores divided by the whole width"
    gelus = [m for m in vit.enc[0].mlp if isinstance(m, torch.nn.GELU)]
    assert len(gelus) == 2, "GELU after both linear layers of the MLP"
    assert vit.cls_token.std() > 0.5 and vit.pos_emb.std() > 0.5, "initialised from a standard normal"


def test_vit_without_its_final_layernorm_gives_the_raw_class_token():
    """The paper's code fed its memory ViTs the class token before the final LayerNorm: ``vit_final_norm: false``."""
    torch.manual_seed(0)
    with_norm = ViT()
    config = load_config("tests/tiny_digits.yaml", {"model": "vit"}, ["vit_final_norm=false", "image_size=32"])
    model = build_model("vit", "encoder_memory", 10, **config.model_options())
    model.encoder.load_state_dict({k: v for k, v in with_norm.state_dict().items() if not k.startswith("norm.")})
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        raw = model.encode(images)
        tokens = torch.cat([with_norm.cls_token.expand(2, -1, -1), with_norm.emb(with_norm.patches(images))], 1)
        expected = with_norm.enc(tokens + with_norm.pos_emb)[:, 0]
        assert torch.allclose(raw, expected) and torch.allclose(with_norm(images), with_norm.norm(raw))
    assert sum(p.numel() for p in model.encoder.parameters()) == sum(p.numel() for p in with_norm.parameters()) - 768


def test_encoder_options_are_checked():
    with pytest.raises(ValueError, match="encoder 'resnet18' takes no option"):
        create_encoder("resnet18", final_norm=False)
    with pytest.raises(ValueError, match="vit_final_norm: false applies to the vit encoder only"):
        load_config("tests/tiny_digits.yaml", {}, ["vit_final_norm=false"])
    assert load_config("tests/tiny_digits.yaml", {"model": "vit"}, ["image_size=32"]).model_options()["encoder_options"] == {}


def test_the_vit_starts_with_nearly_the_same_features_for_every_image():
    """Why the ViT's memory heads need a longer run than the CNNs' (README): at initialisation its class token is
    almost image-independent, so cosine attention over the memory starts near uniform."""
    sys.path.insert(0, str(REPO / "bench"))
    from feature_similarity import digits_images, mean_pairwise_cosine

    assert mean_pairwise_cosine(torch.eye(3)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(torch.ones(3, 4)) == pytest.approx(1.0)
    images = digits_images()[:64]
    similarity = {}
    for name in ("vit", "mobilenet"):
        torch.manual_seed(0)
        with torch.no_grad():
            similarity[name] = mean_pairwise_cosine(build_model(name, "std", 10).train().encode(images))
    assert similarity["vit"] > 0.99 and similarity["mobilenet"] < 0.95, similarity


def test_feature_similarity_refuses_what_it_cannot_measure(tmp_path):
    from core.checkpoints import Checkpoint, RunMetadata

    config = load_config("config/vit.yaml", {"dataset": "CIFAR10"})
    Checkpoint.save(tmp_path / "1.pt", build_model("vit", "std", 10),
                    RunMetadata("vit", "std", "CIFAR10", 10, 1000, 0, run=1, config=config.to_dict()))
    for arguments, message in ((["--networks", f"--checkpoints={tmp_path / '1.pt'}"], "was trained on CIFAR10"),
                               (["--networks", f"--checkpoints={tmp_path / 'none.pt'}"], "none.pt"),
                               (["--networks", "vgg"], "invalid choice: 'vgg'")):
        result = run_script("bench/feature_similarity.py", *arguments, check=False)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_warmup_cosine_learning_rates():
    config = load_config("config/vit.yaml", {"epochs": 20})
    assert config.dataset.warmup_epochs == 1  # 5 of 200, scaled
    config = load_config("config/vit.yaml")
    optimizer = make_optimizer(torch.nn.Linear(2, 2), config.optimizer)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.9, 0.999)
    scheduler = make_scheduler(optimizer, config.dataset)
    rates = []
    for _ in range(config.dataset.num_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3 / 5) and rates[4] == pytest.approx(1e-3)
    assert rates[5] == pytest.approx(1e-3) and rates[100] < 1e-3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5), "min_lr after the last epoch"
    assert all(a >= b for a, b in zip(rates[5:], rates[6:])), "decreasing after the warm-up"


def test_the_vit_codes_warmup_schedule_behind_its_switch():
    """GradualWarmupScheduler(multiplier=1, total_epoch=5) over CosineAnnealingLR(T_max=200, eta_min=1e-5)."""
    config = load_config("config/vit.yaml", {}, ["SVHN.scheduler=warmup_cosine_code"])
    optimizer = make_optimizer(torch.nn.Linear(2, 2), config.optimizer)
    scheduler = make_scheduler(optimizer, config.dataset)
    rates = []
    for _ in range(config.dataset.num_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert rates[:7] == pytest.approx([0.0, 2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 1e-3]), "lr 0 first, lr twice"
    assert rates[7] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 200)))
    assert rates[-1] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 193 / 200)))
    assert rates[-1] > 1e-5 * 1.2, "the cosine has not reached min_lr at the last epoch"


def test_autoaugment_keeps_dtype_shape_and_range_and_is_seeded():
    pytest.importorskip("kornia")
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("CIFAR10"), train, test, 256, 200, seed=0,
                                         augment="autoaugment")
    plain = datasets.ExperimentData.build(datasets.get_spec("CIFAR10"), train, test, 256, 200, seed=0, augment="flip")
    first, _ = next(data.batches(128, torch.Generator().manual_seed(3)))
    again, _ = next(data.batches(128, torch.Generator().manual_seed(3)))
    other, _ = next(data.batches(128, torch.Generator().manual_seed(4)))
    flipped, _ = next(plain.batches(128, torch.Generator().manual_seed(3)))
    spec = data.spec
    low, high = [datasets.normalize(torch.full((1, 3, 1, 1), v, dtype=torch.uint8), spec.mean, spec.std) for v in (0, 255)]
    assert first.shape == flipped.shape and first.dtype == flipped.dtype == torch.float32
    assert (first >= low - 1e-5).all() and (first <= high + 1e-5).all()
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, flipped)
    before = torch.get_rng_state()
    next(data.batches(128, torch.Generator().manual_seed(3)))
    assert torch.equal(before, torch.get_rng_state()), "the global RNG is left untouched"


@pytest.mark.slow
def test_vit_trains_with_its_recipe_scaled_down_evaluates_and_is_explained(tmp_path):
    """config/vit.yaml's recipe on a folder of 16 real digits and 20 test images (the ViT's 1.6 GFLOPs an image
    make DIGITS' 500 test images 17 s of evaluation on one thread)."""
    from PIL import Image

    train, test = datasets.load_dataset("DIGITS", None)
    for split, source, count in (("train", train, 4), ("test", test, 5)):
        for digit in (0, 1, 7, 9):
            folder = tmp_path / "DIR" / split / f"digit_{digit}"
            folder.mkdir(parents=True)
            for i, image in enumerate(source.images[source.labels == digit][:count]):
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:02d}.png")
    config = tmp_path / "vit.yaml"
    config.write_text((REPO / "config" / "vit.yaml").read_text() + "\nfolder: {num_epochs: 200, "
                      "scheduler: warmup_cosine, "
                      "warmup_epochs: 5, min_lr: 1e-5, mem_examples: 10, val_examples: 0}\n")
    out = run_script("train.py", "--modality=encoder_memory", f"--config={config}", "--dataset=folder",
                     f"--dataset_dir={tmp_path / 'DIR'}", "--train_examples=16", "--runs=1",
                     "--epochs=1", "--set=batch_size_train=16", "--set=batch_size_test=250",
                     "--precision=fp32", "--memory_format=contiguous",  # no autotune (tests/test_autotune.py has it)
                     f"--output_dir={tmp_path}").stdout
    checkpoint = tmp_path / "folder" / "encoder_memory" / "vit" / "16" / "1.pt"
    record = json.loads((checkpoint.parent / "1.json").read_text())
    assert record["config"]["optimizer"]["name"] == "adam" and record["config"]["augment"] == "autoaugment"
    assert record["config"]["datasets"]["folder"]["scheduler"] == "warmup_cosine"
    assert record["config"]["label_smoothing"] == 0.1
    assert f"Accuracy {record['accuracy']:.2f}" in out and "Epoch 1 " in out
    # the ViT is explained, Integrated Gradients included (eval.py's round trip is the same code for every encoder:
    # tests/test_scripts.py)
    out = run_script("generate_heatmaps.py", f"--path_model={checkpoint}", "--batch_size_test=1", "--n_steps=4",
                     f"--output_dir={tmp_path / 'heat'}").stdout
    assert "image 0: IG convergence delta" in out and len(list((tmp_path / "heat").rglob("*.png"))) == 1


def test_self_attention_where_there_is_no_feature_map_is_a_config_error(tmp_path):
    result = run_script("train.py", "--modality=std", "--config=tests/tiny_digits.yaml", "--model=vit",
                        "--set=image_size=32", "--set=self_attention=last_stage", f"--output_dir={tmp_path}", check=False)
    assert result.returncode != 0 and "cannot be built with this config" in result.stderr
    assert "[B, C, H, W] feature map" in result.stderr and "Traceback" not in result.stderr
