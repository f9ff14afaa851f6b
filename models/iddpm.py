"""IDDPM sampling as Open-Sora 1.0 / 1.1 run it: linear betas over 1000 steps, respaced to N steps, epsilon
prediction with learned-range variance (the model's channels C..2C), no clipping, classifier-free guidance on
the first 3 of the 4 epsilon channels only (as the original's forward_with_cfg), and v1.1's mask strategy."""
from __future__ import annotations

import torch

from .. import comfy_adapter
from . import preview

NUM_TIMESTEPS = 1000


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Evenly spaced kept steps, Python-rounded (banker's): 3 -> 0, 500, 999; 100 -> 0, 10, 20, ..., 999."""
    if steps == 1:
        return [0]
    stride = (num_timesteps - 1) / (steps - 1)
    return sorted({round(i * stride) for i in range(steps)})


def respaced_schedule(steps: int, float32_betas: bool = False) -> dict:
    """timestep_map and the respaced betas (1 - abar_i / abar_prev over the kept steps), float64 (v1.0) or
    float32 (v1.1 builds them with torch.FloatTensor, and every coefficient after them is float32 too)."""
    base = torch.linspace(1e-4, 2e-2, NUM_TIMESTEPS, dtype=torch.float64)
    abar = torch.cumprod(1 - base, 0)
    keep = space_timesteps(NUM_TIMESTEPS, steps)
    last, betas = 1.0, []
    for i in keep:
        betas.append(1 - abar[i].item() / last)
        last = abar[i].item()
    betas = torch.tensor(betas, dtype=torch.float64)
    return {"timestep_map": keep, "betas": betas.float() if float32_betas else betas}


def _coefficients(betas: torch.Tensor) -> dict:
    """The diffusion coefficients in the betas' precision (float32 cumprod in v1.1 moves samples by ~0.1 at
    t=999, where x0 = 157 x - ...)."""
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), abar[:-1]])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    return {"sqrt_abar": abar.sqrt(), "sqrt_1m_abar": (1 - abar).sqrt(), "recip": (1 / abar).sqrt(), "recipm1": (1 / abar - 1).sqrt(),
            "log_var_clipped": torch.log(torch.cat([post_var[1:2], post_var[1:]])), "log_beta": torch.log(betas),
            "coef1": betas * abar_prev.sqrt() / (1 - abar), "coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar)}


def p_sample(out: torch.Tensor, x: torch.Tensor, i: int, c: dict, noise: torch.Tensor):
    """One reverse step from the model output [eps | v] at respaced index i (coefficients taken as float32).
    Returns (x at step i - 1, the clean estimate x0)."""
    k = {name: c[name][i].float().item() for name in c}
    eps, v = out.chunk(2, dim=1)
    frac = (v + 1) / 2
    log_var = frac * k["log_beta"] + (1 - frac) * k["log_var_clipped"]
    x0 = k["recip"] * x - k["recipm1"] * eps
    mean = k["coef1"] * x0 + k["coef2"] * x
    return mean + (float(i != 0)) * torch.exp(0.5 * log_var) * noise, x0


def sample(model, z: torch.Tensor, y: torch.Tensor, y_null: torch.Tensor, steps: int, cfg_scale: float,
           cfg_channel: int = 3, y_mask=None, model_kwargs=None, noise_fn=None, float32_betas: bool = False,
           callback=None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """z [B,C,T,H,W] initial noise; y / y_null [B,1,L,Cc]. The CFG batch [z; z] is updated as a whole (noise is
    drawn for both halves), the model always sees [first half; first half], the first half is returned.

    mask [B,T] (v1.1's mask strategy; z already holds the reference latents where mask < 1): a frame with mask m
    is kept clean until respaced step int(m*steps), noised to that step once there, and generated after it;
    while kept it takes the model's t0 path (x_mask False). Each such step draws the re-noising noise first,
    then the posterior noise, as the original."""
    noise_fn = noise_fn or (lambda shape: torch.randn(shape))
    sched = respaced_schedule(steps, float32_betas)
    c = _coefficients(sched["betas"])
    n = z.shape[0]
    x = torch.cat([z, z])
    y_in = torch.cat([y, y_null])
    kwargs = dict(model_kwargs or {})
    mask_t = None if mask is None else (torch.cat([mask, mask]).to(x.device) * steps).int()
    frames = lambda m: m[:, None, :, None, None]  # noqa: E731 - [2B, T] -> broadcast over [2B, C, T, H, W]
    bar = comfy_adapter.Progress(steps, desc="sampling")
    for i in reversed(range(steps)):
        if mask_t is not None:
            x0 = x.clone()
            x_noise = c["sqrt_abar"][i].float().item() * x + c["sqrt_1m_abar"][i].float().item() * noise_fn(x.shape).to(x)
            x = torch.where(frames(mask_t == i), x_noise, x)
            kwargs["x_mask"] = mask_t > i
        half = x[:n]
        t = torch.full((2 * n,), sched["timestep_map"][i], dtype=torch.long, device=z.device)
        out = model(torch.cat([half, half]), t, y_in, mask=y_mask, **kwargs)
        eps, rest = out[:, :cfg_channel], out[:, cfg_channel:]
        cond, uncond = eps.chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        out = torch.cat([torch.cat([guided, guided]), rest], dim=1)
        x, x0_pred = p_sample(out, x, i, c, noise_fn(x.shape).to(x))
        if mask_t is not None:
            x = torch.where(frames(mask_t < i), x0, x)
        if callback is not None:
            callback(i, t, x)
        bar.update(preview=preview.image(x0_pred))
    return x[:n]
