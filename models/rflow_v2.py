"""Open-Sora 2.0's flow sampler: a shifted Euler schedule and text + image guidance with oscillation (and the
guidance-distilled FLUX.1 sampler of its t2i2v mode).

Conventions (opposite to v1.2's rflow): t runs from 1 (noise) to 0 (data) and the model predicts
v = noise - data, so the Euler step `x + (t_next - t) * v` has a negative step size.

Guidance runs three passes per step: [prompt + image, empty prompt + image, empty prompt without image],
  v = u_noimg + g_img * (u - u_noimg) + g_txt * (c - u).
For text-to-video the image condition is zeros, so u == u_noimg and this is ordinary CFG. With oscillation a
scale is 1 on odd steps from step 10 on; with temporal scaling the image scale rises from 1 at the first latent
frame to a per-step upper bound that itself falls linearly to 1 over the schedule.

As the original, the state stays in the model's dtype (bf16 for the released model) for the whole loop.
"""
from __future__ import annotations

import math

import torch

from .. import comfy_adapter
from . import preview
from .opensora.mmdit import image_ids, pack, unpack

COND_TYPES = ("t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail")
OSCILLATION_FROM = 10


def shift_alpha(image_seq_len: int, latent_frames: int) -> float:
    """Resolution- and length-dependent shift: linear in tokens per frame (1 at 256, 3 at 4096), times
    sqrt(latent frames)."""
    m = (3 - 1) / (4096 - 256)
    return (m * image_seq_len + 1 - m * 256) * math.sqrt(latent_frames)


def get_schedule(num_steps: int, image_seq_len: int, latent_frames: int, shift: bool = True,
                 alpha: float | None = None) -> list[float]:
    """num_steps + 1 times from 1 to 0; t' = a t / (1 + (a - 1) t) with a = `alpha` or shift_alpha(...)."""
    t = torch.linspace(1, 0, num_steps + 1)
    if shift:
        a = shift_alpha(image_seq_len, latent_frames) if alpha is None else alpha
        t = a * t / (1 + (a - 1) * t)
    return t.tolist()


def oscillation(scale: float, step: int) -> float:
    return scale if step < OSCILLATION_FROM or step % 2 == 0 else 1.0


def reference_mask(shape, placements) -> tuple[torch.Tensor, torch.Tensor]:
    """masks [B, 1, T, H, W] (1 = given) and masked_ref [B, C, T, H, W], the model's cond_in, from placements
    (item, start, frames [C, n, H, W]): the frames go to latent frames start.. of batch item `item` (None: every
    item). Frames past the end are dropped."""
    B, C, T, H, W = shape
    masks, masked = torch.zeros(B, 1, T, H, W), torch.zeros(B, C, T, H, W)
    for item, start, frames in placements:
        items = slice(None) if item is None else item
        n = min(frames.shape[1], T - start)
        masks[items, :, start:start + n] = 1
        masked[items, :, start:start + n] = frames[:, :n]
    return masks, masked


def condition(z: torch.Tensor, cond_type: str, refs: list | None, causal: bool = True):
    """reference_mask for one of the original's cond types. refs: per batch item None or a list of reference
    latents [C, T', H, W]: the first frame of the first one for the head, the last frame of the last one for the
    tail; v2v takes the first / last 8 + causal latent frames of the first one."""
    if cond_type not in COND_TYPES:
        raise ValueError(f"cond_type '{cond_type}' is not one of {COND_TYPES}")
    T = z.shape[2]
    k = 8 + int(causal)
    placements = []
    for i, ref in enumerate(refs or []):
        if ref is None or T == 1 or cond_type == "t2v":
            continue
        if cond_type in ("i2v_head", "i2v_loop"):
            placements.append((i, 0, ref[0][:, :1]))
        if cond_type in ("i2v_tail", "i2v_loop"):
            placements.append((i, T - 1, ref[-1][:, -1:]))
        if cond_type == "v2v_head":
            placements.append((i, 0, ref[0][:, :k]))
        if cond_type == "v2v_tail":
            placements.append((i, max(T - k, 0), ref[0][:, -min(k, T):]))
    masks, masked = reference_mask(z.shape, placements)
    return masks.to(z), masked.to(z)


def image_scale_ramp(g_img: float, step: int, num_steps: int, latent_frames: int, tokens_per_frame: int):
    """[1, N, 1] per-token image guidance: from 1 at the first frame to linspace(g_img, 1, steps + 1)[step]."""
    upper = torch.linspace(g_img, 1.0, num_steps + 1)[step]
    per_frame = torch.linspace(1.0, float(upper), latent_frames)
    return per_frame.repeat_interleave(tokens_per_frame)[None, :, None]


def sample(model, z: torch.Tensor, txt: torch.Tensor, y_vec: torch.Tensor, txt_neg: torch.Tensor,
           vec_neg: torch.Tensor, timesteps: list[float], guidance: float = 7.5, guidance_img: float = 3.0,
           masks: torch.Tensor | None = None, masked_ref: torch.Tensor | None = None, text_osci: bool = True,
           image_osci: bool = True, scale_temporal_osci: bool = False, callback=None) -> torch.Tensor:
    """Denoise z [B, C, T, H, W] (noise in the model's dtype) from timesteps[0] to timesteps[-1].

    txt [B, L, Ct] / y_vec [B, Cv]: T5 and CLIP features of the prompts; txt_neg [1 or B, L, Ct] / vec_neg: of
    the negative prompt (""). masks / masked_ref from `reference_mask` (None: text-to-video). scale_temporal_osci
    applies to image-conditioned sampling only (the caller decides, as the original does for i2v cond types).
    callback(i, z, x0_pred) after each step. Returns the latent before any reference frames are pasted back.
    """
    B, C, T, H, W = z.shape
    p = model.patch_size
    dtype, device = z.dtype, z.device
    if masks is None:
        masks, masked_ref = torch.zeros(B, 1, T, H, W), torch.zeros_like(z)
    cond = pack(torch.cat([masks, masked_ref], dim=1).to(device, dtype), p)
    cond = torch.cat([cond, cond, torch.zeros_like(cond)])
    neg = lambda a: a.expand(B, *a.shape[1:])  # noqa: E731
    txt3 = torch.cat([txt, neg(txt_neg), neg(txt_neg)]).to(device, dtype)
    vec3 = torch.cat([y_vec, neg(vec_neg), neg(vec_neg)]).to(device, dtype)
    img_ids = image_ids(3 * B, T, H, W, p, device).to(dtype)
    txt_ids = torch.zeros(3 * B, txt3.shape[1], 3, device=device, dtype=dtype)
    tokens_per_frame = (H // p) * (W // p)
    num_steps = len(timesteps) - 1
    rope = model.rope(img_ids, txt_ids)
    img = pack(z, p)
    bar = comfy_adapter.Progress(num_steps, desc="sampling")
    for i, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        t_vec = torch.full((3 * B,), t_curr, dtype=dtype, device=device)
        c, u, u_noimg = model(img.repeat(3, 1, 1), img_ids, txt3, txt_ids, t_vec, vec3, cond=cond, rope=rope).chunk(3)
        g_txt = oscillation(guidance, i) if text_osci else guidance
        g_img = oscillation(guidance_img, i) if image_osci else guidance_img
        if scale_temporal_osci and g_img > 1.0:
            g_img = image_scale_ramp(g_img, i, num_steps, T, tokens_per_frame).to(device, dtype)
        v = u_noimg + g_img * (u - u_noimg) + g_txt * (c - u)
        x0_pred = img - t_curr * v  # x_t = (1 - t) x0 + t noise and v = noise - x0
        img = img + (t_prev - t_curr) * v
        if callback is not None:
            callback(i, unpack(img, T, H, W, p), unpack(x0_pred, T, H, W, p))
        bar.update(preview=preview.image(lambda: unpack(x0_pred, T, H, W, p)))
    return unpack(img, T, H, W, p)


def sample_distilled(model, z: torch.Tensor, txt: torch.Tensor, y_vec: torch.Tensor, timesteps: list[float],
                     guidance: float = 4.0, callback=None) -> torch.Tensor:
    """FLUX.1-dev, the image model of Open-Sora 2.0's t2i2v mode: guidance-distilled, so one pass per step with
    the guidance scale as a model input (4.0 in the original) and no negative prompt. z [B, C, 1, H, W]."""
    B, C, T, H, W = z.shape
    p = model.patch_size
    dtype, device = z.dtype, z.device
    img = pack(z, p)
    img_ids = image_ids(B, T, H, W, p, device).to(dtype)
    txt = txt.to(device, dtype)
    txt_ids = torch.zeros(B, txt.shape[1], 3, device=device, dtype=dtype)
    rope = model.rope(img_ids, txt_ids)
    g = torch.full((B,), guidance, device=device, dtype=dtype)
    bar = comfy_adapter.Progress(len(timesteps) - 1, desc="sampling")
    for i, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        t_vec = torch.full((B,), t_curr, dtype=dtype, device=device)
        v = model(img, img_ids, txt, txt_ids, t_vec, y_vec.to(device, dtype), guidance=g, rope=rope)
        x0_pred = img - t_curr * v
        img = img + (t_prev - t_curr) * v
        if callback is not None:
            callback(i, unpack(img, T, H, W, p), unpack(x0_pred, T, H, W, p))
        bar.update(preview=preview.image(lambda: unpack(x0_pred, T, H, W, p)))
    return unpack(img, T, H, W, p)


def paste(x: torch.Tensor, masks: torch.Tensor, masked_ref: torch.Tensor) -> torch.Tensor:
    """Put the exact reference latents back into the conditioned frames after image-conditioned sampling. The
    original does this for i2v cond types and batch item 0 only (the same thing at batch size 1); here every
    item that has a reference gets it."""
    return torch.where(masks.bool(), masked_ref.to(x), x)
