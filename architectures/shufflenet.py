"""ShuffleNetV2, CIFAR variant (kuangliu/pytorch-cifar, as used by the paper): net_size 0.5 (shufflenet) and 1
(shufflenet1x). Features: 1024."""
import torch
import torch.nn.functional as F
from torch import nn

from .pooling import global_average
from .registry import register_encoder

CONFIGS = {
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}


def channel_shuffle(x, groups=2):
    """[N,C,H,W] -> [N,g,C/g,H,W] -> [N,C/g,g,H,W] -> [N,C,H,W], in the input's memory format.

    A channels_last input is copied once in NHWC order ([N,H,W,C/g,g]), so the output stays channels_last: the
    reshape of the permuted view would return NCHW, which the next convolution converts back (two layout copies per
    block). The same values either way, and 5-12 ms less copying per training step at a batch of 128 (README,
    Speed: ``python -m bench.bench_training --sections=shuffle``)."""
    n, c, h, w = x.size()
    grouped = x.view(n, groups, c // groups, h, w)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return grouped.permute(0, 3, 4, 2, 1).contiguous().permute(0, 3, 4, 1, 2).view(n, c, h, w)
    return grouped.permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class BasicBlock(nn.Module):
    def __init__(self, in_channels, split_ratio=0.5):
        super().__init__()
        self.split_ratio = split_ratio
        channels = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x):
        split = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :split], x[:, split:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1))


class DownBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid_channels = out_channels // 2
        # left
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        # right
        self.conv3 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv4 = nn.Conv2d(mid_channels, mid_channels, kernel_size=3, stride=2, padding=1, groups=mid_channels, bias=False)
        self.bn4 = nn.BatchNorm2d(mid_channels)
        self.conv5 = nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_channels)

    def forward(self, x):
        out1 = self.bn1(self.conv1(x))
        out1 = F.relu(self.bn2(self.conv2(out1)))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = self.bn4(self.conv4(out2))
        out2 = F.relu(self.bn5(self.conv5(out2)))
        return channel_shuffle(torch.cat([out1, out2], 1))


class ShuffleNetV2(nn.Module):
    last_stage = "layer3"  # where self_attention: last_stage goes (4 x 4)
    # self_attention: reference -- the output of the first stage (its blocks concatenate halves instead of adding a
    # residual branch; 16 x 16)
    self_attention_reference = "layer1"

    def __init__(self, net_size):
        super().__init__()
        out_channels = CONFIGS[net_size]["out_channels"]
        num_blocks = CONFIGS[net_size]["num_blocks"]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.feature_dim = out_channels[3]

    def _make_layer(self, out_channels, num_blocks):
        layers = [DownBlock(self.in_channels, out_channels)]
        layers += [BasicBlock(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        return global_average(out, 4)


@register_encoder("shufflenet")
def shufflenet_v2_half():
    return ShuffleNetV2(net_size=0.5)


@register_encoder("shufflenet1x")
def shufflenet_v2_1x():
    return ShuffleNetV2(net_size=1)
