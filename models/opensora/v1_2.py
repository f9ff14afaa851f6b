"""Open-Sora 1.2: STDiT3 sampled with rectified flow, the T5 prompt with score suffixes, the v1.2 VAE."""
from __future__ import annotations

import torch

from ... import comfy_adapter
from .. import mask_strategy, noise as noise_mod, offload, rflow
from ..family import VAE, Family, check_prompt_tokens
from ..text_encoders import T5_MAX_LENGTH, clean_caption, t5_encode
from . import buckets, stdit3, vae_v1_2

TEXT_LENGTH = T5_MAX_LENGTH["v1.2"]


def load(kind: str, sd: dict, path: str):
    return stdit3.load_stdit3(sd, model_max_length=TEXT_LENGTH), {}


def prompt_text(prompt: str, aesthetic_score=None, motion_score=None, camera_motion=None) -> str:
    """Score suffixes as the original appends them (each only if absent), then caption cleaning."""
    if aesthetic_score is not None and "aesthetic score:" not in prompt:
        prompt = f"{prompt} aesthetic score: {aesthetic_score:.1f}."
    if motion_score is not None and "motion score:" not in prompt:
        prompt = f"{prompt} motion score: {motion_score:.1f}."
    if camera_motion is not None and "camera motion:" not in prompt:
        prompt = f"{prompt} camera motion: {camera_motion}."
    return clean_caption(prompt)


def encode_text(text_family, t5, clip, prompt, aesthetic_score=None, motion_score=None, camera_motion=None):
    text = prompt_text(prompt, aesthetic_score, motion_score, camera_motion)
    y, mask = t5_encode(t5, [text], max_length=TEXT_LENGTH)
    return {"family": text_family, "y": y, "mask": mask, "prompts": [text]}


def sample(model, positive, negative, latent, info, s):
    """Rectified flow with the resolution- and length-shifted timesteps; references through the mask."""
    net = model.net
    check_prompt_tokens(positive, net)
    x0 = latent["samples"].float()
    b = x0.shape[0]
    gen = noise_mod.generator(s.seed)
    z = noise_mod.seeded_noise(s.seed, x0.shape, gen)
    y = positive["y"].repeat(b, 1, 1, 1)  # every batch row gets the prompt
    y_mask = positive["mask"].repeat(b, 1)

    z, mask = mask_strategy.conditions_mask(z, info, s.denoise, x0)
    device = model.device
    timesteps = rflow.get_timesteps(s.steps, b, info["height"], info["width"], info["num_frames"], device=device)
    fps = s.fps if info["num_frames"] > 1 else buckets.IMAGE_FPS
    kwargs = {"height": torch.full((b,), float(info["height"]), device=device),
              "width": torch.full((b,), float(info["width"]), device=device),
              "fps": torch.full((b,), float(fps), device=device)}
    with offload.on_device(net, model.offload, device, model.offload_device):
        y_null = net.null_caption[None].repeat(b, 1, 1)[:, None].to(device)
        out = rflow.sample(net, z.to(device), y.to(device), y_mask.to(device), y_null, timesteps, s.cfg,
                           None if mask is None else mask.to(device), kwargs,
                           noise_fn=lambda shape: noise_mod.seeded_noise(s.seed, shape, gen, device=device))
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": out.float().cpu(), "opensora": {**info, "conditions": []}}


FAMILY = Family(name="opensora-v1.2", checkpoints=("stdit3",), label="Open-Sora 1.2 STDiT3", load=load,
                vaes=("opensora-v1.2",), schedulers=("rflow",), text_families=("opensora-v1.2",),
                encode_text=encode_text, sample=sample)
VAES = {"opensora_vae_v1_2": VAE("opensora-v1.2", "Open-Sora VAE v1.2", lambda sd, path: vae_v1_2.load_vae_v1_2(sd))}
