"""SimpleSelfAttention (a simplified SAGAN self-attention, from fastai's XResNet experiments), as an encoder option.

    x: [B, C, H, W] -> [B, C, N];  o = gamma * x (x^T conv(x)) + x;  back to [B, C, H, W]

``conv`` is a bias-free 1-D convolution of kernel ``ks``; ``gamma`` is a learnable scalar initialised to 0, so an
untrained block is the identity; with ``sym`` the 1x1 convolution's weight is used symmetrised, (W + W^T) / 2.
``insert_self_attention(encoder, position)`` runs it on the output of the encoder's sub-module at ``position``
(a module path such as "layer4", or "last_stage": the encoder's last stage before pooling) through a forward
hook; the block is registered as ``encoder.self_attention`` and saved with the weights.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


class SimpleSelfAttention(nn.Module):
    def __init__(self, n_in: int, ks: int = 1, sym: bool = False):
        super().__init__()
        if sym and ks != 1:
            raise ValueError("a symmetric weight (sym=True) needs ks=1")
        self.conv = nn.Conv1d(n_in, n_in, ks, padding=ks // 2, bias=False)
        nn.init.kaiming_normal_(self.conv.weight)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.sym = sym

    def weight(self) -> torch.Tensor:
        if not self.sym:
            return self.conv.weight
        square = self.conv.weight[:, :, 0]
        return ((square + square.T) / 2)[:, :, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.flatten(2)  # [B, C, N]
        convolved = F.conv1d(flat, self.weight(), padding=self.conv.padding)
        if flat.shape[2] >= flat.shape[1]:  # (x x^T) conv(x): a C x C product first, when N >= C
            attended = torch.bmm(torch.bmm(flat, flat.transpose(1, 2)), convolved)
        else:  # x (x^T conv(x))
            attended = torch.bmm(flat, torch.bmm(flat.transpose(1, 2), convolved))
        return (self.gamma * attended + flat).view(shape)


def insert_self_attention(encoder: nn.Module, position: str = "last_stage", ks: int = 1, sym: bool = False,
                          input_shape=(1, 3, 32, 32)) -> nn.Module:
    """Run a SimpleSelfAttention on the output of ``encoder``'s sub-module ``position`` ('last_stage': the
    module the encoder names in its ``last_stage`` attribute); returns the encoder."""
    path = getattr(encoder, "last_stage", None) if position == "last_stage" else position
    if path is None:
        raise ValueError(f"{type(encoder).__name__} names no last_stage; give a module path for self_attention")
    try:
        target = encoder.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in encoder.named_children()]
        raise ValueError(f"{type(encoder).__name__} has no sub-module {path!r} for self_attention; its children are "
                         f"{names}") from None
    channels = _output_channels(encoder, target, input_shape)
    encoder.self_attention = SimpleSelfAttention(channels, ks, sym)
    encoder.self_attention_position = path
    target.register_forward_hook(lambda module, inputs, output: encoder.self_attention(output))
    return encoder


def _output_channels(encoder: nn.Module, target: nn.Module, input_shape) -> int:
    seen: Optional[torch.Tensor] = None

    def capture(module, inputs, output):
        nonlocal seen
        seen = output

    handle = target.register_forward_hook(capture)
    training = encoder.training
    try:
        with torch.no_grad():
            encoder.eval()(torch.zeros(input_shape))
    finally:
        handle.remove()
        encoder.train(training)
    if seen is None or seen.dim() != 4:
        raise ValueError(f"self_attention needs a sub-module whose output is a [B, C, H, W] feature map, got "
                         f"{None if seen is None else tuple(seen.shape)}")
    return seen.shape[1]
