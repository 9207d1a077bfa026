"""DenseNets, CIFAR variants (kuangliu/pytorch-cifar): densenet_cifar ([6, 12, 24, 16], growth 12; features 384),
the paper's "densenet", and DenseNet-169 ([6, 12, 32, 32], growth 32; features 1664). The paper's code maps the
name densenet169 to densenet_cifar by mistake; here it is the real DenseNet-169."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import global_average
from .registry import register_encoder


class Bottleneck(nn.Module):
    def __init__(self, in_planes, growth_rate):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    last_stage = "dense4"  # where self_attention: last_stage goes (before the last BatchNorm, 4 x 4)
    # self_attention: reference -- the output of the first dense block (it concatenates instead of adding a branch)
    self_attention_reference = "dense1"

    def __init__(self, nblocks, growth_rate=12, reduction=0.5):
        super().__init__()
        self.growth_rate = growth_rate
        num_planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, num_planes, kernel_size=3, padding=1, bias=False)
        for stage, nblock in enumerate(nblocks, start=1):
            setattr(self, f"dense{stage}", self._make_dense_layers(num_planes, nblock))
            num_planes += nblock * growth_rate
            if stage < len(nblocks):
                out_planes = int(math.floor(num_planes * reduction))
                setattr(self, f"trans{stage}", Transition(num_planes, out_planes))
                num_planes = out_planes
        self.bn = nn.BatchNorm2d(num_planes)
        self.feature_dim = num_planes

    def _make_dense_layers(self, in_planes, nblock):
        layers = []
        for _ in range(nblock):
            layers.append(Bottleneck(in_planes, self.growth_rate))
            in_planes += self.growth_rate
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.dense4(out)
        return global_average(F.relu(self.bn(out)), 4)


@register_encoder("densenet")
def densenet_cifar():
    return DenseNet([6, 12, 24, 16], growth_rate=12)


@register_encoder("densenet169")
def densenet169():
    return DenseNet([6, 12, 32, 32], growth_rate=32)
