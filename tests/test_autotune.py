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
    assert calls[:4] == list(speeds) and calls[4:6] == ["fp32 contiguous", "bf16 channels_last"], \
        "warm-ups first, then rounds interleaving the candidates"
    assert calls.count("fp32 contiguous") == 1 + autotune.TIMED_STEPS
    calls.clear()
    again, info = autotune.resolve(config, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, calls))
    assert info["source"] == "cache" and again == execution and not calls, "a later run costs nothing"
    _, info = autotune.resolve(config, "std", torch.device("cpu"), 32, 0, fake_steps(speeds, calls))
    assert info["source"] == "measured", "other batch shapes are another entry"
    explicit = load_config(TINY)  # precision fp32, memory_format channels_last
    execution, info = autotune.resolve(explicit, "std", torch.device("cpu"), 64, 0, fake_steps(speeds, calls))
    assert info["source"] == "set" and autotune.lever_name(execution) == "fp32 channels_last"


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
    assert "(measured earlier on this machine (autotune cache))" in second
    assert json.loads((tmp_path / "b" / "DIGITS" / "std" / "shufflenet" / "128" / "1.json").read_text())[
        "autotune"]["source"] == "cache"


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
