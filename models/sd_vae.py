"""The Stable Diffusion / SDXL 2D AutoencoderKL in plain torch, with diffusers' parameter names
(encoder/decoder down_blocks, up_blocks, mid_block, quant_conv, post_quant_conv), so released
diffusers-format weights load unchanged. SD 1.x (sd-vae-ft-ema) and SDXL VAEs share this structure; only
the weights differ.

Open-Sora wraps it as `VideoAutoencoderKL`: every frame is an image, frames go through in micro-batches, and
latents are scaled by 0.18215 (`encode_frames` / `decode_frames` below). v1.0/v1.1 use it alone, v1.2 as the
spatial stage in front of its temporal VAE.

The FLUX.1 autoencoder (flux1-dev-ae.safetensors, ComfyUI's ae.safetensors), which Open-Sora 2.0's t2i2v mode
decodes its Flux images with, is the same network without the quant convs, with 16 latent channels and latents
scaled as 0.3611 * (z - 0.1159).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import comfy_adapter
from . import tiling
from .checkpoint import build_strict
from .layers import attention

# Quirk (golden README #2): Open-Sora's VideoAutoencoderKL hard-codes SD 1.x's factor, also in v1.2 whose
# spatial VAE is SDXL's (whose own config says 0.13025). Reproduced, since the diffusion models were trained so.
SD_SCALE = 0.18215
FLUX_AE_SCALE, FLUX_AE_SHIFT = 0.3611, 0.1159


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
    """Single-head self-attention over all pixels of a frame (the mid block); the only global operation
    besides GroupNorm's statistics."""

    def __init__(self, ch: int, groups: int, eps: float = 1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, ch, eps=eps)
        self.to_q, self.to_k, self.to_v = nn.Linear(ch, ch), nn.Linear(ch, ch), nn.Linear(ch, ch)
        self.to_out = nn.ModuleList([nn.Linear(ch, ch)])

    def forward(self, x):
        h, w = x.shape[-2:]
        tokens = rearrange(self.group_norm(x), "b c h w -> b 1 (h w) c")
        out = attention(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens))
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
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # pad right/bottom only, as the LDM original


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample(cout)])

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        return self.downsamplers[0](x) if hasattr(self, "downsamplers") else x


class UpDecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample(cout)])

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        return self.upsamplers[0](x) if hasattr(self, "upsamplers") else x


class Encoder(nn.Module):
    def __init__(self, cin, latent, chans, layers, groups):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, chans[0], 3, padding=1)
        ins = [chans[0]] + list(chans[:-1])
        self.down_blocks = nn.ModuleList([DownEncoderBlock(i, o, layers, groups, downsample=n < len(chans) - 1)
                                          for n, (i, o) in enumerate(zip(ins, chans))])
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
        ins = [rev[0]] + rev[:-1]
        self.up_blocks = nn.ModuleList([UpDecoderBlock(i, o, layers + 1, groups, upsample=n < len(rev) - 1)
                                        for n, (i, o) in enumerate(zip(ins, rev))])
        self.conv_norm_out = nn.GroupNorm(groups, rev[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(rev[-1], cout, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, norm_num_groups=32, use_quant_conv: bool = True):
        super().__init__()
        chans = list(block_out_channels)
        self.encoder = Encoder(in_channels, latent_channels, chans, layers_per_block, norm_num_groups)
        self.decoder = Decoder(out_channels, latent_channels, chans, layers_per_block, norm_num_groups)
        # FLUX.1's autoencoder has no quant convs
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else nn.Identity()
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_quant_conv else nn.Identity()
        self.latent_channels = latent_channels
        self.spatial_ratio = 2 ** (len(chans) - 1)

    def encode_moments(self, x):
        """Posterior mean and logvar (logvar clamped to [-30, 20], as DiagonalGaussianDistribution)."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def sample_posterior(mean, logvar, noise=None):
    """mean + std * noise; no noise = the posterior mean (deterministic encode). The noise is drawn in fp32
    and cast to the latent's dtype and device, as the original's `randn(...).to(device, dtype)`."""
    return mean if noise is None else mean + torch.exp(0.5 * logvar) * noise.to(mean)


def encode_frames(vae: AutoencoderKL, x, micro_batch_size: int | None = 4, noise_fn=None, scale: float = SD_SCALE,
                  shift: float = 0.0):
    """VideoAutoencoderKL.encode: x [B,3,T,H,W] -> latents [B,C,T,h,w], scale * (z - shift), frame by frame.

    Frames are flattened as (B T) and cut into micro-batches (None = all at once, v1.0's 256px config);
    noise_fn(shape) is called once per micro-batch in that order, as the original draws one randn per
    micro-batch. No noise_fn = posterior mean."""
    b = x.shape[0]
    frames = rearrange(x, "b c t h w -> (b t) c h w")
    step = micro_batch_size or frames.shape[0]
    out = []
    for i in range(0, frames.shape[0], step):
        mean, logvar = vae.encode_moments(frames[i:i + step])
        out.append((sample_posterior(mean, logvar, noise_fn(mean.shape) if noise_fn else None) - shift) * scale)
    return rearrange(torch.cat(out), "(b t) c h w -> b c t h w", b=b)


def decode_frames(vae: AutoencoderKL, z, micro_batch_size: int | None = 4, tile: int = 0, overlap: int = 0,
                  scale: float = SD_SCALE, shift: float = 0.0):
    """VideoAutoencoderKL.decode: latents [B,C,T,h,w] (scale * (z - shift)) -> frames [B,3,T,H,W], micro-batch
    by micro-batch. Frames are independent images, so the micro-batch size changes memory, not results.

    tile/overlap (latent pixels; 0 = off) decode overlapping spatial tiles and blend them: approximate, since
    the untiled decoder's GroupNorm statistics, 3x3 convs and mid-block attention span the whole frame."""
    b = z.shape[0]
    frames = rearrange(z, "b c t h w -> (b t) c h w") / scale + shift
    decode = tiling.tiled_2d(vae.decode, tile, overlap, vae.spatial_ratio) if tile else vae.decode
    step = micro_batch_size or frames.shape[0]
    out = [decode(frames[i:i + step]) for i in range(0, frames.shape[0], step)]
    return rearrange(torch.cat(out), "(b t) c h w -> b c t h w", b=b)


def config_from_state_dict(sd: dict, prefix: str = "") -> dict:
    """AutoencoderKL arguments from tensor shapes (diffusers names under `prefix`); use_quant_conv only when
    there are none (FLUX.1)."""
    def indices(p, at):
        return {int(k[len(prefix):].split(".")[at]) for k in sd if k.startswith(prefix + p)}

    chans = [sd[f"{prefix}encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]
             for i in range(len(indices("encoder.down_blocks.", 2)))]
    return dict(in_channels=sd[f"{prefix}encoder.conv_in.weight"].shape[1],
                out_channels=sd[f"{prefix}decoder.conv_out.weight"].shape[0],
                latent_channels=sd[f"{prefix}decoder.conv_in.weight"].shape[1], block_out_channels=tuple(chans),
                layers_per_block=len(indices("encoder.down_blocks.0.resnets.", 4)),
                norm_num_groups=norm_groups(chans[0]),
                **({} if f"{prefix}quant_conv.weight" in sd else {"use_quant_conv": False}))


def norm_groups(first_channels: int) -> int:
    """GroupNorm group counts are not stored in checkpoints. Released VAEs (128 first channels) use 32; tiny
    test models use first_channels // 2 (8 channels, 4 groups, as the golden tiny configs)."""
    return min(32, max(1, first_channels // 2))


# --------------------------------------------------------------------------------------------------------------
# Open-Sora 1.0 / 1.1: the SD VAE alone, frame by frame
# --------------------------------------------------------------------------------------------------------------
class VideoAutoencoderKL(nn.Module):
    """Open-Sora 1.0/1.1's VideoAutoencoderKL (stabilityai/sd-vae-ft-ema): every frame through the SD VAE, latents
    x 0.18215, no temporal compression (one latent frame per video frame). With scale / shift FLUX_AE_* and
    use_quant_conv False: the FLUX.1 autoencoder of Open-Sora 2.0's t2i2v, used the same way."""

    def __init__(self, micro_batch_size: int | None = 4, scale: float = SD_SCALE, shift: float = 0.0, **config):
        super().__init__()
        self.module = AutoencoderKL(**config)
        self.micro_batch_size = micro_batch_size
        self.scale, self.shift = scale, shift
        self.spatial_ratio = self.module.spatial_ratio
        self.latent_channels = self.module.latent_channels

    def encoder_runs(self, shape) -> tuple[nn.Module, int]:
        """The encoder and how many micro-batches an encode of a [B, 3, T, H, W] video runs it on (progress)."""
        frames = shape[0] * shape[2]
        return self.module.encoder, -(-frames // (self.micro_batch_size or frames))

    def latent_frames(self, num_frames: int) -> int:
        return num_frames

    def check_num_frames(self, num_frames: int):
        return (f"num_frames={num_frames} is not a video", "use at least 1 frame") if num_frames < 1 else None

    def encode(self, x, sample_posterior: bool = False, noise_fn=None):
        if noise_fn is None and sample_posterior:
            noise_fn = torch.randn
        return encode_frames(self.module, x, self.micro_batch_size, noise_fn, self.scale, self.shift)

    def decode(self, z, num_frames: int | None = None, tile: int = 0, overlap: int = 0):
        return decode_frames(self.module, z, self.micro_batch_size, tile, overlap, self.scale, self.shift)

    # -- the pack's VAE interface (pipeline.VideoVAE) ------------------------------------------
    def encode_video(self, x):
        """Posterior means, frame by frame: deterministic."""
        return self.encode(x)

    def decode_video(self, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                     spatial_tile: int = 0, spatial_overlap: int = 64):
        """Frames are independent images: decoded temporal_chunk at a time (16 by default) into a float32 CPU
        video, so device memory follows the slice, not the video; spatial tiles as decode_frames blends them."""
        r = self.spatial_ratio
        tile, overlap = (spatial_tile // r, max(0, spatial_overlap) // r) if spatial_tile >= r else (0, 0)
        step = temporal_chunk or 16
        bar = comfy_adapter.Progress(-(-z.shape[2] // step), desc="decoding")
        frames = []
        for i in range(0, z.shape[2], step):
            frames.append(self.decode(z[:, :, i:i + step], tile=tile, overlap=overlap).float().cpu())
            bar.update()
        return torch.cat(frames, dim=2)


_OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LDM_RESNET = {"nin_shortcut": "conv_shortcut"}
_LDM_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def normalize_keys(sd: dict) -> dict:
    """SD VAE weights in this module's (diffusers' current) names, from any of the three layouts in use:
    diffusers (as is), older diffusers (attention query/key/value/proj_attn) and the original LDM / ComfyUI
    single file (encoder.down.N.block.M, mid.attn_1 with 1x1-conv q/k/v, decoder.up in reverse order)."""
    if any(k.startswith("encoder.down.") for k in sd):
        return _from_ldm(sd)
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if "attentions" in parts and parts[-2] in _OLD_ATTN:
            k = ".".join(parts[:-2] + [_OLD_ATTN[parts[-2]], parts[-1]])
        out[k] = v
    return out


def _from_ldm(sd: dict) -> dict:
    levels = len({k.split(".")[2] for k in sd if k.startswith("encoder.down.")})
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] in ("encoder", "decoder") and len(p) > 2:
            side, rest = p[0], p[1:]
            if rest[0] in ("down", "up"):
                level = int(rest[1]) if rest[0] == "down" else levels - 1 - int(rest[1])
                blocks = "down_blocks" if rest[0] == "down" else "up_blocks"
                if rest[2] == "block":
                    name = _LDM_RESNET.get(rest[4], rest[4])
                    k = f"{side}.{blocks}.{level}.resnets.{rest[3]}.{name}.{rest[-1]}"
                else:  # downsample / upsample
                    sampler = "downsamplers" if rest[0] == "down" else "upsamplers"
                    k = f"{side}.{blocks}.{level}.{sampler}.0.conv.{rest[-1]}"
            elif rest[0] == "mid":
                if rest[1].startswith("block_"):
                    k = f"{side}.mid_block.resnets.{int(rest[1][-1]) - 1}.{rest[2]}.{rest[-1]}"
                else:  # attn_1
                    k = f"{side}.mid_block.attentions.0.{_LDM_ATTN[rest[2]]}.{rest[-1]}"
                    if rest[2] in ("q", "k", "v", "proj_out") and v.ndim == 4:
                        v = v[:, :, 0, 0]  # 1x1 conv -> linear
            elif rest[0] == "norm_out":
                k = f"{side}.conv_norm_out.{rest[-1]}"
        out[k] = v
    return out


def load_video_vae(sd: dict, micro_batch_size: int | None = 4) -> VideoAutoencoderKL:
    """Strict load of an SD VAE state dict in any layout normalize_keys reads; one without quant convs is the
    FLUX.1 autoencoder, and gets its latent scale and shift."""
    sd = normalize_keys(sd)
    cfg = config_from_state_dict(sd)
    flux = not cfg.get("use_quant_conv", True)
    scaling = dict(scale=FLUX_AE_SCALE, shift=FLUX_AE_SHIFT) if flux else {}
    what = "the FLUX.1 autoencoder (Open-Sora 2.0's t2i2v)" if flux else \
        "an SD image VAE (Open-Sora 1.0/1.1's stabilityai/sd-vae-ft-ema)"
    return build_strict(lambda: VideoAutoencoderKL(micro_batch_size, **scaling, **cfg),
                        {f"module.{k}": v for k, v in sd.items()}, what)
