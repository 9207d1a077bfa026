"""precision: auto and memory_format: auto chosen by measuring: the choice rule, the cache (measured once, then
read; one measurement when runs start together), what a run records and says."""
import json
import multiprocessing
import time

import pytest
import torch

from core import autotune, runtime
from core.config import load_config
from helpers import TINY, run_script


def test_bf16_is_chosen_only_when_it_is_clearly_faster():
    assert autotune.choose({"fp32 channels_last": 1.0, "fp32 contiguous": 1.2, "bf16 channels_last": 0.95}) == \
        "fp32 channels_last", "5% faster: not worth changing the numbers"
    assert autotune.choose({"fp32 channels_last": 1.0, "bf16 channels_last": 0.85}) == "bf16 channels_last"
    assert autotune.choose({"fp32 channels_last": 1.3, "fp32 contiguous": 1.0}) == "fp32 contiguous"


def test_contiguous_is_chosen_only_when_it_is_clearly_faster():
    """Memory formats change the numbers too: a near tie keeps channels_last, in each precision."""
    assert autotune.choose({"fp32 channels_last": 1.0, "fp32 contiguous": 0.97}) == "fp32 channels_last"
    assert autotune.choose({"fp32 channels_last": 1.0, "fp32 contiguous": 0.9}) == "fp32 contiguous"
    assert autotune.choose({"fp32 channels_last": 1.0, "bf16 channels_last": 0.8, "bf16 contiguous": 0.77}) == \
        "bf16 channels_last"
    assert autotune.choose({"fp32 channels_last": 1.0, "bf16 contiguous": 0.8}) == "bf16 contiguous", \
        "a lever alone in its precision (the other not measured within the budget) is taken as it is"
    assert autotune.choose({"fp32 contiguous": 1.0, "fp32 channels_last": 1.03, "bf16 channels_last": 0.91}) == \
        "bf16 channels_last", "bf16 is compared with the fp32 lever that would run (channels_last), not contiguous"


def test_the_candidates_follow_the_settings_and_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    names = [autotune.lever_name(e) for e in autotune.candidates("auto", "auto", cpu)]
    assert names == ["fp32 channels_last", "fp32 contiguous", "bf16 channels_last", "bf16 contiguous"]
    assert [autotune.lever_name(e) for e in autotune.candidates("fp32", "auto", cpu)] == ["fp32 channels_last",
                                                                                         "fp32 contiguous"]
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)  # emulated bf16 is never a candidate
    assert [autotune.lever_name(e) for e in autotune.candidates("auto", "contiguous", cpu)] == ["fp32 contiguous"]


def fake_steps(seconds_by_lever, calls):
    def step_for(execution):
        name = autotune.lever_name(execution)

        def step():
            calls.append(name)
            time.sleep(seconds_by_lever[name])
        return step
    return step_for


def test_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    config = load_config(TINY, {}, ["precision=auto", "memory_format=auto", f"autotune_cache={tmp_path / 'c.json'}"])
    speeds = {"fp32 channels_last": 0.05, "fp32 contiguous": 0.015, "bf16 channels_last": 0.01,
              "bf16 contiguous": 0.08}
    calls = []
    execution, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, calls))
    assert info["source"] == "measured" and autotune.lever_name(execution) == "bf16 channels_last"
    assert calls.count("bf16 contiguous") == 1, "a candidate far behind after its warm-up is not timed further"
    assert calls[:4] == ["fp32 channels_last", "bf16 channels_last", "fp32 contiguous", "bf16 contiguous"], \
        "warm-ups first: the rule's guess (fp32 for shufflenet), the other precision, then contiguous"
    assert calls[4:6] == ["bf16 channels_last", "fp32 contiguous"], \
        "then rounds interleaving the candidates, the fastest of each precision first"
    assert calls.count("fp32 contiguous") == 1 + autotune.SHORT_ROUNDS, "steps this short get more rounds"
    assert info["timed"] == ["bf16 channels_last", "fp32 contiguous"] and \
        info["not_measured"] == [] and info["rounds"] == autotune.SHORT_ROUNDS
    calls.clear()
    again, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, calls))
    assert info["source"] == "cache" and again == execution and not calls, "a later run costs nothing"
    _, info = autotune.resolve(config, "std", torch.device("cpu"), 32, 0, fake_steps(speeds, calls))
    assert info["source"] == "measured", "other batch shapes are another entry"
    explicit = load_config(TINY)  # precision fp32, memory_format channels_last
    execution, info = autotune.resolve(explicit, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, calls))
    assert info["source"] == "set" and autotune.lever_name(execution) == "fp32 channels_last"


def test_short_rounds_are_repeated_within_the_budget():
    order = levers("fp32 channels_last", "bf16 channels_last")
    clock = FakeClock()
    result = autotune.measure(order, clock.steps({"fp32 channels_last": 0.2, "bf16 channels_last": 0.15}), budget=15,
                              clock=clock)
    assert result["rounds"] == autotune.SHORT_ROUNDS and clock.now == pytest.approx(0.35 * (1 + autotune.SHORT_ROUNDS))
    clock = FakeClock()
    result = autotune.measure(order, clock.steps({"fp32 channels_last": 0.2, "bf16 channels_last": 0.15}), budget=1.5,
                              clock=clock)
    assert result["rounds"] == 3 and clock.now <= 1.5, "the budget still bounds them"
    clock = FakeClock()
    result = autotune.measure(order, clock.steps({"fp32 channels_last": 0.6, "bf16 channels_last": 0.5}), budget=15,
                              clock=clock)
    assert result["rounds"] == autotune.TIMED_STEPS, "a round of 1.1 s is long enough"
    order = levers("fp32 channels_last", "fp32 contiguous")
    clock = FakeClock()
    result = autotune.measure(order, clock.steps({"fp32 channels_last": 0.2, "fp32 contiguous": 0.3}), budget=15,
                              clock=clock)
    assert result["rounds"] == 1 and result["timed"] == ["fp32 channels_last", "fp32 contiguous"], \
        "a round that leaves one lever in contention ends the measurement"


def test_the_rule_s_guess_is_measured_first(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    levers = autotune.candidates("auto", "auto", torch.device("cpu"))
    assert [autotune.lever_name(e) for e in autotune.measure_order(levers, "mobilenet")] == \
        ["bf16 channels_last", "fp32 channels_last", "bf16 contiguous", "fp32 contiguous"]
    assert [autotune.lever_name(e) for e in autotune.measure_order(levers, "efficientnet")] == \
        ["fp32 channels_last", "bf16 channels_last", "fp32 contiguous", "bf16 contiguous"]


class FakeClock:
    """Steps advance a clock instead of sleeping: the budget's decisions are exact."""

    def __init__(self):
        self.now, self.calls = 0.0, []

    def __call__(self):
        return self.now

    def steps(self, seconds_by_lever, first_step_extra=0.0):
        def step_for(execution):
            name, first = autotune.lever_name(execution), [True]

            def step():
                self.calls.append(name)
                self.now += seconds_by_lever[name] + (first_step_extra if first[0] else 0.0)
                first[0] = False
            return step
        return step_for


def levers(*names):
    return [autotune._execution(name) for name in names]


def test_the_budget_limits_warm_ups_and_rounds():
    order = levers("bf16 channels_last", "fp32 channels_last", "bf16 contiguous", "fp32 contiguous")
    speeds = {"bf16 channels_last": 2.0, "fp32 channels_last": 3.0, "bf16 contiguous": 2.5, "fp32 contiguous": 4.0}
    clock = FakeClock()
    result = autotune.measure(order, clock.steps(speeds), budget=0, clock=clock)
    assert result["not_measured"] == [] and result["rounds"] == autotune.TIMED_STEPS
    assert clock.calls[4:8] == ["bf16 channels_last", "fp32 channels_last", "bf16 contiguous", "fp32 contiguous"], \
        "no budget: every candidate warmed up and timed"
    assert clock.calls[8:10] == ["bf16 channels_last", "fp32 channels_last"] and clock.now == \
        2 * sum(speeds.values()) + 5.0 * (autotune.TIMED_STEPS - 1), \
        "after a round, the levers 10% behind their precision's fastest are not timed again"

    clock = FakeClock()
    result = autotune.measure(order, clock.steps(speeds), budget=10, clock=clock)
    # warm-ups: bf16 CL (2), fp32 CL (3) always; bf16 contiguous fits (5 + 3 <= 10): 7.5; fp32 contiguous would not
    assert result["not_measured"] == ["fp32 contiguous"]
    # a round needs the fastest of each precision: 2 + 3 > 10 - 7.5, so the warm-ups decide
    assert result["rounds"] == 0 and result["timed"] == [] and result["timings"]["bf16 channels_last"] == 2.0
    assert clock.now <= 10 and autotune.choose(result["timings"]) == "bf16 channels_last"

    clock = FakeClock()
    result = autotune.measure(order, clock.steps(speeds), budget=14, clock=clock)
    # warm-ups 2 + 3 + 2.5 = 7.5, fp32 contiguous would end at 10.5 (judged by the slowest warm-up, 3): it fits
    # -> 11.5; one round of the two fastest (5) fits in what is left (2.5)? no: the warm-ups decide
    assert result["not_measured"] == [] and result["rounds"] == 0

    clock = FakeClock()
    result = autotune.measure(order, clock.steps(speeds), budget=17, clock=clock)
    # 11.5 of warm-ups, then one round of bf16 CL and fp32 CL (5 s: 16.5), bf16 contiguous would pass 17
    assert result["timed"] == ["bf16 channels_last", "fp32 channels_last"] and result["rounds"] == 1
    assert clock.now == 16.5


def test_the_first_of_each_precision_is_measured_even_past_the_budget():
    """A heavy network whose every step is longer than the budget still compares fp32 with bf16."""
    order = levers("bf16 channels_last", "fp32 channels_last", "bf16 contiguous", "fp32 contiguous")
    speeds = {"bf16 channels_last": 7.0, "fp32 channels_last": 13.0, "bf16 contiguous": 12.0, "fp32 contiguous": 18.0}
    clock = FakeClock()
    result = autotune.measure(order, clock.steps(speeds), budget=15, clock=clock)
    assert clock.calls == ["bf16 channels_last", "fp32 channels_last"] and result["rounds"] == 0
    assert result["not_measured"] == ["bf16 contiguous", "fp32 contiguous"]
    assert autotune.choose(result["timings"]) == "bf16 channels_last"


def test_a_run_over_budget_says_what_it_left_unmeasured(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    config = load_config(TINY, {}, ["precision=auto", "memory_format=auto", "autotune_budget=0.05",
                                    f"autotune_cache={tmp_path / 'c.json'}"])
    speeds = {"fp32 channels_last": 0.04, "fp32 contiguous": 0.04, "bf16 channels_last": 0.04,
              "bf16 contiguous": 0.04}
    _, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, []))
    assert info["not_measured"] == ["fp32 contiguous", "bf16 contiguous"] and info["budget"] == 0.05
    assert "fp32 contiguous, bf16 contiguous not measured within autotune_budget 0.05 s" in autotune.describe(info)
    entry = list(json.loads((tmp_path / "c.json").read_text()).values())[0]
    assert entry["not_measured"] == info["not_measured"] and entry["budget"] == 0.05
    with pytest.raises(Exception, match="autotune_budget: must be >= 0"):
        load_config(TINY, {}, ["autotune_budget=-1"])


def _resolve_in_a_process(cache, log):
    config = load_config(TINY, {}, ["precision=auto", "memory_format=auto", f"autotune_cache={cache}"])
    speeds = {"fp32 channels_last": 0.05, "fp32 contiguous": 0.02}
    calls = []
    runtime.native_bf16 = lambda: False
    execution, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, calls))
    with open(log, "a") as f:
        f.write(json.dumps([info["source"], autotune.lever_name(execution)]) + "\n")


def test_runs_that_start_together_measure_once_and_agree(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_resolve_in_a_process, args=(tmp_path / "c.json", tmp_path / "log"))
                 for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    results = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert sorted(source for source, _ in results) == ["cache", "cache", "measured"]
    assert {choice for _, choice in results} == {"fp32 contiguous"}


@pytest.mark.slow
def test_a_run_says_and_records_how_its_levers_were_chosen(tmp_path):
    args = ["train.py", "--modality=std", f"--config={TINY}", "--precision=auto", "--memory_format=auto",
            f"--set=autotune_cache={tmp_path / 'c.json'}"]
    first = run_script(*args, f"--output_dir={tmp_path / 'a'}").stdout
    assert "(measured now in " in first
    record = json.loads((tmp_path / "a" / "DIGITS" / "std" / "shufflenet" / "128" / "1.json").read_text())
    assert record["autotune"]["source"] == "measured" and record["autotune"]["choice"] == \
        f"{record['precision']} {record['memory_format']}"
    second = run_script(*args, f"--output_dir={tmp_path / 'b'}").stdout
    assert "(measured earlier on this machine: autotune cache)" in second
    assert json.loads((tmp_path / "b" / "DIGITS" / "std" / "shufflenet" / "128" / "1.json").read_text())[
        "autotune"]["source"] == "cache"


def test_pinning_what_auto_chose_is_the_same_computation(tmp_path):
    """A folder made with auto resumes under a config that pins what its runs resolved to (their record's
    precision, memory format and fp32 layers): nothing is retrained or moved aside; another lever is refused."""
    folder = tmp_path / "DIGITS" / "std" / "shufflenet" / "40"
    common = ["train.py", "--modality=std", f"--config={TINY}", "--train_examples=40", f"--output_dir={tmp_path}",
              f"--set=autotune_cache={tmp_path / 'c.json'}"]
    run_script(*common, "--precision=auto", "--memory_format=auto")
    record = json.loads((folder / "1.json").read_text())
    layers = f"[{', '.join(record['fp32_layers'])}]" if record["fp32_layers"] else "none"
    pins = [f"--precision={record['precision']}", f"--memory_format={record['memory_format']}",
            f"--set=depthwise_fp32={layers}"]
    written = (folder / "1.json").stat().st_mtime_ns
    out = run_script(*common, *pins, "--continue_train").stdout
    assert "Restarting training process after run 1" in out and (folder / "1.json").stat().st_mtime_ns == written
    from core.experiment import ExperimentFolder
    config = load_config(TINY, {"train_examples": 40}, [arg.lstrip("-").replace("set=", "") for arg in pins])
    assert ExperimentFolder(folder).differences(config, "std") == {}
    other = "contiguous" if record["memory_format"] == "channels_last" else "channels_last"
    refused = run_script(*common, *pins[:1], f"--memory_format={other}", *pins[2:], "--continue_train", check=False)
    assert refused.returncode != 0 and f"memory_format was 'auto', now '{other}'" in refused.stderr, refused.stderr


def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    cache = tmp_path / "c.json"
    cache.write_text("{not json")
    config = load_config(TINY, {}, ["precision=auto", "memory_format=auto", f"autotune_cache={cache}"])
    speeds = {"fp32 channels_last": 0.02, "fp32 contiguous": 0.01}
    _, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, []))
    assert info["source"] == "measured" and list(json.loads(cache.read_text()).values())[0]["choice"] == \
        "fp32 contiguous"


def test_pinned_levers_are_recorded_as_set_on_a_gpu_too():
    """Runs with both levers pinned said 'the CUDA rule' on a GPU (the README's CIFAR-10 subset records)."""
    pinned = load_config(TINY, {}, ["precision=bf16", "memory_format=channels_last"])
    execution, info = autotune.resolve(pinned, "std", torch.device("cuda"), 64, 0, fake_steps({}, []))
    assert info == {"source": "set"} and autotune.lever_name(execution) == "bf16 channels_last"
    ruled = load_config(TINY, {}, ["precision=auto", "memory_format=auto"])
    assert autotune.resolve(ruled, "std", torch.device("cuda"), 64, 0, fake_steps({}, []))[1] == {"source": "rule"}


def test_an_autotune_cache_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    args = ["train.py", "--modality=std", f"--config={TINY}", "--precision=auto", "--memory_format=auto"]
    folder = run_script(*args, f"--set=autotune_cache={tmp_path}", f"--output_dir={tmp_path / 'a'}", check=False)
    assert folder.returncode == 1 and folder.stderr.strip() == (f"error: autotune_cache={tmp_path} is a folder: give a "
                                                                f"file path, e.g. {tmp_path / 'autotune.json'}")
    (tmp_path / "file").write_text("")
    under_a_file = run_script(*args, f"--set=autotune_cache={tmp_path / 'file' / 'c.json'}",
                              f"--output_dir={tmp_path / 'b'}", check=False)
    assert under_a_file.returncode == 1 and "folder of autotune_cache" in under_a_file.stderr
    assert len(under_a_file.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists(), "nothing written"


def test_the_choices_bench_counts_fresh_measurements_and_refuses_bad_input():
    """bench/autotune_choices.py (the README's count of the quickstart's choices): one table row per choice, the
    tries of a modality summing to --tries; a bad config or count ends in one line."""
    out = run_script("bench/autotune_choices.py", f"--config={TINY}", "--modalities=std", "--tries=2").stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| std | ")]
    assert rows and sum(int(row[2].split(" of ")[0]) for row in rows) == 2, out
    assert all(row[1].split()[0] in ("fp32", "bf16") for row in rows), out
    missing = run_script("bench/autotune_choices.py", "--config=no/such.yaml", "--tries=1", check=False)
    assert missing.returncode != 0 and "config file no/such.yaml does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    zero = run_script("bench/autotune_choices.py", "--tries=0", check=False)
    assert zero.returncode != 0 and "--tries must be > 0" in zero.stderr


@pytest.mark.parametrize("model,settings", [
    ("resnet18", ["self_attention=reference"]), ("mobilenet", ["self_attention=last_stage"]),
    ("resnet18", ["self_attention=layer2", "self_attention_ks=3"]), ("resnet18", ["self_attention=layer3", "self_attention_sym=true"]),
    ("vit", ["vit_final_norm=false", "image_size=32"]), ("timm/test_efficientnet", [])])
def test_auto_measures_every_encoder_option_on_copies_of_the_probe(tmp_path, model, settings):
    """The autotune times copies of the probe model: a fresh build with its state dict, which every module supports
    (a deep copy failed on SimpleSelfAttention's spectrally normalised weight, no graph leaf)."""
    from core.execution import choose_execution, make_model

    config = load_config(TINY, {"model": model, "precision": "auto", "memory_format": "auto"},
                         [f"autotune_cache={tmp_path / 'cache.json'}", "autotune_budget=0.1", *settings])
    probe = make_model(config, "encoder_memory")
    execution, tuning = choose_execution(config, "encoder_memory", torch.device("cpu"), 4, 4, probe=probe)
    assert tuning["source"] in ("measured", "rule") and execution.memory_format in (torch.channels_last,
                                                                                   torch.contiguous_format)


def test_a_copy_of_a_probe_that_trained_a_step_is_a_fresh_build_with_its_weights():
    """After a training step, SimpleSelfAttention's spectrally normalised weight is no graph leaf: a deep copy
    fails ('Only Tensors created explicitly by the user...'); the autotune's copies are fresh builds instead."""
    import copy

    from core.execution import fresh_copy, make_model

    config = load_config(TINY, {"model": "resnet18"}, ["self_attention=reference"])
    probe = make_model(config, "encoder_memory").train()
    probe(torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)).sum().backward()
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(probe)
    twin = fresh_copy(probe, config, "encoder_memory")
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in probe.state_dict().items())
