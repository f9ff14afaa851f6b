"""CogVideoX sampling: v-prediction DDIM and SDE-DPM-Solver++(2M) over a zero-terminal-SNR, SNR-shifted
schedule, with (dynamic) classifier-free guidance, as diffusers' CogVideoX pipelines run it.

The schedule lives in float64; coefficients stay 0-dim float64 tensors, so under torch's promotion the
elementwise updates run in the latents' dtype, as the reference does.
"""
from __future__ import annotations

import math

import torch

from ... import comfy_adapter

NUM_TRAIN_TIMESTEPS = 1000
SNR_SHIFT = {"2b": 3.0, "5b": 1.0}


def alphas_cumprod(snr_shift_scale: float = 1.0) -> torch.Tensor:
    """Scaled-linear betas, SNR divided by `snr_shift_scale`, then rescaled so that alpha_bar[999] = 0."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
    ac = torch.cumprod(1.0 - betas, dim=0)
    ac = ac / (snr_shift_scale + (1 - snr_shift_scale) * ac)
    r = ac.sqrt()
    r0, rT = r[0].clone(), r[-1].clone()
    r = (r - rT) * r0 / (r0 - rT)
    return r ** 2


def get_timesteps(steps: int) -> list[int]:
    """'trailing' spacing: round(arange(1000, 0, -1000/steps)) - 1 (999, 666, 332 for 3 steps)."""
    ratio = NUM_TRAIN_TIMESTEPS / steps
    return [int(round(NUM_TRAIN_TIMESTEPS - i * ratio)) - 1 for i in range(steps)]


def prev_timestep(t: int, steps: int) -> int:
    """t - 1000 // steps: not the next list entry when 1000/steps is fractional (diffusers' convention)."""
    return t - NUM_TRAIN_TIMESTEPS // steps


def _alpha(ac, t: int) -> torch.Tensor:
    return ac[t] if t >= 0 else torch.tensor(1.0, dtype=torch.float64)  # final alpha_bar: set_alpha_to_one


def ddim_step(v, t: int, x, ac, steps: int):
    """Deterministic DDIM (eta 0), v-prediction: returns (x_prev, x0)."""
    a_t, a_prev = _alpha(ac, t), _alpha(ac, prev_timestep(t, steps))
    x0 = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * v
    a = ((1 - a_prev) / (1 - a_t)) ** 0.5
    b = a_prev ** 0.5 - a_t ** 0.5 * a
    return a * x + b * x0, x0


def _lam(a):
    return ((a / (1 - a)) ** 0.5).log()


def dpm_step(v, old_x0, t: int, t_back, x, ac, steps: int, noise_fn):
    """SDE-DPM-Solver++(2M) (SAT's VPSDEDPMPP2MSampler). A first-order noise draw is always made; the
    second-order update (from the 2nd step on, unless this is the last) draws again and uses that one."""
    t_prev = prev_timestep(t, steps)
    a_t, a_prev = _alpha(ac, t), _alpha(ac, t_prev)
    x0 = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * v
    h = _lam(a_prev) - _lam(a_t)
    m1 = ((1 - a_prev) / (1 - a_t)) ** 0.5 * (-h).exp()
    m2 = (-2 * h).expm1() * a_prev ** 0.5
    sigma = (1 - a_prev) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
    x_prev = m1 * x - m2 * x0 + sigma * noise_fn(x.shape).to(x)
    if old_x0 is None or t_prev < 0:
        return x_prev, x0
    r = (_lam(a_t) - _lam(_alpha(ac, t_back))) / h
    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
    return m1 * x - m2 * d + sigma * noise_fn(x.shape).to(x), x0


def dynamic_guidance(g: float, t: int, steps: int) -> float:
    """1 + g (1 - cos(pi ((N - t)/N)^5)) / 2. Quirk kept from the reference (golden README 10): t is the raw
    timestep (999, 666, ...), not the step index, so the scale oscillates ("wave-like cfg")."""
    return 1 + g * ((1 - math.cos(math.pi * ((steps - t) / steps) ** 5.0)) / 2)


def add_noise(x0, noise, t: int, ac):
    """The forward process at integer timestep t: sqrt(a) x0 + sqrt(1-a) noise."""
    return ac[t] ** 0.5 * x0 + (1 - ac[t]) ** 0.5 * noise


def sample(model, latents, pos, neg, steps: int, guidance: float, use_dynamic_cfg: bool = False,
           scheduler: str = "ddim", snr_shift_scale: float = 1.0, rope=None, image_latents=None, ofs=None,
           noise_fn=None, callback=None, start_step: int = 0):
    """latents [B,F,C,h,w] (initial noise, or a noised input from start_step on: video-to-video); pos/neg prompt
    embeddings [B,L,D]. Returns the final latents."""
    noise_fn = noise_fn or (lambda shape: torch.randn(shape))
    ac = alphas_cumprod(snr_shift_scale)
    all_ts = get_timesteps(steps)
    ts = all_ts[start_step:]
    cfg = guidance > 1.0
    text = torch.cat([neg, pos]) if cfg else pos
    dtype = pos.dtype
    old_x0 = None
    bar = comfy_adapter.Progress(len(ts), desc="sampling")
    for i, t in enumerate(ts, start=start_step):
        x_in = torch.cat([latents, latents]) if cfg else latents
        if image_latents is not None:  # I2V: the image latent is concatenated on the channel axis
            x_in = torch.cat([x_in, torch.cat([image_latents] * (2 if cfg else 1))], dim=2)
        timestep = torch.full((x_in.shape[0],), t, dtype=torch.long, device=latents.device)
        v = model(x_in, text, timestep, image_rotary_emb=rope, ofs=ofs).float()
        g = dynamic_guidance(guidance, t, steps) if use_dynamic_cfg else guidance
        if cfg:
            v_u, v_c = v.chunk(2)
            v = v_u + g * (v_c - v_u)
        if scheduler == "ddim":
            latents, x0 = ddim_step(v, t, latents, ac, steps)
        else:
            back = all_ts[i - 1] if i > start_step else None
            latents, old_x0 = dpm_step(v, old_x0, t, back, latents, ac, steps, noise_fn)
            x0 = old_x0
        latents = latents.to(dtype)
        if callback is not None:
            callback(i, t, latents, x0, g)
        bar.update()
    return latents


def i2v_image_latents(vae, image: torch.Tensor, frames: int, scaling_factor: float, invert_scale: bool = False,
                      patch_size_t=None, noise=None) -> torch.Tensor:
    """The I2V conditioning: the image's posterior sample (scaled; 1.5 divides instead of multiplying),
    then zero latents for the other frames -> [B, F, C, h, w]; 1.5 repeats the first frame when F is odd."""
    mean, logvar = vae.encode_moments(image)  # image [B,3,1,H,W]
    lat = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise.to(mean)
    lat = lat * (1 / scaling_factor if invert_scale else scaling_factor)
    lat = lat.permute(0, 2, 1, 3, 4)
    lat = torch.cat([lat, lat.new_zeros(lat.shape[0], frames - 1, *lat.shape[2:])], dim=1)
    if patch_size_t is not None and lat.shape[1] % patch_size_t:
        lat = torch.cat([lat[:, : lat.shape[1] % patch_size_t], lat], dim=1)
    return lat
