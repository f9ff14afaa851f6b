"""CogVideoX behind the pack's generic nodes: latent sizes, text conditioning, sampling, I2V, video-to-video.

LATENT["samples"] holds the raw VAE latent [B,16,F,h,w] (ComfyUI's convention); the variant's scaling factor
is applied around the transformer only, so one VAE file serves 2B (1.15258426) and 5B / 1.5 (0.7).
"""
from __future__ import annotations

import torch

from .. import noise as noise_mod
from . import schedulers
from .loading import SCALE, SNR_SHIFT
from .transformer import rope_for_video

SCHEDULERS = ["dpm", "ddim"]
TEXT_LENGTH = 226


def check_frames(num_frames: int, variant: str | None = None):
    """(problem, fix) or None: the causal VAE takes 4k+1 frames; 1.5 was trained on 8k+1 (81, 161)."""
    if variant and variant.startswith("1.5") and (num_frames - 1) % 8:
        return (f"{num_frames} frames is not 8k+1, which CogVideoX 1.5 needs", "use 81 or 161 frames (8k+1)")
    if (num_frames - 1) % 4:
        return (f"{num_frames} frames is not 4k+1, which the CogVideoX VAE needs",
                f"use {4 * ((num_frames - 1) // 4) + 1} or {4 * ((num_frames - 1) // 4 + 1) + 1}")
    return None


def check_size(height: int, width: int, variant: str, config: dict):
    if height % 16 or width % 16:
        return (f"{width}x{height} is not a multiple of 16 (VAE 8x times patch 2)", "use multiples of 16")
    if variant == "5b_i2v" and (height, width) != (config["sample_height"] * 8, config["sample_width"] * 8):
        return (f"CogVideoX-5B-I2V's learned positions only fit {config['sample_width'] * 8}x"
                f"{config['sample_height'] * 8}, not {width}x{height}", "use 720x480")
    if variant.startswith("1.5") and max(height, width) > config["sample_height"] * 8:
        return (f"{width}x{height} is larger than CogVideoX 1.5 can take", "keep the long side at most 1360 and the "
                "short side 768, multiples of 16")
    return None


def sample(net, variant: str, y, y_neg, raw, info: dict, seed: int, steps: int, cfg: float, scheduler: str,
           denoise: float, dynamic_cfg: bool, image_raw=None, device="cpu", dtype=torch.float32, callback=None):
    """raw [B,16,F,h,w] -> raw sampled latents. y / y_neg [B,226,4096]. image_raw [16,1,h,w] for I2V."""
    config = net.config
    sf = SCALE[variant]
    b, c, f, h, w = raw.shape
    pad = 1 if config.get("patch_size_t") and f % config["patch_size_t"] else 0  # 1.5: even latent count
    gen = noise_mod.generator(seed)
    z = noise_mod.seeded_noise(seed, (b, f + pad, c, h, w), gen, device=device, dtype=dtype)
    start = 0
    if denoise < 1.0:  # video-to-video: start part-way with the input latent noised to that timestep
        start = steps - min(int(steps * denoise), steps)
        if start >= steps:
            return raw.clone()
        x0 = (raw * sf).permute(0, 2, 1, 3, 4).to(device, dtype)
        x0 = torch.cat([x0[:, :1]] * pad + [x0], dim=1)
        ac = schedulers.alphas_cumprod(SNR_SHIFT[variant])
        z = schedulers.add_noise(x0, z, schedulers.get_timesteps(steps)[start], ac).to(dtype)
    image_latents = None
    if image_raw is not None:
        lat = image_raw[None].to(device, dtype).permute(0, 2, 1, 3, 4)  # [1,1,16,h,w]
        lat = lat / sf if variant.startswith("1.5") else lat * sf      # 1.5 divides (invert_scale_latents)
        image_latents = torch.cat([lat, lat.new_zeros(1, f + pad - 1, c, h, w)], dim=1).repeat(b, 1, 1, 1, 1)
    rope = None
    if config["use_rotary_positional_embeddings"]:
        rope = tuple(r.to(device) for r in rope_for_video(config, h * 8, w * 8, f + pad))
    ofs = torch.full((1,), 2.0, device=device) if config.get("ofs_embed_dim") else None
    out = schedulers.sample(net, z, y.to(device, dtype), y_neg.to(device, dtype), steps, cfg, dynamic_cfg, scheduler,
                            SNR_SHIFT[variant], rope, image_latents, ofs,
                            noise_fn=lambda shape: noise_mod.seeded_noise(seed, shape, gen, device=device, dtype=dtype),
                            callback=callback, start_step=start)
    out = out[:, pad:]  # 1.5 drops the padding latent at the front, as the reference
    return (out.float() / sf).permute(0, 2, 1, 3, 4).cpu()
