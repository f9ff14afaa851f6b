"""CogVideoX's causal 3D VAE (AutoencoderKLCogVideoX, diffusers key names): 8x space, 4x time.

Videos are encoded 8 frames at a time (the first chunk takes the F % 8 remainder too) and decoded 2 latents at
a time, with every causal conv carrying its last 2 input frames into the next chunk (the "conv cache"):
the result equals one causal pass except for GroupNorm, whose statistics are per chunk, so the chunking
itself is part of the numerics and is reproduced exactly. Memory is bounded by one chunk.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALING = {"2b": 1.15258426, "5b": 0.7}
ENCODE_FRAMES, DECODE_LATENTS = 8, 2


class CausalConv3d(nn.Module):
    """Time is padded in front with the cached frames of the previous chunk, or with copies of the first frame."""

    def __init__(self, cin, cout, kernel=3, stride=1):
        super().__init__()
        self.k = kernel
        pad = (kernel - 1) // 2
        self.conv = nn.Conv3d(cin, cout, kernel, stride=(stride, 1, 1), padding=(0, pad, pad))
        self.cache = None

    def forward(self, x):
        if self.k > 1:
            front = self.cache if self.cache is not None else x[:, :, :1].expand(-1, -1, self.k - 1, -1, -1)
            x = torch.cat([front, x], dim=2)
            self.cache = x[:, :, -(self.k - 1):].clone()
        return self.conv(x)


class SpatialNorm3D(nn.Module):
    """GroupNorm(f) * conv_y(zq) + conv_b(zq), zq (the decoder's input latent) resized to f; an odd-length
    chunk resizes its first frame on its own."""

    def __init__(self, f_ch, zq_ch, groups):
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, f_ch, eps=1e-6)
        self.conv_y, self.conv_b = CausalConv3d(zq_ch, f_ch, 1), CausalConv3d(zq_ch, f_ch, 1)

    def forward(self, f, zq):
        if f.shape[2] > 1 and f.shape[2] % 2 == 1:
            zq = torch.cat([F.interpolate(zq[:, :, :1], size=(1, *f.shape[-2:])),
                            F.interpolate(zq[:, :, 1:], size=(f.shape[2] - 1, *f.shape[-2:]))], dim=2)
        else:
            zq = F.interpolate(zq, size=f.shape[-3:])
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock3D(nn.Module):
    def __init__(self, cin, cout, groups, eps, zq_ch=None):
        super().__init__()
        norm = (lambda c: SpatialNorm3D(c, zq_ch, groups)) if zq_ch else (lambda c: nn.GroupNorm(groups, c, eps=eps))
        self.norm1, self.conv1 = norm(cin), CausalConv3d(cin, cout)
        self.norm2, self.conv2 = norm(cout), CausalConv3d(cout, cout)
        self.conv_shortcut = nn.Conv3d(cin, cout, 1) if cin != cout else None
        self.spatial = zq_ch is not None

    def forward(self, x, zq=None):
        def n(norm, h):
            return norm(h, zq) if self.spatial else norm(h)

        h = self.conv1(F.silu(n(self.norm1, x)))
        h = self.conv2(F.silu(n(self.norm2, h)))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Downsample3D(nn.Module):
    """Average-pool time in pairs (an odd first frame stays alone), then a stride-2 conv per frame."""

    def __init__(self, ch, compress_time):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)
        self.compress_time = compress_time

    def forward(self, x):
        b, c, t, h, w = x.shape
        if self.compress_time:
            s = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)
            if t % 2 == 1:
                rest = F.avg_pool1d(s[..., 1:], 2, 2) if t > 1 else s[..., 1:]
                s = torch.cat([s[..., :1], rest], dim=-1)
            else:
                s = F.avg_pool1d(s, 2, 2)
            x = s.reshape(b, h, w, c, -1).permute(0, 3, 4, 1, 2)
        x = F.pad(x, (0, 1, 0, 1))
        t = x.shape[2]
        y = self.conv(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, *x.shape[-2:]))
        return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)


class Upsample3D(nn.Module):
    """Nearest 2x in space (and in time, except an odd first frame), then a conv per frame."""

    def __init__(self, ch, compress_time):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.compress_time = compress_time

    def forward(self, x):
        b, c, t, h, w = x.shape
        if self.compress_time and t > 1 and t % 2 == 1:
            first = F.interpolate(x[:, :, 0], scale_factor=2.0)[:, :, None]
            x = torch.cat([first, F.interpolate(x[:, :, 1:], scale_factor=2.0)], dim=2)
        elif self.compress_time and t > 1:
            x = F.interpolate(x, scale_factor=2.0)
        else:
            x = F.interpolate(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), scale_factor=2.0)
            x = x.reshape(b, t, c, 2 * h, 2 * w).permute(0, 2, 1, 3, 4)
        t = x.shape[2]
        y = self.conv(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, *x.shape[-2:]))
        return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)


class Stage(nn.Module):
    def __init__(self, resnets, sampler_name=None, sampler=None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))
        self.sampler_name = sampler_name if sampler is not None else None

    def forward(self, x, zq=None):
        for r in self.resnets:
            x = r(x, zq)
        return getattr(self, self.sampler_name)[0](x) if self.sampler_name else x


class Encoder(nn.Module):
    def __init__(self, cin, latent, chans, layers, groups, eps, time_levels):
        super().__init__()
        self.conv_in = CausalConv3d(cin, chans[0])
        blocks, prev = [], chans[0]
        for i, ch in enumerate(chans):
            res = [ResnetBlock3D(prev if j == 0 else ch, ch, groups, eps) for j in range(layers)]
            last = i == len(chans) - 1
            blocks.append(Stage(res, "downsamplers", None if last else Downsample3D(ch, i < time_levels)))
            prev = ch
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = Stage([ResnetBlock3D(prev, prev, groups, eps) for _ in range(2)])
        self.norm_out = nn.GroupNorm(groups, prev, eps=1e-6)
        self.conv_out = CausalConv3d(prev, 2 * latent)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, cout, latent, chans, layers, groups, eps, time_levels):
        super().__init__()
        rev = list(reversed(chans))
        self.conv_in = CausalConv3d(latent, rev[0])
        self.mid_block = Stage([ResnetBlock3D(rev[0], rev[0], groups, eps, latent) for _ in range(2)])
        blocks, prev = [], rev[0]
        for i, ch in enumerate(rev):
            res = [ResnetBlock3D(prev if j == 0 else ch, ch, groups, eps, latent) for j in range(layers + 1)]
            last = i == len(rev) - 1
            blocks.append(Stage(res, "upsamplers", None if last else Upsample3D(ch, i < time_levels)))
            prev = ch
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = SpatialNorm3D(prev, latent, groups)
        self.conv_out = CausalConv3d(prev, cout)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z), z)
        for b in self.up_blocks:
            x = b(x, z)
        return self.conv_out(F.silu(self.norm_out(x, z)))


class CogVideoXVAE(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512), latent_channels=16,
                 layers_per_block=3, norm_num_groups=32, norm_eps=1e-6, temporal_compression_ratio=4,
                 scaling_factor=1.15258426, **_ignored):
        super().__init__()
        levels = int(temporal_compression_ratio).bit_length() - 1
        self.encoder = Encoder(in_channels, latent_channels, list(block_out_channels), layers_per_block,
                               norm_num_groups, norm_eps, levels)
        self.decoder = Decoder(out_channels, latent_channels, list(block_out_channels), layers_per_block,
                               norm_num_groups, norm_eps, levels)
        self.scaling_factor = scaling_factor
        self.spatial_ratio = 2 ** (len(block_out_channels) - 1)
        self.latent_channels = latent_channels

    def _clear_cache(self):
        for m in self.modules():
            if isinstance(m, CausalConv3d):
                m.cache = None

    @staticmethod
    def chunks(n: int, size: int):
        """diffusers' frame batching: max(n // size, 1) chunks, the first one taking the remainder too."""
        count, rem = max(n // size, 1), n % size
        return [(size * i + (0 if i == 0 else rem), size * (i + 1) + rem) for i in range(count)]

    def encode_moments(self, x):
        """x [B,3,F,H,W] in -1..1 -> posterior mean and logvar (clamped to [-30, 20])."""
        self._clear_cache()
        try:
            h = torch.cat([self.encoder(x[:, :, a:b]) for a, b in self.chunks(x.shape[2], ENCODE_FRAMES)], dim=2)
        finally:
            self._clear_cache()
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_chunks(self, z, latents_per_chunk: int = DECODE_LATENTS):
        """Yield frames chunk by chunk for a raw latent z (already divided by the scaling factor)."""
        self._clear_cache()
        try:
            for a, b in self.chunks(z.shape[2], latents_per_chunk):
                yield self.decoder(z[:, :, a:b])
        finally:
            self._clear_cache()

    def decode(self, z):
        return torch.cat(list(self.decode_chunks(z)), dim=2)
