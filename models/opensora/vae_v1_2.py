"""Open-Sora VAE v1.2 (`VideoAutoencoderPipeline` / `OpenSoraVAE_V1_2`): the SDXL 2D VAE per frame, then a
causal temporal VAE (MAGVIT-v2 style, 4x in time, no spatial change) per chunk of frames.

Encode: the 2D VAE per frame (x 0.18215, sd_vae.encode_frames), cut into chunks of micro_frame_size frames
(17 released, the last may be shorter), the temporal VAE per chunk (front zero-padding to a multiple of 4),
then z = (z - shift) / scale. Decode mirrors it: chunks of micro_z_frame_size latents (5 released), each
decoded to min(17, remaining) frames (the front padding cropped), then the 2D decoder per frame.

Chunks are independent (each was encoded on its own, and the decoder's GroupNorm statistics span the whole
chunk, so a chunk must be decoded whole and alone): chunked decoding is the original, exactly, and its
memory is bounded by one chunk whatever the video length.
"""
from __future__ import annotations

from itertools import takewhile

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ... import comfy_adapter
from .. import sd_vae
from ..checkpoint import build_strict

# Released normalisation (also the checkpoint's `shift` / `scale` buffers, which are what is used).
SHIFT = (-0.10, 0.34, 0.27, 0.98)
SCALE = (3.85, 2.32, 2.33, 3.06)


class CausalConv3d(nn.Module):
    """Conv3d that zero-pads time at the front only, (k-1) + (1-stride) frames, and space symmetrically: an
    output frame sees only its own and earlier frames."""

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
            if i < len(mults) - 1:  # Identity (no keys) where a stage does not downsample time
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
    """VAE_Temporal (VAE_Temporal_SD when released: filters 128, mults (1,2,2,4), 4 res blocks, groups 32)."""

    def __init__(self, channels=4, latent=4, filters=128, mults=(1, 2, 2, 4), num_res=4,
                 downsample=(False, True, True), groups=32):
        super().__init__()
        self.time_factor = 2 ** sum(downsample)
        self.encoder = TemporalEncoder(channels, latent, filters, mults, num_res, downsample, groups)
        self.decoder = TemporalDecoder(channels, latent, filters, mults, num_res, downsample, groups)
        self.quant_conv = CausalConv3d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = CausalConv3d(latent, latent, 1)

    def encode_moments(self, x):
        """Zero frames in front up to a multiple of the time factor (17 -> 3 + 17 = 20 -> 5 latents)."""
        x = F.pad(x, (0, 0, 0, 0, -x.shape[2] % self.time_factor, 0))
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z, num_frames: int):
        """time_factor frames per latent, minus the front padding the encoder added for num_frames."""
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, -num_frames % self.time_factor:]


def generator_noise(generator: torch.Generator):
    """A noise_fn drawing fp32 standard normals from `generator` (on its device), one call per draw."""
    return lambda shape: torch.randn(shape, generator=generator, device=generator.device)


class OpenSoraVAEv12(nn.Module):
    """VideoAutoencoderPipeline with keys spatial_vae.module.* (diffusers AutoencoderKL), temporal_vae.*,
    shift, scale."""

    def __init__(self, spatial: dict, temporal: dict, micro_frame_size: int = 17, micro_batch_size: int = 4):
        super().__init__()
        self.spatial_vae = nn.Module()
        self.spatial_vae.module = sd_vae.AutoencoderKL(**spatial)
        self.temporal_vae = TemporalVAE(**temporal)
        self.register_buffer("shift", torch.tensor(SHIFT).reshape(1, -1, 1, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).reshape(1, -1, 1, 1, 1))
        self.micro_frame_size, self.micro_batch_size = micro_frame_size, micro_batch_size
        self.micro_z_frame_size = self.latent_frames_chunk(micro_frame_size)
        self.spatial_ratio = self.spatial_vae.module.spatial_ratio
        self.latent_channels = self.temporal_vae.post_quant_conv.conv.weight.shape[0]

    # -- frame counts ---------------------------------------------------------------------------
    def encoder_runs(self, shape) -> tuple[nn.Module, int]:
        """The module an encode of a [B, 3, T, H, W] video spends its time in (the 2D encoder, over every frame)
        and how many times it runs: the length of the encode progress bar."""
        frames = shape[0] * shape[2]
        return self.spatial_vae.module.encoder, -(-frames // (self.micro_batch_size or frames))

    def latent_frames_chunk(self, frames: int) -> int:
        return -(-frames // self.temporal_vae.time_factor)

    def latent_frames(self, num_frames: int) -> int:
        """5 per whole 17-frame chunk, plus ceil(rest / 4): 51 -> 15, 1 -> 1, 100 -> 29."""
        n, rest = divmod(num_frames, self.micro_frame_size)
        return n * self.micro_z_frame_size + self.latent_frames_chunk(rest)

    def check_num_frames(self, num_frames: int):
        """(problem, fix) when no video of num_frames can be encoded/decoded, else None. Any count >= 1 works."""
        if num_frames < 1:
            return f"num_frames={num_frames} is not a video", "use at least 1 frame"
        return None

    def check_latent_frames(self, latent_frames: int, num_frames: int):
        """(problem, fix) when a latent of latent_frames cannot decode to num_frames, else None."""
        problem = self.check_num_frames(num_frames)
        if problem or self.latent_frames(num_frames) == latent_frames:
            return problem
        chunks = latent_frames // self.micro_z_frame_size + 1
        fits = [n for n in range(1, chunks * self.micro_frame_size + 1) if self.latent_frames(n) == latent_frames]
        fix = (f"decode it with num_frames {fits[0]}" + (f" to {fits[-1]}" if len(fits) > 1 else "") if fits else
               "make the latent with this VAE (OpenSora Empty Latent or VAE Encode)")
        return (f"num_frames={num_frames} needs {self.latent_frames(num_frames)} latent frames but the latent has "
                f"{latent_frames}", fix)

    # -- encode --------------------------------------------------------------------------------
    def encode(self, x, sample_posterior: bool = False, generator: torch.Generator | None = None, noise_fn=None):
        """x [B,3,T,H,W] in -1..1 -> normalised z [B,4,Tz,H/8,W/8].

        Deterministic by default: both stages take their posterior mean. The posterior is sampled when a
        noise_fn(shape) or a generator is given (or sample_posterior, drawing from torch's global CPU RNG).
        Draws are requested in the original's order: one per 2D micro-batch of (B T) frames, then one per
        temporal chunk, so recorded draws can be fed back. The original drew the 2D stage on the device
        RNG and the temporal stage on the CPU RNG; here one source feeds both, so seeded results do not
        depend on the device."""
        if x.ndim != 5 or x.shape[1] != self.spatial_vae.module.encoder.conv_in.weight.shape[1]:
            raise ValueError(f"the VAE encodes videos [B, 3, T, H, W], got a tensor of shape {tuple(x.shape)}")
        problem = self.check_num_frames(x.shape[2])
        if problem:
            raise ValueError(f"{problem[0]}. Fix: {problem[1]}")
        if noise_fn is None and generator is not None:
            noise_fn = generator_noise(generator)
        elif noise_fn is None and sample_posterior:
            noise_fn = torch.randn
        x_z = sd_vae.encode_frames(self.spatial_vae.module, x, self.micro_batch_size, noise_fn)
        zs = []
        for i in range(0, x_z.shape[2], self.micro_frame_size):
            mean, logvar = self.temporal_vae.encode_moments(x_z[:, :, i:i + self.micro_frame_size])
            zs.append(sd_vae.sample_posterior(mean, logvar, noise_fn(mean.shape) if noise_fn else None))
        z = torch.cat(zs, dim=2)
        return (z - self.shift.to(z)) / self.scale.to(z)

    # -- decode --------------------------------------------------------------------------------
    def chunk_plan(self, latent_frames: int, num_frames: int) -> list[tuple[int, int, int]]:
        """(first latent, end latent, frames) per native chunk: chunks of micro_z_frame_size latents, each
        decoding to min(micro_frame_size, frames left)."""
        problem = self.check_latent_frames(latent_frames, num_frames)
        if problem:
            raise ValueError(f"{problem[0]}. Fix: {problem[1]}")
        plan, left = [], num_frames
        for i in range(0, latent_frames, self.micro_z_frame_size):
            plan.append((i, min(i + self.micro_z_frame_size, latent_frames), min(self.micro_frame_size, left)))
            left -= self.micro_frame_size
        return plan

    def decode_chunks(self, z, num_frames: int, spatial_tile: int = 0, spatial_overlap: int = 64,
                      chunks_per_call: int = 1):
        """Yield frames [B,3,t,H,W] call by call, one call in memory at a time.

        chunks_per_call native chunks of the same length run as one batch through the temporal VAE: nothing
        in it mixes batch items, so this equals decoding them one by one. spatial_tile/overlap in pixels
        (0 = off) tile the 2D decoder (approximate, see sd_vae.decode_frames)."""
        z = z * self.scale.to(z) + self.shift.to(z)
        plan = self.chunk_plan(z.shape[2], num_frames)
        r = self.spatial_ratio
        tile, overlap = (spatial_tile // r, max(0, spatial_overlap) // r) if spatial_tile >= r else (0, 0)
        while plan:
            size = plan[0][1] - plan[0][0], plan[0][2]
            group = list(takewhile(lambda c: (c[1] - c[0], c[2]) == size, plan[:max(1, chunks_per_call)]))
            plan = plan[len(group):]
            stacked = torch.cat([z[:, :, a:b] for a, b, _ in group], dim=0)
            x_z = self.temporal_vae.decode(stacked, group[0][2])
            x_z = rearrange(x_z, "(k b) c t h w -> b c (k t) h w", k=len(group))
            yield sd_vae.decode_frames(self.spatial_vae.module, x_z, self.micro_batch_size, tile, overlap)

    def decode(self, z, num_frames: int):
        """The original decode: normalised z [B,4,Tz,h,w] -> x [B,3,num_frames,8h,8w] in about -1..1."""
        return torch.cat(list(self.decode_chunks(z, num_frames)), dim=2)

    # -- the pack's VAE interface (pipeline.VideoVAE) ------------------------------------------
    def encode_video(self, x):
        """Both stages' posterior means: encoding is deterministic."""
        return self.encode(x)

    def decode_video(self, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                     spatial_tile: int = 0, spatial_overlap: int = 64):
        """decode_tiled into a float32 CPU video, a progress step per native chunk."""
        bar = comfy_adapter.Progress(-(-z.shape[2] // self.micro_z_frame_size), desc="decoding")
        return decode_tiled(self, z, num_frames, temporal_chunk, temporal_overlap, spatial_tile, spatial_overlap,
                            progress=bar.update_absolute)


def config_from_state_dict(sd: dict) -> dict:
    """OpenSoraVAEv12 arguments from tensor shapes; the chunk sizes are not stored and take the released
    values (micro_frame_size 17, micro_batch_size 4); GroupNorm groups follow sd_vae.norm_groups."""
    p = "temporal_vae.encoder."

    def indices(prefix, at):
        return {int(k[len(prefix):].split(".")[at]) for k in sd if k.startswith(prefix)}

    filters = sd[p + "conv_in.conv.weight"].shape[0]
    n_stages = len(indices(p + "block_res_blocks.", 0))
    temporal = dict(channels=sd[p + "conv_in.conv.weight"].shape[1],
                    latent=sd["temporal_vae.post_quant_conv.conv.weight"].shape[0], filters=filters,
                    mults=tuple(sd[f"{p}block_res_blocks.{i}.0.conv2.conv.weight"].shape[0] // filters
                                for i in range(n_stages)),
                    num_res=len(indices(p + "block_res_blocks.0.", 0)),
                    downsample=tuple(f"{p}conv_blocks.{i}.conv.weight" in sd for i in range(n_stages - 1)),
                    groups=sd_vae.norm_groups(filters))
    return dict(spatial=sd_vae.config_from_state_dict(sd, "spatial_vae.module."), temporal=temporal,
                micro_frame_size=17, micro_batch_size=4)


def load_vae_v1_2(sd: dict, **overrides) -> OpenSoraVAEv12:
    """Strict load of a released-layout state dict (hpcai-tech/OpenSora-VAE-v1.2 model.safetensors).
    overrides: micro_frame_size / micro_batch_size (the golden tiny model uses micro_frame_size 5)."""
    cfg = {**config_from_state_dict(sd), **overrides}
    return build_strict(lambda: OpenSoraVAEv12(**cfg), sd, "Open-Sora VAE v1.2")


def decode_tiled(model: OpenSoraVAEv12, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                 spatial_tile: int = 0, spatial_overlap: int = 64, progress=None, out_device="cpu"):
    """Decode with bounded memory into a float32 video on out_device (the CPU by default).

    Time: the original already decodes in native chunks of micro_z_frame_size latents (5 = 17 frames), each
    alone; that is exact, so time is never cut anywhere else. temporal_chunk (latent frames per call, 0 = one
    native chunk) is rounded down to whole native chunks, which run as one batch (more memory, fewer calls,
    same result). temporal_overlap is not used: a window straddling two native chunks would decode latents
    the original never decoded together (its GroupNorms and causal padding see the whole chunk), and exact
    chunks need no cross-fade. Device memory is one call's worth whatever the video length; only the
    output on out_device grows with it.

    Space: spatial_tile > 0 (pixels) decodes the 2D VAE in blended tiles sharing spatial_overlap pixels,
    approximate (its GroupNorm statistics, 3x3 convs and mid-block attention span the frame). The temporal
    VAE is never tiled in space: it runs at latent resolution (8x smaller) and its GroupNorm statistics span
    the whole chunk.

    progress(done) is called with the number of native chunks decoded so far."""
    b, _, _, h, w = z.shape
    r = model.spatial_ratio
    per_call = max(1, temporal_chunk // model.micro_z_frame_size)
    out, start = None, 0
    for frames in model.decode_chunks(z, num_frames, spatial_tile, spatial_overlap, per_call):
        if out is None:
            out = torch.empty(b, frames.shape[1], num_frames, h * r, w * r, device=out_device)
        out[:, :, start:start + frames.shape[2]] = frames.to(out_device, torch.float32)
        start += frames.shape[2]
        if progress is not None:
            progress(-(-start // model.micro_frame_size))  # every chunk but the last has micro_frame_size frames
    return out
