"""The convolutional autoencoder of the paper's counterfactual experiments (its architectures/autoencoder.py, the
same state-dict keys): IM1 / IM2 score counterfactuals with one trained per class and one on the whole training
subset, and CFProto's prototype term works in its encoder's latent space.

    encoder: conv 3x3 (C -> 16), ReLU, conv 3x3 (16 -> 16), ReLU, max-pool 2, conv 3x3 (16 -> 1)   [N, 1, H/2, W/2]
    decoder: conv 3x3 (1 -> 16), ReLU, conv 3x3 (16 -> 16), ReLU, upsample x2 (nearest), conv 3x3 (16 -> C)
"""
import torch
from torch import nn
from torch.nn import functional as F


class Encoder(nn.Module):
    def __init__(self, num_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(images)))), 2)
        return self.conv3(hidden)


class Decoder(nn.Module):
    def __init__(self, num_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, num_channels, 3, padding=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        hidden = F.interpolate(F.relu(self.conv2(F.relu(self.conv1(codes)))), scale_factor=2, mode="nearest")
        return self.conv3(hidden)


class AutoEncoder(nn.Module):
    def __init__(self, num_channels: int = 3):
        super().__init__()
        self.encoder = Encoder(num_channels)
        self.decoder = Decoder(num_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))
