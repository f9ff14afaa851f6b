"""CogVideoX's causal 3D VAE (AutoencoderKLCogVideoX, diffusers key names): 8x space, 4x time.

Videos are encoded 8 frames at a time (the first chunk takes the F % 8 remainder too) and decoded 2 latents at
a time. Every causal conv carries the last 2 frames of its input into the next chunk (the "conv cache"), so
the chunks join up exactly like one causal pass, except for GroupNorm, whose statistics are per chunk: the
chunking is part of the numerics and is reproduced as diffusers does it.

Spatial tiling is diffusers' `enable_tiling()`: overlapping tiles, each with its own conv cache, the overlap
faded in from the tile above and the tile to the left. Here time is the outer loop and tiles the inner one
(diffusers decodes each tile over all frames first); blending works frame by frame, so the result is the same
while peak memory depends only on the chunk and the tile, never on the video length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ... import comfy_adapter
from ..errors import InputError
from ..tiling import stitch_rows

# Latent scale per variant (the VAE is the same for all of them); 1.5's I2V divides the image latent by it.
SCALING = {"2b": 1.15258426, "5b": 0.7, "5b_i2v": 0.7, "1.5": 0.7, "1.5_i2v": 0.7}
ENCODE_FRAMES, DECODE_LATENTS = 8, 2
SAFE_CONV_GIB = 2.0  # diffusers' CogVideoXSafeConv3d threshold, counted as numel * 2 bytes


def frame_chunks(n: int, size: int) -> list[tuple[int, int]]:
    """diffusers' frame batching: max(n // size, 1) chunks of `size`, the first one taking the n % size rest too
    (49 frames -> 9, 8, 8, 8, 8, 8; 13 latents -> 3, 2, 2, 2, 2, 2)."""
    count, rest = max(n // size, 1), n % size
    return [(size * i + (0 if i == 0 else rest), size * (i + 1) + rest) for i in range(count)]


def conv3d_in_parts(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """conv(x), split along time (with kernel - 1 frames of overlap) when x is over 2 GiB at 2 bytes per value,
    as CogVideoXSafeConv3d does: the same numbers, a bounded workspace."""
    gib = x.numel() * 2 / 1024 ** 3
    if gib <= SAFE_CONV_GIB:
        return conv(x)
    k = conv.kernel_size[0]
    parts = list(torch.chunk(x, int(gib / 2) + 1, dim=2))
    if k > 1:
        parts = [parts[0]] + [torch.cat([prev[:, :, 1 - k:], cur], dim=2) for prev, cur in zip(parts, parts[1:])]
    return torch.cat([conv(p) for p in parts], dim=2)


class CausalConv3d(nn.Module):
    """Time is padded in front only: with the cached frames of the previous chunk, or copies of the first frame.
    `cache` is a dict the caller keeps per video (per tile), keyed by the conv."""

    def __init__(self, cin, cout, kernel=3):
        super().__init__()
        self.k = kernel
        pad = (kernel - 1) // 2
        self.conv = nn.Conv3d(cin, cout, kernel, padding=(0, pad, pad))

    def forward(self, x, cache: dict):
        if self.k > 1:
            front = cache.get(self)
            if front is None:
                front = x[:, :, :1].expand(-1, -1, self.k - 1, -1, -1)
            x = torch.cat([front, x], dim=2)
            cache[self] = x[:, :, 1 - self.k:].clone()  # a copy, so the chunk's activations can be freed
        return conv3d_in_parts(self.conv, x)


class SpatialNorm3D(nn.Module):
    """GroupNorm(f) * conv_y(zq) + conv_b(zq), zq (the decoder's input latent) resized to f by nearest
    neighbour; an odd-length chunk resizes its first frame on its own (it stands for one pixel frame)."""

    def __init__(self, f_ch, zq_ch, groups):
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, f_ch, eps=1e-6)
        self.conv_y, self.conv_b = CausalConv3d(zq_ch, f_ch, 1), CausalConv3d(zq_ch, f_ch, 1)

    def forward(self, f, zq, cache: dict):
        t, h, w = f.shape[-3:]
        if t > 1 and t % 2 == 1:
            zq = torch.cat([F.interpolate(zq[:, :, :1], size=(1, h, w)),
                            F.interpolate(zq[:, :, 1:], size=(t - 1, h, w))], dim=2)
        else:
            zq = F.interpolate(zq, size=(t, h, w))
        return self.norm_layer(f) * self.conv_y(zq, cache) + self.conv_b(zq, cache)


class ResnetBlock3D(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus a 1x1x1 shortcut when the width changes. The decoder's norms
    are SpatialNorm3D on the latent (zq_ch set), the encoder's plain GroupNorm."""

    def __init__(self, cin, cout, groups, eps, zq_ch=None):
        super().__init__()
        self.spatial = zq_ch is not None
        if self.spatial:
            self.norm1, self.norm2 = SpatialNorm3D(cin, zq_ch, groups), SpatialNorm3D(cout, zq_ch, groups)
        else:
            self.norm1, self.norm2 = nn.GroupNorm(groups, cin, eps=eps), nn.GroupNorm(groups, cout, eps=eps)
        self.conv1, self.conv2 = CausalConv3d(cin, cout), CausalConv3d(cout, cout)
        self.conv_shortcut = nn.Conv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x, cache: dict, zq=None):
        def norm(layer, h):
            return layer(h, zq, cache) if self.spatial else layer(h)

        h = self.conv1(F.silu(norm(self.norm1, x)), cache)
        h = self.conv2(F.silu(norm(self.norm2, h)), cache)
        return h + (x if self.conv_shortcut is None else conv3d_in_parts(self.conv_shortcut, x))


def _per_frame_conv2d(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    y = conv(x.permute(0, 2, 1, 3, 4).flatten(0, 1))  # [B*T, C, H, W]
    return y.unflatten(0, (b, -1)).permute(0, 2, 1, 3, 4)


class Downsample3D(nn.Module):
    """Average-pool time in pairs (an odd first frame stays alone: it is the causal image frame), then a
    stride-2 conv per frame, padded right and bottom."""

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
        return _per_frame_conv2d(self.conv, F.pad(x, (0, 1, 0, 1)))


class Upsample3D(nn.Module):
    """Nearest 2x in space (and in time, except an odd first frame), then a conv per frame."""

    def __init__(self, ch, compress_time):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.compress_time = compress_time

    def forward(self, x):
        t = x.shape[2]
        if self.compress_time and t > 1 and t % 2 == 1:
            first = F.interpolate(x[:, :, 0], scale_factor=2.0)[:, :, None]
            x = torch.cat([first, F.interpolate(x[:, :, 1:], scale_factor=2.0)], dim=2)
        elif self.compress_time and t > 1:
            x = F.interpolate(x, scale_factor=2.0)
        else:  # space only, frame by frame
            x = F.interpolate(x.permute(0, 2, 1, 3, 4).flatten(0, 1), scale_factor=2.0)
            x = x.unflatten(0, (-1, t)).permute(0, 2, 1, 3, 4)
        return _per_frame_conv2d(self.conv, x)


class Stage(nn.Module):
    """A down/up/mid block: resnets, then the optional resampler (diffusers' `downsamplers.0` / `upsamplers.0`)."""

    def __init__(self, resnets, sampler_name=None, sampler=None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.sampler_name = sampler_name if sampler is not None else None
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))

    def forward(self, x, cache: dict, zq=None):
        for r in self.resnets:
            x = r(x, cache, zq)
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

    def forward(self, x, cache: dict):
        x = self.conv_in(x, cache)
        for b in self.down_blocks:
            x = b(x, cache)
        return self.conv_out(F.silu(self.norm_out(self.mid_block(x, cache))), cache)


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

    def forward(self, z, cache: dict):
        x = self.mid_block(self.conv_in(z, cache), cache, z)
        for b in self.up_blocks:
            x = b(x, cache, z)
        return self.conv_out(F.silu(self.norm_out(x, z, cache)), cache)


# ------------------------------------------------------------------------------------------------------------
# Spatial tiling (diffusers' enable_tiling geometry)
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tiling:
    """Tiles of `tile` latent pixels starting every `stride` latent pixels, per axis (height, width).

    diffusers describes the same grid by a pixel tile size and overlap factors (default: half of
    sample_height/width = 240x360 px, factors 1/6 and 1/5 -> tiles of 30x45 latents every 25x36). Decoding
    blends (tile - stride) * 8 pixels and keeps stride * 8 of each tile; encoding blends tile - stride latents
    and keeps stride. A video no larger than one tile is not tiled at all."""
    tile: tuple[int, int] = (30, 45)
    stride: tuple[int, int] = (25, 36)

    def __post_init__(self):
        for axis, t, s in zip(("height", "width"), self.tile, self.stride):
            if not 0 < s <= t:
                raise ValueError(f"VAE tiling {axis}: the stride ({s} latents) must be between 1 and the tile size "
                                 f"({t}); use an overlap smaller than the tile")

    @classmethod
    def from_pixels(cls, tile_px: int, overlap_px: int, ratio: int = 8) -> "Tiling":
        """Square tiles of `tile_px` pixels overlapping by `overlap_px` (both multiples of the VAE's 8x)."""
        if tile_px % ratio or overlap_px % ratio:
            raise ValueError(f"VAE tiling: tile size {tile_px} and overlap {overlap_px} must be multiples of {ratio} "
                             f"pixels; round them to multiples of {ratio}")
        t, s = tile_px // ratio, (tile_px - overlap_px) // ratio
        return cls((t, t), (s, s))

    @classmethod
    def diffusers(cls, sample_height=480, sample_width=720, factor_height=1 / 6, factor_width=1 / 5, ratio=8):
        """The grid diffusers' enable_tiling() sets up for a VAE config (defaults: the released one)."""
        tile = (int(sample_height // 2 / ratio), int(sample_width // 2 / ratio))
        return cls(tile, (int(tile[0] * (1 - factor_height)), int(tile[1] * (1 - factor_width))))


def run_tiled(net, x: torch.Tensor, frames_per_chunk: int, tile, stride, blend, keep):
    """Yield net's output chunk by chunk in time: x is cut into diffusers' frame chunks and into (h, w) tiles
    every `stride`; each tile keeps its own conv cache across chunks. stride >= size means one tile."""
    ys, xs = range(0, x.shape[3], stride[0]), range(0, x.shape[4], stride[1])  # as diffusers: thin last tiles too
    caches = {(y, x0): {} for y in ys for x0 in xs}
    for a, b in frame_chunks(x.shape[2], frames_per_chunk):
        tiles = [[net(x[:, :, a:b, y:y + tile[0], x0:x0 + tile[1]], caches[(y, x0)]) for x0 in xs] for y in ys]
        # diffusers' blend_v / blend_h: weights in the tiles' dtype (bf16 tiles blend in bf16)
        yield tiles[0][0] if len(ys) == len(xs) == 1 else stitch_rows(tiles, blend, keep)


# ------------------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------------------
class CogVideoXVAE(nn.Module):
    chunks = staticmethod(frame_chunks)

    def __init__(self, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512), latent_channels=16,
                 layers_per_block=3, norm_num_groups=32, norm_eps=1e-6, temporal_compression_ratio=4,
                 scaling_factor=1.15258426, invert_scale_latents=False, sample_height=480, sample_width=720,
                 **_ignored):
        super().__init__()
        levels = int(temporal_compression_ratio).bit_length() - 1
        self.encoder = Encoder(in_channels, latent_channels, list(block_out_channels), layers_per_block,
                               norm_num_groups, norm_eps, levels)
        self.decoder = Decoder(out_channels, latent_channels, list(block_out_channels), layers_per_block,
                               norm_num_groups, norm_eps, levels)
        self.scaling_factor = scaling_factor
        self.invert_scale_latents = invert_scale_latents
        self.spatial_ratio = 2 ** (len(block_out_channels) - 1)
        self.latent_channels = latent_channels
        self.default_tiling = Tiling.diffusers(sample_height, sample_width, ratio=self.spatial_ratio)

    def encode_moment_chunks(self, x, tiling: Tiling | None = None):
        """x [B,3,F,H,W] in -1..1 -> the encoder's output [B,2C,f,h,w] (mean | logvar), chunk by chunk in time."""
        r, size = self.spatial_ratio, tuple(x.shape[3:])
        if tiling is None or (size[0] <= tiling.tile[0] * r and size[1] <= tiling.tile[1] * r):
            return run_tiled(self.encoder, x, ENCODE_FRAMES, size, size, (0, 0), size)
        (th, tw), (sh, sw) = tiling.tile, tiling.stride
        return run_tiled(self.encoder, x, ENCODE_FRAMES, (th * r, tw * r), (sh * r, sw * r), (th - sh, tw - sw),
                         (sh, sw))

    def encode_moments(self, x, tiling: Tiling | None = None):
        """x [B,3,F,H,W] in -1..1 -> the posterior's mean and logvar (clamped to [-30, 20]), unscaled."""
        mean, logvar = torch.cat(list(self.encode_moment_chunks(x, tiling)), dim=2).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_chunks(self, z, latents_per_chunk: int = DECODE_LATENTS, tiling: Tiling | None = None):
        """Yield frames [B,3,f,H,W] chunk by chunk for a raw latent z (already divided by the scaling factor).
        `latents_per_chunk` other than 2 changes GroupNorm's statistics, and so the frames."""
        size = tuple(z.shape[3:])
        if tiling is None or (size[0] <= tiling.tile[0] and size[1] <= tiling.tile[1]):
            return run_tiled(self.decoder, z, latents_per_chunk, size, size, (0, 0), size)
        r, (th, tw), (sh, sw) = self.spatial_ratio, tiling.tile, tiling.stride
        return run_tiled(self.decoder, z, latents_per_chunk, (th, tw), (sh, sw), ((th - sh) * r, (tw - sw) * r),
                         (sh * r, sw * r))

    def decode(self, z, tiling: Tiling | None = None):
        return torch.cat(list(self.decode_chunks(z, tiling=tiling)), dim=2)

    # -- the pack's VAE interface (pipeline.VideoVAE) ------------------------------------------
    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // 4 + 1

    def check_num_frames(self, num_frames: int):
        """(problem, fix) unless the causal VAE can take num_frames (4k+1), else None."""
        if (num_frames - 1) % 4:
            return (f"{num_frames} frames is not 4k+1, which the CogVideoX VAE needs",
                    f"use {4 * ((num_frames - 1) // 4) + 1} or {4 * ((num_frames - 1) // 4 + 1) + 1}")
        return None

    def encoder_runs(self, shape) -> tuple[nn.Module, int]:
        """The encoder and how many frame chunks an untiled encode of a [B, 3, F, H, W] video runs it on."""
        return self.encoder, len(frame_chunks(shape[2], ENCODE_FRAMES))

    def encode_video(self, x):
        """The posterior mean, unscaled (the family scales around the transformer)."""
        return self.encode_moments(x)[0]

    def decode_video(self, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                     spatial_tile: int = 0, spatial_overlap: int = 64):
        """Into a float32 CPU video. Temporal chunks carry the conv cache, so they need no overlap; the chunk size
        (2 latents in the reference) sets GroupNorm's statistics, so 0 keeps the reference's. Spatial tiles are
        diffusers' own (enable_tiling with this tile size and overlap): each tile keeps its conv cache, seams
        blend as there."""
        batch = temporal_chunk or DECODE_LATENTS
        grid = None
        if spatial_tile:
            r = self.spatial_ratio
            if spatial_tile % r or spatial_overlap % r or spatial_overlap >= spatial_tile:
                raise InputError("spatial_overlap", f"CogVideoX tiles need a tile ({spatial_tile}) and overlap "
                                 f"({spatial_overlap}) in multiples of {r} px, the overlap below the tile",
                                 f"use multiples of {r}, e.g. 256 and 64")
            grid = Tiling.from_pixels(spatial_tile, spatial_overlap, r)
        bar = comfy_adapter.Progress(len(self.chunks(z.shape[2], batch)), desc="decoding")
        frames = []
        for i, chunk in enumerate(self.decode_chunks(z, batch, tiling=grid)):
            frames.append(chunk.float().cpu())
            bar.update_absolute(i + 1)
        return torch.cat(frames, dim=2)


def posterior_sample(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """DiagonalGaussianDistribution.sample with a given standard-normal draw shaped like mean."""
    return mean + torch.exp(0.5 * logvar) * noise.to(mean)


def unscale_latents(z: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """The transformer's latent -> the raw VAE latent, as diffusers' decode_latents: times the reciprocal
    (dividing differs in the last bit)."""
    return z * (1 / scaling_factor)
