"""The memory as a tool for a small dataset: the audit of mislabeled training images (core/audit.py, audit.py) and the
support below which a prediction is unsupported (core/support.py), with the standard scores they are measured
against, each on cases whose answer is known."""
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

import datasets
from architectures import Classifier
from core import audit, support
from helpers import SMALL_MLP, TINY, memory_reading_head, run_script
from test_own_data import folder_config, write_folders


class MeanColour(nn.Module):
    """An encoder that sees only an image's mean colour: [N, 3, H, W] -> [N, 3]."""
    feature_dim = 3

    def forward(self, images):
        return images.mean((2, 3))


def colour_model() -> Classifier:
    """A memory-only head that reads the memory vector's channels as the classes' scores (red, green, blue)."""
    return Classifier(MeanColour(), memory_reading_head(3, 3, reads=3), "memory").eval()


def colour_data(per_class=20, seed=0):
    """Red, green and blue images of a few shades, their labels the colour; a plain normalisation."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for label in range(3):
        for _ in range(per_class):
            image = torch.zeros(3, 8, 8, dtype=torch.uint8)
            image[label] = 150 + int(torch.randint(0, 100, (1,), generator=generator))
            image[(label + 1) % 3] = int(torch.randint(0, 30, (1,), generator=generator))
            images.append(image)
            labels.append(label)
    train = datasets.ImageSet(torch.stack(images), torch.tensor(labels), ("red", "green", "blue"),
                              tuple(f"train/{i:03d}.png" for i in range(len(labels))))
    spec = datasets.get_spec("folder").normalized_with((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return datasets.ExperimentData.build(spec, train, train, datasets.ALL_TRAIN_EXAMPLES, 0, seed=seed,
                                         mem_examples=10)


def test_the_memory_ranks_the_images_flipped_on_purpose_first():
    data = colour_data()
    labels, flipped = audit.flip_labels(data.train_set.labels, data.subset, 0.1, 3, seed=1)
    noisy = data.with_train_labels(labels)
    assert len(flipped) == 6 and bool((labels[flipped] != data.train_set.labels[flipped]).all())
    folds = audit.stratified_folds(labels[noisy.subset], 5, seed=0)
    found = audit.out_of_fold([colour_model()] * 5, noisy, folds)
    suspects = audit.ranking(found, noisy, "other_weight")
    flipped_sources = {noisy.source(int(i)) for i in flipped}
    assert {s.source for s in suspects[:6]} == flipped_sources, "the flipped images first"
    truth = {data.source(i): data.classes[int(data.train_set.labels[i])] for i in flipped.tolist()}
    assert all(s.supported == truth[s.source] for s in suspects[:6]), "the memory supports the true colour"
    assert all(s.evidence for s in suspects[:6]) and suspects[-1].score < 0.5


def test_stratified_folds_deal_every_class_to_every_fold_and_refuse_too_few():
    labels = torch.tensor([0] * 12 + [1] * 7 + [2] * 5)
    folds = audit.stratified_folds(labels, 5, seed=3)
    for fold in range(5):
        assert set(labels[folds == fold].tolist()) == {0, 1, 2}
    assert sorted(torch.bincount(folds).tolist()) == [4, 5, 5, 5, 5]
    assert torch.equal(folds, audit.stratified_folds(labels, 5, seed=3)), "seeded"
    with pytest.raises(audit.AuditError, match="class cat has 4 training images, fewer than the 5 folds") as error:
        audit.stratified_folds(torch.tensor([0] * 9 + [1] * 4), 5, 0, ("dog", "cat"))
    assert "\n" not in str(error.value)


def test_a_fold_model_never_sees_its_fold(monkeypatch):
    data = colour_data(per_class=10)
    folds = audit.stratified_folds(data.train_labels[data.subset], 5, seed=0)
    seen = []

    def record(model, fold_data, *args, **kwargs):
        seen.append((set(fold_data.subset.tolist()), set(fold_data.memory_pool.tolist())))
        return None
    monkeypatch.setattr(audit.training, "train_run", record)
    from core.config import load_config

    config = load_config(TINY, {"model": "shufflenet"})
    audit.train_folds(config, "encoder_memory", data, folds, 0, torch.device("cpu"))
    assert len(seen) == 5
    for fold, (subset, pool) in enumerate(seen):
        held = set(data.subset[folds == fold].tolist())
        assert not subset & held and not pool & held, f"fold {fold + 1} saw its own images"
        assert subset | held == set(data.subset.tolist()) and pool == subset


def test_the_calibrated_threshold_keeps_95_percent_of_validation_images():
    scores = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    threshold = support.calibrate(scores)
    assert int((scores >= threshold).sum()) == 950, "95 % of 1000 kept, no more"
    pool, validation = torch.randn(200, 16), torch.randn(300, 16)
    found = support.pool_threshold(colour_model(), pool, torch.zeros(200, dtype=torch.long), validation)
    kept = support.support(colour_model(), validation, pool, None, "nearest_similarity") >= found["threshold"]
    assert found["calibrated_on"] == "validation" and int(kept.sum()) >= 285
    loo = support.pool_threshold(colour_model(), pool, torch.zeros(200, dtype=torch.long))
    assert loo["calibrated_on"] == "memory pool, leave-one-out" and loo["threshold"] < 1.0, "never itself"


def test_the_baselines_match_their_definitions_on_hand_made_numbers():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert support.msp(logits).tolist() == pytest.approx([np.exp(2) / (np.exp(2) + 1), 0.5])
    assert support.energy(logits).tolist() == pytest.approx([np.log(np.exp(2) + 1), np.log(2)])
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    near = support.knn(torch.tensor([[2.0, 0.0]]), train, k=2)  # normalised: [1, 0]; its 2nd nearest is [1, 1]/sqrt2
    assert near.tolist() == pytest.approx([-np.sqrt((1 - 1 / np.sqrt(2)) ** 2 + 0.5)])
    assert support.auroc([0.9, 0.8, 0.7], [0.1, 0.75]) == pytest.approx(5 / 6)
    assert support.fpr_at_95_tpr(np.arange(100.0), [94.0, 5.0, 4.0, -1.0]) == pytest.approx(0.5)


@pytest.mark.slow
def test_audit_py_says_how_to_make_its_fold_models_and_writes_nothing_on_the_runs_files(tmp_path):
    root = write_folders(tmp_path / "data", per_class=10, test_per_class=2)
    models = tmp_path / "models"
    run_script("train.py", f"--config={folder_config(tmp_path, root)}", "--modality=encoder_memory",
               "--train_examples=all", f"--output_dir={models}", SMALL_MLP)  # the fold models inherit it
    folder = next(models.rglob("1.pt")).parent
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    missing = run_script("audit.py", f"--path_models={folder}", check=False)
    assert missing.returncode == 1 and "--train_folds trains them" in missing.stderr
    refused = run_script("audit.py", f"--path_models={folder}", "--folds=11", "--train_folds", check=False)
    assert refused.returncode == 1 and "fewer than the 11 folds" in refused.stderr
    done = run_script("audit.py", f"--path_models={folder}", "--train_folds", "--folds=3", "--top=4").stdout
    assert "30 training images of run 1 audited (3 folds, score other_weight)" in done
    rows = (folder / "audit" / "label_issues_run1.csv").read_text().splitlines()
    assert rows[0].startswith("rank,source,file_sha256,score,given_label,supported_label,evidence") and len(rows) == 31
    assert (folder / "audit" / "label_issues_run1.png").is_file()
    again = run_script("audit.py", f"--path_models={folder}", "--folds=3").stdout  # the fold models are read back
    assert again.splitlines()[0] == done.splitlines()[0]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    assert after == before, "the run's own files are untouched"


def test_predict_marks_an_unsupported_prediction_and_says_its_support(trained, tmp_path):
    root, _ = trained
    checkpoint = root / "DIGITS" / "encoder_memory" / "shufflenet" / "128" / "1.pt"
    recorded = torch.load(checkpoint, weights_only=True)["support"]
    assert recorded["score"] == "nearest_similarity" and recorded["calibrated_on"] == "validation"
    image = tmp_path / "x.png"
    __import__("PIL.Image").Image.new("RGB", (32, 32), (250, 10, 10)).save(image)
    line = json.loads(run_script("predict.py", f"--path_model={checkpoint}", str(image), "--json").stdout)
    assert line["supported"] == (line["support"] >= recorded["threshold"])
    content = torch.load(checkpoint, weights_only=True)
    content["support"] = {**recorded, "threshold": 1.5}  # nothing reaches it
    torch.save(content, tmp_path / "strict.pt")
    said = run_script("predict.py", f"--path_model={tmp_path / 'strict.pt'}", str(image)).stdout
    assert said.rstrip().endswith("| unsupported: no training image resembles it")
