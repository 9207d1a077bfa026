"""The same seed and config give the same numbers in separate processes (the quickstart, scaled down): one forked
from the tests' script server, one a fresh interpreter (its own hash seed, imports and memory layout)."""
import json

import pytest

from helpers import run_script


@pytest.mark.slow
def test_quickstart_scaled_down_gives_identical_numbers_in_two_processes(tmp_path):
    numbers = []
    for attempt, fresh in (("first", False), ("second", True)):
        run_script("train.py", "--modality=encoder_memory", "--config=config/digits.yaml", "--epochs=1",
                   "--train_examples=128", "--set=eval_draws=2", "--set=image_size=16",  # 16 px: 3 s less a run
                   f"--output_dir={tmp_path / attempt}",
                   fresh_process=fresh)
        results = json.loads((tmp_path / attempt / "DIGITS/encoder_memory/shufflenet/128/results.json").read_text())
        numbers.append([(r["accuracy"], r["draw_accuracies"], r["loss"]) for r in results["runs"]])
    assert numbers[0] == numbers[1]
