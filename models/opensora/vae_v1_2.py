"""Open-Sora VAE v1.2: the SDXL 2D VAE per frame, then a causal temporal VAE (4x in time) per chunk.

Encode: 2D VAE per frame (x 0.18215), split into chunks of micro_frame_size frames (17 released), temporal VAE
per chunk (front zero-padding to a multiple of 4), then (z - shift) / scale. Decode mirrors it: chunks of
micro_z_frame_size latents (5), each decoded to min(17, remaining) frames (front padding cropped), then the
2D decoder per frame in micro-batches of 4. The chunks are independent, so chunked decoding is exact and its
memory is bounded by one chunk, whatever the video length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import sd_vae, tiling
from ..checkpoint import build_strict

SD_SCALE = 0.18215  # the original hard-codes SD's factor although the SDXL VAE config says 0.13025
SHIFT = (-0.10, 0.34, 0.27, 0.98)
SCALE = (3.85, 2.32, 2.33, 3.06)


class CausalConv3d(nn.Module):
    """Conv3d that zero-pads time at the front only (dilation*(k-1) + 1 - stride frames), space symmetrically."""

    def __init__(self, cin, cout, kernel=3, stride=(1, 1, 1), bias=True):
        super().__init__()
        k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
        self.time_pad = (k[0] - 1) + (1 - stride[0])
        self.space_pad = (k[2] // 2, k[2] // 2, k[1] // 2, k[1] // 2)
        self.conv = nn.Conv3d(cin, cout, k, stride=stride, bias=bias)

    def forward(self, x):
        return self.conv(F.pad(x, (*self.space_pad, self.time_pad, 0)))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = CausalConv3d(cin, cout, 3, bias=False)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = CausalConv3d(cout, cout, 3, bias=False)
        self.conv3 = CausalConv3d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (x if self.conv3 is None else self.conv3(x))


class TemporalEncoder(nn.Module):
    def __init__(self, cin, latent, filters, mults, num_res, downsample, groups):
        super().__init__()
        self.conv_in = CausalConv3d(cin, filters, 3, bias=False)
        blocks, convs, prev = [], [], filters
        for i, m in enumerate(mults):
            ch = filters * m
            blocks.append(nn.ModuleList([ResBlock(prev if j == 0 else ch, ch, groups) for j in range(num_res)]))
            prev = ch
            if i < len(mults) - 1:
                convs.append(CausalConv3d(ch, ch, 3, stride=(2, 1, 1)) if downsample[i] else nn.Identity())
        self.block_res_blocks = nn.ModuleList(blocks)
        self.conv_blocks = nn.ModuleList(convs)
        self.res_blocks = nn.ModuleList([ResBlock(prev, prev, groups) for _ in range(num_res)])
        self.norm1 = nn.GroupNorm(groups, prev)
        self.conv2 = CausalConv3d(prev, 2 * latent, 1)

    def forward(self, x):
        x = self.conv_in(x)
        for i, blocks in enumerate(self.block_res_blocks):
            for b in blocks:
                x = b(x)
            if i < len(self.conv_blocks):
                x = self.conv_blocks[i](x)
        for b in self.res_blocks:
            x = b(x)
        return self.conv2(F.silu(self.norm1(x)))


class TemporalDecoder(nn.Module):
    def __init__(self, cout, latent, filters, mults, num_res, downsample, groups):
        super().__init__()
        top = filters * mults[-1]
        self.conv1 = CausalConv3d(latent, top, 3)
        self.res_blocks = nn.ModuleList([ResBlock(top, top, groups) for _ in range(num_res)])
        blocks, convs, prev = [None] * len(mults), [nn.Identity()] * (len(mults) - 1), top
        for i in reversed(range(len(mults))):
            ch = filters * mults[i]
            blocks[i] = nn.ModuleList([ResBlock(prev if j == 0 else ch, ch, groups) for j in range(num_res)])
            prev = ch
            if i > 0 and downsample[i - 1]:
                convs[i - 1] = CausalConv3d(ch, ch * 2, 3)  # then depth-to-space in time
        self.block_res_blocks = nn.ModuleList(blocks)
        self.conv_blocks = nn.ModuleList(convs)
        self.downsample = list(downsample)
        self.norm1 = nn.GroupNorm(groups, prev)
        self.conv_out = CausalConv3d(prev, cout, 3)

    def forward(self, z):
        x = self.conv1(z)
        for b in self.res_blocks:
            x = b(x)
        for i in reversed(range(len(self.block_res_blocks))):
            for b in self.block_res_blocks[i]:
                x = b(x)
            if i > 0:
                x = self.conv_blocks[i - 1](x)
                if self.downsample[i - 1]:
                    x = rearrange(x, "b (c ts) t h w -> b c (t ts) h w", ts=2)
        return self.conv_out(F.silu(self.norm1(x)))


class TemporalVAE(nn.Module):
    """VAE_Temporal(_SD): MAGVIT-v2-style causal 3D VAE, 4x in time, no spatial change."""

    def __init__(self, channels=4, latent=4, filters=128, mults=(1, 2, 2, 4), num_res=4,
                 downsample=(False, True, True), groups=32):
        super().__init__()
        self.time_factor = 2 ** sum(downsample)
        self.encoder = TemporalEncoder(channels, latent, filters, mults, num_res, downsample, groups)
        self.decoder = TemporalDecoder(channels, latent, filters, mults, num_res, downsample, groups)
        self.quant_conv = CausalConv3d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = CausalConv3d(latent, latent, 1)

    def encode_moments(self, x):
        x = F.pad(x, (0, 0, 0, 0, -x.shape[2] % self.time_factor, 0))  # zero frames in front
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z, num_frames: int):
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, -num_frames % self.time_factor:]


def _sample(mean, logvar, noise):
    return mean if noise is None else mean + torch.exp(0.5 * logvar) * noise.to(mean)


class OpenSoraVAEv12(nn.Module):
    """VideoAutoencoderPipeline with keys spatial_vae.module.*, temporal_vae.*, shift, scale."""

    def __init__(self, spatial: dict, temporal: dict, micro_frame_size: int = 17, micro_batch_size: int = 4):
        super().__init__()
        self.spatial_vae = nn.Module()
        self.spatial_vae.module = sd_vae.AutoencoderKL(**spatial)
        self.temporal_vae = TemporalVAE(**temporal)
        self.register_buffer("shift", torch.tensor(SHIFT).reshape(1, -1, 1, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).reshape(1, -1, 1, 1, 1))
        self.micro_frame_size, self.micro_batch_size = micro_frame_size, micro_batch_size
        self.micro_z_frame_size = self.latent_frames(micro_frame_size)
        self.spatial_ratio = self.spatial_vae.module.spatial_ratio
        self.latent_channels = self.temporal_vae.post_quant_conv.conv.weight.shape[0]

    def latent_frames(self, num_frames: int) -> int:
        """5 per 17-frame chunk, plus ceil(rest / 4): 51 -> 15, 1 -> 1, 100 -> 29."""
        n, r = divmod(num_frames, self.micro_frame_size)
        return n * self.latent_frames_chunk(self.micro_frame_size) + self.latent_frames_chunk(r)

    def latent_frames_chunk(self, frames: int) -> int:
        return -(-frames // self.temporal_vae.time_factor)

    def check_num_frames(self, num_frames: int):
        if num_frames < 1:
            return (f"{num_frames} frames is not a video", "use at least 1 frame")
        return None

    # -- encode --------------------------------------------------------------------------------
    def encode(self, x, sample_posterior: bool = True, noise_fn=None):
        """x [B,3,T,H,W] in -1..1 -> normalised z [B,4,Tz,h,w]. Without sampling (or noise_fn returning None)
        it is deterministic (the posterior means). noise_fn(shape) supplies the posterior draws in the original
        call order: 2D VAE per micro-batch of frames first, then the temporal VAE per chunk."""
        noise_fn = noise_fn or (lambda shape: torch.randn(shape))
        b = x.shape[0]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        lat = []
        for i in range(0, frames.shape[0], self.micro_batch_size):
            mean, logvar = self.spatial_vae.module.encode_moments(frames[i:i + self.micro_batch_size])
            lat.append(_sample(mean, logvar, noise_fn(mean.shape) if sample_posterior else None) * SD_SCALE)
        x_z = rearrange(torch.cat(lat), "(b t) c h w -> b c t h w", b=b)
        zs = []
        for i in range(0, x_z.shape[2], self.micro_frame_size):
            mean, logvar = self.temporal_vae.encode_moments(x_z[:, :, i:i + self.micro_frame_size])
            zs.append(_sample(mean, logvar, noise_fn(mean.shape) if sample_posterior else None))
        return (torch.cat(zs, dim=2) - self.shift.to(x_z)) / self.scale.to(x_z)

    # -- decode --------------------------------------------------------------------------------
    def decode_chunks(self, z, num_frames: int, spatial_tile: int = 0, spatial_overlap: int = 64):
        """Yield decoded frames [B,3,t,H,W] chunk by chunk (one temporal chunk in memory at a time)."""
        z = z * self.scale.to(z) + self.shift.to(z)
        remaining = num_frames
        for i in range(0, z.shape[2], self.micro_z_frame_size):
            n = min(self.micro_frame_size, remaining)
            x_z = self.temporal_vae.decode(z[:, :, i:i + self.micro_z_frame_size], n)
            remaining -= self.micro_frame_size
            yield self.decode_frames(x_z, spatial_tile, spatial_overlap)

    def decode_frames(self, x_z, spatial_tile: int = 0, spatial_overlap: int = 64):
        b = x_z.shape[0]
        frames = rearrange(x_z, "b c t h w -> (b t) c h w") / SD_SCALE
        decode = self.spatial_vae.module.decode
        if spatial_tile:
            r = self.spatial_ratio
            decode = tiling.tiled_2d(decode, spatial_tile // r, max(0, spatial_overlap // r), r)
        out = [decode(frames[i:i + self.micro_batch_size]) for i in range(0, frames.shape[0], self.micro_batch_size)]
        return rearrange(torch.cat(out), "(b t) c h w -> b c t h w", b=b)

    def decode(self, z, num_frames: int):
        return torch.cat(list(self.decode_chunks(z, num_frames)), dim=2)


def config_from_state_dict(sd: dict) -> dict:
    spatial = sd_vae.config_from_state_dict(sd, "spatial_vae.module.")
    p = "temporal_vae.encoder."
    filters = sd[p + "conv_in.conv.weight"].shape[0]
    n_blocks = 1 + max(int(k[len(p):].split(".")[1]) for k in sd if k.startswith(p + "block_res_blocks."))
    mults = tuple(sd[f"{p}block_res_blocks.{i}.0.conv2.conv.weight"].shape[0] // filters for i in range(n_blocks))
    num_res = 1 + max(int(k[len(p):].split(".")[2]) for k in sd if k.startswith(p + "block_res_blocks.0."))
    downsample = tuple(f"{p}conv_blocks.{i}.conv.weight" in sd for i in range(n_blocks - 1))
    temporal = dict(channels=sd[p + "conv_in.conv.weight"].shape[1], latent=sd["temporal_vae.post_quant_conv.conv.weight"].shape[0],
                    filters=filters, mults=mults, num_res=num_res, downsample=downsample,
                    groups=sd_vae.norm_groups(filters))
    return dict(spatial=spatial, temporal=temporal)


def load_vae_v1_2(sd: dict, micro_frame_size: int = 17) -> OpenSoraVAEv12:
    """micro_frame_size is not stored in the checkpoint: 17 for the released VAE (chunks of 5 latents)."""
    cfg = config_from_state_dict(sd)
    cfg["micro_frame_size"] = micro_frame_size
    return build_strict(lambda: OpenSoraVAEv12(**cfg), sd, "Open-Sora VAE v1.2")


def decode_tiled(model: OpenSoraVAEv12, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                 spatial_tile: int = 0, spatial_overlap: int = 64, progress=None):
    """Decode with bounded memory: temporal chunks are the VAE's own (exact); any temporal_chunk is rounded to
    whole native chunks, since the temporal VAE sees one chunk at a time anyway and overlap would only
    repeat work. Spatial tiling blends overlapping tiles of the 2D decoder (approximate)."""
    chunks = []
    for i, frames in enumerate(model.decode_chunks(z, num_frames, spatial_tile, spatial_overlap)):
        chunks.append(frames.float().cpu())
        if progress is not None:
            progress(i + 1)
    return torch.cat(chunks, dim=2)
