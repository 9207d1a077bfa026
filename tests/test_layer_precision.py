"""Depthwise convolutions in fp32 inside a bf16 run on a CPU (core/layer_precision.py): the layer computes exactly
as nn.Conv2d outside autocast and in fp32 inside it, which layers are found and swapped, how the measurement
decides, and how the autotune caches and a run applies and records the answer."""
import json
import re

import pytest
import torch
from torch import nn

from architectures import build_model
from core import autotune, layer_precision, runtime
from core.config import ConfigError, load_config
from helpers import TINY, run_script


def test_outside_autocast_the_fp32_layer_is_nn_conv2d_bit_for_bit():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    images = torch.randn(4, 8, 9, 9)
    expected = conv(images)
    conv.__class__ = layer_precision.Fp32Conv2d
    assert torch.equal(conv(images), expected)


def test_under_bf16_autocast_it_computes_in_fp32_and_returns_bf16():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    images = torch.randn(4, 8, 9, 9).bfloat16().requires_grad_()
    exact = nn.functional.conv2d(images.detach().float(), conv.weight.detach(), None, 2, 1, 1, 8)
    conv.__class__ = layer_precision.Fp32Conv2d
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = conv(images)
    assert output.dtype == torch.bfloat16, "the layers after it run as autocast makes them"
    assert torch.equal(output, exact.bfloat16()), "computed in fp32 with fp32 weights, rounded once"
    output.float().sum().backward()
    assert images.grad.dtype == torch.bfloat16 and conv.weight.grad.dtype == torch.float32
    assert conv.weight.grad.abs().sum() > 0


def test_the_depthwise_convolutions_are_found_and_swapped_without_changing_the_state_dict():
    model = build_model("mobilenet", "encoder_memory", 10)
    layers = layer_precision.depthwise(model)
    assert len(layers) == 17 and all(name.endswith(".conv2") for name in layers), "one per inverted residual block"
    assert not layer_precision.depthwise(build_model("resnet18", "std", 10)), "no grouped convolutions"
    grouped = nn.Sequential(nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 1))
    assert list(layer_precision.depthwise(grouped)) == ["1"], "grouped but not depthwise, and dense: left alone"
    keys = list(model.state_dict())
    chosen = ["encoder.layers.3.conv2", "encoder.layers.6.conv2"]
    layer_precision.apply(model, chosen)
    assert {name for name, layer in layers.items() if type(layer) is layer_precision.Fp32Conv2d} == set(chosen)
    assert list(model.state_dict()) == keys
    layer_precision.apply(model, ())
    assert all(type(layer) is nn.Conv2d for layer in layers.values())
    with pytest.raises(ValueError, match="not depthwise convolutions of this model"):
        layer_precision.apply(model, ["encoder.conv1"])


def test_the_measurement_puts_in_fp32_the_layers_faster_there(monkeypatch):
    model = build_model("mobilenet", "encoder_memory", 10)
    images, memory = torch.randn(6, 3, 32, 32), torch.randn(4, 3, 32, 32)
    forward = lambda: model(images, memory, torch.arange(4) % 10)  # noqa: E731
    calls = layer_precision.input_shapes(model, forward, torch.bfloat16)
    assert calls["encoder.layers.0.conv2"] == [(6, 32, 32, 32), (4, 32, 32, 32)], "the batch and the memory set"
    timed = []

    def fake_time(layer, shape, memory_format, dtype, clock):
        timed.append((layer.in_channels, layer.stride, shape))
        slow = layer.stride == (2, 2)  # a strided depthwise convolution: bf16 slower, as oneDNN 3.12's
        return {"bf16": 0.1 if slow else 0.01, "fp32": 0.02}
    monkeypatch.setattr(layer_precision, "time_problem", fake_time)
    found = layer_precision.measure(model, forward, torch.channels_last)
    strided = sorted(name for name, layer in layer_precision.depthwise(model).items() if layer.stride == (2, 2))
    assert sorted(found["fp32"]) == strided == ["encoder.layers.13.conv2", "encoder.layers.3.conv2",
                                                "encoder.layers.6.conv2"]
    assert all(shape[0] == 6 for _, _, shape in timed), "each layer at its largest input"
    assert found["inputs"]["encoder.layers.0.conv2"] == (6, 32, 32, 32)
    assert len(timed) == len(set(timed)) < 17, "layers of the same configuration and input are timed once"
    assert found["timings"]["encoder.layers.5.conv2"] == {"bf16": 10.0, "fp32": 20.0}


def test_a_layer_is_timed_in_both_precisions_after_a_warm_up_each(monkeypatch):
    """The "bf16" call computes under autocast on bf16 input, the "fp32" one in fp32 with autocast off; each is
    warmed up once, and only the timed calls count."""
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
    computed, real_conv = [], nn.Conv2d._conv_forward

    def recording(self, input, weight, bias):
        computed.append((input.dtype, torch.is_autocast_enabled("cpu")))
        return real_conv(self, input, weight, bias)
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", recording)
    monkeypatch.setattr(layer_precision, "ROUNDS", 1)
    ticks = iter([0.0, 5.0, 10.0, 17.0, 20.0, 21.0, 30.0, 33.0])  # warm-ups 5 and 7 s, timed calls 1 and 3 s
    seconds = layer_precision.time_problem(conv, (2, 4, 8, 8), torch.channels_last, torch.bfloat16,
                                           clock=lambda: next(ticks))
    assert seconds == {"bf16": 1.0, "fp32": 3.0}, "the warm-up calls are not counted"
    assert computed == [(torch.bfloat16, True), (torch.float32, False)] * 2
    assert type(conv) is nn.Conv2d, "the model's layer is left as it was"


def test_the_autotune_measures_the_layers_of_a_pinned_bf16_run_once_and_caches_them(tmp_path):
    config = load_config(TINY, {}, ["precision=bf16", f"autotune_cache={tmp_path / 'c.json'}"])
    asked = []

    def layers_for(execution):
        asked.append(autotune.lever_name(execution))
        return {"fp32": ["encoder.layers.3.conv2"], "timings": {"encoder.layers.3.conv2": {"bf16": 9.0, "fp32": 1.0}},
                "seconds": 0.5}
    no_steps = lambda execution: pytest.fail("set levers are not timed")  # noqa: E731
    execution, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=layers_for)
    assert info["source"] == "measured" and execution.fp32_layers == ("encoder.layers.3.conv2",)
    assert asked == ["bf16 channels_last"]
    assert autotune.describe(info).startswith("as set; depthwise convolutions measured now in"), \
        "the header does not say the set levers were measured"
    again, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=layers_for)
    assert info["source"] == "cache" and again == execution and asked == ["bf16 channels_last"]
    assert autotune.describe(info) == "as set; depthwise convolutions from the autotune cache"
    entry = next(iter(json.loads((tmp_path / "c.json").read_text()).values()))
    assert entry["layer_timings_ms"]["bf16 channels_last"]["encoder.layers.3.conv2"] == {"bf16": 9.0, "fp32": 1.0}
    for setting in ("none", "all"):  # nothing to measure: the cache is not opened, the layers come from the setting
        other = load_config(TINY, {}, ["precision=bf16", f"depthwise_fp32={setting}",
                                       f"autotune_cache={tmp_path / 'other.json'}"])
        fixed = (lambda execution: {"fp32": ["a"]}) if setting == "all" else None
        execution, info = autotune.resolve(other, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=fixed)
        assert info["source"] == "set" and execution.fp32_layers == (("a",) if setting == "all" else ())
        assert not (tmp_path / "other.json").exists()
    fp32 = load_config(TINY, {}, ["precision=fp32", f"autotune_cache={tmp_path / 'other.json'}"])
    execution, _ = autotune.resolve(fp32, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=layers_for)
    assert execution.fp32_layers == () and asked == ["bf16 channels_last"], "fp32 runs have no bf16 layers"


def test_measured_levers_carry_their_layers_into_the_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    config = load_config(TINY, {}, ["precision=auto", "memory_format=auto", f"autotune_cache={tmp_path / 'c.json'}",
                                    "autotune_budget=0"])
    built, asked = {}, []

    def step_for(execution):
        built[autotune.lever_name(execution)] = execution.fp32_layers
        return lambda: None

    def layers_for(execution):
        asked.append(autotune.lever_name(execution))
        return {"fp32": ["x.conv2"], "timings": {"x.conv2": {"bf16": 2.0, "fp32": 1.0}}, "seconds": 0.0}
    execution, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, step_for, layers_for=layers_for)
    assert built == {"bf16 channels_last": ("x.conv2",), "fp32 channels_last": (), "bf16 contiguous": ("x.conv2",),
                     "fp32 contiguous": ()}, "the bf16 levers are timed with their fp32 layers"
    assert asked == ["bf16 channels_last"], "measured once, with the first bf16 lever, for both memory formats"
    assert info["fp32_layers"] == {"bf16 channels_last": ["x.conv2"], "bf16 contiguous": ["x.conv2"]}
    assert list(info["layer_timings_ms"]) == ["bf16 channels_last"]
    cached, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, step_for, layers_for=layers_for)
    assert info["source"] == "cache" and cached == execution
    assert cached.fp32_layers == (("x.conv2",) if execution.autocast else ())


def test_depthwise_fp32_all_builds_one_model_for_every_lever_and_the_layers(tmp_path, monkeypatch):
    """train.py's autotune with both memory formats to time and every depthwise convolution in fp32: one probe model
    is built; each lever's timed steps run on a copy of it, and it lists the layers."""
    from core import execution as execution_module
    built = []
    make_model = execution_module.make_model
    monkeypatch.setattr(execution_module, "make_model", lambda *args: built.append(args) or make_model(*args))
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    config = load_config(TINY, {}, ["precision=bf16", "memory_format=auto", "depthwise_fp32=all",
                                    f"autotune_cache={tmp_path / 'c.json'}"])
    execution, info = execution_module.choose_execution(config, "std", torch.device("cpu"), 8, 0)
    assert info["source"] == "measured" and len(execution.fp32_layers) == 19
    assert sorted(info["timings"]) == ["bf16 channels_last", "bf16 contiguous"]
    assert len(built) == 1, built


def test_a_network_without_depthwise_convolutions_is_not_run_to_measure_them():
    model = build_model("resnet18", "std", 10)
    found = layer_precision.measure(model, lambda: pytest.fail("no forward pass"), torch.channels_last)
    assert found == {"fp32": [], "timings": {}, "inputs": {}, "seconds": 0.0}


def test_the_lever_keeps_its_layers_through_names():
    execution = runtime.Execution(torch.bfloat16, torch.channels_last, ["a.conv2"])
    assert runtime.Execution.from_names(execution.names()) == execution
    assert execution.describe() == "bf16 (1 depthwise convolution in fp32)"
    old_state = {"precision": "bf16", "memory_format": "channels_last"}  # written before fp32_layers existed
    assert runtime.Execution.from_names(old_state).fp32_layers == ()


def test_a_wrong_setting_is_refused():
    with pytest.raises(ConfigError, match="depthwise_fp32: 'some' is not one of"):
        load_config(TINY, {}, ["depthwise_fp32=some"])


def test_a_bf16_run_applies_and_records_its_fp32_layers(tmp_path):
    """train.py, ShuffleNetV2 pinned to bf16 with every depthwise convolution in fp32: the header and the record say
    so (a resumed run reads them back: Execution.from_names, above)."""
    out = run_script("train.py", "--config=" + str(TINY), "--modality=std", "--epochs=1",
                     "--train_examples=40", f"--output_dir={tmp_path}", "--set=precision=bf16",
                     "--set=depthwise_fp32=all").stdout
    assert "Precision:bf16 (19 depthwise convolutions in fp32)" in out
    record = json.loads((tmp_path / "DIGITS" / "std" / "shufflenet" / "40" / "1.json").read_text())
    assert len(record["fp32_layers"]) == 19 and record["precision"] == "bf16"


def test_a_list_puts_those_layers_in_fp32_and_is_checked_against_the_model(tmp_path):
    """depthwise_fp32 as a list of layer names: those layers compute in fp32, as the header and record say, and the
    run's numbers are neither none's nor all's; a name the model lacks is refused before any folder is made."""
    losses = {}
    for name, setting in (("list", "[encoder.layer1.0.conv1, encoder.layer3.0.conv4]"), ("none", "none"),
                          ("all", "all")):
        out = run_script("train.py", "--config=" + str(TINY), "--modality=std", "--train_examples=40",
                         f"--output_dir={tmp_path / name}", "--set=precision=bf16",
                         f"--set=depthwise_fp32={setting}").stdout
        record = json.loads((tmp_path / name / "DIGITS" / "std" / "shufflenet" / "40" / "1.json").read_text())
        losses[name] = record["loss"]
        if name == "list":
            assert "Precision:bf16 (2 depthwise convolutions in fp32)" in out
            assert record["fp32_layers"] == ["encoder.layer1.0.conv1", "encoder.layer3.0.conv4"]
    assert losses["list"] not in (losses["none"], losses["all"]), losses
    wrong = run_script("train.py", "--config=" + str(TINY), "--modality=std", f"--output_dir={tmp_path / 'wrong'}",
                       "--set=precision=bf16", "--set=depthwise_fp32=[layer1.0.conv1]", check=False)
    assert wrong.returncode != 0 and "depthwise_fp32: ['layer1.0.conv1'] are not depthwise convolutions of the " \
        "shufflenet std model; it has ['encoder.layer1.0.conv1'," in wrong.stderr, wrong.stderr
    assert not (tmp_path / "wrong").exists(), "a refused config left a folder behind"
    for bad, problem in (("[1, 2]", "expected a name or a list of names"), ("[a, a]", "['a'] listed twice")):
        with pytest.raises(ConfigError, match=re.escape(f"depthwise_fp32: {problem}")):
            load_config(TINY, {}, [f"depthwise_fp32={bad}"])


def test_a_measured_run_repeats_with_its_fp32_layers_listed(tmp_path, monkeypatch):
    """What depthwise_fp32: auto measured, listed in the config (as the report writes it), computes the same run on a
    machine that would measure otherwise."""
    from core import runner
    measured = ["encoder.layer1.0.conv1", "encoder.layer2.0.conv4"]
    monkeypatch.setattr(layer_precision, "measure", lambda *args, **kwargs: {
        "fp32": measured, "timings": {name: {"bf16": 2.0, "fp32": 1.0} for name in measured}, "inputs": {},
        "seconds": 0.0})
    records = {}
    for name, setting in (("auto", "auto"), ("listed", f"[{', '.join(measured)}]")):
        config = load_config(TINY, {"train_examples": 40}, ["precision=bf16", f"depthwise_fp32={setting}",
                                                             "eval_draws=1", "heads.mlp_hidden=64",
                                                             f"autotune_cache={tmp_path / name / 'cache.json'}"])
        summary = runner.run_experiment(config, "encoder_memory", tmp_path / name)
        records[name] = summary["runs"][0]
        if name == "auto":  # the listed run must not measure: a measurement now would choose otherwise
            monkeypatch.setattr(layer_precision, "measure", lambda *args, **kwargs: pytest.fail("measured"))
    assert records["auto"]["fp32_layers"] == records["listed"]["fp32_layers"] == measured
    assert (records["listed"]["loss"], records["listed"]["accuracy"]) == (records["auto"]["loss"],
                                                                         records["auto"]["accuracy"])


def test_runs_saved_before_the_setting_existed_count_as_none():
    """Their grids are not 'changed' by the new default: they computed every layer as autocast made it."""
    from core.config import setting_differences
    for precision in ("auto", "bf16", "fp32"):
        saved = load_config(TINY, {}, [f"precision={precision}"]).to_dict()
        del saved["depthwise_fp32"]
        assert setting_differences(saved, load_config(TINY, {}, [f"precision={precision}", "depthwise_fp32=none"])) \
            == []
        assert setting_differences(saved, load_config(TINY, {}, [f"precision={precision}"])) == (
            [] if precision == "fp32" else ["depthwise_fp32 was 'none', now 'auto'"]), \
            "an fp32 run computes alike with any depthwise_fp32; an auto or bf16 run does not"


def test_a_saved_auto_equals_the_pins_of_what_every_run_resolved_it_to():
    from core.config import setting_differences
    saved = load_config(TINY, {}, ["precision=auto", "memory_format=auto"]).to_dict()
    bf16 = {"precision": "bf16", "memory_format": "channels_last", "fp32_layers": ["b", "a"]}
    pins = lambda *settings: load_config(TINY, {}, ["precision=bf16", "memory_format=channels_last", *settings])  # noqa
    assert setting_differences(saved, pins("depthwise_fp32=[a, b]"), [bf16, {**bf16, "fp32_layers": ["a", "b"]}]) == []
    assert setting_differences(saved, pins("depthwise_fp32=[a]"), [bf16]) == ["depthwise_fp32 was 'auto', now ['a']"]
    assert setting_differences(saved, pins("depthwise_fp32=none"), [{**bf16, "fp32_layers": []}]) == []
    assert setting_differences(saved, pins(), [bf16]) == [], "auto, measured once, stays what it measured"
    assert setting_differences(saved, pins("depthwise_fp32=[a, b]"), [bf16, {**bf16, "precision": "fp32"}]) == [
        "precision was 'auto', now 'bf16'"], "runs that resolved auto differently are not one computation"
    gpu_run = {"precision": "fp16", "memory_format": "channels_last", "fp32_layers": []}  # the CUDA rule's auto
    before_the_key = {key: value for key, value in saved.items() if key != "depthwise_fp32"}
    assert setting_differences(before_the_key, load_config(TINY, {}, ["precision=auto", "memory_format=auto"]),
                               [gpu_run]) == [], "fp16 runs never read depthwise_fp32: its new default changes nothing"
    assert setting_differences(before_the_key, load_config(TINY, {}, ["precision=auto", "memory_format=auto"]),
                               [bf16]) == ["depthwise_fp32 was 'none', now 'auto'"]
    fp32 = load_config(TINY, {}, ["precision=fp32", "memory_format=channels_last"])
    assert setting_differences(saved, fp32, [{**bf16, "precision": "fp32", "fp32_layers": []}]) == []
    assert setting_differences(saved, fp32, []) == [
        "depthwise_fp32 was 'auto', now None", "memory_format was 'auto', now 'channels_last'",
        "precision was 'auto', now 'fp32'"], "nothing says what auto chose"


def test_a_cached_answer_naming_layers_the_model_lacks_is_measured_again(tmp_path):
    """After the network's code changed (a researcher's edit), the cache's layer names would not apply."""
    config = load_config(TINY, {}, ["precision=bf16", f"autotune_cache={tmp_path / 'c.json'}"])
    measured = []

    def layers_for(execution):
        measured.append(1)
        return {"fp32": ["old.conv2"], "timings": {}, "seconds": 0.0}
    no_steps = lambda execution: pytest.fail("set levers are not timed")  # noqa: E731
    autotune.resolve(config, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=layers_for)
    _, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=layers_for,
                               layer_names=lambda: ["old.conv2", "other.conv2"])
    assert info["source"] == "cache" and len(measured) == 1
    _, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, no_steps, layers_for=layers_for,
                               layer_names=lambda: ["new.conv2"])
    assert info["source"] == "measured" and len(measured) == 2
