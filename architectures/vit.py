"""The Vision Transformer of the paper's ViT experiments (omihub777/ViT-CIFAR's vit.py and layers.py). Features: 384.

A 32 x 32 image is cut into 8 x 8 = 64 patches of 4 x 4 pixels (48 values each), embedded linearly (48 -> 384),
prefixed with a learnable class token and added to learnable position embeddings (both initialised from a
standard normal). Seven pre-norm encoder layers follow (LayerNorm -> multi-head self-attention with separate
q, k, v and output projections -> residual; LayerNorm -> MLP 384 -> 384 -> residual), 12 heads, dropout 0. The
features are the class token after a final LayerNorm; ``final_norm=False`` gives the class token without it, as
the paper's code fed its memory ViTs (config key ``vit_final_norm: false``).

Two quirks of that implementation are kept, since they shape the paper's numbers: attention scores are divided
by sqrt(384), the whole width, not by sqrt(32), the width of a head; and the MLP applies GELU after both of its
linear layers.
"""
import torch
from torch import nn

from .registry import register_encoder


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.width = heads, width
        self.scale = width ** 0.5  # quirk: the whole width, not the head width
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        split = lambda t: t.view(batch, tokens, self.heads, self.width // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.softmax(q @ k.transpose(-2, -1) / self.scale, dim=-1)  # [B, heads, T, T]
        attended = (scores @ v).transpose(1, 2).flatten(2)  # [B, T, width]
        return self.dropout(self.o(attended))


class TransformerEncoder(nn.Module):
    def __init__(self, width: int, mlp_hidden: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.la1 = nn.LayerNorm(width)
        self.msa = MultiHeadSelfAttention(width, heads, dropout)
        self.la2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_hidden, width), nn.GELU(), nn.Dropout(dropout))  # quirk: GELU twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.msa(self.la1(x)) + x
        return self.mlp(self.la2(out)) + out


class ViT(nn.Module):
    last_stage = "enc"  # self_attention does not apply: the tokens are no [B, C, H, W] feature map

    def __init__(self, image_size: int = 32, patches_per_side: int = 8, width: int = 384, layers: int = 7,
                 heads: int = 12, mlp_hidden: int = 384, dropout: float = 0.0, final_norm: bool = True):
        super().__init__()
        self.patches_per_side = patches_per_side
        self.patch_size = image_size // patches_per_side
        self.emb = nn.Linear(3 * self.patch_size ** 2, width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width))
        self.pos_emb = nn.Parameter(torch.randn(1, patches_per_side ** 2 + 1, width))
        self.enc = nn.Sequential(*[TransformerEncoder(width, mlp_hidden, heads, dropout) for _ in range(layers)])
        # The paper's code built the LayerNorm for its memory ViTs too but never applied it: Identity, no unused weights
        self.norm = nn.LayerNorm(width) if final_norm else nn.Identity()
        self.feature_dim = width

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, 32, 32] -> [B, 64, 48]: 4 x 4 patches row by row, each flattened pixel-major, channel last."""
        size = self.patch_size
        out = x.unfold(2, size, size).unfold(3, size, size).permute(0, 2, 3, 4, 5, 1)
        return out.reshape(x.shape[0], self.patches_per_side ** 2, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.emb(self.patches(x))
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_emb
        return self.norm(self.enc(tokens)[:, 0])


@register_encoder("vit")
def vit(final_norm: bool = True):
    return ViT(final_norm=final_norm)
