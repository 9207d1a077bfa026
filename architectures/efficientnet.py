"""EfficientNet-B0, CIFAR variant (kuangliu/pytorch-cifar, as used by the paper). Features: 320.

Faithful detail: the reference computes each block's drop-connect rate as
``drop_connect_rate * b / blocks`` with ``b`` never incremented, so drop-connect is
never applied; we keep that behaviour. Feature dropout (p=0.2, training only) is part
of the encoder, as in the paper's ``forward_encoder``.
"""
import torch.nn.functional as F
from torch import nn

from .registry import register_encoder


def swish(x):
    return x * x.sigmoid()


class SE(nn.Module):
    """Squeeze-and-Excitation block with Swish."""

    def __init__(self, in_channels, se_channels):
        super().__init__()
        self.se1 = nn.Conv2d(in_channels, se_channels, kernel_size=1, bias=True)
        self.se2 = nn.Conv2d(se_channels, in_channels, kernel_size=1, bias=True)

    def forward(self, x):
        out = F.adaptive_avg_pool2d(x, (1, 1))
        out = swish(self.se1(out))
        return x * self.se2(out).sigmoid()


class Block(nn.Module):
    """expansion + depthwise + pointwise + squeeze-excitation"""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio=1, se_ratio=0.0):
        super().__init__()
        self.expand_ratio = expand_ratio
        channels = expand_ratio * in_channels
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=kernel_size, stride=stride,
                               padding=(1 if kernel_size == 3 else 2), groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SE(channels, int(in_channels * se_ratio))
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        # conv1/bn1 exist (and are counted) even when expand_ratio == 1, as in the reference.
        out = x if self.expand_ratio == 1 else swish(self.bn1(self.conv1(x)))
        out = swish(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.se(out)))
        return out + x if self.has_skip else out


class EfficientNet(nn.Module):
    last_stage = "layers"  # where self_attention: last_stage goes (320 x 2 x 2)
    # self_attention: reference -- the output of the first stage (one block without a skip: 16 x 32 x 32)
    self_attention_reference = "layers.0"

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, in_channels = [], 32
        columns = [cfg[k] for k in ("expansion", "out_channels", "num_blocks", "kernel_size", "stride")]
        for expansion, out_channels, num_blocks, kernel_size, stride in zip(*columns):
            for block_stride in [stride] + [1] * (num_blocks - 1):
                layers.append(Block(in_channels, out_channels, kernel_size, block_stride, expansion, se_ratio=0.25))
                in_channels = out_channels
        self.layers = nn.Sequential(*layers)
        self.feature_dim = cfg["out_channels"][-1]

    def forward(self, x):
        out = swish(self.bn1(self.conv1(x)))
        out = F.adaptive_avg_pool2d(self.layers(out), 1).flatten(1)
        return F.dropout(out, p=self.cfg["dropout_rate"], training=self.training)


@register_encoder("efficientnet")
def efficientnet_b0():
    return EfficientNet({
        "num_blocks": [1, 2, 2, 3, 3, 4, 1],
        "expansion": [1, 6, 6, 6, 6, 6, 6],
        "out_channels": [16, 24, 40, 80, 112, 192, 320],
        "kernel_size": [3, 3, 5, 3, 5, 5, 3],
        "stride": [1, 2, 2, 2, 1, 2, 1],
        "dropout_rate": 0.2,
    })
