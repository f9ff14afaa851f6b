"""Open-Sora 1.0 (STDiT) and 1.1 (STDiT2): IDDPM with respaced steps, guidance on 3 of the 4 channels, the SD
VAE frame by frame. 1.0 makes one fixed size and takes no references; 1.1 takes any bucket and the reference
conditions, and is told the video's size, aspect ratio, length and fps."""
from __future__ import annotations

import torch

from ... import comfy_adapter
from .. import checkpoint, iddpm, mask_strategy, noise as noise_mod, offload, sd_vae
from ..errors import InputError
from ..family import VAE, Family, check_prompt_tokens
from ..text_encoders import T5_MAX_LENGTH, clean_caption, t5_encode
from . import buckets, stdit, stdit2

TEXT_LENGTH = {"opensora-v1.0": T5_MAX_LENGTH["v1.0"], "opensora-v1.1": T5_MAX_LENGTH["v1.1"]}


def load_v1_0(kind: str, sd: dict, path: str):
    return stdit.load_released(sd, TEXT_LENGTH["opensora-v1.0"])


def load_v1_1(kind: str, sd: dict, path: str):
    return stdit2.load_stdit2(checkpoint.fit_null_caption(sd, TEXT_LENGTH["opensora-v1.1"])), {}


def encode_text(text_family, t5, clip, prompt, aesthetic_score=None, motion_score=None, camera_motion=None):
    # the caption cleaning of v1.x, no score suffixes (those came with 1.2); 120 / 200 tokens
    text = clean_caption(prompt)
    y, mask = t5_encode(t5, [text], max_length=TEXT_LENGTH[text_family])
    return {"family": text_family, "y": y, "mask": mask, "prompts": [text]}


def _check_v1_0(net, x0, info):
    _, _, t, h, w = x0.shape
    want = tuple(g * p for g, p in zip(net.grid, net.patch_size))
    if (t, h, w) != want:
        r = 8
        raise InputError("latent", f"Open-Sora 1.0 generates one fixed size, and this checkpoint's is {want[0]} "
                         f"frames at {want[2] * r}x{want[1] * r} (the latent is {t} frames at {w * r}x{h * r})",
                         f"set OpenSora Empty Latent to custom {want[2] * r}x{want[1] * r}, {want[0]} frames")
    if info.get("conditions"):
        raise InputError("latent", "Open-Sora 1.0 takes no reference frames",
                         "remove the reference / mask-strategy nodes, or use an Open-Sora 1.1 or 1.2 model")


def _size_kwargs(info, fps, b, device):
    """STDiT2's micro-conditions: what 1.1 was trained to be told about the video."""
    full = lambda v: torch.full((b,), float(v), device=device)  # noqa: E731
    return {"height": full(info["height"]), "width": full(info["width"]), "ar": full(info["height"] / info["width"]),
            "num_frames": full(info["num_frames"]), "fps": full(fps if info["num_frames"] > 1 else buckets.IMAGE_FPS)}


def _sample(model, positive, latent, info, s, v11: bool):
    net = model.net
    if s.steps < 2:  # the learned-range variance interpolates from the posterior variance of step 1
        raise InputError("steps", f"IDDPM cannot sample in {s.steps} step", "use 2 steps or more (100 as released)")
    check_prompt_tokens(positive, net)
    x0 = latent["samples"].float()
    b = x0.shape[0]
    if not v11:
        _check_v1_0(net, x0, info)
    gen = noise_mod.generator(s.seed)
    z, mask = mask_strategy.conditions_mask(noise_mod.seeded_noise(s.seed, x0.shape, gen), info, s.denoise, x0)
    y = positive["y"].repeat(b, 1, 1, 1)
    y_mask = positive["mask"].repeat(b, 1)
    device = model.device
    kwargs = _size_kwargs(info, s.fps, b, device) if v11 else {}
    with offload.on_device(net, model.offload, device, model.offload_device):
        y_null = net.null_caption[None].repeat(b, 1, 1)[:, None].to(device)
        out = iddpm.sample(net, z.to(device), y.to(device), y_null, s.steps, s.cfg, 3, y_mask.to(device), kwargs,
                           noise_fn=lambda shape: noise_mod.seeded_noise(s.seed, shape, gen, device=device),
                           float32_betas=v11, mask=None if mask is None else mask.to(device))
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": out.float().cpu(), "opensora": {**info, "conditions": []}}


def sample_v1_0(model, positive, negative, latent, info, s):
    return _sample(model, positive, latent, info, s, v11=False)


def sample_v1_1(model, positive, negative, latent, info, s):
    return _sample(model, positive, latent, info, s, v11=True)


V1_0 = Family(name="opensora-v1.0", checkpoints=("stdit",), label="Open-Sora 1.0 STDiT", load=load_v1_0,
              vaes=("sd-vae",), schedulers=("iddpm",), text_families=("opensora-v1.0",), encode_text=encode_text,
              sample=sample_v1_0)
V1_1 = Family(name="opensora-v1.1", checkpoints=("stdit2",), label="Open-Sora 1.1 STDiT2", load=load_v1_1,
              vaes=("sd-vae",), schedulers=("iddpm",), text_families=("opensora-v1.1",), encode_text=encode_text,
              sample=sample_v1_1)
VAES = {"sd_vae": VAE("sd-vae", "the SD VAE of Open-Sora 1.0/1.1", lambda sd, path: sd_vae.load_video_vae(sd))}
