"""The Memory Wrap layer: sparsemax, distances, both layers, the read head, errors, and drop-in equality."""
import itertools

import pytest
import torch
from torch import nn

from architectures.memory import MLP, BaselineMemory, MemoryWrapLayer, pairwise_distance, sparsemax


def simplex_projection(v: torch.Tensor) -> torch.Tensor:
    """Reference: argmin_p |p - v|^2 on the simplex, by bisection on the threshold tau (sum max(v - tau, 0) = 1)."""
    lo, hi = v.min(dim=-1, keepdim=True).values - 1, v.max(dim=-1, keepdim=True).values
    for _ in range(200):
        mid = (lo + hi) / 2
        too_much = torch.clamp(v - mid, min=0).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(too_much, mid, lo), torch.where(too_much, hi, mid)
    return torch.clamp(v - (lo + hi) / 2, min=0)


class TestSparsemax:
    def test_is_the_euclidean_projection_onto_the_simplex(self):
        g = torch.Generator().manual_seed(0)
        scores = torch.randn(64, 37, generator=g, dtype=torch.float64) * 3
        p = sparsemax(scores)
        torch.testing.assert_close(p, simplex_projection(scores), atol=1e-9, rtol=0)

    def test_simplex_sparsity_and_order(self):
        scores = torch.randn(200, 50, generator=torch.Generator().manual_seed(1)) * 4
        p = sparsemax(scores)
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(200), atol=1e-5, rtol=0)
        assert (p == 0).any(dim=-1).float().mean() > 0.9, "large-scale scores must give exact zeros"
        # order-preserving: a larger score never gets a smaller probability
        order = scores.argsort(dim=-1)
        assert (p.gather(-1, order).diff(dim=-1) >= 0).all()

    def test_exact_zeros_below_threshold(self):
        p = sparsemax(torch.tensor([[3.0, 1.0, 0.2, -1.0]]))
        assert p.tolist() == [[1.0, 0.0, 0.0, 0.0]]
        p = sparsemax(torch.tensor([[0.5, 0.4, -3.0]]))
        torch.testing.assert_close(p, torch.tensor([[0.55, 0.45, 0.0]]))

    def test_gradcheck_float64(self):
        scores = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
        assert torch.autograd.gradcheck(sparsemax, (scores,))

    def test_over_last_dimension_of_3d(self):
        scores = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(sparsemax(scores), sparsemax(scores.reshape(6, 6)).reshape(2, 3, 6))

    def test_half_precision_input_keeps_dtype(self):
        p = sparsemax(torch.randn(4, 9).to(torch.bfloat16))
        assert p.dtype == torch.bfloat16 and (p >= 0).all()


class TestDistances:
    def setup_method(self):
        g = torch.Generator().manual_seed(4)
        self.x = torch.randn(7, 16, generator=g, dtype=torch.float64)
        self.y = torch.randn(5, 16, generator=g, dtype=torch.float64)

    def test_cosine(self):
        direct = torch.tensor([[1 - torch.dot(a, b) / (a.norm() * b.norm()) for b in self.y] for a in self.x], dtype=torch.float64)
        torch.testing.assert_close(pairwise_distance(self.x, self.y, "cosine"), direct, atol=1e-6, rtol=0)

    def test_l2_is_squared_euclidean(self):
        direct = torch.tensor([[((a - b) ** 2).sum() for b in self.y] for a in self.x], dtype=torch.float64)
        torch.testing.assert_close(pairwise_distance(self.x, self.y, "l2"), direct)
        assert (pairwise_distance(self.x, self.x, "l2").diagonal() >= 0).all()

    def test_dot_is_negative_dot_product(self):
        direct = torch.tensor([[-torch.dot(a, b) for b in self.y] for a in self.x], dtype=torch.float64)
        torch.testing.assert_close(pairwise_distance(self.x, self.y, "dot"), direct)

    def test_unknown_distance_rejected_in_constructor(self):
        for layer in (MemoryWrapLayer, BaselineMemory):
            with pytest.raises(ValueError, match=r"unknown distance 'manhattan'.*\['cosine', 'dot', 'l2'\]"):
                layer(8, 3, distance="manhattan")


class TestLayers:
    def test_shapes_weights_and_default_classifiers(self):
        x, memory = torch.randn(6, 12), torch.randn(9, 12)
        for layer, fc1_in, fc1_out in ((MemoryWrapLayer(12, 4), 24, 48), (BaselineMemory(12, 4), 12, 24)):
            logits, weights = layer(x, memory, return_weights=True)
            assert logits.shape == (6, 4) and weights.shape == (6, 9)
            torch.testing.assert_close(weights.sum(1), torch.ones(6))
            assert (weights >= 0).all()
            assert layer(x, memory).shape == (6, 4)
            assert (layer.classifier.fc1.in_features, layer.classifier.fc1.out_features) == (fc1_in, fc1_out)
            assert list(layer.state_dict()) == ["classifier.fc1.weight", "classifier.fc1.bias",
                                                "classifier.fc2.weight", "classifier.fc2.bias"]

    def test_memory_vector_is_weighted_sum_of_memory(self):
        layer = BaselineMemory(5, 3, classifier=nn.Identity())
        x, memory = torch.randn(4, 5), torch.randn(6, 5)
        out, weights = layer(x, memory, return_weights=True)
        torch.testing.assert_close(out, weights @ memory)

    def test_encoder_memory_classifies_concatenation(self):
        layer = MemoryWrapLayer(5, 3, classifier=nn.Identity())
        x, memory = torch.randn(4, 5), torch.randn(6, 5)
        out, weights = layer(x, memory, return_weights=True)
        torch.testing.assert_close(out, torch.cat([x, weights @ memory], 1))

    def test_custom_classifier(self):
        layer = MemoryWrapLayer(8, 3, classifier=MLP(16, 5, 3))
        assert layer(torch.randn(2, 8), torch.randn(4, 8)).shape == (2, 3)

    @pytest.mark.parametrize("layer_class", [MemoryWrapLayer, BaselineMemory])
    def test_head_is_honoured(self, layer_class):
        torch.manual_seed(0)
        x, memory = torch.randn(6, 10), torch.randn(8, 10)
        plain = layer_class(10, 3)
        with_head = layer_class(10, 3, head=nn.Linear(10, 4))
        with_head.classifier.load_state_dict(plain.classifier.state_dict())
        _, w_plain = plain(x, memory, return_weights=True)
        logits, w_head = with_head(x, memory, return_weights=True)
        assert not torch.allclose(w_plain, w_head), "the head must change the content weights"
        # the weights equal the attention computed on projected keys
        expected = sparsemax(-pairwise_distance(with_head.head(x), with_head.head(memory), "cosine"))
        torch.testing.assert_close(w_head, expected)
        logits.sum().backward()
        grad = with_head.head.weight.grad
        assert grad is not None and grad.abs().sum() > 0, "head parameters must receive gradients"
        assert "head.weight" in with_head.state_dict()


class TestErrors:
    layer = MemoryWrapLayer(8, 3)

    def test_wrong_feature_dimension(self):
        with pytest.raises(ValueError, match=r"input_encoding has feature dimension 7, expected encoder_output_dim=8"):
            self.layer(torch.randn(2, 7), torch.randn(4, 8))
        with pytest.raises(ValueError, match=r"memory_encoding has feature dimension 9"):
            self.layer(torch.randn(2, 8), torch.randn(4, 9))

    def test_empty_memory(self):
        with pytest.raises(ValueError, match="memory set is empty"):
            self.layer(torch.randn(2, 8), torch.randn(0, 8))

    def test_one_dimensional_input(self):
        with pytest.raises(ValueError, match=r"must be 2-D.*got shape \(8,\).*unsqueeze"):
            self.layer(torch.randn(8), torch.randn(4, 8))

    def test_dtype_mismatch(self):
        with pytest.raises(ValueError, match="dtype torch.float64 but memory_encoding has torch.float32"):
            self.layer(torch.randn(2, 8, dtype=torch.float64), torch.randn(4, 8))

    def test_device_mismatch(self):
        with pytest.raises(ValueError, match="is on meta but memory_encoding is on cpu"):
            self.layer(torch.randn(2, 8, device="meta"), torch.randn(4, 8))

    def test_bad_constructor_dimension(self):
        with pytest.raises(ValueError, match="encoder_output_dim must be a positive int"):
            MemoryWrapLayer(0, 3)


class TestDropInForPublishedPackage:
    """memorywrap 1.1.7 (the published package) is the oracle: same keys, same logits and weights."""

    @pytest.mark.parametrize("layer_name,distance", list(itertools.product(["MemoryWrapLayer", "BaselineMemory"],
                                                                      ["cosine", "l2", "dot"])))
    def test_same_state_dict_same_outputs(self, layer_name, distance):
        memorywrap = pytest.importorskip("memorywrap", reason="test-only dependency memorywrap==1.1.7")
        torch.manual_seed(5)
        published = getattr(memorywrap, layer_name)(16, 5, distance=distance)
        ours = {"MemoryWrapLayer": MemoryWrapLayer, "BaselineMemory": BaselineMemory}[layer_name](16, 5, distance=distance)
        ours.load_state_dict(published.state_dict(), strict=True)
        # feature scales like those of a trained encoder; l2/dot scores scaled so sparsemax keeps several samples
        scale = {"cosine": 1.0, "l2": 0.3, "dot": 0.3}[distance]
        x, memory = torch.randn(32, 16) * scale, torch.randn(20, 16) * scale
        expected_logits, expected_weights = published(x, memory, return_weights=True)
        logits, weights = ours(x, memory, return_weights=True)
        torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
        assert (weights > 0).sum(1).float().mean() > 1, "test must exercise non-trivial (non one-hot) weights"
