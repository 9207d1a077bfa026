"""SimpleSelfAttention (sdoria/SimpleSelfAttention, a simplified SAGAN self-attention), as an encoder option.

    x: [B, C, H, W] -> [B, C, N];  o = gamma * (x x^T) conv(x) + x;  back to [B, C, H, W]

As the reference: ``conv`` is a bias-free 1-D convolution of kernel ``ks`` (He-normal initialised) wrapped in
spectral normalisation (``torch.nn.utils.spectral_norm``, one power iteration per training step; the same
state-dict keys); ``gamma`` is a learnable scalar initialised to 0, so an untrained block is the identity.
``spectral_norm=False`` gives a plain convolution (this project's earlier block). With ``sym`` the 1x1
convolution's weight is used symmetrised, (W + W^T) / 2 (ours: the reference's symmetrisation is overwritten by
its spectral norm's hook before every forward, so it has no effect there).

Where it goes (``insert_self_attention(encoder, position)``; the block is registered as ``encoder.self_attention``
and saved with the weights; it runs on the output of the sub-module at the position, through a forward hook):
- ``reference``: the published place. sdoria's XResNet puts it in the residual branch of the last block of the
  first stage, before the sum with the shortcut. Each encoder names its closest equivalent in its
  ``self_attention_reference`` attribute: the same for the ResNets, WRN-28-10 and MobileNetV2 (the residual
  branch of the first stage's last block); the first stage's output for the networks without an additive residual
  branch there (EfficientNet, ShuffleNetV2, GoogLeNet, DenseNet).
- ``last_stage``: the output of the encoder's last stage before pooling (its ``last_stage`` attribute).
- a module path such as ``layer3``.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F


class SimpleSelfAttention(nn.Module):
    def __init__(self, n_in: int, ks: int = 1, sym: bool = False, spectral_norm: bool = True):
        super().__init__()
        if sym and ks != 1:
            raise ValueError("a symmetric weight (sym=True) needs ks=1")
        if ks < 1 or ks % 2 == 0:
            raise ValueError(f"the kernel size must be odd (the reference pads ks // 2 on each side to keep the "
                             f"length), got ks={ks}")
        conv = nn.Conv1d(n_in, n_in, ks, padding=ks // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        self.conv = nn.utils.spectral_norm(conv) if spectral_norm else conv
        self.gamma = nn.Parameter(torch.zeros(1))
        self.sym = sym

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.flatten(2)  # [B, C, N]
        if self.sym:
            self.conv(flat[:1, :, :1])  # runs spectral norm's hook: conv.weight is this step's normalised weight
            square = self.conv.weight[:, :, 0]
            convolved = F.conv1d(flat, ((square + square.T) / 2)[:, :, None])
        else:
            convolved = self.conv(flat)
        if flat.shape[2] >= flat.shape[1]:  # (x x^T) conv(x): a C x C product first, when N >= C
            attended = torch.bmm(torch.bmm(flat, flat.transpose(1, 2)), convolved)
        else:  # x (x^T conv(x))
            attended = torch.bmm(flat, torch.bmm(flat.transpose(1, 2), convolved))
        return (self.gamma * attended + flat).view(shape)


def insert_self_attention(encoder: nn.Module, position: str = "reference", ks: int = 1, sym: bool = False,
                          spectral_norm: bool = True, input_shape=(1, 3, 32, 32)) -> nn.Module:
    """Run a SimpleSelfAttention on the output of ``encoder``'s sub-module ``position`` ('reference' and
    'last_stage': the module the encoder names in its ``self_attention_reference`` / ``last_stage`` attribute);
    returns the encoder."""
    attribute = {"reference": "self_attention_reference", "last_stage": "last_stage"}.get(position)
    path = getattr(encoder, attribute, None) if attribute else position
    if path is None:
        raise ValueError(f"{type(encoder).__name__} has no feature map for self_attention: {position} (it names no "
                         f"{attribute}); give a module path whose output is a [B, C, H, W] feature map")
    try:
        target = encoder.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in encoder.named_children()]
        raise ValueError(f"{type(encoder).__name__} has no sub-module {path!r} for self_attention; its children are "
                         f"{names}") from None
    channels = _output_channels(encoder, target, input_shape)
    encoder.self_attention = SimpleSelfAttention(channels, ks, sym, spectral_norm)
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
