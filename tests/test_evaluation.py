"""core/evaluation.py: evaluation on features encoded once equals the batch-by-batch path."""
import pytest
import torch

import datasets
from architectures import build_model
from core.evaluation import FeatureCache, majority_vote, memory_pass


@pytest.mark.parametrize("modality", ["memory", "encoder_memory"])
def test_cached_feature_evaluation_equals_direct_path(modality):
    torch.manual_seed(0)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 300, 200, seed=1, mem_examples=30)
    model = build_model("shufflenet", modality, 10, mlp_hidden=64)  # any MLP computes alike; 64 is cheap
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.train()
        model(data.test_batch(torch.arange(64))[0], data.memory_batch(data.subset[:30]))
    model.eval()
    cache = FeatureCache.build(model, data, batch_size=125, seed=0)  # test batches of 125, each its memory draw
    cached = memory_pass(model, cache, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    direct_logits, direct_weights = [], []
    with torch.no_grad():
        for start in range(0, len(data.test_labels), 125):
            images, _ = data.test_batch(torch.arange(start, min(start + 125, len(data.test_labels))))
            memory = data.memory_batch(data.draw_memory(generator))
            logits, weights = model(images, memory, return_weights=True)
            direct_logits.append(logits)
            direct_weights.append(weights)
    assert torch.equal(cached.predictions, torch.cat(direct_logits).argmax(1))
    torch.testing.assert_close(cached.logits, torch.cat(direct_logits), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached.content_weights, torch.cat(direct_weights), atol=1e-5, rtol=1e-4)


def test_majority_vote():
    values = torch.tensor([[2, 1, 2, 1, 3], [3, 0, 0, 3, 3]])
    weights = torch.tensor([[0.3, 0.3, 0.2, 0.2, 0.0], [0.5, 0.2, 0.3, 0.0, 0.0]])
    # row 0: 1 and 2 tie (3 has no weight) -> the smallest class; row 1: zero-weight votes do not count
    assert majority_vote(values, weights, 4).tolist() == [1, 0]


def test_cache_of_the_first_test_images_gives_the_same_first_results():
    torch.manual_seed(0)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("DIGITS"), train, test, 300, 200, seed=1, mem_examples=30)
    model = build_model("shufflenet", "encoder_memory", 10, mlp_hidden=64).eval()
    full = FeatureCache.build(model, data, batch_size=250, seed=0)
    first = FeatureCache.build(model, data, batch_size=250, seed=0, test_count=7)
    assert len(first.test_features) == len(first.test_labels) == 7
    full_pass = memory_pass(model, full, torch.Generator().manual_seed(2), torch.Generator().manual_seed(3))
    first_pass = memory_pass(model, first, torch.Generator().manual_seed(2), torch.Generator().manual_seed(3))
    assert torch.equal(first_pass.memory_positions, full_pass.memory_positions[:7])
    assert torch.equal(first_pass.memory_predictions, full_pass.memory_predictions[:7])
    torch.testing.assert_close(first_pass.logits, full_pass.logits[:7])



@pytest.mark.parametrize("modality", ["encoder_memory", "protonet"])
def test_cached_evaluation_with_flipped_memory_equals_the_direct_path(modality):
    """memory_flip (the paper's CINIC10 code): the cache holds both orientations and draws them as memory_set does."""
    torch.manual_seed(0)
    train, test = datasets.load_dataset("DIGITS", None)
    data = datasets.ExperimentData.build(datasets.get_spec("CINIC10"), train, test, 300, 200, seed=1, mem_examples=30,
                                         memory_flip=True)
    model = build_model("shufflenet", modality, 10, mlp_hidden=64)  # any MLP computes alike; 64 is cheap.eval()
    cache = FeatureCache.build(model, data, batch_size=125, seed=0)
    cached = memory_pass(model, cache, torch.Generator().manual_seed(5))
    generator, direct = torch.Generator().manual_seed(5), []
    with torch.no_grad():
        for start in range(0, len(data.test_labels), 125):
            images, _ = data.test_batch(torch.arange(start, min(start + 125, len(data.test_labels))))
            memory = data.memory_set(generator)
            direct.append(model(images, memory.images, memory.labels))
    torch.testing.assert_close(cached.logits, torch.cat(direct), atol=1e-4, rtol=1e-4)
