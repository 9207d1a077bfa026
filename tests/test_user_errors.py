"""Every bad input a user can type ends in one clear line (no traceback), naming what was wrong."""
import pytest

from architectures import build_model
from core.checkpoints import Checkpoint, RunMetadata
from helpers import TINY, run_script


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    folder = root / "DIGITS" / "std" / "shufflenet" / "128"
    folder.mkdir(parents=True)
    Checkpoint.save(folder / "1.pt", build_model("shufflenet", "std", 10),
                    RunMetadata("shufflenet", "std", "DIGITS", 10, 128, seed=0))
    (root / "random.pt").write_bytes(bytes(range(256)) * 8)
    (root / "latin1.yaml").write_bytes("model: shufflenet # caf\xe9\n".encode("latin-1"))
    broken = root / "broken" / "DIGITS" / "std" / "shufflenet" / "128"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text("{not json")
    return root


CASES = [
    (("eval.py", "--path_model={root}/DIGITS/std/shufflenet/128"), "is a folder, not a checkpoint file: give one "
                                                                    "*.pt file, or evaluate every model in the "
                                                                    "folder with eval_dir.py"),
    (("eval.py", "--path_model={root}/random.pt"), "is not a PyTorch checkpoint"),
    (("eval.py", "--path_model={root}/DIGITS/std/shufflenet/128/1.pt", "--draws=0"), "--draws"),
    (("eval_dir.py", "--path={root}/DIGITS/std/shufflenet/128/1.pt"), "is a file: evaluate it with eval.py"),
    (("eval_dir.py", "--path={root}", "--batch_size_test=0"), "--batch_size_test"),
    (("generate_memory_images.py", "--path_model={root}/x.pt", "--num_images=0"), "--num_images"),
    (("generate_heatmaps.py", "--path_model={root}/x.pt", "--n_steps=0"), "--n_steps"),
    (("generate_heatmaps.py", "--path_model={root}/x.pt", "--num_batches=some"), "--num_batches must be"),
    (("generate_heatmaps.py", "--path_model={root}/DIGITS/std/shufflenet/128/1.pt"), "is a std model"),
    (("train.py", "--modality=std", "--log_interval=0"), "--log_interval"),
    (("train.py", "--modality=std", "--config={root}/latin1.yaml"), "is not UTF-8 text"),
    (("train.py", "--modality=std", "--config={root}"), "is a folder; give a YAML file"),
    (("train.py", "--modality=std", f"--config={TINY}", "--output_dir={root}/broken", "--continue_train"),
     "results.json is not valid JSON"),
    (("train.py", "--modality=std", f"--config={TINY}", "--output_dir={root}/new", "--train_examples=1200"),
     "train_examples=1200 is more than the 1097 training images left after holding out val_examples=200"),
    (("train.py", "--modality=std", f"--config={TINY}", "--output_dir={root}/new", "--runs_from=2", "--runs_to=1"),
     "--runs_from=2 is after --runs_to=1"),
    (("train.py", "--modality=std", f"--config={TINY}", "--output_dir={root}/new", "--run=4"),
     "runs [4] are outside 1..1"),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a[:2]).split("=")[0] + f"-{i}" for i, (a, _) in
                                                       enumerate(CASES)])
def test_one_clear_line(files, args, expected):
    result = run_script(*[a.format(root=files) for a in args], check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
