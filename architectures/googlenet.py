"""GoogLeNet, CIFAR variant (kuangliu/pytorch-cifar, as used by the paper). Features: 1024."""
import torch
from torch import nn

from .pooling import global_average
from .registry import register_encoder


def _conv_bn_relu(in_planes, out_planes, kernel_size):
    padding = kernel_size // 2
    return [nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, padding=padding),
            nn.BatchNorm2d(out_planes), nn.ReLU(True)]


class Inception(nn.Module):
    def __init__(self, in_planes, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes):
        super().__init__()
        self.b1 = nn.Sequential(*_conv_bn_relu(in_planes, n1x1, 1))
        self.b2 = nn.Sequential(*_conv_bn_relu(in_planes, n3x3red, 1), *_conv_bn_relu(n3x3red, n3x3, 3))
        # the "5x5" branch is two 3x3 convolutions
        self.b3 = nn.Sequential(*_conv_bn_relu(in_planes, n5x5red, 1), *_conv_bn_relu(n5x5red, n5x5, 3),
                                *_conv_bn_relu(n5x5, n5x5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(in_planes, pool_planes, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


@register_encoder("googlenet")
class GoogLeNet(nn.Module):
    feature_dim = 1024
    last_stage = "b5"  # where self_attention: last_stage goes (1024 x 8 x 8)
    # self_attention: reference -- the output of the first Inception stage (a3, b3: 480 x 32 x 32), which has no
    # residual branch
    self_attention_reference = "b3"

    def __init__(self):
        super().__init__()
        self.pre_layers = nn.Sequential(*_conv_bn_relu(3, 192, 3))
        self.a3 = Inception(192, 64, 96, 128, 16, 32, 32)
        self.b3 = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a4 = Inception(480, 192, 96, 208, 16, 48, 64)
        self.b4 = Inception(512, 160, 112, 224, 24, 64, 64)
        self.c4 = Inception(512, 128, 128, 256, 24, 64, 64)
        self.d4 = Inception(512, 112, 144, 288, 32, 64, 64)
        self.e4 = Inception(528, 256, 160, 320, 32, 128, 128)
        self.a5 = Inception(832, 256, 160, 320, 32, 128, 128)
        self.b5 = Inception(832, 384, 192, 384, 48, 128, 128)

    def forward(self, x):
        out = self.b3(self.a3(self.pre_layers(x)))
        out = self.maxpool(out)
        out = self.e4(self.d4(self.c4(self.b4(self.a4(out)))))
        out = self.maxpool(out)
        out = self.b5(self.a5(out))
        return global_average(out, 8)
