"""HunyuanVideo causal 3D VAE as Open-Sora 2.0 uses it (`AutoencoderKLCausal3D`, `hunyuan_vae.safetensors`).

16 latent channels, 8x in space, 4x in time with (T - 1) / 4 + 1 latent frames: frame 0 is encoded on its own
(an image), every later group of 4 frames becomes one latent. Everything is causal in time: convs pad with
copies of the first frame (replicate, k - 1 frames in front), the mid-block attention lets a token see its own
frame and earlier ones only.

Encode: encoder -> quant_conv -> moments (mean, logvar) -> mean (mode) or mean + std * noise (sample), then
z = 0.476986 * (z - 0). Decode: z / 0.476986 + 0 -> post_quant_conv -> decoder, pixels in about -1..1.

Tiling (off by default, as in the original's config dataclass; Open-Sora's inference configs turn spatial tiling
on) reproduces the original's tiles, in-place blends and crops exactly, so tiled results match it too:
* space: tiles of `sample_size` pixels (`sample_size / 2**(len(block_out_channels) - 1)` latents) at a stride of
  (1 - overlap) tiles; each tile is faded in from the tile above, then from the tile to the left, over
  `overlap * tile` outputs, and cropped to `tile - blend`.
* time: tiles of `sample_tsize` frames plus one (`sample_tsize / 4` latents plus one). A later tile's first
  output frame only exists because of the tile's causal start, so it is dropped; the rest fades in from the
  previous tile.
Slicing runs a batch one video at a time (same numbers: nothing here mixes batch items).

State-dict keys are the original's (`encoder.down_blocks.N.resnets.M.conv1.conv.weight`,
`encoder.mid_block.attentions.0.to_q.weight`, `quant_conv.weight`, ...), which diffusers'
AutoencoderKLHunyuanVideo shares; HunyuanVideo's own pytorch_model.pt may hold them under `vae.` (its loader
strips that prefix, and so does `normalize_state_dict`).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .. import sd_vae
from ..checkpoint import build_strict
from ..tiling import check_window_inputs, decode_windowed, fade_in_, original_windows, stitch_rows

SCALE_FACTOR = 0.476986
SHIFT_FACTOR = 0.0
# What Open-Sora 2.0's inference configs set on top of the constructor defaults (configs/diffusion/inference).
RELEASED_INFERENCE = dict(use_spatial_tiling=True, use_temporal_tiling=False)
# The original's ChannelChunkConv3d splits convolutions whose per-video input reaches 2**31 values (so large
# that some GPU kernels overflow 32-bit indexing); below it a conv is a plain conv.
CONV3D_NUMEL_LIMIT = 2 ** 31


# --------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------
def _chunk_count(numel: int, channels: int) -> int:
    """Chunks of `channels` needed to bring `numel` under the limit, rounded up so the chunks come out even."""
    n = math.ceil(numel / CONV3D_NUMEL_LIMIT)
    return math.ceil(channels / max(1, channels // n))


class CausalConv3d(nn.Module):
    """Conv3d that sees only the current and earlier frames: time is padded in front by k - 1 copies of the first
    frame, space by k // 2 copies of the border (replicate, not zeros, so that the first frame of a video looks
    like a still image to the conv)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride=1, bias: bool = True):
        super().__init__()
        self.pad = (kernel // 2, kernel // 2, kernel // 2, kernel // 2, kernel - 1, 0)  # (W, H, T)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, bias=bias)

    def forward(self, x):
        if any(self.pad):
            x = F.pad(x, self.pad, mode="replicate")
        if x[:1].numel() < CONV3D_NUMEL_LIMIT:
            return self.conv(x)
        return self._conv_in_chunks(x)

    def _conv_in_chunks(self, x):
        """The original's channel-chunked conv for huge inputs: output channels in groups, each the float32 sum
        of per-input-shard convs, cast back, then the bias (its numerics, not only its memory)."""
        conv = self.conv
        out_size = [(d - k) // s + 1 for d, k, s in zip(x.shape[2:], conv.kernel_size, conv.stride)]
        n_in = _chunk_count(x.numel(), conv.in_channels)
        n_out = _chunk_count(x.shape[0] * conv.out_channels * math.prod(out_size), conv.out_channels)
        if n_in == 1 and n_out == 1:
            return conv(x)
        shards = x.chunk(n_in, dim=1)
        biases = conv.bias.chunk(n_out) if conv.bias is not None else [None] * n_out
        outs = []
        for weight, bias in zip(conv.weight.chunk(n_out), biases):
            o = sum(F.conv3d(s, w, None, conv.stride).float() for s, w in zip(shards, weight.chunk(n_in, dim=1)))
            o = o.to(x.dtype)
            outs.append(o if bias is None else o + bias[None, :, None, None, None])
        return torch.cat(outs, dim=1)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the input (through a 1x1x1 conv where the width changes)."""

    def __init__(self, cin: int, cout: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = CausalConv3d(cin, cout, 3)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = CausalConv3d(cout, cout, 3)
        self.conv_shortcut = CausalConv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample(nn.Module):
    """A strided causal conv. With the front padding, T frames become (T - 1) // 2 + 1 under a time stride of 2:
    frame 0 keeps a latent of its own."""

    def __init__(self, channels: int, stride: tuple[int, int, int]):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=stride)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest upsampling then a causal conv. Frame 0 is upsampled in space only (the inverse of the encoder
    giving it a latent of its own), so T latent frames become 1 + factor * (T - 1)."""

    def __init__(self, channels: int, factor: tuple[int, int, int]):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x):
        ft, fh, fw = self.factor
        first = repeat(x[:, :, :1], "b c t h w -> b c t (h i) (w j)", i=fh, j=fw)
        rest = repeat(x[:, :, 1:], "b c t h w -> b c (t k) (h i) (w j)", k=ft, i=fh, j=fw)
        return self.conv(torch.cat([first, rest], dim=2))


class FrameCausalAttention(nn.Module):
    """Single-head self-attention over all (t, h, w) tokens with a residual (diffusers `Attention` with
    group_norm, head dim = width). A token attends to every token of its own frame and of earlier frames: the
    frame-causal mask. It is applied by attending each frame's queries to the prefix of frames up to it, which is
    the masked softmax exactly, without building the (THW)^2 mask."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # diffusers' to_out.0 (then a dropout)

    def forward(self, x):
        _, _, t, h, w = x.shape
        tokens = rearrange(self.group_norm(x), "b c t h w -> b (t h w) c")
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        n = h * w
        out = torch.cat([F.scaled_dot_product_attention(q[:, f * n:(f + 1) * n], k[:, :(f + 1) * n],
                                                        v[:, :(f + 1) * n]) for f in range(t)], dim=1)
        out = rearrange(self.to_out[0](out), "b (t h w) c -> b c t h w", t=t, h=h, w=w)
        return x + out


class MidBlock(nn.Module):
    """resnet, (attention, resnet)."""

    def __init__(self, channels: int, groups: int, add_attention: bool = True):
        super().__init__()
        # Registered in the original's order, so that state_dict() lists keys as the released file does.
        self.attentions = nn.ModuleList([FrameCausalAttention(channels, groups)] if add_attention else [])
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])

    def forward(self, x):
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_layers: int, groups: int, stride: tuple[int, int, int]):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(num_layers)])
        # None (no keys) where the block keeps the resolution, as in the original.
        self.downsamplers = nn.ModuleList([Downsample(cout, stride)]) if max(stride) > 1 else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_layers: int, groups: int, factor: tuple[int, int, int]):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample(cout, factor)]) if max(factor) > 1 else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


def block_strides(n_blocks: int, time_ratio: int, space_ratio: int) -> list[tuple[int, int, int]]:
    """(t, h, w) resampling factor of each block, the same list for the encoder's down blocks and the decoder's
    up blocks (each counted from its input side).

    Space changes in the first log2(space_ratio) blocks. With 4x time, time changes in the log2(4) = 2 blocks just
    before the last one (4 blocks: (1,2,2), (2,2,2), (2,2,2), none); with 8x, alongside space.
    """
    n_space, n_time = int(math.log2(space_ratio)), int(math.log2(time_ratio))
    strides = []
    for i in range(n_blocks):
        final = i == n_blocks - 1
        if time_ratio == 4:
            down_t = i >= n_blocks - 1 - n_time and not final
        elif time_ratio == 8:
            down_t = i < n_space
        else:
            raise ValueError(f"time_compression_ratio must be 4 or 8, got {time_ratio}")
        s = 2 if i < n_space else 1
        strides.append((2 if down_t else 1, s, s))
    return strides


class Encoder(nn.Module):
    def __init__(self, in_channels, latent_channels, block_out_channels, layers_per_block, groups, strides,
                 add_attention):
        super().__init__()
        chans = list(block_out_channels)
        self.conv_in = CausalConv3d(in_channels, chans[0], 3)
        self.down_blocks = nn.ModuleList([DownBlock(chans[max(i - 1, 0)], c, layers_per_block, groups, strides[i])
                                          for i, c in enumerate(chans)])
        self.mid_block = MidBlock(chans[-1], groups, add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, chans[-1], eps=1e-6)
        self.conv_out = CausalConv3d(chans[-1], 2 * latent_channels, 3)  # mean and logvar

    def forward(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, latent_channels, out_channels, block_out_channels, layers_per_block, groups, strides,
                 add_attention):
        super().__init__()
        chans = list(reversed(block_out_channels))
        self.conv_in = CausalConv3d(latent_channels, chans[0], 3)
        # One resnet more per block than the encoder. (Registered before the mid block, which runs first, to
        # keep the original's key order.)
        self.up_blocks = nn.ModuleList([UpBlock(chans[max(i - 1, 0)], c, layers_per_block + 1, groups, strides[i])
                                        for i, c in enumerate(chans)])
        self.mid_block = MidBlock(chans[0], groups, add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, chans[-1], eps=1e-6)
        self.conv_out = CausalConv3d(chans[-1], out_channels, 3)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# --------------------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------------------
# The original's blend weights are Python floats: made in float64, applied in float32 (a bf16 tile is rounded
# once, on the copy back).
BLEND_WEIGHTS = torch.float32


def tile_space(fn, x: torch.Tensor, tile: int, stride: int, blend: int, keep: int) -> torch.Tensor:
    """fn over overlapping tile x tile windows of x's last two axes (every `stride`), each output tile blended
    with the one above (first) and the one to the left, then cropped to keep x keep and stitched."""
    rows = [[fn(x[..., i:i + tile, j:j + tile]) for j in range(0, x.shape[-1], stride)]
            for i in range(0, x.shape[-2], stride)]
    return stitch_rows(rows, (blend, blend), (keep, keep), BLEND_WEIGHTS)


def tile_time(fn, x: torch.Tensor, tile: int, stride: int, blend: int, keep: int) -> torch.Tensor:
    """fn over windows of tile + 1 frames every `stride` frames (axis 2). Each later window starts on a frame its
    predecessor also covered and, being causal, turns it into an extra leading output frame: that frame is
    dropped. Outputs are blended with the previous window and cropped to `keep` frames (keep + 1 for the first
    window, which has that leading frame legitimately)."""
    outs = []
    for n, i in enumerate(range(0, x.shape[2], stride)):
        out = fn(x[:, :, i:i + tile + 1])
        outs.append(out if n == 0 else out[:, :, 1:])
    for n in range(1, len(outs)):
        fade_in_(outs[n - 1], outs[n], blend, 2, BLEND_WEIGHTS)
    return torch.cat([outs[0][:, :, :keep + 1]] + [out[:, :, :keep] for out in outs[1:]], dim=2)


# --------------------------------------------------------------------------------------------------------------
# The VAE
# --------------------------------------------------------------------------------------------------------------
class HunyuanVAE(nn.Module):
    """AutoencoderKLCausal3D (constructor arguments and defaults are the original's AutoEncoder3DConfig)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, latent_channels: int = 16,
                 block_out_channels=(128, 256, 512, 512), layers_per_block: int = 2, norm_num_groups: int = 32,
                 time_compression_ratio: int = 4, spatial_compression_ratio: int = 8,
                 mid_block_add_attention: bool = True, scale_factor: float = SCALE_FACTOR,
                 shift_factor: float = SHIFT_FACTOR, sample_size=256, sample_tsize: int = 64,
                 tile_overlap_factor: float = 0.25, use_slicing: bool = False, use_spatial_tiling: bool = False,
                 use_temporal_tiling: bool = False):
        super().__init__()
        strides = block_strides(len(block_out_channels), time_compression_ratio, spatial_compression_ratio)
        self.encoder = Encoder(in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups,
                               strides, mid_block_add_attention)
        self.decoder = Decoder(latent_channels, out_channels, block_out_channels, layers_per_block,
                               norm_num_groups, strides, mid_block_add_attention)
        self.quant_conv = nn.Conv3d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(latent_channels, latent_channels, 1)

        self.latent_channels = latent_channels
        self.time_compression_ratio = time_compression_ratio
        self.spatial_compression_ratio = spatial_compression_ratio
        self.scale_factor, self.shift_factor = scale_factor, shift_factor
        self.use_slicing = use_slicing
        self.use_spatial_tiling = use_spatial_tiling
        self.use_temporal_tiling = use_temporal_tiling
        self.tile_overlap_factor = tile_overlap_factor
        size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.tile_sample_min_size = size
        # Quirk kept: the latent tile divides by 2**(blocks - 1), not by spatial_compression_ratio.
        self.tile_latent_min_size = int(size / 2 ** (len(block_out_channels) - 1))
        self.tile_sample_min_tsize = sample_tsize
        self.tile_latent_min_tsize = sample_tsize // time_compression_ratio

    @property
    def spatial_ratio(self) -> int:
        return self.spatial_compression_ratio

    def latent_frames(self, num_frames: int) -> int:
        """Causal in time: the first frame alone, then every time_compression_ratio frames."""
        return (num_frames - 1) // self.time_compression_ratio + 1

    def check_num_frames(self, num_frames: int):
        """(problem, fix) unless num_frames is k * time_compression_ratio + 1, else None."""
        r = self.time_compression_ratio
        if (num_frames - 1) % r:
            lo = (num_frames - 1) // r * r + 1
            return (f"{num_frames} frames is not {r}k+1, which Open-Sora 2.0's causal VAE needs",
                    f"use {lo} or {lo + r} (129 = 5 s at 24 fps, as released)")
        return None

    def _tiled(self, tile_fn, fn, x, window_in: int, window_out: int):
        """tile_fn (tile_space / tile_time) with the original's arithmetic: input windows of window_in every
        window_in * (1 - overlap); output windows blend over window_out * overlap and keep the rest."""
        blend = int(window_out * self.tile_overlap_factor)
        return tile_fn(fn, x, window_in, int(window_in * (1 - self.tile_overlap_factor)), blend, window_out - blend)

    def encoder_runs(self, shape) -> tuple[nn.Module, int]:
        """The encoder and how many times an encode of a [B, 3, T, H, W] video runs it (progress)."""
        return self.encoder, self.calls(shape, decode=False)

    def calls(self, shape, decode: bool) -> int:
        """How many times encode / decode of a [B, C, T, H, W] input runs the encoder / decoder (one per tile,
        time window and slice): the length of their progress bars."""
        B = shape[0]
        tile = self.tile_latent_min_size if decode else self.tile_sample_min_size
        tsize = self.tile_latent_min_tsize if decode else self.tile_sample_min_tsize
        windows = original_windows(shape[2:], tile, tsize, lambda size: int(size * (1 - self.tile_overlap_factor)),
                                   self.use_spatial_tiling, self.use_temporal_tiling)
        # decode slices the batch before tiling; encode only when it does not tile
        sliced = self.use_slicing and B > 1 and (decode or windows == 1)
        return (B if sliced else 1) * windows

    def get_latent_size(self, input_size) -> list[int]:
        """[T, H, W] of the latent of a [T, H, W] video."""
        t, h, w = input_size
        return [(t - 1) // self.time_compression_ratio + 1,
                (h - 1) // self.spatial_compression_ratio + 1, (w - 1) // self.spatial_compression_ratio + 1]

    # -- encode --------------------------------------------------------------------------------
    def _encode_untiled(self, x):
        return self.quant_conv(self.encoder(x))

    def _encode_spatial(self, x):
        """Moments of x, spatially tiled when tiling is on and x is larger than a tile."""
        tile = self.tile_sample_min_size
        if not (self.use_spatial_tiling and (x.shape[-1] > tile or x.shape[-2] > tile)):
            return self._encode_untiled(x)
        return self._tiled(tile_space, self._encode_untiled, x, tile, self.tile_latent_min_size)

    def encode_moments(self, x):
        """Video [B,3,T,H,W] in -1..1 -> moments [B, 2*latent, Tz, h, w] (mean, then logvar unclamped)."""
        if x.ndim != 5:
            raise ValueError(f"the VAE encodes videos [B, C, T, H, W], got a tensor of shape {tuple(x.shape)}")
        tsize = self.tile_sample_min_tsize
        if self.use_temporal_tiling and x.shape[2] > tsize:
            return self._tiled(tile_time, self._encode_spatial, x, tsize, self.tile_latent_min_tsize)
        tile = self.tile_sample_min_size
        if self.use_spatial_tiling and (x.shape[-1] > tile or x.shape[-2] > tile):
            return self._encode_spatial(x)
        if self.use_slicing and x.shape[0] > 1:
            return self.quant_conv(torch.cat([self.encoder(xi) for xi in x.split(1)]))
        return self._encode_untiled(x)

    def encode(self, x, sample_posterior: bool = True, noise_fn=None, generator: torch.Generator | None = None):
        """Video [B,3,T,H,W] in -1..1 -> scaled latent [B,16,(T-1)//4+1,H/8,W/8].

        sample_posterior (the original's default) draws mean + std * noise with one standard-normal draw shaped
        like the latent: noise_fn(shape) when given (to replay recorded draws), else torch.randn from
        `generator` (on its device) or the global RNG. sample_posterior=False returns the mean (the mode)."""
        mean, logvar = self.encode_moments(x).chunk(2, dim=1)
        z = mean
        if sample_posterior:
            if noise_fn is not None:
                noise = noise_fn(tuple(mean.shape))
            elif generator is not None:
                noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
            else:
                noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            z = mean + std * noise.to(mean.device, mean.dtype)
        return self.scale_factor * (z - self.shift_factor)

    # -- decode --------------------------------------------------------------------------------
    def _decode_untiled(self, z):
        return self.decoder(self.post_quant_conv(z))

    def _decode_spatial(self, z):
        tile = self.tile_latent_min_size
        if not (self.use_spatial_tiling and (z.shape[-1] > tile or z.shape[-2] > tile)):
            return self._decode_untiled(z)
        return self._tiled(tile_space, self._decode_untiled, z, tile, self.tile_sample_min_size)

    def _decode_one(self, z):
        tsize = self.tile_latent_min_tsize
        if self.use_temporal_tiling and z.shape[2] > tsize:
            return self._tiled(tile_time, self._decode_spatial, z, tsize, self.tile_sample_min_tsize)
        return self._decode_spatial(z)

    def decode(self, z):
        """Scaled latent [B,16,Tz,h,w] -> video [B,3,4*(Tz-1)+1,8h,8w] in about -1..1."""
        if z.ndim != 5:
            raise ValueError(f"the VAE decodes latents [B, C, T, H, W], got a tensor of shape {tuple(z.shape)}")
        z = z / self.scale_factor + self.shift_factor
        if self.use_slicing and z.shape[0] > 1:
            return torch.cat([self._decode_one(zi) for zi in z.split(1)])
        return self._decode_one(z)

    # -- the pack's VAE interface (pipeline.VideoVAE) ------------------------------------------
    def encode_video(self, x):
        """The posterior mean: encoding is deterministic."""
        return self.encode(x, sample_posterior=False)

    def window_settings(self, temporal_chunk: int, spatial_tile: int, spatial_overlap: int) -> dict:
        """The tiling attributes OpenSora VAE Decode's inputs stand for (tiling.check_window_inputs). 0 keeps
        the released tiles: 256 px, a quarter blended, and no time windows (the whole video at once)."""
        check_window_inputs(self.spatial_ratio, temporal_chunk, spatial_tile, spatial_overlap)
        tiles = {"use_temporal_tiling": bool(temporal_chunk)}
        if temporal_chunk:
            tiles.update(tile_latent_min_tsize=temporal_chunk,
                         tile_sample_min_tsize=temporal_chunk * self.time_compression_ratio)
        if spatial_tile:
            tiles.update(tile_sample_min_size=spatial_tile, tile_latent_min_size=spatial_tile // self.spatial_ratio,
                         tile_overlap_factor=spatial_overlap / spatial_tile)
        return tiles

    def decode_video(self, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                     spatial_tile: int = 0, spatial_overlap: int = 64):
        return decode_windowed(self, z, num_frames, self.window_settings(temporal_chunk, spatial_tile, spatial_overlap))


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------
ANCHOR = "encoder.conv_in.conv.weight"


def normalize_state_dict(sd: dict) -> dict:
    """The released key layout: keys under a wrapper prefix (HunyuanVideo's `vae.`, a pipeline's `ae.`, ...) are
    taken from under it and everything else is dropped; released files (no prefix) come back unchanged."""
    if ANCHOR in sd:
        return sd
    prefixes = sorted(k[:-len(ANCHOR)] for k in sd if k.endswith("." + ANCHOR))
    if not prefixes:
        raise ValueError(f"not a HunyuanVideo VAE state dict: it has no {ANCHOR} tensor")
    p = prefixes[0]  # the shortest, when one VAE is nested in another module
    return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}


def config_from_state_dict(sd: dict) -> dict:
    """HunyuanVAE arguments from tensor shapes. Not stored, hence assumed: GroupNorm groups (sd_vae.norm_groups:
    32 for the released 128 first channels), 4x time (8x would have the same keys), spatial ratio = 2 ** the
    number of downsampling blocks."""
    sd = normalize_state_dict(sd)
    p = "encoder.down_blocks."
    try:
        n_blocks = 1 + max(int(k[len(p):].split(".")[0]) for k in sd if k.startswith(p))
        chans = [sd[f"{p}{i}.resnets.0.conv2.conv.weight"].shape[0] for i in range(n_blocks)]
        layers = 1 + max(int(k[len(p + "0.resnets."):].split(".")[0]) for k in sd if k.startswith(p + "0.resnets."))
        n_down = sum(f"{p}{i}.downsamplers.0.conv.conv.weight" in sd for i in range(n_blocks))
        cfg = dict(in_channels=sd[ANCHOR].shape[1], out_channels=sd["decoder.conv_out.conv.weight"].shape[0],
                   latent_channels=sd["post_quant_conv.weight"].shape[0], block_out_channels=tuple(chans),
                   layers_per_block=layers, norm_num_groups=sd_vae.norm_groups(chans[0]),
                   spatial_compression_ratio=2 ** n_down,
                   mid_block_add_attention="encoder.mid_block.attentions.0.to_q.weight" in sd)
    except (KeyError, ValueError) as e:
        raise ValueError(f"not a HunyuanVideo VAE state dict ({e!r})") from e
    return cfg


CONSTRUCTOR_ARGS = tuple(inspect.signature(HunyuanVAE.__init__).parameters)[1:]


def load_hunyuan_vae(sd: dict, **overrides) -> HunyuanVAE:
    """Strict load of a released-layout state dict (hunyuan_vae.safetensors; a `vae.`-style prefix is taken off).
    The model's dtype is the weights' dtype. overrides: any HunyuanVAE argument (tiling options, sample sizes,
    norm_num_groups, time_compression_ratio, ...)."""
    unknown = sorted(set(overrides) - set(CONSTRUCTOR_ARGS))
    if unknown:
        raise TypeError(f"load_hunyuan_vae got unknown options {unknown}; known: {list(CONSTRUCTOR_ARGS)}")
    sd = normalize_state_dict(sd)
    cfg = {**config_from_state_dict(sd), **overrides}
    return build_strict(lambda: HunyuanVAE(**cfg), sd, "the HunyuanVideo VAE").eval()
