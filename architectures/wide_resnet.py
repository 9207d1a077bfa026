"""Wide ResNet 28-10, CIFAR variant (the paper's wide_resnet.py, after hiyouga/AMP-Regularizer). Features: 640.

Faithful details: dropout 0.3 between the two convolutions of every block and on the pooled features;
the last BatchNorm has momentum 0.9 (PyTorch's convention: 90% of each batch's statistics); He-normal (fan-out)
convolutions, BatchNorm weight 1 and bias 0, every Linear bias of the model (the head's) 0. One difference, for one encoder shared by every head: the paper's
encoder_memory WRN had no dropout on the features before the Memory Wrap layer (its std and memory variants do);
here every modality has it.
"""
import torch.nn.functional as F
from torch import nn

from .pooling import global_average
from .registry import register_encoder


class WideBasic(nn.Module):
    def __init__(self, in_channels, out_channels, stride, dropout):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.Dropout(dropout),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        )
        self.shortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else nn.Sequential())

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class WideResNet(nn.Module):
    last_stage = "layer3"  # where self_attention: last_stage goes (640 x 8 x 8)

    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout: float = 0.3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a Wide ResNet's depth is 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        stages = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.in_channels = 16
        self.dropout = dropout
        self.conv1 = nn.Conv2d(3, stages[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._wide_layer(stages[1], blocks, 1)
        self.layer2 = self._wide_layer(stages[2], blocks, 2)
        self.layer3 = self._wide_layer(stages[3], blocks, 2)
        self.bn = nn.BatchNorm2d(stages[3], momentum=0.9)
        self.feature_dim = stages[3]
        # self_attention: reference -- the residual branch of the first stage's last block, as sdoria's XResNet
        self.self_attention_reference = f"layer1.{blocks - 1}.residual"
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.zeros_(module.bias)

    @staticmethod
    def initialise_head(head: nn.Module) -> None:
        """The reference zeroes the bias of every Linear layer of its models, the heads' included."""
        for module in head.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _wide_layer(self, out_channels, blocks, stride):
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(WideBasic(self.in_channels, out_channels, block_stride, self.dropout))
            self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = global_average(F.relu(self.bn(out)), 8)
        return F.dropout(out, p=self.dropout, training=self.training)


@register_encoder("wide-resnet")
def wrn28_10():
    return WideResNet(28, 10, dropout=0.3)
