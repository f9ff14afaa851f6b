"""CogVideoX sampling as diffusers' CogVideoX pipelines run it: v-prediction DDIM (CogVideoXDDIMScheduler) and
SDE-DPM-Solver++(2M) (CogVideoXDPMScheduler) over a zero-terminal-SNR, SNR-shifted schedule with trailing
timesteps, (dynamic) classifier-free guidance, and the I2V image-latent conditioning.

The schedule lives in float64 and every coefficient stays a 0-dim float64 tensor: under torch's promotion the
elementwise updates then run in the latents' dtype, as in the reference.
"""
from __future__ import annotations

import math

import torch

from ... import comfy_adapter
from .. import preview
from .vae import posterior_sample

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012
# The released scheduler configs: 2B shifts the SNR by 3, every other variant by 1 (none).
SNR_SHIFT = {"2b": 3.0, "5b": 1.0, "5b_i2v": 1.0, "1.5": 1.0, "1.5_i2v": 1.0}
I2V_OFS = 2.0  # CogVideoX 1.5 I2V's `ofs` embedding input, fixed at inference


# ------------------------------------------------------------------------------------------------------------
# Noise schedule
# ------------------------------------------------------------------------------------------------------------
def scaled_linear_alphas_cumprod(n: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """alpha_bar of the "scaled_linear" betas: linspace(sqrt(0.00085), sqrt(0.012), n)^2, in float64."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def shift_snr(alphas_cumprod: torch.Tensor, scale: float) -> torch.Tensor:
    """Divide every SNR alpha_bar / (1 - alpha_bar) by `scale` (SD3's resolution shift, applied to alpha_bar)."""
    return alphas_cumprod / (scale + (1 - scale) * alphas_cumprod)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha_bar) so the last step is pure noise
    (alpha_bar[-1] = 0) and the first is unchanged."""
    r = alphas_cumprod.sqrt()
    r0, r_last = r[0].clone(), r[-1].clone()
    return ((r - r_last) * (r0 / (r0 - r_last))) ** 2


def alphas_cumprod(snr_shift_scale: float = 1.0) -> torch.Tensor:
    """The CogVideoX schedule: scaled-linear, SNR shifted, then rescaled to zero terminal SNR (float64)."""
    return rescale_zero_terminal_snr(shift_snr(scaled_linear_alphas_cumprod(), snr_shift_scale))


def get_timesteps(steps: int) -> list[int]:
    """'trailing' spacing: round(arange(1000, 0, -1000/steps)) - 1 (999, 666, 332 for 3 steps)."""
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps must be between 1 and {NUM_TRAIN_TIMESTEPS}, got {steps}")
    ratio = NUM_TRAIN_TIMESTEPS / steps
    return [int(round(NUM_TRAIN_TIMESTEPS - i * ratio)) - 1 for i in range(steps)]


def prev_timestep(t: int, steps: int) -> int:
    """t - 1000 // steps: not the next list entry when 1000/steps is fractional (the schedulers' convention)."""
    return t - NUM_TRAIN_TIMESTEPS // steps


def alpha_at(ac: torch.Tensor, t: int) -> torch.Tensor:
    """alpha_bar at t; past the end (t < 0) it is 1 (set_alpha_to_one): the last step lands on x0."""
    return ac[t] if t >= 0 else torch.tensor(1.0, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------------------
def x0_from_v(v: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """v-prediction: x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v (at t = 999, alpha_bar = 0, x0 = -v)."""
    return a_t ** 0.5 * x - (1 - a_t) ** 0.5 * v


def ddim_step(v, t: int, x, ac, steps: int):
    """Deterministic DDIM (eta 0; the CogVideoX scheduler has no stochastic branch): returns (x_prev, x0)."""
    a_t, a_prev = alpha_at(ac, t), alpha_at(ac, prev_timestep(t, steps))
    x0 = x0_from_v(v, x, a_t)
    a = ((1 - a_prev) / (1 - a_t)) ** 0.5
    b = a_prev ** 0.5 - a_t ** 0.5 * a
    return a * x + b * x0, x0


def log_snr_half(a: torch.Tensor) -> torch.Tensor:
    """lambda = log sqrt(alpha_bar / (1 - alpha_bar)); -inf at alpha_bar = 0, +inf at 1 (fine in float64)."""
    return ((a / (1 - a)) ** 0.5).log()


def dpm_step(v, old_x0, t: int, t_back, x, ac, steps: int, noise_fn):
    """SDE-DPM-Solver++(2M) (SAT's VPSDEDPMPP2MSampler): returns (x_prev, x0).

    A first-order noise draw is always made; from the second step on (and unless this is the last step) the
    second-order update draws again and uses that one, so the first draw is wasted, as in the reference."""
    t_prev = prev_timestep(t, steps)
    a_t, a_prev = alpha_at(ac, t), alpha_at(ac, t_prev)
    x0 = x0_from_v(v, x, a_t)
    h = log_snr_half(a_prev) - log_snr_half(a_t)
    m1 = ((1 - a_prev) / (1 - a_t)) ** 0.5 * (-h).exp()
    m2 = (-2 * h).expm1() * a_prev ** 0.5
    sigma = (1 - a_prev) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
    x_prev = m1 * x - m2 * x0 + sigma * noise_fn(x.shape).to(x)
    if old_x0 is None or t_prev < 0:
        return x_prev, x0
    r = (log_snr_half(a_t) - log_snr_half(alpha_at(ac, t_back))) / h
    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
    return m1 * x - m2 * d + sigma * noise_fn(x.shape).to(x), x0


def add_noise(x0, noise, t: int, ac):
    """The forward process at integer timestep t (video-to-video's starting point). alpha_bar is cast to the
    latents' dtype before the square roots, as the schedulers' add_noise does."""
    a = ac.to(x0.dtype)[t]
    return a ** 0.5 * x0 + (1 - a) ** 0.5 * noise


# ------------------------------------------------------------------------------------------------------------
# Guidance
# ------------------------------------------------------------------------------------------------------------
def dynamic_guidance(g: float, t: int, steps: int) -> float:
    """1 + g (1 - cos(pi ((N - t)/N)^5)) / 2. A reference quirk kept on purpose (golden README 10): t is the raw
    timestep (999, 666, ...), not the step index, so the scale oscillates ("wave-like cfg")."""
    return 1 + g * ((1 - math.cos(math.pi * ((steps - t) / steps) ** 5.0)) / 2)


def guided(v: torch.Tensor, g: float) -> torch.Tensor:
    """Classifier-free guidance on a [uncond; cond] batch."""
    v_uncond, v_cond = v.chunk(2)
    return v_uncond + g * (v_cond - v_uncond)


# ------------------------------------------------------------------------------------------------------------
# Image-to-video conditioning
# ------------------------------------------------------------------------------------------------------------
def padded_latent_frames(latent_frames: int, patch_size_t: int | None) -> int:
    """1.5 samples a multiple of patch_size_t latents: one extra noise frame in front (dropped after sampling)."""
    return latent_frames + (-latent_frames % patch_size_t if patch_size_t else 0)


def image_latent(raw: torch.Tensor, scaling_factor: float, invert_scale: bool = False) -> torch.Tensor:
    """The image's raw VAE latent (a posterior sample) [B,C,1,h,w] -> [B,1,C,h,w] in the transformer's scale.
    1.5 (invert_scale_latents) divides by the factor instead (diffusers' behaviour; SAT uses it unscaled)."""
    lat = raw.permute(0, 2, 1, 3, 4)
    return (1 / scaling_factor) * lat if invert_scale else scaling_factor * lat


def image_condition(lat: torch.Tensor, frames: int, patch_size_t: int | None = None) -> torch.Tensor:
    """The I2V condition [B,1,C,h,w] -> [B,F,C,h,w]: the image latent at frame 0, zeros after it; when F is not a
    multiple of patch_size_t the first frame is repeated in front (as diffusers pads; its own padding makes F
    even already)."""
    cond = torch.cat([lat, lat.new_zeros(lat.shape[0], frames - 1, *lat.shape[2:])], dim=1)
    if patch_size_t and cond.shape[1] % patch_size_t:
        cond = torch.cat([cond[:, : cond.shape[1] % patch_size_t], cond], dim=1)
    return cond


def i2v_image_latents(vae, image: torch.Tensor, frames: int, scaling_factor: float, invert_scale: bool = False,
                      patch_size_t=None, noise_fn=None) -> torch.Tensor:
    """diffusers' I2V prepare_latents: each image [B,3,1,H,W] (-1..1) encoded on its own, its posterior sampled
    with one noise_fn draw (the posterior mean without one), scaled, then laid out by image_condition."""
    raws = []
    for one in image.split(1):
        mean, logvar = vae.encode_moments(one)
        raws.append(mean if noise_fn is None else posterior_sample(mean, logvar, noise_fn(mean.shape)))
    return image_condition(image_latent(torch.cat(raws), scaling_factor, invert_scale), frames, patch_size_t)


def with_image_condition(x: torch.Tensor, image_latents: torch.Tensor | None) -> torch.Tensor:
    """Channel concat [noisy latents | image latents] (16 + 16 = the I2V transformer's 32 input channels)."""
    return x if image_latents is None else torch.cat([x, image_latents], dim=2)


# ------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------
def sample(model, latents, pos, neg, steps: int, guidance: float, use_dynamic_cfg: bool = False,
           scheduler: str = "ddim", snr_shift_scale: float = 1.0, rope=None, image_latents=None, ofs=None,
           noise_fn=None, callback=None, start_step: int = 0):
    """The CogVideoX pipelines' denoising loop. latents [B,F,C,h,w] (the initial noise, or from start_step on a
    noised input: video-to-video); pos / neg prompt embeddings [B,L,D]; image_latents [B,F,C,h,w] for I2V.
    model(x, text, timestep, image_rotary_emb=, ofs=) -> v. noise_fn(shape) gives DPM's draws in order.
    callback(i, t, latents, x0, g) after each step. Returns the final latents."""
    if scheduler not in ("ddim", "dpm"):
        raise ValueError(f"unknown CogVideoX scheduler '{scheduler}' (choose 'ddim' or 'dpm')")
    noise_fn = noise_fn or (lambda shape: torch.randn(shape))
    ac = alphas_cumprod(snr_shift_scale)
    all_ts = get_timesteps(steps)
    ts = all_ts[start_step:]
    cfg = guidance > 1.0
    text = torch.cat([neg, pos]) if cfg else pos
    cond = None if image_latents is None else torch.cat([image_latents] * (2 if cfg else 1))
    dtype = pos.dtype
    old_x0 = None
    bar = comfy_adapter.Progress(len(ts), desc="sampling")
    for i, t in enumerate(ts):
        comfy_adapter.check_interrupt()
        x_in = with_image_condition(torch.cat([latents] * 2) if cfg else latents, cond)
        timestep = torch.full((x_in.shape[0],), t, dtype=torch.long, device=latents.device)
        v = model(x_in, text, timestep, image_rotary_emb=rope, ofs=ofs).float()
        # video-to-video: diffusers' N here is the number of steps actually run (the scheduler keeps `steps`)
        g = dynamic_guidance(guidance, t, len(ts)) if use_dynamic_cfg else guidance
        if cfg:
            v = guided(v, g)
        if scheduler == "ddim":
            latents, x0 = ddim_step(v, t, latents, ac, steps)
        else:
            latents, old_x0 = dpm_step(v, old_x0, t, ts[i - 1] if i else None, latents, ac, steps, noise_fn)
            x0 = old_x0
        latents = latents.to(dtype)
        if callback is not None:
            callback(start_step + i, t, latents, x0, g)
        bar.update(preview=preview.image(lambda: x0.transpose(1, 2)))  # [B, F, C, h, w] -> [B, C, F, h, w]
    return latents
