"""Matching Networks (Vinyals et al., 2016) with full context embeddings, as the paper's baseline.

    g(memory) = forward + backward states of a bidirectional LSTM run over the encoded memory set, + the memory
                features (the skip connection of appendix A.2)
    f(x)      = an attention LSTM over the query for ``processing_steps`` steps (appendix A.1):
                h = ĥ + x; a = softmax(h · g(memory)ᵀ); r = a · g(memory); ĥ, c = LSTMCell(x, (h + r, c))
                and finally f(x) = ĥ + x
    prediction = softmax(-cosine(f(x), g(memory))) · one_hot(memory labels)

The head returns log(clip(prediction, 1e-6, 1 - 1e-6)) as its outputs and its loss is their NLL, as the paper's
script. As in the paper's script, the cell's hidden state is h + r (not the concatenation of appendix A.1), the
LSTMs have the feature size as hidden size, and there are 2 processing steps by default (``matching_steps``).
The attention over the memory set explains a prediction (content weights, dense: every sample weighs > 0).
"""
import torch
from torch import nn
from torch.nn import functional as F

from .memory import pairwise_distance
from .registry import register_head

EPSILON = 1e-6


@register_head("matching", uses_memory=True, memory_labels=True)
class MatchingHead(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, matching_steps: int = 2, matching_lstm_layers: int = 1,
                 **options):
        super().__init__()
        self.num_classes, self.processing_steps = num_classes, matching_steps
        self.g = nn.LSTM(feature_dim, feature_dim, num_layers=matching_lstm_layers, bidirectional=True)
        self.f = nn.LSTMCell(feature_dim, feature_dim)

    def embed_memory(self, memory_features: torch.Tensor) -> torch.Tensor:
        """g: the memory set read as one sequence by the bidirectional LSTM, plus the skip connection."""
        states, _ = self.g(memory_features[:, None, :])  # [M, 1, 2D]
        forward_states, backward_states = states[:, 0].chunk(2, dim=1)
        return forward_states + backward_states + memory_features

    def embed_queries(self, features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """f: the attention LSTM, ``processing_steps`` reads of the embedded memory."""
        hidden = torch.zeros_like(features)
        cell = torch.zeros_like(features)
        for _ in range(self.processing_steps):
            query = hidden + features
            readout = torch.softmax(query @ memory.T, dim=1) @ memory
            hidden, cell = self.f(features, (query + readout, cell))
        return hidden + features

    def forward(self, features: torch.Tensor, memory_features: torch.Tensor, memory_labels: torch.Tensor,
                return_weights: bool = False):
        memory = self.embed_memory(memory_features)
        queries = self.embed_queries(features, memory)
        attention = torch.softmax(-pairwise_distance(queries, memory, "cosine").float(), dim=1)  # [B, M]
        prediction = attention @ F.one_hot(memory_labels, self.num_classes).float()  # [B, C], rows sum to 1
        outputs = prediction.clamp(EPSILON, 1 - EPSILON).log()
        return (outputs, attention) if return_weights else outputs

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """NLL of the clipped prediction (the outputs are its log), as the paper's script."""
        return F.nll_loss(outputs, labels)
