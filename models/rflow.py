"""Rectified-flow sampling as Open-Sora 1.2 does it (RFLOW).

t runs from 1000 (noise) to 0 (data); the model predicts the velocity v ~ x0 - noise, and each Euler step
moves z by v * dt. The grid is uniform, then warped by a resolution- and length-aware transform so that
big or long videos spend more steps at high noise. With a mask (reference frames), a frame whose mask
value m is below 1 stays clean until t <= m*1000, is then re-noised to t once, and generated from there.
"""
from __future__ import annotations

import torch

from .. import comfy_adapter
from . import preview

NUM_TIMESTEPS = 1000


def timestep_transform(t: torch.Tensor, height, width, num_frames, num_timesteps: int = NUM_TIMESTEPS):
    """ratio = sqrt(H*W / 512^2) * sqrt(n) with n = 1 for an image, else (frames // 17) * 5;
    t' = ratio*t / (1 + (ratio-1)*t). height/width/num_frames are tensors whose dtype sets the precision of
    ratio (the released pipeline passes them in bf16, which quantises ratio)."""
    t = t / num_timesteps
    ratio_space = (height * width / (512 * 512)).sqrt()
    frames = torch.ones_like(num_frames) if num_frames[0] == 1 else num_frames // 17 * 5
    # Videos shorter than 17 frames give ratio 0 in the original, and t = 1000 then becomes 0/0 = NaN:
    # count them as one latent frame instead (the original never samples them).
    frames = frames.clamp(min=1)
    ratio = ratio_space * frames.sqrt()
    return ratio * t / (1 + (ratio - 1) * t) * num_timesteps


def get_timesteps(steps: int, batch: int, height: int, width: int, num_frames: int, use_transform: bool = True,
                  info_dtype=torch.float32, device="cpu") -> list[torch.Tensor]:
    """The per-step timesteps [B] fed to the model (0..1000)."""
    ts = [torch.full((batch,), (1.0 - i / steps) * NUM_TIMESTEPS, device=device) for i in range(steps)]
    if use_transform:
        h, w, f = (torch.full((batch,), float(v), dtype=info_dtype, device=device)
                   for v in (height, width, num_frames))
        ts = [timestep_transform(t, h, w, f) for t in ts]
    return ts


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point at time t on the straight line from x0 (t=0) to noise (t=1000); t is [B]."""
    s = (t.float() / NUM_TIMESTEPS)[:, None, None, None, None]
    return (1 - s) * x0 + s * noise


def sample(model, z: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, y_null: torch.Tensor,
           timesteps: list[torch.Tensor], cfg_scale: float, mask: torch.Tensor | None = None,
           model_kwargs: dict | None = None, noise_fn=None, callback=None) -> torch.Tensor:
    """Sample z [B,C,T,H,W] (already holding the reference latents where mask < 1).

    y [B,1,L,Cc] prompt embeddings, y_mask [B,L] their token mask, y_null [B,1,L,Cc] the null caption (it
    reuses the prompt mask, as the original). noise_fn(shape) draws the per-step re-noising noise (one call
    per step when there is a mask, as the original's randn_like). callback(i, z, x0_pred) after each step.
    """
    model_kwargs = dict(model_kwargs or {})
    noise_fn = noise_fn or (lambda shape: torch.randn(shape))
    guided = cfg_scale != 1.0  # at cfg 1 the unconditional pass cannot change the result: skip it
    y_in = torch.cat([y, y_null], 0) if guided else y
    double = (lambda a: torch.cat([a, a], 0)) if guided else (lambda a: a)
    noise_added = (mask == 1) if mask is not None else None
    bar = comfy_adapter.Progress(len(timesteps), desc="sampling")
    for i, t in enumerate(timesteps):
        x_mask = None
        if mask is not None:
            x0 = z.clone()
            x_noise = add_noise(x0, noise_fn(x0.shape).to(x0), t)
            mask_t_upper = mask * NUM_TIMESTEPS >= t[:, None]
            x_mask = double(mask_t_upper)
            start_now = mask_t_upper & ~noise_added  # frames whose edit begins at this step get noise once
            z = torch.where(start_now[:, None, :, None, None], x_noise, x0)
            noise_added = mask_t_upper
        pred = model(double(z), double(t), y_in, mask=y_mask, x_mask=x_mask, **model_kwargs)[:, : z.shape[1]]
        if guided:  # (the learned-sigma channels beyond z's are dropped above)
            v_cond, v_uncond = pred.chunk(2, dim=0)
            v = v_uncond + cfg_scale * (v_cond - v_uncond)
        else:
            v = pred
        dt = (t - timesteps[i + 1] if i + 1 < len(timesteps) else t) / NUM_TIMESTEPS
        x0_pred = z + v * (t / NUM_TIMESTEPS)[:, None, None, None, None]  # z_t = (1-s) x0 + s noise, v = x0 - noise
        z = z + v * dt[:, None, None, None, None]
        if mask is not None:
            z = torch.where(mask_t_upper[:, None, :, None, None], z, x0)
        if callback is not None:
            callback(i, z, x0_pred)
        bar.update(preview=preview.image(x0_pred))
    return z
