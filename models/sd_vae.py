"""The Stable Diffusion / SDXL 2D AutoencoderKL, in plain torch, with diffusers' parameter names
(encoder/decoder down_blocks, up_blocks, mid_block, quant_conv, post_quant_conv), so released
diffusers-format weights load unchanged. Used by Open-Sora 1.0/1.1 directly and by 1.2 as its spatial VAE.
"""
from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import attention


class ResnetBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (the VAE mid block)."""

    def __init__(self, ch: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, ch, eps=eps)
        self.to_q, self.to_k, self.to_v = nn.Linear(ch, ch), nn.Linear(ch, ch), nn.Linear(ch, ch)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch)])

    def forward(self, x):
        b, c, h, w = x.shape
        t = rearrange(self.group_norm(x), "b c h w -> b 1 (h w) c")
        out = attention(self.to_q(t), self.to_k(t), self.to_v(t))
        return x + rearrange(self.to_out[0](out), "b 1 (h w) c -> b c h w", h=h, w=w)


class MidBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, groups), ResnetBlock2D(ch, ch, groups)])
        self.attentions = nn.ModuleList([AttnBlock(ch, groups)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as diffusers' Downsample2D(padding=0)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    def __init__(self, resnets, sampler_name: str, sampler):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))
        self._sampler = sampler_name if sampler is not None else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        return getattr(self, self._sampler)[0](x) if self._sampler else x


class Encoder(nn.Module):
    def __init__(self, cin, latent, chans, layers, groups):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, chans[0], 3, padding=1)
        blocks, prev = [], chans[0]
        for i, ch in enumerate(chans):
            res = [ResnetBlock2D(prev if j == 0 else ch, ch, groups) for j in range(layers)]
            blocks.append(Stage(res, "downsamplers", Downsample(ch) if i < len(chans) - 1 else None))
            prev = ch
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(chans[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, chans[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(chans[-1], 2 * latent, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, cout, latent, chans, layers, groups):
        super().__init__()
        rev = list(reversed(chans))
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups)
        blocks, prev = [], rev[0]
        for i, ch in enumerate(rev):
            res = [ResnetBlock2D(prev if j == 0 else ch, ch, groups) for j in range(layers + 1)]
            blocks.append(Stage(res, "upsamplers", Upsample(ch) if i < len(rev) - 1 else None))
            prev = ch
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(groups, rev[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(rev[-1], cout, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, norm_num_groups=32):
        super().__init__()
        chans = list(block_out_channels)
        self.encoder = Encoder(in_channels, latent_channels, chans, layers_per_block, norm_num_groups)
        self.decoder = Decoder(out_channels, latent_channels, chans, layers_per_block, norm_num_groups)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.spatial_ratio = 2 ** (len(chans) - 1)

    def encode_moments(self, x):
        """Posterior mean and logvar (clamped to [-30, 20])."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def config_from_state_dict(sd: dict, prefix: str = "") -> dict:
    n_blocks = 1 + max(int(k[len(prefix):].split(".")[2]) for k in sd if k.startswith(prefix + "encoder.down_blocks."))
    chans = [sd[f"{prefix}encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(n_blocks)]
    layers = 1 + max(int(k[len(prefix):].split(".")[4]) for k in sd
                     if k.startswith(prefix + "encoder.down_blocks.0.resnets."))
    return dict(in_channels=sd[f"{prefix}encoder.conv_in.weight"].shape[1],
                out_channels=sd[f"{prefix}decoder.conv_out.weight"].shape[0],
                latent_channels=sd[f"{prefix}post_quant_conv.weight"].shape[0], block_out_channels=tuple(chans),
                layers_per_block=layers, norm_num_groups=norm_groups(chans[0]))


def norm_groups(first_channels: int) -> int:
    """GroupNorm group counts are not stored in checkpoints: released VAEs use 32; tiny test models are built
    with first_channels // 2 (e.g. 8 channels, 4 groups)."""
    return min(32, max(1, first_channels // 2))
