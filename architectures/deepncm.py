"""Deep Nearest Class Mean classifier (Guerriero et al., 2018): logits = minus the squared distance to the class
means of the features, which are running averages over the training batches, with no gradient through them.

The means are the exact means of every training feature seen so far (DeepNCM's online means:
mean_c <- (n_c * mean_c + sum of the batch's class-c features) / (n_c + batch count)); torch_prototypes
instead averages the per-batch means. A class not seen yet keeps its initial mean (uniform in [0, 1)).
The means are buffers: they are saved in the checkpoint and do not change in evaluation. Under torchrun the
batch's sums and counts are summed over the ranks before they are folded in, so every rank holds the means of
the whole batch (DDP's buffer broadcast then copies rank 0's, which equal the others').
"""
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .prototypes import prototype_distances
from .registry import register_head


@register_head("deepncm")
class DeepNCM(nn.Module):
    def __init__(self, feature_dim: int, num_classes: int, **options):
        super().__init__()
        self.register_buffer("means", torch.rand(num_classes, feature_dim))
        self.register_buffer("counts", torch.zeros(num_classes))

    @property
    def prototypes(self) -> torch.Tensor:
        return self.means

    @property
    def prototype_classes(self) -> torch.Tensor:
        return torch.arange(len(self.means))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold a training batch into the class means (called before the forward pass, in training)."""
        members = F.one_hot(labels, len(self.means)).float()  # [B, C]
        batch_counts = members.sum(0)
        with torch.autocast(features.device.type, enabled=False):  # exact sums, also under bf16 autocast
            sums = members.T @ features.float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_counts)  # every rank's share of the batch
            dist.all_reduce(sums)
        seen = batch_counts > 0
        total = self.counts + batch_counts
        self.means[seen] = (self.counts[seen, None] * self.means[seen] + sums[seen]) / total[seen, None]
        self.counts.copy_(total)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        return prototype_distances(features.float(), self.means, "squared_euclidean")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distances(features)
